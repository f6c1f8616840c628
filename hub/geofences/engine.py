"""The geofence engine: a batch of fixes in, enter and exit transitions out.

Per vehicle and fence the engine keeps a hysteresis state (docs/geofences.md):

- **Enter** when a fix is inside by at least `enter_margin_m` plus its accuracy, or when the
  vehicle has been inside (any depth, accuracy ignored) for `dwell_s` (0: no dwell rule).
- **Exit** when a fix is outside by at least `exit_margin_m` plus its accuracy.
- **Crossing**: when the straight step from a vehicle's previous fix to this one passes at
  least `enter_margin_m` inside a fence the vehicle is not in, it entered at the
  interpolated time; if the fix is then outside far enough to exit, it exited at the
  interpolated time it left the exit margin. Steps longer than `max_crossing_gap_s` are not
  trusted (the road taken is unknown), nor steps faster than `max_crossing_speed_kmh` (a
  fix is off), nor steps shorter than twice the smallest enter margin (no such step can
  pass through a fence at that depth unless an end of it is already near, and then the
  fixes decide).
- **Schedule**: outside its window a fence neither enters nor exits and starts no dwell
  (and a pending dwell is dropped); the state is kept, so when the window opens, the next
  fix is judged against the state as it was. Each step is judged at its fix's time.
- **Order**: a fix not newer than the vehicle's last evaluated fix (a replay, a backfill
  that arrives late) changes nothing; it is counted in `stats.replayed`.
- **Vague fixes**: a fix vaguer than `max_accuracy_m` decides nothing (`stats.vague`).

Whatever a fix says, what it costs is bounded by the fences near it and along its step
(docs/geofences.md, "Bounds").

A batch goes through four phases, each a module: `batch` (columns), `pairs` (candidates
from the index, their classes, the keys that could change), `crossing` (steps through
fences) and `walk` (the rules), which changes `state` (what is kept between batches). The
engine only runs them in order and times them. The common case
costs no per-fix Python: a vehicle inside a fence with every fix of the batch inside it, or
outside with every fix outside, is settled with array operations.

Not thread-safe: one caller (the hub's writer). Build a `FenceIndex` anywhere, and hand it
to `reload` on the writer's thread.
"""

from __future__ import annotations

import time
from operator import attrgetter
from typing import TYPE_CHECKING, Final

from hub.geofences.batch import prepare
from hub.geofences.crossing import find_crossings, remeasure_crossed
from hub.geofences.index import FenceIndex
from hub.geofences.model import (
    Cause,
    EngineStats,
    Fix,
    GeofenceTransition,
    SpeedLimit,
    TransitionKind,
)
from hub.geofences.pairs import candidates, measure
from hub.geofences.state import FleetState
from hub.geofences.walk import walk

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

    from db.geofences.model import Geofence, GeofenceState, VehiclePosition

__all__ = [
    "DEFAULT_ACCURACY_M",
    "MAX_CROSSING_GAP_S",
    "MAX_CROSSING_SPEED_KMH",
    "MAX_USABLE_ACCURACY_M",
    "Cause",
    "EngineStats",
    "Fix",
    "GeofenceEngine",
    "GeofenceTransition",
    "SpeedLimit",
    "TransitionKind",
]

# Accuracy assumed for a fix that reports none: a consumer GPS under open sky is within
# about 5-15 m (the same assumption as hub.filters.FilterConfig.default_accuracy_m).
DEFAULT_ACCURACY_M: Final = 15.0
# Longest step between two fixes that segment crossing trusts. Sparse trackers report every
# 10 s to 2 min while moving; after 5 minutes a car may be 3 km away by any road, and the
# straight line between the fixes says little about which fences it passed.
MAX_CROSSING_GAP_S: Final = 300.0
# Fastest step between two fixes that segment crossing trusts: the hub's fix filters drop
# jumps faster than this by default (FREECAR_HUB_MAX_SPEED_KMH), unless the next fix confirms
# them. A faster step means one of its fixes is off, and its straight line says nothing.
MAX_CROSSING_SPEED_KMH: Final = 250.0
# Vaguest fix the rules take a decision from, in metres. A GNSS receiver reports 3-50 m,
# 100-200 m with a poor sky view; a fix vaguer than a kilometre is a cell-tower estimate or
# a receiver that lost its fix, could enter no fence less than a kilometre deep, and would
# have to be looked up against every fence within a kilometre and more. It is skipped like a
# fix without a position (counted in `stats.vague`); its status still counts elsewhere.
MAX_USABLE_ACCURACY_M: Final = 1_000.0
# The order of a batch's transitions.
_TIME_ORDER: Final = attrgetter("ts", "vehicle_id")


class _Clock:
    """Charges the time since the last lap to a phase of the engine's stats."""

    def __init__(self, stats: EngineStats) -> None:
        self.stats = stats
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Charge the time since the last lap to `phase`."""
        now = time.perf_counter()
        self.stats.add_time(phase, now - self.last)
        self.last = now


class GeofenceEngine:
    """Evaluates batches of fixes against the active fences, keeping per-vehicle state."""

    def __init__(
        self,
        geofences: Iterable[Geofence] | FenceIndex = (),
        *,
        default_accuracy_m: float = DEFAULT_ACCURACY_M,
        max_accuracy_m: float = MAX_USABLE_ACCURACY_M,
        max_crossing_gap_s: float = MAX_CROSSING_GAP_S,
        max_crossing_speed_kmh: float = MAX_CROSSING_SPEED_KMH,
    ) -> None:
        index = geofences if isinstance(geofences, FenceIndex) else FenceIndex(geofences)
        self.default_accuracy_m = default_accuracy_m
        self.max_accuracy_m = max_accuracy_m
        self.max_crossing_gap_s = max_crossing_gap_s
        self.max_crossing_speed_kmh = max_crossing_speed_kmh
        self._state = FleetState(index)
        self.stats = EngineStats()

    # --- fences and state -------------------------------------------------------------------

    @property
    def index(self) -> FenceIndex:
        """The fences in force."""
        return self._state.index

    def geofence(self, geofence_id: int) -> Geofence | None:
        """An active fence by id (for its name, kind or speed limit)."""
        index = self._state.index
        slot = index.slot_of.get(geofence_id)
        return None if slot is None else index.geofence(slot)

    def inside(self, vehicle_id: str) -> list[Geofence]:
        """The fences a vehicle is inside now (by the hysteresis state)."""
        return self._state.inside(vehicle_id)

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
        self._state.reload(index)

    def load_state(
        self, states: Iterable[GeofenceState], positions: Iterable[VehiclePosition] = ()
    ) -> None:
        """Resume from stored state (`load_geofence_states`, `load_last_positions`).

        States replace what the engine knows of those (vehicle, fence) pairs. Positions are
        where each vehicle's next step starts, for segment crossing; they should be the
        newest fixes evaluated before (`vehicle_state`, when it is written in the same
        transaction as the geofence state).
        """
        self._state.load(states, positions)

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
        self._state.forget(vehicle_ids)
        self._state.load(states, positions)

    def states(self) -> list[GeofenceState]:
        """Every engaged (inside or dwelling) state the engine holds."""
        return self._state.states()

    def dirty_states(self) -> list[GeofenceState]:
        """States changed since the last call, for `save_geofence_states`; clears the list.

        Save them in the same transaction as the batch's events, so that a restart resumes
        from exactly what was reported.
        """
        return self._state.take_dirty()

    def vehicle_id(self, vehicle: int) -> str:
        """The id of a vehicle number."""
        return self._state.vehicle_ids[vehicle]

    # --- evaluation -------------------------------------------------------------------------

    def evaluate(self, fixes: Sequence[Fix]) -> list[GeofenceTransition]:
        """Evaluate a batch (any order, any vehicles); return its transitions in time order."""
        stats = self.stats
        stats.batches += 1
        stats.fixes += len(fixes)
        clock = _Clock(stats)
        state = self._state
        index = state.index
        batch = prepare(
            fixes,
            state,
            default_accuracy_m=self.default_accuracy_m,
            max_accuracy_m=self.max_accuracy_m,
            stats=stats,
        )
        clock.lap("prepare")
        if batch is None:
            return []

        found = candidates(index, state, batch)
        stats.pairs += found.found
        clock.lap("query")

        pairs, walk_keys = measure(index, state, batch, found)
        clock.lap("classify")

        crossings = find_crossings(
            index,
            batch,
            pairs,
            inside_keys=state.keys()[0],
            walk_keys=walk_keys,
            max_gap_s=self.max_crossing_gap_s,
            max_speed_kmh=self.max_crossing_speed_kmh,
            stats=stats,
        )
        walk_keys = remeasure_crossed(index, batch, pairs, crossings, walk_keys)
        clock.lap("crossing")

        stats.walked += len(walk_keys)
        transitions = walk(state, batch, pairs, walk_keys=walk_keys, crossings=crossings)
        state.advance(batch.vehicle, batch.t, batch.lon, batch.lat)
        transitions.sort(key=_TIME_ORDER)
        stats.transitions += len(transitions)
        clock.lap("walk")
        return transitions
