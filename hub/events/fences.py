"""Geofence events: the engine's enter/exit transitions as events, its state in the batch.

`FenceEvents` owns the hub's `GeofenceEngine`. It loads the fences and every stored
per-vehicle state the first time it runs (and again after a failed transaction, since the
engine's memory then runs ahead of the database), reloads the fences when the database
says they changed (`NOTIFY freecar_geofences`, heard on the writer's own connection), and
saves the changed states in the batch's transaction.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from db.geofences import (
    GEOFENCES_CHANNEL,
    LISTEN_GEOFENCES,
    load_active_geofences,
    load_geofence_states,
    load_last_positions,
    save_geofence_states,
)
from db.geofences.model import GeofenceKind
from hub.events.model import Event, EventKind
from hub.geofences import GeofenceEngine, GeofenceTransition, SpeedLimit, TransitionKind

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    import psycopg

    from db.geofences.model import VehiclePosition
    from db.telemetry import TelemetryRow

log = logging.getLogger(__name__)

# Besides the plain enter/exit, what crossing a fence of each kind means to fleet ops.
_MEANING: Final = {
    (TransitionKind.ENTER, GeofenceKind.RESTRICTED): EventKind.ENTERED_RESTRICTED,
    (TransitionKind.EXIT, GeofenceKind.SERVICE_AREA): EventKind.LEFT_SERVICE_AREA,
}


def transition_events(
    transitions: Sequence[GeofenceTransition], *, notify_after: datetime
) -> list[Event]:
    """Events for transitions: enter/exit, plus the kind's meaning where it has one."""
    events: list[Event] = []
    for t in transitions:
        plain = (
            EventKind.GEOFENCE_ENTER if t.kind is TransitionKind.ENTER else EventKind.GEOFENCE_EXIT
        )
        details = {"fence_kind": t.fence_kind.value, "cause": t.cause.value}
        notify = t.ts >= notify_after
        kinds = [plain]
        meaning = _MEANING.get((t.kind, t.fence_kind))
        if meaning is not None:
            kinds.append(meaning)
        events += [
            Event(t.vehicle_id, kind, t.ts, t.lat, t.lon, t.geofence_id, dict(details), notify)
            for kind in kinds
        ]
    return events


class FenceEvents:
    """The geofence half of event detection, used only on the writer's thread."""

    def __init__(self, *, notify_horizon_s: float) -> None:
        self._horizon = timedelta(seconds=notify_horizon_s)
        self.engine = GeofenceEngine()
        self._loaded = False
        self._fences_changed = False

    def listen(self, conn: psycopg.Connection[Any]) -> None:
        """Hear of fence changes on a (new) writer connection; reload at the next batch."""
        conn.add_notify_handler(self._on_notify)
        conn.execute(LISTEN_GEOFENCES)
        # Whatever changed while there was no connection went unheard.
        self._fences_changed = True

    def _on_notify(self, notify: psycopg.Notify) -> None:
        # Every handler hears every channel the writer's connection listens on.
        if notify.channel == GEOFENCES_CHANNEL:
            self._fences_changed = True

    def rolled_back(self) -> None:
        """The batch's transaction failed: start again from what the database holds."""
        self._loaded = False

    def prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Load (or reload) fences and state; call before the batch moves `vehicle_state`.

        The engine resumes segment crossing from each vehicle's stored position, which must
        be the newest fix evaluated before this batch, not one of this batch's own.
        """
        if not self._loaded:
            self.engine = GeofenceEngine(load_active_geofences(conn))
            self.engine.load_state(load_geofence_states(conn), load_last_positions(conn))
            self._loaded = True
            self._fences_changed = False
            log.info("geofences loaded: %d active", self.engine.index.size)
        elif self._fences_changed:
            self._fences_changed = False
            self.engine.reload(load_active_geofences(conn))
            log.info("geofences reloaded: %d active", self.engine.index.size)

    def restore_vehicles(
        self,
        conn: psycopg.Connection[Any],
        vehicle_ids: Sequence[str],
        positions: Sequence[VehiclePosition],
    ) -> None:
        """Take these vehicles' fence states as stored, resuming from `positions`.

        For vehicles another hub moved on, or whose detection failed in this transaction:
        `positions` are their newest fixes before this batch (read before it moved
        `vehicle_state`), where segment crossing resumes.
        """
        self.engine.replace_vehicles(
            vehicle_ids, load_geofence_states(conn, vehicle_ids), positions
        )

    def evaluate(
        self, conn: psycopg.Connection[Any], rows: Sequence[TelemetryRow], *, now: datetime
    ) -> list[Event]:
        """Evaluate a batch's fixes (after `prepare`); store the changed states; return events."""
        if not rows:
            return []
        transitions = self.engine.evaluate(rows)
        save_geofence_states(conn, self.engine.dirty_states())
        return transition_events(transitions, notify_after=now - self._horizon)

    def speed_limit(self, row: TelemetryRow) -> SpeedLimit | None:
        """The lowest limit in force among the fences the fix's vehicle is inside."""
        return self.engine.speed_limit(row.vehicle_id, row.ts)
