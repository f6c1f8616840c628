"""Which vehicles the hub takes telemetry from: the inventory, kept fresh without a restart.

Like Traccar by default, the hub stores nothing for a vehicle that is not in `vehicles`, or
is retired: anyone able to publish could otherwise fill the database under invented ids.
Its messages become dead letters (`unknown_vehicle`), counted in `HubStats.unknown_vehicle`.

The MQTT thread asks `Inventory` about every message (a set lookup). A message of a
vehicle not in it is held in the batch (`hub.intake`), and before the batch's transaction
the writer asks the database (`settle`): a vehicle added a moment ago, whose notification
has not been heard yet, is then taken in rather than refused. The set learns of changes:

- from `NOTIFY freecar_vehicles` (migration 0062: one per vehicle added, removed, retired
  or brought back), heard on the writer's connection;
- by a full reload when the writer connects (what changed meanwhile went unheard) and every
  `reload_s` (a fallback, like the rules' reload at the sweep).

`register_unknown` (`FREECAR_HUB_REGISTER_UNKNOWN`, off by default) is Traccar's
`database.registerUnknown`, for trials: an unknown vehicle is inserted into `vehicles`
(see `hub.repository.vehicles.REGISTERED_NOTE` for what it gets) and its messages go in.
A retired vehicle is never brought back that way.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Final

from hub.database import is_outage
from hub.repository import vehicles
from hub.repository.vehicles import LISTEN_VEHICLES, VEHICLES_CHANNEL, NewVehicle
from protocol.errors import ProtocolError
from protocol.telemetry import decode_telemetry
from protocol.topics import TopicKind

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import psycopg

    from hub.batch import Held
    from hub.stats import HubStats

log = logging.getLogger(__name__)

# Why a held message is refused, as the dead letter's detail says.
NOT_IN_INVENTORY: Final = "not in the inventory"
RETIRED: Final = "retired"


class Inventory:
    """The ids of the vehicles that are not retired; read by any thread, kept by the writer."""

    def __init__(
        self,
        *,
        stats: HubStats,
        reload_s: float,
        register_unknown: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stats = stats
        self._reload_s = reload_s
        self._register_unknown = register_unknown
        self._clock = clock
        # Replaced whole by a reload, changed one id at a time by notifications: either is
        # one step under the GIL, so the MQTT thread's lookups need no lock.
        self._active: set[str] = set()
        self._reload_at = float("-inf")
        # Notifications heard while a reload's query runs: applied again on top of its
        # result, which may be older than they are.
        self._heard_while_loading: list[str] | None = None

    def __contains__(self, vehicle_id: object) -> bool:
        return vehicle_id in self._active

    def __len__(self) -> int:
        return len(self._active)

    def load(self, conn: psycopg.Connection[Any]) -> None:
        """Read the whole inventory."""
        self._heard_while_loading = []
        try:
            active = vehicles.active_vehicles(conn)
            heard = self._heard_while_loading
        finally:
            self._heard_while_loading = None
        self._reload_at = self._clock() + self._reload_s
        for payload in heard:
            self._apply(active, payload)
        self._active = active

    def listen(self, conn: psycopg.Connection[Any]) -> None:
        """Hear of changes on a (new) writer connection; reload at the next `refresh`."""
        conn.add_notify_handler(self._on_notify)
        conn.execute(LISTEN_VEHICLES)
        # Whatever changed while there was no connection went unheard.
        self._reload_at = float("-inf")

    def refresh(self, conn: psycopg.Connection[Any]) -> None:
        """Reload the inventory if it is due (cheap when it is not: call before each batch)."""
        if self._clock() >= self._reload_at:
            self.load(conn)

    def _on_notify(self, notify: psycopg.Notify) -> None:
        # Every handler hears every channel the connection listens on.
        if notify.channel != VEHICLES_CHANNEL:
            return
        if self._heard_while_loading is not None:
            self._heard_while_loading.append(notify.payload)
        self._apply(self._active, notify.payload)

    def _apply(self, active: set[str], payload: str) -> None:
        """Apply one notification (`<active|retired|gone> <id>`) to a set of active ids."""
        standing, _, vehicle_id = payload.partition(" ")
        if standing == "active":
            active.add(vehicle_id)
        elif standing in {"retired", "gone"}:
            active.discard(vehicle_id)
        else:  # `reload` (a TRUNCATE), or anything this hub does not know
            self._reload_at = float("-inf")

    def settle(self, conn: psycopg.Connection[Any], held: Sequence[Held]) -> dict[str, str]:
        """Ask the database about the held messages' vehicles; return those refused, and why.

        Vehicles found (or registered) are learnt at once. Registration commits on its own,
        before the batch: a registered vehicle exists whatever becomes of the batch.
        """
        asked = {message.topic.vehicle_id for message in held}
        found = vehicles.standings(conn, asked)
        unknown = asked.difference(found)
        registered: set[str] = set()
        if self._register_unknown and unknown:
            registered = self._register(conn, _new_vehicles(unknown, held))
        active = {vid for vid, retired in found.items() if not retired} | registered
        self._active.update(active)
        refusals = dict.fromkeys(unknown - registered, NOT_IN_INVENTORY)
        refusals.update((vid, RETIRED) for vid, retired in found.items() if retired)
        return refusals

    def _register(self, conn: psycopg.Connection[Any], new: Sequence[NewVehicle]) -> set[str]:
        """Register vehicles; if that fails, they stay unknown (their messages are refused)."""
        try:
            with conn.transaction():
                registered = vehicles.register(conn, new)
        except Exception as exc:
            if is_outage(exc):
                raise
            log.exception("registering unknown vehicles failed; their messages are refused")
            return set()
        if registered:
            self._stats.vehicles_registered += len(registered)
            log.warning("registered unknown vehicles: %s", ", ".join(sorted(registered)))
        return registered


def _new_vehicles(vehicle_ids: set[str], held: Sequence[Held]) -> list[NewVehicle]:
    """What to register for each id: electric when its first fix reports only a battery."""
    electric: dict[str, bool] = {}
    for message in held:
        vehicle_id = message.topic.vehicle_id
        if vehicle_id not in vehicle_ids or vehicle_id in electric:
            continue
        if message.topic.kind is not TopicKind.TELEMETRY:
            continue
        try:
            fix = decode_telemetry(message.payload)[0]
        except ProtocolError:
            continue  # refused later, when the message is taken in
        electric[vehicle_id] = fix.fuel_pct is None and fix.battery_pct is not None
    return [
        NewVehicle(vid, "electric", "electric")
        if electric.get(vid)
        else NewVehicle(vid, "standard", "petrol")
        for vid in sorted(vehicle_ids)
    ]
