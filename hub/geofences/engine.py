"""The geofence engine: a batch of fixes in, enter and exit transitions out.

Per vehicle and fence the engine keeps a hysteresis state (docs/geofences.md):

- **Enter** when a fix is inside by at least `enter_margin_m` plus its accuracy, or when the
  vehicle has been inside (any depth, accuracy ignored) for `dwell_s` (0: no dwell rule).
- **Exit** when a fix is outside by at least `exit_margin_m` plus its accuracy.
- **Crossing**: when the straight step from a vehicle's previous fix to this one passes at
  least `enter_margin_m` inside a fence the vehicle is not in, it entered at the
  interpolated time; if the fix is then outside far enough to exit, it exited at the
  interpolated time it left the exit margin. Steps longer than `max_crossing_gap_s` are not
  trusted (the road taken is unknown), nor steps shorter than twice the smallest enter
  margin (no such step can pass through a fence at that depth unless an end of it is
  already near, and then the fixes decide).
- **Schedule**: outside its window a fence neither enters nor exits and starts no dwell
  (and a pending dwell is dropped); the state is kept, so when the window opens, the next
  fix is judged against the state as it was. Each step is judged at its fix's time.
- **Order**: a fix not newer than the vehicle's last evaluated fix (a replay, a backfill
  that arrives late) changes nothing; it is counted in `stats.replayed`.

The common case costs no per-fix Python: a vehicle inside a fence with every fix of the
batch inside it, or outside with every fix outside, is settled with array operations. Only
(vehicle, fence) pairs where something could change are walked fix by fix.

Not thread-safe: one caller (the hub's writer). Build a `FenceIndex` anywhere, and hand it
to `reload` on the writer's thread.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

import numpy as np

from db.geofences.model import GeofenceKind, GeofenceState
from hub.geofences.index import (
    ClassArray,
    Depth,
    FenceIndex,
    FixColumns,
    FloatArray,
    IntArray,
    Segments,
    member,
)
from hub.geofences.projection import metres_per_unit, point_from_plane, to_plane

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from db.geofences.model import Geofence, VehiclePosition
    from hub.geofences.index import BoolArray

# Accuracy assumed for a fix that reports none: a consumer GPS under open sky is within
# about 5-15 m (the same assumption as hub.filters.FilterConfig.default_accuracy_m).
DEFAULT_ACCURACY_M: Final = 15.0
# Longest step between two fixes that segment crossing trusts. Sparse trackers report every
# 10 s to 2 min while moving; after 5 minutes a car may be 3 km away by any road, and the
# straight line between the fixes says little about which fences it passed.
MAX_CROSSING_GAP_S: Final = 300.0
# Initial room for per-vehicle arrays; they double as the fleet grows.
_INITIAL_VEHICLES: Final = 1024

_FAR_OUT: Final = int(Depth.FAR_OUT)
_OUT: Final = int(Depth.OUT)
_IN: Final = int(Depth.IN)
_DEEP: Final = int(Depth.DEEP)


class Fix(Protocol):
    """What the engine reads of a fix; `db.telemetry.TelemetryRow` is one."""

    @property
    def vehicle_id(self) -> str: ...  # noqa: D102 - a field
    @property
    def ts(self) -> datetime: ...  # noqa: D102
    @property
    def lat(self) -> float | None: ...  # noqa: D102
    @property
    def lon(self) -> float | None: ...  # noqa: D102
    @property
    def accuracy_m(self) -> float | None: ...  # noqa: D102


class TransitionKind(StrEnum):
    """Which way a vehicle crossed a fence."""

    ENTER = "enter"
    EXIT = "exit"


class Cause(StrEnum):
    """Which rule decided a transition."""

    MARGIN = "margin"  # a fix deep enough inside, or far enough outside
    DWELL = "dwell"  # inside for dwell_s
    CROSSING = "crossing"  # the straight step between two fixes passed through


# A NamedTuple, not a frozen dataclass: hundreds are built per batch, and a tuple is several
# times cheaper to build.
class GeofenceTransition(NamedTuple):
    """A vehicle entered or left a fence: what the hub turns into an event."""

    vehicle_id: str
    geofence_id: int
    kind: TransitionKind
    # The deciding fix's time and position, or the interpolated ones for a crossing.
    ts: datetime
    lat: float
    lon: float
    fence_kind: GeofenceKind
    cause: Cause


@dataclass(slots=True)
class EngineStats:
    """Counters since the engine was made, and where its time went (seconds per phase)."""

    batches: int = 0
    fixes: int = 0
    without_position: int = 0
    replayed: int = 0
    pairs: int = 0
    walked: int = 0
    crossing_checks: int = 0
    transitions: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def add_time(self, phase: str, seconds: float) -> None:
        """Charge `seconds` to a phase."""
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds


class _Stay:
    """One vehicle's engaged state with one fence: inside, or a dwell under way."""

    __slots__ = (
        "fix_lat",
        "fix_lon",
        "fix_t",
        "fix_ts",
        "inside",
        "pending_since",
        "pending_t",
        "since",
    )

    def __init__(  # noqa: PLR0913, PLR0917 - a record, built in the hot path: positional on purpose
        self,
        inside: bool,  # noqa: FBT001
        since: datetime | None,
        pending_since: datetime | None,
        pending_t: float | None,
        fix_ts: datetime,
        fix_t: float,
        fix_lat: float,
        fix_lon: float,
    ) -> None:
        self.inside = inside
        self.since = since
        self.pending_since = pending_since
        self.pending_t = pending_t  # pending_since in epoch seconds
        self.fix_ts = fix_ts
        self.fix_t = fix_t  # fix_ts in epoch seconds
        self.fix_lat = fix_lat
        self.fix_lon = fix_lon

    @property
    def idle(self) -> bool:
        """Outside with no dwell under way: the default, not worth keeping."""
        return not self.inside and self.pending_t is None


@dataclass(slots=True)
class _Batch:
    """One batch's sorted, kept fixes and what the walk needs of them."""

    rows: Sequence[Fix]
    row: list[int]  # original row of each kept fix
    vehicle: IntArray
    t: FloatArray
    lon: FloatArray
    lat: FloatArray
    columns: FixColumns
    # Where each vehicle's fixes start and end in the sorted arrays (dense by vehicle).
    first: IntArray
    end: IntArray
    # The step ending at each fix: its start point and time (nan when there is none).
    prev_x: FloatArray
    prev_y: FloatArray
    prev_t: FloatArray


class GeofenceEngine:
    """Evaluates batches of fixes against the active fences, keeping per-vehicle state."""

    def __init__(
        self,
        geofences: Iterable[Geofence] | FenceIndex = (),
        *,
        default_accuracy_m: float = DEFAULT_ACCURACY_M,
        max_crossing_gap_s: float = MAX_CROSSING_GAP_S,
    ) -> None:
        self._index = geofences if isinstance(geofences, FenceIndex) else FenceIndex(geofences)
        self.default_accuracy_m = default_accuracy_m
        self.max_crossing_gap_s = max_crossing_gap_s
        self._vehicle_ids: list[str] = []
        self._vehicle_index: dict[str, int] = {}
        # The newest evaluated fix per vehicle (dense by vehicle number).
        self._last_t: FloatArray = np.full(_INITIAL_VEHICLES, -math.inf)
        self._last_lon: FloatArray = np.full(_INITIAL_VEHICLES, math.nan)
        self._last_lat: FloatArray = np.full(_INITIAL_VEHICLES, math.nan)
        # Engaged states only: vehicle number -> geofence id -> stay. Absent means outside.
        self._stays: dict[int, dict[int, _Stay]] = {}
        self._dirty: dict[tuple[int, int], GeofenceState] = {}
        # Every engaged state by key (vehicle * index size + slot): True inside, False
        # dwelling; and the same as sorted arrays, rebuilt when it changed.
        self._engaged: dict[int, bool] = {}
        self._key_arrays: tuple[IntArray, IntArray] | None = None
        self.stats = EngineStats()

    # --- fences and state -------------------------------------------------------------------

    @property
    def index(self) -> FenceIndex:
        """The fences in force."""
        return self._index

    def geofence(self, geofence_id: int) -> Geofence | None:
        """An active fence by id (for its name, kind or speed limit)."""
        slot = self._index.slot_of.get(geofence_id)
        return None if slot is None else self._index.geofence(slot)

    def inside(self, vehicle_id: str) -> list[Geofence]:
        """The fences a vehicle is inside now (by the hysteresis state)."""
        number = self._vehicle_index.get(vehicle_id)
        stays = self._stays.get(number) if number is not None else None
        if not stays:
            return []
        index = self._index
        return [
            index.geofence(index.slot_of[geofence_id])
            for geofence_id, stay in stays.items()
            if stay.inside
        ]

    def speed_limit_kmh(self, vehicle_id: str, at: datetime) -> float | None:
        """The lowest speed limit of the fences a vehicle is inside and in force at `at`."""
        limits = [
            fence.speed_limit_kmh
            for fence in self.inside(vehicle_id)
            if fence.speed_limit_kmh is not None
            and (fence.schedule is None or fence.schedule.is_active(at))
        ]
        return min(limits, default=None)

    def reload(self, geofences: Iterable[Geofence] | FenceIndex) -> None:
        """Switch to a new set of fences, keeping the state of those that remain.

        A fence whose shape changed keeps its vehicles' state; their next fixes are judged
        against the new shape with the usual hysteresis. State for a fence that is gone is
        dropped without transitions (the database drops its rows: deleted by cascade,
        deactivated by trigger).
        """
        index = geofences if isinstance(geofences, FenceIndex) else FenceIndex(geofences)
        self._index = index
        for stays in self._stays.values():
            for geofence_id in [g for g in stays if g not in index.slot_of]:
                del stays[geofence_id]
        self._rebuild_keys()

    def _rebuild_keys(self) -> None:
        """Recompute the engaged keys (slots change with every index)."""
        size = self._index.size
        slot_of = self._index.slot_of
        self._engaged = {
            vehicle * size + slot_of[geofence_id]: stay.inside
            for vehicle, stays in self._stays.items()
            for geofence_id, stay in stays.items()
        }
        self._key_arrays = None

    def _keys(self) -> tuple[IntArray, IntArray]:
        """Sorted keys (vehicle * size + slot) of every inside and every dwelling state."""
        if self._key_arrays is None:
            inside = sorted(key for key, is_inside in self._engaged.items() if is_inside)
            pending = sorted(key for key, is_inside in self._engaged.items() if not is_inside)
            self._key_arrays = (
                np.array(inside, dtype=np.int64),
                np.array(pending, dtype=np.int64),
            )
        return self._key_arrays

    def _note(self, vehicle: int, slot: int, stay: _Stay) -> None:
        """Keep the engaged keys in step with a state the walk changed."""
        key = vehicle * self._index.size + slot
        if stay.idle:
            self._engaged.pop(key, None)
        else:
            self._engaged[key] = stay.inside
        self._key_arrays = None

    def load_state(
        self, states: Iterable[GeofenceState], positions: Iterable[VehiclePosition] = ()
    ) -> None:
        """Resume from stored state (`load_geofence_states`, `load_last_positions`).

        States replace what the engine knows of those (vehicle, fence) pairs. Positions are
        where each vehicle's next step starts, for segment crossing; they should be the
        newest fixes evaluated before (`vehicle_state`, when it is written in the same
        transaction as the geofence state).
        """
        for state in states:
            vehicle = self._vehicle(state.vehicle_id)
            stays = self._stays.setdefault(vehicle, {})
            pending = state.pending_since
            stay = _Stay(
                state.inside,
                state.since,
                pending,
                None if pending is None else pending.timestamp(),
                state.fix_ts,
                state.fix_ts.timestamp(),
                state.fix_lat,
                state.fix_lon,
            )
            # Fixes older than the one that set a state cannot be news.
            self._last_t[vehicle] = max(self._last_t[vehicle], stay.fix_t)
            if stay.idle or state.geofence_id not in self._index.slot_of:
                stays.pop(state.geofence_id, None)
            else:
                stays[state.geofence_id] = stay
        for position in positions:
            vehicle = self._vehicle(position.vehicle_id)
            t = position.ts.timestamp()
            if t >= self._last_t[vehicle]:
                self._last_t[vehicle] = t
                self._last_lon[vehicle] = position.lon
                self._last_lat[vehicle] = position.lat
        self._rebuild_keys()

    def replace_vehicles(
        self,
        vehicle_ids: Iterable[str],
        states: Iterable[GeofenceState],
        positions: Iterable[VehiclePosition] = (),
    ) -> None:
        """Forget what the engine knows of some vehicles and resume them from stored state.

        For vehicles another hub has moved on since this engine last saw them (hubs that
        share a subscription take turns on a vehicle): their stays, newest fix and unsaved
        changes give way to `states` and `positions` of those vehicles, as in `load_state`.
        """
        size = self._index.size
        slot_of = self._index.slot_of
        forgotten = {self._vehicle(vehicle_id) for vehicle_id in vehicle_ids}
        for vehicle in forgotten:
            for geofence_id in self._stays.pop(vehicle, {}):
                slot = slot_of.get(geofence_id)
                if slot is not None:
                    self._engaged.pop(vehicle * size + slot, None)
            self._last_t[vehicle] = -math.inf
            self._last_lon[vehicle] = math.nan
            self._last_lat[vehicle] = math.nan
        self._dirty = {key: s for key, s in self._dirty.items() if key[0] not in forgotten}
        self.load_state(states, positions)

    def states(self) -> list[GeofenceState]:
        """Every engaged (inside or dwelling) state the engine holds."""
        return [
            self._snapshot(vehicle, geofence_id, stay)
            for vehicle, stays in self._stays.items()
            for geofence_id, stay in stays.items()
        ]

    def dirty_states(self) -> list[GeofenceState]:
        """States changed since the last call, for `save_geofence_states`; clears the list.

        Save them in the same transaction as the batch's events, so that a restart resumes
        from exactly what was reported.
        """
        dirty = list(self._dirty.values())
        self._dirty.clear()
        return dirty

    def _vehicle(self, vehicle_id: str) -> int:
        number = self._vehicle_index.get(vehicle_id)
        if number is None:
            number = self._vehicle_index[vehicle_id] = len(self._vehicle_ids)
            self._vehicle_ids.append(vehicle_id)
            self._grow(number + 1)
        return number

    def _grow(self, needed: int) -> None:
        size = len(self._last_t)
        if needed <= size:
            return
        while size < needed:
            size *= 2
        extra = size - len(self._last_t)
        self._last_t = np.concatenate([self._last_t, np.full(extra, -math.inf)])
        self._last_lon = np.concatenate([self._last_lon, np.full(extra, math.nan)])
        self._last_lat = np.concatenate([self._last_lat, np.full(extra, math.nan)])

    def vehicle_id(self, vehicle: int) -> str:
        """The id of a vehicle number."""
        return self._vehicle_ids[vehicle]

    def _snapshot(self, vehicle: int, geofence_id: int, stay: _Stay) -> GeofenceState:
        return GeofenceState(
            self._vehicle_ids[vehicle],
            geofence_id,
            stay.inside,
            stay.since,
            stay.pending_since,
            stay.fix_ts,
            stay.fix_lat,
            stay.fix_lon,
        )

    # --- evaluation -------------------------------------------------------------------------

    def evaluate(self, fixes: Sequence[Fix]) -> list[GeofenceTransition]:
        """Evaluate a batch (any order, any vehicles); return its transitions in time order."""
        stats = self.stats
        stats.batches += 1
        stats.fixes += len(fixes)
        clock = time.perf_counter()
        batch = self._prepare(fixes)
        if batch is None:
            stats.add_time("prepare", time.perf_counter() - clock)
            return []
        index = self._index
        columns = batch.columns
        size = index.size
        now = time.perf_counter()
        stats.add_time("prepare", now - clock)
        clock = now

        fix, slot = index.candidates(columns)
        stats.pairs += len(fix)
        now = time.perf_counter()
        stats.add_time("query", now - clock)
        clock = now

        inside_keys, pending_keys = self._keys()
        pair_key = batch.vehicle[fix] * size + slot
        engaged_inside = member(pair_key, inside_keys)
        vehicle = batch.vehicle[fix]
        classes, outside = index.classify(
            fix,
            slot,
            columns,
            pair_key=pair_key,
            fixes_of_vehicle=batch.end[vehicle] - batch.first[vehicle],
            engaged_inside=engaged_inside,
        )
        walk_keys = self._keys_to_walk(
            batch,
            pair_key=pair_key,
            classes=classes,
            engaged_inside=engaged_inside,
            inside_keys=inside_keys,
            pending_keys=pending_keys,
        )
        # A vehicle inside a fence that nothing in the batch can move is done with it: the
        # bulk of all pairs (every car inside its service area), dropped before the rest.
        live = np.flatnonzero(~engaged_inside | member(pair_key, walk_keys))
        fix, slot, classes, outside, pair_key, engaged_inside = (
            fix[live],
            slot[live],
            classes[live],
            outside[live],
            pair_key[live],
            engaged_inside[live],
        )
        now = time.perf_counter()
        stats.add_time("classify", now - clock)
        clock = now

        crossings = self._crossings(
            batch,
            fix=fix,
            slot=slot,
            classes=classes,
            outside=outside,
            inside_keys=inside_keys,
            walk_keys=walk_keys,
        )
        if crossings:
            crossed = np.array(sorted(crossings), dtype=np.int64)
            walk_keys = np.union1d(walk_keys, crossed)
            # A crossing moves a vehicle the classes took as steady: measure its fixes in
            # full (a fix after a crossing may be far enough out to exit, or deep enough in).
            redo = np.flatnonzero(member(pair_key, crossed))
            if len(redo):
                vehicle = batch.vehicle[fix[redo]]
                classes[redo], outside[redo] = index.classify(
                    fix[redo],
                    slot[redo],
                    columns,
                    pair_key=pair_key[redo],
                    fixes_of_vehicle=batch.end[vehicle] - batch.first[vehicle],
                    engaged_inside=engaged_inside[redo],
                    exact=True,
                )
        now = time.perf_counter()
        stats.add_time("crossing", now - clock)
        clock = now

        transitions = self._walk(
            batch,
            walk_keys=walk_keys,
            pair_key=pair_key,
            fix=fix,
            classes=classes,
            crossings=crossings,
        )
        self._advance_tracks(batch)
        transitions.sort(key=lambda tr: (tr.ts, tr.vehicle_id))
        stats.transitions += len(transitions)
        stats.add_time("walk", time.perf_counter() - clock)
        return transitions

    def _prepare(self, fixes: Sequence[Fix]) -> _Batch | None:
        """Columns of the fixes with a position, sorted by vehicle and time, replays out."""
        stats = self.stats
        count = len(fixes)
        if count == 0:
            return None
        lat = np.array([f.lat for f in fixes], dtype=float)
        lon = np.array([f.lon for f in fixes], dtype=float)
        positioned = ~(np.isnan(lat) | np.isnan(lon))
        stats.without_position += count - int(positioned.sum())
        known = self._vehicle_index
        before = len(known)
        numbers = [known.setdefault(f.vehicle_id, len(known)) for f in fixes]
        if len(known) > before:
            self._vehicle_ids.extend(list(known)[before:])
            self._grow(len(known))
        vehicle = np.array(numbers, dtype=np.int64)
        t = np.array([f.ts.timestamp() for f in fixes], dtype=float)

        order = np.lexsort((t, vehicle))
        order = order[positioned[order]]
        vehicle, t = vehicle[order], t[order]
        # Replays: not newer than the vehicle's last evaluated fix, or a repeated time.
        fresh = t > self._last_t[vehicle]
        fresh[1:] &= (vehicle[1:] != vehicle[:-1]) | (t[1:] != t[:-1])
        stats.replayed += len(order) - int(fresh.sum())
        keep = np.flatnonzero(fresh)
        if len(keep) == 0:
            return None
        order, vehicle, t = order[keep], vehicle[keep], t[keep]
        lat, lon = lat[order], lon[order]
        acc = np.array([fixes[i].accuracy_m for i in order.tolist()], dtype=float)
        acc = np.where(np.isnan(acc), self.default_accuracy_m, np.maximum(acc, 0.0))
        x, y = to_plane(lon, lat)
        columns = FixColumns(lon=lon, lat=lat, acc=acc, x=x, y=y, scale=metres_per_unit(lat))

        starts = np.flatnonzero(np.concatenate([[True], vehicle[1:] != vehicle[:-1]]))
        ends = np.concatenate([starts[1:], [len(vehicle)]])
        first = np.full(len(self._last_t), -1, dtype=np.int64)
        end = np.full(len(self._last_t), -1, dtype=np.int64)
        first[vehicle[starts]] = starts
        end[vehicle[starts]] = ends

        # Each fix's step starts at the vehicle's previous fix: in this batch, or the last
        # one evaluated before it (nan when unknown).
        prev_x = np.empty_like(x)
        prev_y = np.empty_like(y)
        prev_t = np.empty_like(t)
        prev_x[1:], prev_y[1:], prev_t[1:] = x[:-1], y[:-1], t[:-1]
        carried = vehicle[starts]
        prev_x[starts], prev_y[starts] = to_plane(self._last_lon[carried], self._last_lat[carried])
        prev_t[starts] = self._last_t[carried]
        return _Batch(
            rows=fixes,
            row=order.tolist(),
            vehicle=vehicle,
            t=t,
            lon=lon,
            lat=lat,
            columns=columns,
            first=first,
            end=end,
            prev_x=prev_x,
            prev_y=prev_y,
            prev_t=prev_t,
        )

    def _keys_to_walk(  # noqa: PLR0913 - one batch's arrays, by keyword
        self,
        batch: _Batch,
        *,
        pair_key: IntArray,
        classes: ClassArray,
        engaged_inside: BoolArray,
        inside_keys: IntArray,
        pending_keys: IntArray,
    ) -> IntArray:
        """The (vehicle, fence) keys whose state could change in this batch."""
        size = self._index.size
        # Outside, and a fix is inside: enter or dwell.
        could_enter = pair_key[(classes >= _IN) & ~engaged_inside]
        # Inside, and a fix is far out...
        could_exit = pair_key[engaged_inside & (classes == _FAR_OUT)]
        # ...or some fix of the vehicle was not even near the fence (far out, implicitly).
        present, counts = np.unique(pair_key[engaged_inside], return_counts=True)
        if len(inside_keys):
            vehicle = inside_keys // size
            fixes = batch.end[vehicle] - batch.first[vehicle]
            where = np.searchsorted(present, inside_keys)
            where = np.minimum(where, max(len(present) - 1, 0))
            seen = np.zeros(len(inside_keys), dtype=np.int64)
            if len(present):
                hit = present[where] == inside_keys
                seen[hit] = counts[where[hit]]
            missed = inside_keys[seen < fixes]
        else:
            missed = inside_keys
        # Dwelling: its clock may run out, or it may be dropped.
        return np.unique(np.concatenate([could_enter, could_exit, missed, pending_keys]))

    def _crossings(  # noqa: PLR0913 - one batch's arrays, by keyword
        self,
        batch: _Batch,
        *,
        fix: IntArray,
        slot: IntArray,
        classes: ClassArray,
        outside: FloatArray,
        inside_keys: IntArray,
        walk_keys: IntArray,
    ) -> Crossings:
        """Steps that pass a fence's enter margin: key -> ending fix -> (into, out) fractions.

        A step is worth a geometric test only if it could pass the enter margin: the
        distance outside at its two ends plus twice the margin must fit in its length
        (distance to a fence changes no faster than one moves). So a step shorter than
        twice the tree's padding can only cross fences found near one of its ends, and
        needs no query of its own; longer steps, and each vehicle's first step (from the
        previous batch), are looked up in the tree.
        """
        index = self._index
        size = index.size
        if size == 0:
            return {}
        steps = _Steps(self, batch, _PairLookup(fix * size + slot, classes, outside))
        parts = [
            *steps.near_ends(fix, slot, classes, outside),
            *steps.far(inside_keys),
        ]
        if not parts:
            return {}
        step, fence, start_class, start_out, end_class, end_out = (
            np.concatenate(column) for column in zip(*parts, strict=True)
        )
        key = batch.vehicle[step] * size + fence
        ask = np.flatnonzero(
            # A vehicle inside the fence all batch long cannot cross into it...
            ~(member(key, inside_keys) & ~member(key, walk_keys))
            # ...a step ending deep inside enters by its fix, one starting inside is no
            # crossing into the fence...
            & (end_class != _DEEP)
            & (start_class < _IN)
            # ...and a step too short for the distances at its ends cannot reach the margin
            # (with 0.1% to spare for the scale's drift along it).
            & (start_out + end_out + steps.depth_m[fence] <= steps.length_m[step] * 1.001)
        )
        # A fence near both ends of a step was found twice.
        _, first = np.unique(step[ask] * size + fence[ask], return_index=True)
        ask = ask[first]
        # First steps start at the previous batch's last fix, whose depth nobody measured.
        carried = ask[~steps.in_batch[step[ask]]]
        if len(carried):
            start = step[carried]
            inside = index.contains(fence[carried], batch.prev_x[start], batch.prev_y[start])
            ask = np.setdiff1d(ask, carried[inside], assume_unique=True)
        self.stats.crossing_checks += len(ask)
        if len(ask) == 0:
            return {}
        step, fence, key = step[ask], fence[ask], key[ask]
        columns = batch.columns
        segments = Segments(
            ax=batch.prev_x[step],
            ay=batch.prev_y[step],
            bx=columns.x[step],
            by=columns.y[step],
            scale=columns.scale[step],
        )
        passes, into, out = index.crossings(segments, np.arange(len(step)), fence)
        crossings: Crossings = {}
        for k, j, enter_at, exit_at in zip(
            key[passes].tolist(),
            step[passes].tolist(),
            into[passes].tolist(),
            out[passes].tolist(),
            strict=True,
        ):
            crossings.setdefault(k, {})[j] = (enter_at, exit_at)
        return crossings

    def _walk(  # noqa: PLR0913 - one batch's arrays, by keyword
        self,
        batch: _Batch,
        *,
        walk_keys: IntArray,
        pair_key: IntArray,
        fix: IntArray,
        classes: ClassArray,
        crossings: Crossings,
    ) -> list[GeofenceTransition]:
        """Apply the rules to every key that could change, in time order per key."""
        if len(walk_keys) == 0:
            return []
        index = self._index
        size = index.size
        self.stats.walked += len(walk_keys)
        # Margin-only keys (no dwell, no schedule, no crossing, nothing pending) are settled
        # with array operations; the others are walked fix by fix.
        slot = walk_keys % size
        plain = ~(index.stepwise[slot] | member(walk_keys, self._keys()[1]))
        if crossings:
            plain &= ~member(walk_keys, np.array(sorted(crossings), dtype=np.int64))
        # Only the pairs of keys being walked matter from here on.
        mine = np.flatnonzero(member(pair_key, walk_keys))
        pair_key, fix, classes = pair_key[mine], fix[mine], classes[mine]
        walker = _Walker(self, batch)
        walker.settle_plain(walk_keys[plain], pair_key=pair_key, fix=fix, classes=classes)
        stepwise = walk_keys[~plain]
        if len(stepwise):
            mine = np.flatnonzero(member(pair_key, stepwise))
            by_key = mine[np.argsort(pair_key[mine], kind="stable")]
            sorted_keys = pair_key[by_key]
            lows = np.searchsorted(sorted_keys, stepwise, side="left").tolist()
            highs = np.searchsorted(sorted_keys, stepwise, side="right").tolist()
            fix_of = fix[by_key].tolist()
            class_of = classes[by_key].tolist()
            for key, low, high in zip(stepwise.tolist(), lows, highs, strict=True):
                vehicle, at = divmod(key, size)
                depth = dict(zip(fix_of[low:high], class_of[low:high], strict=True))
                walker.walk(vehicle, at, depth, crossings.get(key, _NO_CROSSINGS))
        return walker.transitions

    def _advance_tracks(self, batch: _Batch) -> None:
        vehicle = batch.vehicle
        last = np.flatnonzero(np.concatenate([vehicle[1:] != vehicle[:-1], [True]]))
        self._last_t[vehicle[last]] = batch.t[last]
        self._last_lon[vehicle[last]] = batch.lon[last]
        self._last_lat[vehicle[last]] = batch.lat[last]


# Per key, the steps (by ending fix) that pass through the fence, with how far along each
# it reaches the enter margin and leaves the exit margin.
Crossings = dict[int, dict[int, tuple[float, float]]]
_NO_CROSSINGS: Final[dict[int, tuple[float, float]]] = {}
_ENTER: Final = TransitionKind.ENTER
_EXIT: Final = TransitionKind.EXIT
_MARGIN: Final = Cause.MARGIN


# Candidate (step, fence) pairs with what is known of each end: (ending fix, slot, start
# class, start distance outside, end class, end distance outside).
_StepPairs = tuple[IntArray, IntArray, ClassArray, FloatArray, ClassArray, FloatArray]


class _Steps:
    """One batch's steps, for segment crossing: which to test, against which fences."""

    def __init__(self, engine: GeofenceEngine, batch: _Batch, pairs: _PairLookup) -> None:
        index = engine.index
        columns = batch.columns
        self.index = index
        self.batch = batch
        self.pairs = pairs
        self.length_m = np.hypot(columns.x - batch.prev_x, columns.y - batch.prev_y) * columns.scale
        self.usable = (
            (batch.t - batch.prev_t <= engine.max_crossing_gap_s)
            & (self.length_m > 0)
            & (self.length_m >= 2 * index.min_crossing_depth_m)
        )  # nan (no previous fix) compares False
        # Whether a step starts at the fix before it in this batch (not the previous batch).
        self.in_batch = batch.first[batch.vehicle] < np.arange(len(batch.t))
        # A fence the tree did not return for a fix is at least the padding away (1% spared
        # for the scale's drift across it).
        self.pad_m = index.query_pad_m * 0.99
        self.near = self.usable & self.in_batch & (self.length_m < 2 * self.pad_m)
        self.depth_m = 2 * index.crossing_depth_m

    def near_ends(
        self, fix: IntArray, slot: IntArray, classes: ClassArray, outside: FloatArray
    ) -> list[_StepPairs]:
        """Short steps, with the fences found near either end."""
        found: list[_StepPairs] = []
        size, count, near, length_m = self.index.size, len(self.batch.t), self.near, self.length_m
        # By the fences near their end: what is known of the end, looked up for the start.
        # Ruled out early: ends deep inside, ends too far to reach the margin.
        pick = np.flatnonzero(
            near[fix] & (classes != _DEEP) & (outside + self.depth_m[slot] <= length_m[fix])
        )
        if len(pick):
            step, fence = fix[pick], slot[pick]
            start = self.pairs.lookup((step - 1) * size + fence, missing_m=self.pad_m)
            found.append((step, fence, *start, classes[pick], outside[pick]))
        # By the fences near their start (a start inside is no crossing into the fence).
        after = np.minimum(fix + 1, count - 1)
        pick = np.flatnonzero(
            (fix + 1 < count)
            & near[after]
            & (classes < _IN)
            & (outside + self.depth_m[slot] <= length_m[after])
        )
        if len(pick):
            step, fence = after[pick], slot[pick]
            end = self.pairs.lookup(step * size + fence, missing_m=self.pad_m)
            found.append((step, fence, classes[pick], outside[pick], *end))
        return found

    def far(self, inside_keys: IntArray) -> list[_StepPairs]:
        """Long steps and first steps, with the fences the tree finds along them."""
        batch, size = self.batch, self.index.size
        far = np.flatnonzero(self.usable & ~self.near)
        if len(far) == 0:
            return []
        columns = batch.columns
        found, fence = self.index.query(
            Segments(
                ax=batch.prev_x[far],
                ay=batch.prev_y[far],
                bx=columns.x[far],
                by=columns.y[far],
                scale=columns.scale[far],
            ).lines()
        )
        step = far[found]
        end_class, end_out = self.pairs.lookup(step * size + fence, missing_m=self.pad_m)
        start_class, start_out = self.pairs.lookup(
            np.maximum(step - 1, 0) * size + fence, missing_m=self.pad_m
        )
        # A first step starts where the previous batch left the vehicle: its state says
        # whether it was inside; how far outside it was is not known (0).
        carried = ~self.in_batch[step]
        before = batch.vehicle[step[carried]] * size + fence[carried]
        start_class[carried] = np.where(member(before, inside_keys), _DEEP, _FAR_OUT)
        start_out[carried] = 0.0
        return [(step, fence, start_class, start_out, end_class, end_out)]


class _PairLookup:
    """A pair's class and distance outside by its key (fix * size + slot)."""

    def __init__(self, keys: IntArray, classes: ClassArray, outside: FloatArray) -> None:
        order = np.argsort(keys)
        self.keys = keys[order]
        self.classes = classes[order]
        self.outside = outside[order]

    def lookup(self, wanted: IntArray, *, missing_m: float) -> tuple[ClassArray, FloatArray]:
        """Class and distance outside of each wanted pair; FAR_OUT and `missing_m` if absent."""
        classes: ClassArray = np.full(len(wanted), _FAR_OUT, dtype=np.int8)
        outside: FloatArray = np.full(len(wanted), missing_m)
        if len(self.keys) and len(wanted):
            where = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
            hit = self.keys[where] == wanted
            classes[hit] = self.classes[where[hit]]
            outside[hit] = self.outside[where[hit]]
        return classes, outside


class _Walker:
    """The rules, applied fix by fix to one (vehicle, fence) at a time."""

    def __init__(self, engine: GeofenceEngine, batch: _Batch) -> None:
        self.engine = engine
        self.batch = batch
        self.index = engine.index
        self.t = batch.t.tolist()
        self.lat = batch.lat.tolist()
        self.lon = batch.lon.tolist()
        self.names = engine._vehicle_ids  # noqa: SLF001 - the engine's own helper
        self.ids = self.index.geofence_ids
        self.kinds = self.index.fence_kinds
        self.transitions: list[GeofenceTransition] = []
        # The (vehicle, fence) being walked.
        self.vehicle = 0
        self.slot = 0

    def settle_plain(
        self, keys: IntArray, *, pair_key: IntArray, fix: IntArray, classes: ClassArray
    ) -> None:
        """Margin-only keys, all at once: the state is the last decisive fix's verdict.

        DEEP says inside, FAR_OUT says outside, IN and OUT leave the state as it was; so
        the state after each fix is a forward fill of the decisive fixes, starting from
        the state before the batch, and a transition is wherever it changes.
        """
        if len(keys) == 0:
            return
        batch = self.batch
        size = self.index.size
        count = len(batch.t)
        vehicle = keys // size
        first = batch.first[vehicle]
        lengths = batch.end[vehicle] - first + 1  # one cell for the state before, then fixes
        starts = np.cumsum(lengths) - lengths
        owner = np.repeat(np.arange(len(keys)), lengths)
        offset = np.arange(int(lengths.sum())) - starts[owner]
        cell_fix = first[owner] + offset - 1
        # Each cell's class: from its (key, fix) pair, FAR_OUT when the fix had none.
        pair_cell = pair_key * count + fix
        by_cell = np.argsort(pair_cell)
        sorted_cells = pair_cell[by_cell]
        wanted = keys[owner] * count + cell_fix
        where = np.minimum(np.searchsorted(sorted_cells, wanted), max(len(sorted_cells) - 1, 0))
        cell_class = np.full(len(wanted), _FAR_OUT, dtype=np.int8)
        if len(sorted_cells):
            hit = sorted_cells[where] == wanted
            cell_class[hit] = classes[by_cell[where[hit]]]
        verdict = np.where(cell_class == _DEEP, 1, np.where(cell_class == _FAR_OUT, 0, -1))
        verdict[starts] = member(keys, self.engine._keys()[0])  # noqa: SLF001
        decisive = np.where(verdict >= 0, np.arange(len(verdict)), 0)
        state = verdict[np.maximum.accumulate(decisive)]
        changes = np.flatnonzero(state[1:] != state[:-1]) + 1
        changes = changes[offset[changes] > 0]
        if len(changes) == 0:
            return
        self._apply_plain(
            keys[owner[changes]].tolist(), cell_fix[changes].tolist(), state[changes].tolist()
        )

    def _apply_plain(self, keys: list[int], fixes: list[int], inside: list[int]) -> None:
        """Report each change of state, then store each key's final state."""
        engine = self.engine
        size = self.index.size
        names, ids, kinds = self.names, self.ids, self.kinds
        rows, row, t, lat, lon = self.batch.rows, self.batch.row, self.t, self.lat, self.lon
        append = self.transitions.append
        final: dict[int, tuple[int, bool, datetime]] = {}
        for key, j, entered in zip(keys, fixes, inside, strict=True):
            vehicle, slot = divmod(key, size)
            ts = rows[row[j]].ts
            kind = _ENTER if entered else _EXIT
            append(
                GeofenceTransition(
                    names[vehicle], ids[slot], kind, ts, lat[j], lon[j], kinds[slot], _MARGIN
                )
            )
            final[key] = (j, bool(entered), ts)
        stays_of, engaged, dirty = engine._stays, engine._engaged, engine._dirty  # noqa: SLF001
        for key, (j, entered, ts) in final.items():
            vehicle, slot = divmod(key, size)
            geofence_id = ids[slot]
            if entered:
                stay = _Stay(True, ts, None, None, ts, t[j], lat[j], lon[j])  # noqa: FBT003
                stays_of.setdefault(vehicle, {})[geofence_id] = stay
                engaged[key] = True
            else:
                stays = stays_of.get(vehicle)
                if stays is not None:
                    stays.pop(geofence_id, None)
                engaged.pop(key, None)
            dirty[(vehicle, geofence_id)] = GeofenceState(
                names[vehicle], geofence_id, entered, ts, None, ts, lat[j], lon[j]
            )
        engine._key_arrays = None  # noqa: SLF001

    def _current(self, vehicle: int, slot: int) -> _Stay | None:
        stays = self.engine._stays.get(vehicle)  # noqa: SLF001
        return None if stays is None else stays.get(self.ids[slot])

    def _store(self, vehicle: int, slot: int, stay: _Stay) -> None:
        """Keep a changed state (or forget it when idle) and mark it for saving."""
        engine = self.engine
        geofence_id = self.ids[slot]
        engine._dirty[(vehicle, geofence_id)] = engine._snapshot(vehicle, geofence_id, stay)  # noqa: SLF001
        engine._note(vehicle, slot, stay)  # noqa: SLF001
        stays = engine._stays.setdefault(vehicle, {})  # noqa: SLF001
        if stay.idle:
            stays.pop(geofence_id, None)
        else:
            stays[geofence_id] = stay

    def walk(
        self,
        vehicle: int,
        slot: int,
        depth: dict[int, int],
        crossing: dict[int, tuple[float, float]],
    ) -> None:
        """Apply the rules to one vehicle's fixes against one fence."""
        self.vehicle, self.slot = vehicle, slot
        index = self.index
        stay = self._current(vehicle, slot)
        scheduled = index.schedules[slot] is not None
        t = self.t
        changed = False
        for j in range(int(self.batch.first[vehicle]), int(self.batch.end[vehicle])):
            if stay is not None and t[j] <= stay.fix_t:
                continue  # older than what set the state: a replay for this fence
            where = depth.get(j, _FAR_OUT)
            if scheduled and not index.is_active(slot, t[j]):
                # Out of schedule: no transition, no dwell; the state waits for the window.
                if stay is not None and stay.pending_t is not None:
                    self._settle(stay, j, pending=None)
                    changed = True
            elif stay is not None and stay.inside:
                if where == _FAR_OUT:
                    self._flip(stay, j, kind=TransitionKind.EXIT, cause=Cause.MARGIN)
                    changed = True
            else:
                stay, moved = self._outside(stay, j, where, crossed=crossing.get(j))
                changed = changed or moved
        if stay is not None and changed:
            self._store(vehicle, slot, stay)

    def _outside(
        self, stay: _Stay | None, j: int, where: int, *, crossed: tuple[float, float] | None
    ) -> tuple[_Stay | None, bool]:
        """One fix of a vehicle not inside the fence: (the state now, whether it changed)."""
        if crossed is not None:
            return self._cross(stay, j, where, crossed)
        if where == _DEEP:
            return self._enter(stay, j, Cause.MARGIN), True
        dwell = self.index.dwell_s[self.slot]
        pending = None if stay is None else stay.pending_t
        if where == _IN and dwell > 0:
            if pending is None:
                return self._start_dwell(stay, j), True
            if self.t[j] - pending >= dwell:
                return self._enter(stay, j, Cause.DWELL), True
        elif stay is not None and pending is not None:
            # Outside (or no dwell rule any more): the stay was not continuous.
            self._settle(stay, j, pending=None)
            return stay, True
        return stay, False

    # --- state changes ----------------------------------------------------------------------

    def _fix(self, j: int) -> tuple[datetime, float, float]:
        batch = self.batch
        return batch.rows[batch.row[j]].ts, self.lat[j], self.lon[j]

    def _new_stay(self, j: int) -> _Stay:
        ts, lat, lon = self._fix(j)
        return _Stay(False, None, None, None, ts, self.t[j], lat, lon)  # noqa: FBT003

    def _settle(self, stay: _Stay, j: int, *, pending: float | None) -> None:
        """Record fix j as the one that last changed the state, with a dwell start or none."""
        ts, lat, lon = self._fix(j)
        stay.fix_ts, stay.fix_t, stay.fix_lat, stay.fix_lon = ts, self.t[j], lat, lon
        stay.pending_t = pending
        stay.pending_since = ts if pending is not None else None

    def _start_dwell(self, stay: _Stay | None, j: int) -> _Stay:
        stay = stay or self._new_stay(j)
        self._settle(stay, j, pending=self.t[j])
        return stay

    def _enter(self, stay: _Stay | None, j: int, cause: Cause) -> _Stay:
        stay = stay or self._new_stay(j)
        self._flip(stay, j, kind=TransitionKind.ENTER, cause=cause)
        return stay

    def _flip(
        self,
        stay: _Stay,
        j: int,
        *,
        kind: TransitionKind,
        cause: Cause,
        at: tuple[datetime, float, float] | None = None,
    ) -> None:
        """Move `stay` across the fence at fix j (or at an interpolated place and time)."""
        batch = self.batch
        fix_ts, lat, lon = batch.rows[batch.row[j]].ts, self.lat[j], self.lon[j]
        ts, at_lat, at_lon = (fix_ts, lat, lon) if at is None else at
        stay.inside = kind is TransitionKind.ENTER
        stay.since = ts
        stay.pending_t = stay.pending_since = None
        stay.fix_ts, stay.fix_t, stay.fix_lat, stay.fix_lon = fix_ts, self.t[j], lat, lon
        slot = self.slot
        self.transitions.append(
            GeofenceTransition(
                self.names[self.vehicle],
                self.ids[slot],
                kind,
                ts,
                at_lat,
                at_lon,
                self.kinds[slot],
                cause,
            )
        )

    def _cross(
        self, stay: _Stay | None, j: int, where: int, fractions: tuple[float, float]
    ) -> tuple[_Stay | None, bool]:
        """The step ending at fix j passed through the fence: enter, and maybe exit, on it."""
        into, out = fractions
        stay = stay or self._new_stay(j)
        entered = self._along(j, into)
        self._flip(stay, j, kind=TransitionKind.ENTER, cause=Cause.CROSSING, at=entered)
        if where == _FAR_OUT:
            left = None if math.isnan(out) else self._along(j, out)
            self._flip(stay, j, kind=TransitionKind.EXIT, cause=Cause.CROSSING, at=left)
        return stay, True

    def _along(self, j: int, fraction: float) -> tuple[datetime, float, float]:
        """Time and position `fraction` of the way along the step ending at fix j."""
        batch = self.batch
        began = float(batch.prev_t[j])
        ts = datetime.fromtimestamp(began + fraction * (self.t[j] - began), UTC)
        ax, ay = float(batch.prev_x[j]), float(batch.prev_y[j])
        bx, by = float(batch.columns.x[j]), float(batch.columns.y[j])
        lon, lat = point_from_plane(ax + fraction * (bx - ax), ay + fraction * (by - ay))
        return ts, lat, lon
