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
from functools import partial
from itertools import repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol, TypeVar, cast

import numpy as np

from db.geofences.model import GeofenceKind, GeofenceState
from hub.geofences.index import (
    QUERY_ACCURACY_M,
    ClassArray,
    Depth,
    FenceIndex,
    FixColumns,
    FloatArray,
    IntArray,
    Segments,
    member,
    member_grouped,
    runs,
)
from hub.geofences.projection import metres_per_unit, point_from_plane, to_plane

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from numpy.typing import NDArray

    from db.geofences.model import Geofence, VehiclePosition
    from hub.geofences.index import BoolArray

_T = TypeVar("_T", bound=np.generic)

# Accuracy assumed for a fix that reports none: a consumer GPS under open sky is within
# about 5-15 m (the same assumption as hub.filters.FilterConfig.default_accuracy_m).
DEFAULT_ACCURACY_M: Final = 15.0
# Longest step between two fixes that segment crossing trusts. Sparse trackers report every
# 10 s to 2 min while moving; after 5 minutes a car may be 3 km away by any road, and the
# straight line between the fixes says little about which fences it passed.
MAX_CROSSING_GAP_S: Final = 300.0
# Initial room for per-vehicle arrays; they double as the fleet grows.
_INITIAL_VEHICLES: Final = 1024

# The fields of a fix, read for a whole batch at once.
_VEHICLE: Final = attrgetter("vehicle_id")
_TS: Final = attrgetter("ts")
_LAT: Final = attrgetter("lat")
_LON: Final = attrgetter("lon")
_ACCURACY: Final = attrgetter("accuracy_m")
# The order of a batch's transitions.
_TIME_ORDER: Final = attrgetter("ts", "vehicle_id")

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


class SpeedLimit(NamedTuple):
    """A speed limit in force, and the fence that sets it (None: not a fence's)."""

    kmh: float
    geofence_id: int | None = None


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

    stamps: list[datetime]  # every fix's ts, in the order given
    row: IntArray  # original row of each kept fix
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


@dataclass(slots=True)
class _Measured:
    """A batch's live pairs, grouped by key (vehicle * size + slot) in time order."""

    fix: IntArray
    slot: IntArray
    key: IntArray
    classes: ClassArray
    outside: FloatArray  # metres, at least (see FenceIndex.classify)


class _Keys:
    """The keys of pairs grouped by key: where each key's run starts, and its length."""

    def __init__(self, batch: _Batch, pair_key: IntArray, *, size: int) -> None:
        self.batch = batch
        self.starts = runs(pair_key)
        self.keys = pair_key[self.starts]
        self.counts = np.diff(self.starts, append=len(pair_key))
        vehicle = self.keys // size
        # How many fixes of the batch each key's vehicle has.
        self.fixes = batch.end[vehicle] - batch.first[vehicle]

    def spread(self, per_key: NDArray[_T]) -> NDArray[_T]:
        """A value per key, repeated for each of its pairs."""
        return np.repeat(per_key, self.counts)


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

    def speed_limit(self, vehicle_id: str, at: datetime) -> SpeedLimit | None:
        """The lowest speed limit of the fences a vehicle is inside and in force at `at`."""
        limits = [
            SpeedLimit(fence.speed_limit_kmh, fence.id)
            for fence in self.inside(vehicle_id)
            if fence.speed_limit_kmh is not None
            and (fence.schedule is None or fence.schedule.is_active(at))
        ]
        return min(limits, default=None)

    def speed_limit_kmh(self, vehicle_id: str, at: datetime) -> float | None:
        """The lowest speed limit in force where a vehicle is, in km/h (see `speed_limit`)."""
        limit = self.speed_limit(vehicle_id, at)
        return None if limit is None else limit.kmh

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
            engaged = self._engaged
            keys = np.fromiter(engaged.keys(), dtype=np.int64, count=len(engaged))
            inside = np.fromiter(engaged.values(), dtype=bool, count=len(engaged))
            self._key_arrays = (np.sort(keys[inside]), np.sort(keys[~inside]))
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
            slot = self._index.slot_of.get(state.geofence_id)
            if slot is None:
                stays.pop(state.geofence_id, None)
                continue
            if stay.idle:
                stays.pop(state.geofence_id, None)
            else:
                stays[state.geofence_id] = stay
            # The keys follow state by state, so that reloading a few vehicles (several
            # hubs take turns on them every batch) costs no rebuild of the whole fleet's.
            self._note(vehicle, slot, stay)
        for position in positions:
            vehicle = self._vehicle(position.vehicle_id)
            t = position.ts.timestamp()
            if t >= self._last_t[vehicle]:
                self._last_t[vehicle] = t
                self._last_lon[vehicle] = position.lon
                self._last_lat[vehicle] = position.lat

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

    def _numbers(self, fixes: Sequence[Fix]) -> IntArray:
        """The vehicle number of each fix, numbering new vehicles as they come."""
        known = self._vehicle_index
        try:
            # Every vehicle known: the usual batch, looked up without a Python loop.
            return np.fromiter(
                map(known.__getitem__, map(_VEHICLE, fixes)), dtype=np.int64, count=len(fixes)
            )
        except KeyError:
            before = len(known)
            numbers = [known.setdefault(f.vehicle_id, len(known)) for f in fixes]
            self._vehicle_ids.extend(list(known)[before:])
            self._grow(len(known))
            return np.array(numbers, dtype=np.int64)

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
        now = time.perf_counter()
        stats.add_time("prepare", now - clock)
        clock = now

        fix, slot, pair_key, settled = self._candidates(batch)
        now = time.perf_counter()
        stats.add_time("query", now - clock)
        clock = now

        inside_keys, pending_keys = self._keys()
        keys = _Keys(batch, pair_key, size=index.size)
        engaged = member(keys.keys, inside_keys)
        classes, outside = index.classify(
            fix,
            slot,
            columns,
            pair_key=pair_key,
            fixes_of_vehicle=keys.spread(keys.fixes),
            engaged_inside=keys.spread(engaged),
        )
        walk_keys, walking = self._keys_to_walk(
            keys,
            classes=classes,
            engaged=engaged,
            inside_keys=inside_keys,
            pending_keys=pending_keys,
            settled=settled,
        )
        # A vehicle inside a fence that nothing in the batch can move is done with it: the
        # bulk of all pairs (what `_skip_settled` left), dropped before the rest.
        live = np.flatnonzero(keys.spread(~engaged | walking))
        fix, slot, classes, outside, pair_key = (
            fix[live],
            slot[live],
            classes[live],
            outside[live],
            pair_key[live],
        )
        now = time.perf_counter()
        stats.add_time("classify", now - clock)
        clock = now

        pairs = _Measured(fix, slot, pair_key, classes, outside)
        crossings = self._crossings(batch, pairs, inside_keys=inside_keys, walk_keys=walk_keys)
        if crossings:
            crossed = np.array(sorted(crossings), dtype=np.int64)
            walk_keys = np.union1d(walk_keys, crossed)
            # A crossing moves a vehicle the classes took as steady: measure its fixes in
            # full (a fix after a crossing may be far enough out to exit, or deep enough in).
            redo = np.flatnonzero(member_grouped(pair_key, crossed))
            if len(redo):
                some = classes[redo]
                index.refine(fix[redo], slot[redo], columns, some)
                classes[redo] = some
        now = time.perf_counter()
        stats.add_time("crossing", now - clock)
        clock = now

        transitions = self._walk(batch, pairs, walk_keys=walk_keys, crossings=crossings)
        self._advance_tracks(batch)
        transitions.sort(key=_TIME_ORDER)
        stats.transitions += len(transitions)
        stats.add_time("walk", time.perf_counter() - clock)
        return transitions

    def _candidates(self, batch: _Batch) -> tuple[IntArray, IntArray, IntArray, IntArray]:
        """The index's (fix, slot) pairs with their keys, grouped by key, in time order.

        Grouped, every question about a (vehicle, fence) is asked once per key and spread
        over its pairs, and later steps need no sort or search per pair.
        """
        fix, slot = self._index.candidates(batch.columns)
        self.stats.pairs += len(fix)
        fix, slot, settled = self._skip_settled(batch, fix, slot)
        pair_key = batch.vehicle[fix] * self._index.size + slot
        # Fixes are sorted by vehicle and time, so by key and fix number is by key and time.
        # (lexsort: stable sorts of nearly sorted columns, several times faster than one
        # argsort of a combined key.)
        order = np.lexsort((fix, pair_key))
        return fix[order], slot[order], pair_key[order], settled

    def _skip_settled(
        self, batch: _Batch, fix: IntArray, slot: IntArray
    ) -> tuple[IntArray, IntArray, IntArray]:
        """Leave out the pairs of vehicles deep inside a vast fence they are inside.

        Nothing in the batch can move a vehicle inside a fence whose every fix is deep in
        it: such pairs would be classified only to be dropped as steady. For a vast fence
        (every car inside its service area, the bulk of all pairs) one disc test over the
        whole batch finds them. Returns the pairs left, and the keys of those left out.
        """
        index = self._index
        settled: list[IntArray] = []
        if not index.vast:
            return fix, slot, np.empty(0, dtype=np.int64)
        inside_keys = self._keys()[0]
        starts = runs(batch.vehicle)  # the batch is sorted by vehicle
        counts = np.diff(starts, append=len(batch.vehicle))
        for fence in index.vast:
            keys = batch.vehicle[starts] * index.size + fence
            # Deep at every fix (so the fence is a candidate of every fix), and inside.
            steady = np.logical_and.reduceat(index.deep_in(fence, batch.columns), starts) & member(
                keys, inside_keys
            )
            if steady.any():
                keep = np.flatnonzero((slot != fence) | ~np.repeat(steady, counts)[fix])
                fix, slot = fix[keep], slot[keep]
                settled.append(keys[steady])
        return fix, slot, np.sort(np.concatenate([np.empty(0, dtype=np.int64), *settled]))

    def _prepare(self, fixes: Sequence[Fix]) -> _Batch | None:
        """Columns of the fixes with a position, sorted by vehicle and time, replays out."""
        stats = self.stats
        count = len(fixes)
        if count == 0:
            return None
        # One C-level pass per field (map and attrgetter, no Python loop); None becomes nan.
        lat = np.fromiter(map(_LAT, fixes), dtype=float, count=count)
        lon = np.fromiter(map(_LON, fixes), dtype=float, count=count)
        positioned = ~(np.isnan(lat) | np.isnan(lon))
        stats.without_position += count - int(positioned.sum())
        vehicle = self._numbers(fixes)
        stamps = list(map(_TS, fixes))
        # Epoch seconds cost a third of this phase; nothing found beats the C method itself
        # (datetime64 conversion of aware datetimes is ten times slower).
        t = np.fromiter(map(datetime.timestamp, stamps), dtype=float, count=count)

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
        acc = np.fromiter(map(_ACCURACY, fixes), dtype=float, count=count)[order]
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
            stamps=stamps,
            row=order,
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
        keys: _Keys,
        *,
        classes: ClassArray,
        engaged: BoolArray,
        inside_keys: IntArray,
        pending_keys: IntArray,
        settled: IntArray,
    ) -> tuple[IntArray, BoolArray]:
        """The (vehicle, fence) keys whose state could change in this batch.

        Returns them all (sorted), and for each key with pairs whether it is one of them.
        `settled` are inside keys whose pairs were left out (see `_skip_settled`).
        """
        starts = keys.starts
        # Outside, and a fix is inside: enter or dwell.
        could_enter = ~engaged & np.logical_or.reduceat(classes >= _IN, starts)
        # Inside, and a fix is far out...
        could_exit = engaged & np.logical_or.reduceat(classes == _FAR_OUT, starts)
        # ...or some fix of the vehicle was not even near the fence (far out, implicitly).
        missed = engaged & (keys.counts < keys.fixes)
        # Dwelling: its clock may run out, or it may be dropped.
        walking = could_enter | could_exit | missed | member(keys.keys, pending_keys)
        # Inside keys with no pair at all: missed by every fix of a vehicle in the batch.
        absent = inside_keys[~member(inside_keys, keys.keys) & ~member(inside_keys, settled)]
        vehicle = absent // self._index.size
        absent = absent[keys.batch.end[vehicle] - keys.batch.first[vehicle] > 0]
        walk_keys = np.unique(np.concatenate([keys.keys[walking], absent, pending_keys]))
        return walk_keys, walking

    def _crossings(
        self,
        batch: _Batch,
        pairs: _Measured,
        *,
        inside_keys: IntArray,
        walk_keys: IntArray,
    ) -> Crossings:
        """Steps that pass a fence's enter margin: key -> ending fix -> (into, out) fractions.

        A step is worth a geometric test only if it could pass the enter margin: the
        distance outside at its two ends plus twice the margin must fit in its length
        (distance to a fence changes no faster than one moves). So a step shorter than
        twice the grid's padding can only cross fences found near one of its ends, and
        needs no query of its own; longer steps, and each vehicle's first step (from the
        previous batch), are looked up in the grid, unless the fences near its end are all
        it could reach.
        """
        index = self._index
        size = index.size
        if size == 0:
            return {}
        steps = _Steps(self, batch, pairs)
        parts = [*steps.near_ends(), *steps.far(inside_keys)]
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
            & (start_out + steps.reach_m(fence, end_class, end_out) <= steps.length_m[step] * 1.001)
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
        # Where a step leaves the exit margin matters only if it ends outside: a fix inside
        # (a class that is exact) cannot exit.
        passes, into, out = index.crossings(
            segments, np.arange(len(step)), fence, exits=end_class[ask] < _IN
        )
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

    def _walk(
        self,
        batch: _Batch,
        pairs: _Measured,
        *,
        walk_keys: IntArray,
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
        # Only the pairs of keys being walked matter from here on (still grouped by key).
        mine = np.flatnonzero(member_grouped(pairs.key, walk_keys))
        pair_key, fix, classes = pairs.key[mine], pairs.fix[mine], pairs.classes[mine]
        walker = _Walker(self, batch)
        walker.settle_plain(walk_keys[plain], pair_key=pair_key, fix=fix, classes=classes)
        stepwise = walk_keys[~plain]
        if len(stepwise):
            mine = np.flatnonzero(member_grouped(pair_key, stepwise))
            sorted_keys = pair_key[mine]
            lows = np.searchsorted(sorted_keys, stepwise, side="left").tolist()
            highs = np.searchsorted(sorted_keys, stepwise, side="right").tolist()
            fix_of = fix[mine].tolist()
            class_of = classes[mine].tolist()
            walker.columns_of(stepwise // size)
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
_N = TypeVar("_N", bound=tuple[object, ...])


def _bulk(kind: type[_N], rows: Iterable[tuple[object, ...]]) -> Iterator[_N]:
    """NamedTuples from ready-made tuples of their fields.

    Without the Python-level `__new__` a NamedTuple class runs per item: a third cheaper,
    for the hundreds of transitions and states a batch can make.
    """
    return cast("Iterator[_N]", map(partial(tuple.__new__, kind), rows))


# A transition's kind by the state it leads to (0 outside, 1 inside).
_KIND_OF: Final = (_EXIT, _ENTER)


# Candidate (step, fence) pairs with what is known of each end: (ending fix, slot, start
# class, start distance outside, end class, end distance outside).
_StepPairs = tuple[IntArray, IntArray, ClassArray, FloatArray, ClassArray, FloatArray]


class _Steps:
    """One batch's steps, for segment crossing: which to test, against which fences."""

    def __init__(self, engine: GeofenceEngine, batch: _Batch, pairs: _Measured) -> None:
        index = engine.index
        columns = batch.columns
        self.index = index
        self.batch = batch
        self.pairs = pairs
        self.lookup = _PairLookup(pairs, len(batch.t))
        self.length_m = np.hypot(columns.x - batch.prev_x, columns.y - batch.prev_y) * columns.scale
        self.usable = (
            (batch.t - batch.prev_t <= engine.max_crossing_gap_s)
            & (self.length_m > 0)
            & (self.length_m >= 2 * index.min_crossing_depth_m)
        )  # nan (no previous fix) compares False
        # Whether a step starts at the fix before it in this batch (not the previous batch).
        self.in_batch = batch.first[batch.vehicle] < np.arange(len(batch.t))
        # A fence the grid did not return for a fix is at least the padding away (1% spared
        # for the scale's drift across it).
        self.pad_m = index.query_pad_m * 0.99
        self.near = self.usable & self.in_batch & (self.length_m < 2 * self.pad_m)
        # In to the margin and back out of it: the least a step between two fixes outside
        # must cover beyond their distances outside.
        self.depth_m = 2 * index.crossing_depth_m

    def reach_m(self, slot: IntArray, end_class: ClassArray, end_out: FloatArray) -> FloatArray:
        """What a step must cover past its start's distance outside to reach the margin.

        Ending outside: in to the margin and back out to the end. Ending inside (not
        deep): only in to the margin, for sure; how far back up it comes depends on the
        end's depth, which is not measured (`outside` is 0 for every fix inside), and
        counting it as 0 would skip a short step across a narrow fence.
        """
        margin = self.depth_m[slot]
        reach: FloatArray = np.where(end_class >= _IN, margin / 2, end_out + margin)
        return reach

    def near_ends(self) -> list[_StepPairs]:
        """Short steps, with the fences found near either end."""
        found: list[_StepPairs] = []
        pairs, lookup = self.pairs, self.lookup
        fix, slot, classes, outside = pairs.fix, pairs.slot, pairs.classes, pairs.outside
        count, near, length_m = len(self.batch.t), self.near, self.length_m
        # By the fences near their end: what is known of the end, looked up for the start
        # (the fix before, of the same vehicle: the step is in the batch). Ruled out early:
        # ends deep inside, ends too far to reach the margin.
        pick = np.flatnonzero(
            near[fix]
            & (classes != _DEEP)
            & (self.reach_m(slot, classes, outside) <= length_m[fix] * 1.001)
        )
        if len(pick):
            step, fence = fix[pick], slot[pick]
            start = lookup.lookup(pairs.key[pick], step - 1, missing_m=self.pad_m)
            found.append((step, fence, *start, classes[pick], outside[pick]))
        # By the fences near their start (a start inside is no crossing into the fence).
        after = np.minimum(fix + 1, count - 1)
        pick = np.flatnonzero(
            (fix + 1 < count)
            & near[after]
            & (classes < _IN)
            # The end may be inside: then only in to the margin is sure.
            & (outside + self.depth_m[slot] / 2 <= length_m[after] * 1.001)
        )
        if len(pick):
            step, fence = after[pick], slot[pick]
            end = lookup.lookup(pairs.key[pick], step, missing_m=self.pad_m)
            found.append((step, fence, classes[pick], outside[pick], *end))
        return found

    def far(self, inside_keys: IntArray) -> list[_StepPairs]:
        """Long steps and first steps, with the fences they may reach."""
        far = self.usable & ~self.near
        if not far.any():
            return []
        # A first step shorter than the padding (most of them) reaches no fence the grid did
        # not find near its end: such a fence is the padding away from the end, and its
        # start counts as 0 m out. So the end's pairs are its only fences, with no query of
        # the step (not for a vague end, whose pairs came from a box, not from the point).
        near_end = (
            far
            & ~self.in_batch
            & (self.length_m * 1.001 < self.pad_m)
            & (self.batch.columns.acc <= QUERY_ACCURACY_M)
        )
        return [
            *self._first_steps(near_end, inside_keys),
            *self._queried(far & ~near_end, inside_keys),
        ]

    def _first_steps(self, steps: BoolArray, inside_keys: IntArray) -> list[_StepPairs]:
        """First steps with the fences near their end, from their end's pairs."""
        pairs = self.pairs
        pick = np.flatnonzero(steps[pairs.fix])
        if len(pick) == 0:
            return []
        return [
            (
                pairs.fix[pick],
                pairs.slot[pick],
                self._carried_class(pairs.key[pick], inside_keys),
                np.zeros(len(pick)),
                pairs.classes[pick],
                pairs.outside[pick],
            )
        ]

    def _queried(self, steps: BoolArray, inside_keys: IntArray) -> list[_StepPairs]:
        """Steps with the fences the grid finds about them (by their boxes)."""
        far = np.flatnonzero(steps)
        if len(far) == 0:
            return []
        batch = self.batch
        ax, ay = batch.prev_x[far], batch.prev_y[far]
        bx, by = batch.columns.x[far], batch.columns.y[far]
        found, fence = self.index.query(
            np.minimum(ax, bx), np.minimum(ay, by), np.maximum(ax, bx), np.maximum(ay, by)
        )
        step = far[found]
        key = batch.vehicle[step] * self.index.size + fence
        end_class, end_out = self.lookup.lookup(key, step, missing_m=self.pad_m)
        start_class, start_out = self.lookup.lookup(key, step - 1, missing_m=self.pad_m)
        carried = ~self.in_batch[step]
        start_class[carried] = self._carried_class(key[carried], inside_keys)
        start_out[carried] = 0.0
        return [(step, fence, start_class, start_out, end_class, end_out)]

    @staticmethod
    def _carried_class(keys: IntArray, inside_keys: IntArray) -> ClassArray:
        # A first step starts where the previous batch left the vehicle: its state says
        # whether it was inside; how far outside it was is not known (0).
        classes: ClassArray = np.where(member(keys, inside_keys), _DEEP, _FAR_OUT).astype(np.int8)
        return classes


class _PairLookup:
    """A pair's class and distance outside by its cell (key * fixes in batch + fix)."""

    def __init__(self, pairs: _Measured, count: int) -> None:
        self.count = count
        # Pairs are grouped by key in time order: their cells are sorted.
        self.cells = pairs.key * count + pairs.fix
        self.classes = pairs.classes
        self.outside = pairs.outside

    def lookup(
        self, key: IntArray, fix: IntArray, *, missing_m: float
    ) -> tuple[ClassArray, FloatArray]:
        """Class and distance outside of each wanted pair; FAR_OUT and `missing_m` if absent."""
        wanted = key * self.count + fix
        classes: ClassArray = np.full(len(wanted), _FAR_OUT, dtype=np.int8)
        outside: FloatArray = np.full(len(wanted), missing_m)
        cells = self.cells
        if len(cells) and len(wanted):
            where = np.minimum(np.searchsorted(cells, wanted), len(cells) - 1)
            hit = cells[where] == wanted
            classes[hit] = self.classes[where[hit]]
            outside[hit] = self.outside[where[hit]]
        return classes, outside


class _Walker:
    """The rules, applied fix by fix to one (vehicle, fence) at a time."""

    def __init__(self, engine: GeofenceEngine, batch: _Batch) -> None:
        self.engine = engine
        self.batch = batch
        self.index = engine.index
        self.names = engine._vehicle_ids  # noqa: SLF001 - the engine's own helper
        self.ids = self.index.geofence_ids
        self.kinds = self.index.fence_kinds
        self.transitions: list[GeofenceTransition] = []
        # The (vehicle, fence) being walked.
        self.vehicle = 0
        self.slot = 0
        # Times and positions by fix number (see `columns_of`).
        self.t: dict[int, float] = {}
        self.lat: dict[int, float] = {}
        self.lon: dict[int, float] = {}

    def columns_of(self, vehicles: IntArray) -> None:
        """Take these vehicles' times and positions, by fix number, for the fix-by-fix walk.

        Only theirs: a few hundred fixes, where the whole batch's would be thousands.
        """
        batch = self.batch
        vehicles = np.unique(vehicles)
        first = batch.first[vehicles]
        lengths = batch.end[vehicles] - first
        fixes = np.repeat(first - (np.cumsum(lengths) - lengths), lengths) + np.arange(
            int(lengths.sum())
        )
        numbers = fixes.tolist()
        self.t = dict(zip(numbers, batch.t[fixes].tolist(), strict=True))
        self.lat = dict(zip(numbers, batch.lat[fixes].tolist(), strict=True))
        self.lon = dict(zip(numbers, batch.lon[fixes].tolist(), strict=True))

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
        # Each cell's class: from its (key, fix) pair, FAR_OUT when the fix had none. Pairs
        # are grouped by key in time order, so their cells are sorted.
        pair_cell = pair_key * count + fix
        wanted = keys[owner] * count + cell_fix
        where = np.minimum(np.searchsorted(pair_cell, wanted), max(len(pair_cell) - 1, 0))
        cell_class = np.full(len(wanted), _FAR_OUT, dtype=np.int8)
        if len(pair_cell):
            hit = pair_cell[where] == wanted
            cell_class[hit] = classes[where[hit]]
        verdict = np.where(cell_class == _DEEP, 1, np.where(cell_class == _FAR_OUT, 0, -1))
        verdict[starts] = member(keys, self.engine._keys()[0])  # noqa: SLF001
        decisive = np.where(verdict >= 0, np.arange(len(verdict)), 0)
        state = verdict[np.maximum.accumulate(decisive)]
        changes = np.flatnonzero(state[1:] != state[:-1]) + 1
        changes = changes[offset[changes] > 0]
        if len(changes) == 0:
            return
        self._apply_plain(keys[owner[changes]], cell_fix[changes], state[changes])

    def _apply_plain(self, keys: IntArray, fixes: IntArray, inside: IntArray) -> None:
        """Report each change of state (keys grouped), then store each key's final state.

        Built column by column: against 10,000 fences a batch changes several hundred
        states, and a Python loop per change cost more than all the arrays before it.
        """
        size = self.index.size
        slots = (keys % size).tolist()
        self.transitions.extend(
            _bulk(
                GeofenceTransition,
                zip(
                    map(self.names.__getitem__, (keys // size).tolist()),
                    map(self.ids.__getitem__, slots),
                    map(_KIND_OF.__getitem__, inside.tolist()),
                    self._stamps(fixes),
                    self.batch.lat[fixes].tolist(),
                    self.batch.lon[fixes].tolist(),
                    map(self.kinds.__getitem__, slots),
                    repeat(_MARGIN),
                ),
            )
        )
        # A key's last change is its state now.
        last = np.flatnonzero(np.append(keys[1:] != keys[:-1], True))
        self._store_plain(keys[last], fixes[last], inside[last] != 0)

    def _store_plain(self, keys: IntArray, fixes: IntArray, inside: BoolArray) -> None:
        """Keep each key's new state: a fresh stay when it entered, none when it left."""
        engine = self.engine
        size = self.index.size
        vehicles = (keys // size).tolist()
        ids = list(map(self.ids.__getitem__, (keys % size).tolist()))
        stamps = self._stamps(fixes)
        entered = inside.tolist()
        lat, lon = self.batch.lat[fixes].tolist(), self.batch.lon[fixes].tolist()
        t = self.batch.t[fixes].tolist()
        stays_of, engaged = engine._stays, engine._engaged  # noqa: SLF001
        for k, (key, vehicle, geofence_id) in enumerate(
            zip(keys.tolist(), vehicles, ids, strict=True)
        ):
            if entered[k]:
                ts = stamps[k]
                stay = _Stay(True, ts, None, None, ts, t[k], lat[k], lon[k])  # noqa: FBT003
                stays_of.setdefault(vehicle, {})[geofence_id] = stay
                engaged[key] = True
            else:
                stays = stays_of.get(vehicle)
                if stays is not None:
                    stays.pop(geofence_id, None)
                engaged.pop(key, None)
        engine._dirty.update(  # noqa: SLF001
            zip(
                zip(vehicles, ids, strict=True),
                _bulk(
                    GeofenceState,
                    zip(
                        map(self.names.__getitem__, vehicles),
                        ids,
                        entered,
                        stamps,
                        repeat(None),
                        stamps,
                        lat,
                        lon,
                    ),
                ),
                strict=True,
            )
        )
        engine._key_arrays = None  # noqa: SLF001

    def _stamps(self, fixes: IntArray) -> list[datetime]:
        """The ts (as given) of some fixes of the sorted batch."""
        batch = self.batch
        return list(map(batch.stamps.__getitem__, batch.row[fixes].tolist()))

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
        return batch.stamps[int(batch.row[j])], self.lat[j], self.lon[j]

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
        fix_ts, lat, lon = batch.stamps[int(batch.row[j])], self.lat[j], self.lon[j]
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
