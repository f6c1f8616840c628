"""The rules, applied to every (vehicle, fence) whose state a batch could change.

Margin-only keys (no dwell, no schedule, no crossing, nothing pending) are settled with array
operations: the state after each fix is a forward fill of the decisive fixes. The others are
walked fix by fix: dwell clocks, schedules and crossings need the order of events.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import partial
from itertools import repeat
from typing import TYPE_CHECKING, Final, TypeVar, cast

import numpy as np

from db.geofences.model import GeofenceState
from hub.geofences.crossing import NO_CROSSINGS
from hub.geofences.index import Depth, member, member_grouped
from hub.geofences.model import Cause, GeofenceTransition, TransitionKind
from hub.geofences.projection import point_from_plane
from hub.geofences.state import Stay

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from hub.geofences.batch import Batch
    from hub.geofences.crossing import Crossings
    from hub.geofences.index import BoolArray, ClassArray, IntArray
    from hub.geofences.pairs import Pairs
    from hub.geofences.state import FleetState

_FAR_OUT: Final = int(Depth.FAR_OUT)
_IN: Final = int(Depth.IN)
_DEEP: Final = int(Depth.DEEP)
_ENTER: Final = TransitionKind.ENTER
_EXIT: Final = TransitionKind.EXIT
_MARGIN: Final = Cause.MARGIN
# A transition's kind by the state it leads to (0 outside, 1 inside).
_KIND_OF: Final = (_EXIT, _ENTER)
_N = TypeVar("_N", bound=tuple[object, ...])


def _bulk(kind: type[_N], rows: Iterable[tuple[object, ...]]) -> Iterator[_N]:
    """NamedTuples from ready-made tuples of their fields.

    Without the Python-level `__new__` a NamedTuple class runs per item: a third cheaper,
    for the hundreds of transitions and states a batch can make.
    """
    return cast("Iterator[_N]", map(partial(tuple.__new__, kind), rows))


def walk(
    state: FleetState,
    batch: Batch,
    pairs: Pairs,
    *,
    walk_keys: IntArray,
    crossings: Crossings,
) -> list[GeofenceTransition]:
    """Apply the rules to every key that could change, in time order per key."""
    if len(walk_keys) == 0:
        return []
    index = state.index
    size = index.size
    # Margin-only keys (no dwell, no schedule, no crossing, nothing pending) are settled
    # with array operations; the others are walked fix by fix.
    slot = walk_keys % size
    plain = ~(index.stepwise[slot] | member(walk_keys, state.keys()[1]))
    if crossings:
        plain &= ~member(walk_keys, np.array(sorted(crossings), dtype=np.int64))
    # Only the pairs of keys being walked matter from here on (still grouped by key).
    mine = np.flatnonzero(member_grouped(pairs.key, walk_keys))
    pair_key, fix, classes = pairs.key[mine], pairs.fix[mine], pairs.classes[mine]
    walker = Walker(state, batch)
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
            walker.walk(vehicle, at, depth, crossings.get(key, NO_CROSSINGS))
    return walker.transitions


class Walker:
    """The rules, applied fix by fix to one (vehicle, fence) at a time."""

    def __init__(self, state: FleetState, batch: Batch) -> None:
        self.state = state
        self.batch = batch
        self.index = state.index
        self.names = state.vehicle_ids
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
        verdict[starts] = member(keys, self.state.keys()[0])
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
        state = self.state
        size = self.index.size
        vehicles = (keys // size).tolist()
        ids = list(map(self.ids.__getitem__, (keys % size).tolist()))
        stamps = self._stamps(fixes)
        entered = inside.tolist()
        lat, lon = self.batch.lat[fixes].tolist(), self.batch.lon[fixes].tolist()
        t = self.batch.t[fixes].tolist()
        stays_of, engaged = state.stays, state.engaged
        for k, (key, vehicle, geofence_id) in enumerate(
            zip(keys.tolist(), vehicles, ids, strict=True)
        ):
            if entered[k]:
                ts = stamps[k]
                stay = Stay(True, ts, None, None, ts, t[k], lat[k], lon[k])  # noqa: FBT003
                stays_of.setdefault(vehicle, {})[geofence_id] = stay
                engaged[key] = True
            else:
                stays = stays_of.get(vehicle)
                if stays is not None:
                    stays.pop(geofence_id, None)
                engaged.pop(key, None)
        state.dirty.update(
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
        state.key_arrays = None

    def _stamps(self, fixes: IntArray) -> list[datetime]:
        """The ts (as given) of some fixes of the sorted batch."""
        batch = self.batch
        return list(map(batch.stamps.__getitem__, batch.row[fixes].tolist()))

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
        stay = self.state.stay(vehicle, self.ids[slot])
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
            self.state.store(vehicle, slot, stay)

    def _outside(
        self, stay: Stay | None, j: int, where: int, *, crossed: tuple[float, float] | None
    ) -> tuple[Stay | None, bool]:
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

    def _new_stay(self, j: int) -> Stay:
        ts, lat, lon = self._fix(j)
        return Stay(False, None, None, None, ts, self.t[j], lat, lon)  # noqa: FBT003

    def _settle(self, stay: Stay, j: int, *, pending: float | None) -> None:
        """Record fix j as the one that last changed the state, with a dwell start or none."""
        ts, lat, lon = self._fix(j)
        stay.fix_ts, stay.fix_t, stay.fix_lat, stay.fix_lon = ts, self.t[j], lat, lon
        stay.pending_t = pending
        stay.pending_since = ts if pending is not None else None

    def _start_dwell(self, stay: Stay | None, j: int) -> Stay:
        stay = stay or self._new_stay(j)
        self._settle(stay, j, pending=self.t[j])
        return stay

    def _enter(self, stay: Stay | None, j: int, cause: Cause) -> Stay:
        stay = stay or self._new_stay(j)
        self._flip(stay, j, kind=TransitionKind.ENTER, cause=cause)
        return stay

    def _flip(
        self,
        stay: Stay,
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
        self, stay: Stay | None, j: int, where: int, fractions: tuple[float, float]
    ) -> tuple[Stay | None, bool]:
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
