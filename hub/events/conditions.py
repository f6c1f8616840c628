"""Status events: conditions on a vehicle's own reports, raised once when they begin.

Each vehicle has a `Conditions` record: which conditions hold now and since when. A fix
moves it forward (fixes older than the last one seen change nothing, so a redelivery or a
replay raises nothing twice), and an event is raised only on the change from "does not
hold" to "holds". Thresholds have hysteresis so a value hovering at a threshold raises one
event, not one per fix:

- `low_fuel` / `low_battery`: below `low_level_pct`; re-armed above it plus `level_hysteresis_pct`.
- `overspeed`: above the limit for `overspeed_min_s`; over when `overspeed_hysteresis_kmh`
  below it. The limit is the vehicle's geofence's (the caller says) or the default.
- `door_open_while_locked`: locked with a door open.
- `moving_while_locked`: a parked car (engine off) that really moves while locked: a tow
  truck or a thief. Decided by hub/parking.py from sustained evidence, never by one fix (GPS
  wander in a garage looks like driving); `hold_parked` runs that before the batch is
  stored and marks the fix that proved the move. Re-armed by unlocking.
- `engine_on_without_trip`: the engine runs while the vehicle has no trip.
- `idle`: engine on, standing (below `idle_speed_kmh`) for `idle_after_s`.
- `online` / `offline`: changes of the stored online flag (status topic, last will, or the
  hub's silence sweep).

The records are plain data, saved as JSON per vehicle in the batch's transaction, so a hub
restart neither forgets a condition nor raises it again. A record also holds the vehicle's
parking state (hub/parking.py): where a parked car is held, and the evidence of a move so far.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from hub import parking
from hub.events.model import Event, EventKind
from hub.ordering import is_newer
from hub.parking import Parking, ParkingConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from db.telemetry import TelemetryRow
    from hub.geofences import SpeedLimit

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConditionConfig:
    """Thresholds of the status events; every default says why it has its value."""

    # Motorway limit in China (120) plus a margin: outside any fence with its own limit.
    default_speed_limit_kmh: float = 130.0
    # A few seconds over the limit is an overtaking manoeuvre, ten is a habit.
    overspeed_min_s: float = 10.0
    overspeed_hysteresis_kmh: float = 5.0
    # A fifth of a tank is about 100 km: time enough to send someone with fuel.
    low_level_pct: float = 15.0
    # Refuelling adds tens of percent; sensor noise is a percent or two.
    level_hysteresis_pct: float = 5.0
    # When a parked car moves (moving_while_locked) and where it is held until then.
    parking: ParkingConfig = field(default_factory=ParkingConfig)
    idle_speed_kmh: float = 3.0
    # Ten minutes with the engine running and the car standing wastes fuel and money.
    idle_after_s: float = 600.0
    # Events from fixes older than this (a backfill) are stored but not notified: nobody can
    # act on a door that was open an hour ago.
    notify_horizon_s: float = 300.0
    # How far ahead a unit's clock may be (the hub's FREECAR_HUB_MAX_FUTURE_S): fixes are
    # ordered by the unit's counter, and by this rule when it restarts (hub/ordering.py).
    future_allowance_s: float = 300.0


@dataclass(slots=True)
class Conditions:
    """Which conditions hold for one vehicle, and what deciding them needs to remember."""

    last_ts: float = 0.0
    """Epoch seconds of the last fix applied; older ones (hub/ordering.py) change nothing."""
    last_seq: int | None = None
    """The unit's counter at that fix (None: not known, the clock decides)."""
    low_fuel: bool = False
    low_battery: bool = False
    overspeed_since: float | None = None
    overspeed: bool = False
    overspeed_max_kmh: float = 0.0
    overspeed_fence: int | None = None
    """The fence whose limit the overspeed broke (None: the default limit)."""
    door_open_while_locked: bool = False
    moving_while_locked: bool = False
    engine_without_trip: bool = False
    idle_since: float | None = None
    idle: bool = False
    online: bool | None = None
    parking: Parking | None = None
    """Where the car is parked and held, or how it moved (None: driving, or not known)."""

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready data."""
        data = {name: getattr(self, name) for name in _FIELDS}
        data["parking"] = None if self.parking is None else self.parking.to_json()
        return data

    def decisions(self) -> tuple[object, ...]:
        """Everything but the last fix's time and seq: what must be saved when it changes."""
        return _decisions_of(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Conditions:
        """Rebuild a record; unknown keys (from a newer hub) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["parking"] = Parking.from_json(values.get("parking"))
        return cls(**values)


_FIELDS: Final = tuple(f.name for f in fields(Conditions))
# The last fix's time and seq are not worth a write per fix: after a restart they are rebuilt
# from vehicle_state's, written in the same transaction (see ConditionDetector.load).
_DECISIONS: Final = tuple(name for name in _FIELDS if name not in {"last_ts", "last_seq"})
# attrgetter builds the tuple in C: this runs twice per fix.
_decisions_of: Final = operator.attrgetter(*_DECISIONS)


NewestFix = tuple[float, int | None]
"""A vehicle's newest stored fix: epoch seconds and the unit's seq (None for a legacy row)."""


def _order(row: TelemetryRow) -> tuple[int, datetime]:
    """The order a vehicle's fixes are judged in within a batch: its counter, then its clock."""
    return row.seq, row.ts


class ConditionDetector:
    """Applies fixes and presence changes to per-vehicle `Conditions`, raising events."""

    def __init__(self, config: ConditionConfig | None = None) -> None:
        self.config = config or ConditionConfig()
        self._records: dict[str, Conditions] = {}
        self._dirty: set[str] = set()

    # --- state ------------------------------------------------------------------------------

    def load(
        self, records: Mapping[str, Conditions], newest_fix: Mapping[str, NewestFix] | None = None
    ) -> None:
        """Replace all records with stored ones (start-up, or after a failed transaction).

        `newest_fix` (each vehicle's newest stored fix, from vehicle_state) moves each record
        up to it: the fixes stored were applied, saved or not.
        """
        self._records = dict(records)
        self._dirty.clear()
        for vehicle_id, newest in (newest_fix or {}).items():
            self._catch_up(self.record(vehicle_id), newest)

    def replace(
        self,
        vehicle_ids: Iterable[str],
        records: Mapping[str, Conditions],
        newest_fix: Mapping[str, NewestFix],
    ) -> None:
        """Take some vehicles' records as stored (another hub moved them on); as `load`.

        A vehicle of `vehicle_ids` without a stored record starts afresh.
        """
        for vehicle_id in vehicle_ids:
            record = self._records[vehicle_id] = records.get(vehicle_id) or Conditions()
            newest = newest_fix.get(vehicle_id)
            if newest is not None:
                self._catch_up(record, newest)
            self._dirty.discard(vehicle_id)

    def _catch_up(self, record: Conditions, newest: NewestFix) -> None:
        ts, seq = newest
        if self._is_newer(seq, ts, record):
            record.last_ts, record.last_seq = ts, seq

    def _is_newer(self, seq: int | None, ts: float, record: Conditions) -> bool:
        """Whether a fix comes after the record's last one, by the unit's counter first."""
        if seq is None:
            return ts > record.last_ts
        return is_newer(
            seq,
            round(ts * 1000),
            than_seq=record.last_seq,
            than_ts=round(record.last_ts * 1000),
            allowance=round(self.config.future_allowance_s * 1000),
        )

    def record(self, vehicle_id: str) -> Conditions:
        """The vehicle's record (a fresh one if it has none)."""
        found = self._records.get(vehicle_id)
        if found is None:
            found = self._records[vehicle_id] = Conditions()
        return found

    def take_dirty(self) -> dict[str, Conditions]:
        """The records changed since the last call, to save in the same transaction."""
        dirty = {vid: self._records[vid] for vid in self._dirty}
        self._dirty.clear()
        return dirty

    # --- input ------------------------------------------------------------------------------

    def hold_parked(self, rows: Sequence[TelemetryRow]) -> list[TelemetryRow]:
        """The rows to store: parked cars at their held point, a fix that proved a move marked.

        Call first in the batch's transaction, before anything stores or evaluates the rows,
        and hand what it returns on: `apply_fixes` raises `moving_while_locked` from the marks
        (hub/parking.py decides). Each vehicle's fixes are taken oldest first; one not newer
        than the last fix applied (a replay, a late backfill) is no evidence, and is held only
        if the car was parked by then. A row held before (a batch written again after a
        rollback) is decided afresh from what the car sent. If the rules fail for a vehicle,
        its fixes are stored as received and its parking state starts afresh (logged).
        """
        out = list(rows)
        by_vehicle: dict[str, list[int]] = {}
        unsorted: set[str] = set()
        for index, row in enumerate(rows):
            group = by_vehicle.get(row.vehicle_id)
            if group is None:
                by_vehicle[row.vehicle_id] = [index]
            else:
                if _order(rows[group[-1]]) > _order(row):
                    unsorted.add(row.vehicle_id)
                group.append(index)
        for vehicle_id in unsorted:  # stable: equal keys keep their order
            by_vehicle[vehicle_id].sort(key=lambda i: _order(rows[i]))
        for vehicle_id, indexes in by_vehicle.items():
            try:
                self._hold_vehicle(vehicle_id, out, indexes)
            except Exception:
                # A bug here must not stop ingest: the fixes go in as the car sent them.
                log.exception("parking rules failed for %s; fixes stored as received", vehicle_id)
                for index in indexes:
                    out[index] = _as_received(rows[index])
                self.record(vehicle_id).parking = None
                self._dirty.add(vehicle_id)
        return out

    def _hold_vehicle(self, vehicle_id: str, out: list[TelemetryRow], indexes: list[int]) -> None:
        record = self.record(vehicle_id)
        state = record.parking
        # The newest fix judged so far, as a record: `apply_fixes` moves the real one later.
        newest = Conditions(last_ts=record.last_ts, last_seq=record.last_seq)
        config = self.config.parking
        for index in indexes:
            row = out[index]
            if state is None and row.engine_on and row.extra is None:
                continue  # driven, as most fixes are: nothing held, nothing to undo
            row = parking.received(row)
            ts = row.ts.timestamp()
            if not self._is_newer(row.seq, ts, newest):
                out[index] = parking.hold_late(state, row)
                continue
            newest.last_ts, newest.last_seq = ts, row.seq
            verdict = parking.observe(state, parking.sighting(row, ts), config)
            state = verdict.state
            out[index] = parking.apply(row, verdict)
        if state != record.parking:
            record.parking = state
            self._dirty.add(vehicle_id)

    def apply_fixes(
        self,
        rows: Iterable[TelemetryRow],
        *,
        now: datetime,
        speed_limit: Callable[[TelemetryRow], SpeedLimit | None] = lambda _row: None,
        on_trip: Callable[[str], bool] = lambda _vid: False,
    ) -> list[Event]:
        """Apply fixes (any order; each vehicle's are taken oldest first); return new events.

        Pass the rows `hold_parked` returned: a parked car's move is decided there.
        `speed_limit` gives the limit where a fix is (a fence's), None for the default (an
        overspeed against a fence's limit is that fence's event, for its rules);
        `on_trip` says whether a vehicle has a trip under way.
        """
        horizon = now.timestamp() - self.config.notify_horizon_s
        events: list[Event] = []
        for row in sorted(rows, key=lambda r: (r.vehicle_id, *_order(r))):
            record = self.record(row.vehicle_id)
            ts = row.ts.timestamp()
            if not self._is_newer(row.seq, ts, record):
                continue  # a replay, a redelivery or a late fix: already decided
            record.last_ts, record.last_seq = ts, row.seq
            before = record.decisions()
            found: list[tuple[EventKind, dict[str, Any]]] = []
            self._levels(record, row, found)
            self._speed(record, row, speed_limit(row), found)
            self._locked(record, row, found)
            self._engine(record, row, on_trip(row.vehicle_id), found)
            if record.decisions() != before:
                self._dirty.add(row.vehicle_id)
            notify = ts >= horizon
            events += [
                Event(
                    row.vehicle_id,
                    kind,
                    row.ts,
                    row.lat,
                    row.lon,
                    record.overspeed_fence if kind is EventKind.OVERSPEED else None,
                    details,
                    notify,
                )
                for kind, details in found
            ]
        return events

    def apply_presence(self, vehicle_id: str, *, online: bool, at: datetime) -> Event | None:
        """Note the stored online flag; an event when it changed (not on first sight)."""
        record = self.record(vehicle_id)
        previous = record.online
        if previous == online:
            return None
        record.online = online
        self._dirty.add(vehicle_id)
        if previous is None:
            return None  # first sight of this vehicle: nothing changed that we know of
        kind = EventKind.ONLINE if online else EventKind.OFFLINE
        recent = at >= datetime.now(UTC) - timedelta(seconds=self.config.notify_horizon_s)
        return Event(vehicle_id, kind, at, notify=recent)

    # --- the conditions -----------------------------------------------------------------------

    def _levels(
        self, record: Conditions, row: TelemetryRow, found: list[tuple[EventKind, dict[str, Any]]]
    ) -> None:
        low = self.config.low_level_pct
        rearm = low + self.config.level_hysteresis_pct
        if row.fuel_pct is not None:
            if not record.low_fuel and row.fuel_pct < low:
                record.low_fuel = True
                found.append((EventKind.LOW_FUEL, {"fuel_pct": row.fuel_pct}))
            elif record.low_fuel and row.fuel_pct >= rearm:
                record.low_fuel = False
        if row.battery_pct is not None:
            if not record.low_battery and row.battery_pct < low:
                record.low_battery = True
                found.append((EventKind.LOW_BATTERY, {"battery_pct": row.battery_pct}))
            elif record.low_battery and row.battery_pct >= rearm:
                record.low_battery = False

    def _speed(
        self,
        record: Conditions,
        row: TelemetryRow,
        fence_limit: SpeedLimit | None,
        found: list[tuple[EventKind, dict[str, Any]]],
    ) -> None:
        if row.speed_kmh is None:
            return  # a status-only fix says nothing about speed
        limit = self.config.default_speed_limit_kmh if fence_limit is None else fence_limit.kmh
        ts = row.ts.timestamp()
        if row.speed_kmh > limit:
            if record.overspeed_since is None:
                record.overspeed_since = ts
                record.overspeed_max_kmh = row.speed_kmh
            if not record.overspeed:
                # The fence in force when the overspeed is raised is the one it broke.
                record.overspeed_fence = None if fence_limit is None else fence_limit.geofence_id
            record.overspeed_max_kmh = max(record.overspeed_max_kmh, row.speed_kmh)
            lasted = ts - record.overspeed_since
            if not record.overspeed and lasted >= self.config.overspeed_min_s:
                record.overspeed = True
                details = {
                    "speed_kmh": row.speed_kmh,
                    "max_speed_kmh": record.overspeed_max_kmh,
                    "limit_kmh": limit,
                    "over_for_s": round(lasted, 1),
                }
                found.append((EventKind.OVERSPEED, details))
        elif row.speed_kmh <= limit - self.config.overspeed_hysteresis_kmh:
            record.overspeed_since = None
            record.overspeed = False
            record.overspeed_max_kmh = 0.0
            record.overspeed_fence = None

    def _locked(
        self, record: Conditions, row: TelemetryRow, found: list[tuple[EventKind, dict[str, Any]]]
    ) -> None:
        if not row.locked:
            record.door_open_while_locked = False
            record.moving_while_locked = False
            return
        if row.doors_open and not record.door_open_while_locked:
            record.door_open_while_locked = True
            found.append((EventKind.DOOR_OPEN_WHILE_LOCKED, {}))
        elif not row.doors_open:
            record.door_open_while_locked = False
        # Marked by `hold_parked` on the fix that proved a parked car moves (hub/parking.py).
        mark = parking.move_mark(row)
        if mark is None or record.moving_while_locked:
            return
        record.moving_while_locked = True
        details = {**mark, "speed_kmh": row.speed_kmh}
        found.append((EventKind.MOVING_WHILE_LOCKED, details))

    def _engine(
        self,
        record: Conditions,
        row: TelemetryRow,
        on_trip: bool,  # noqa: FBT001 - internal, positional like its siblings
        found: list[tuple[EventKind, dict[str, Any]]],
    ) -> None:
        if not row.engine_on:
            record.engine_without_trip = False
            record.idle_since = None
            record.idle = False
            return
        if not on_trip and not record.engine_without_trip:
            record.engine_without_trip = True
            found.append((EventKind.ENGINE_ON_WITHOUT_TRIP, {}))
        elif on_trip:
            record.engine_without_trip = False
        standing = row.speed_kmh is not None and row.speed_kmh < self.config.idle_speed_kmh
        if not standing:
            record.idle_since = None
            record.idle = False
            return
        ts = row.ts.timestamp()
        if record.idle_since is None:
            record.idle_since = ts
        if not record.idle and ts - record.idle_since >= self.config.idle_after_s:
            record.idle = True
            found.append((EventKind.IDLE, {"idle_s": round(ts - record.idle_since)}))


def _as_received(row: TelemetryRow) -> TelemetryRow:
    """The row as the car sent it, or as it is if even that fails (never a move mark kept)."""
    try:
        return parking.received(row)
    except Exception:
        log.exception("could not undo a hold of a %s fix; stored as it is", row.vehicle_id)
        return row
