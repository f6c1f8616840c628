"""Segment crossing: the straight steps between fixes that pass through a fence.

Sparse fixes (trackers report every 5-120 s) can straddle a fence. A step is worth a
geometric test only if it could pass the enter margin: the distance outside at its two ends
plus twice the margin must fit in its length (distance to a fence changes no faster than one
moves). So a step shorter than twice the grid's padding can only cross fences found near one
of its ends, and needs no query of its own; longer steps, and each vehicle's first step (from
the previous batch), are looked up in the grid, unless the fences near its end are all it
could reach. The steps left are tested exactly by the index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

from hub.geofences.index import QUERY_ACCURACY_M, Depth, Segments, member, member_grouped

if TYPE_CHECKING:
    from hub.geofences.batch import Batch
    from hub.geofences.index import BoolArray, ClassArray, FenceIndex, FloatArray, IntArray
    from hub.geofences.model import EngineStats
    from hub.geofences.pairs import Pairs

    # Candidate (step, fence) pairs with what is known of each end: (ending fix, slot,
    # start class, start distance outside, end class, end distance outside).
    _StepPairs = tuple[IntArray, IntArray, ClassArray, FloatArray, ClassArray, FloatArray]

# Per key, the steps (by ending fix) that pass through the fence, with how far along each
# it reaches the enter margin and leaves the exit margin.
Crossings = dict[int, dict[int, tuple[float, float]]]
NO_CROSSINGS: Final[dict[int, tuple[float, float]]] = {}

# Longest piece of a step looked up in the index as one box. A long diagonal step's single
# box is mostly far from it (as a corridor's is): a kilometre is a few cells of the grid
# downtown, and a step is at most 21 km long (250 km/h for 5 minutes), so 21 pieces.
STEP_PIECE_M: Final = 1_000.0
# Most pieces a step is cut into, whatever the engine's limits make its longest.
MAX_STEP_PIECES: Final = 64

_FAR_OUT: Final = int(Depth.FAR_OUT)
_IN: Final = int(Depth.IN)
_DEEP: Final = int(Depth.DEEP)


def find_crossings(  # noqa: PLR0913 - one batch's arrays, by keyword
    index: FenceIndex,
    batch: Batch,
    pairs: Pairs,
    *,
    inside_keys: IntArray,
    walk_keys: IntArray,
    max_gap_s: float,
    max_speed_kmh: float,
    stats: EngineStats,
) -> Crossings:
    """Steps that pass a fence's enter margin: key -> ending fix -> (into, out) fractions."""
    size = index.size
    if size == 0:
        return {}
    steps = Steps(index, batch, pairs, max_gap_s=max_gap_s, max_speed_kmh=max_speed_kmh)
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
    stats.crossing_checks += len(ask)
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


def remeasure_crossed(
    index: FenceIndex, batch: Batch, pairs: Pairs, crossings: Crossings, walk_keys: IntArray
) -> IntArray:
    """Add the crossed keys to those walked, and make their pairs' classes exact.

    A crossing moves a vehicle the classes took as steady: its fixes are measured in full
    (a fix after a crossing may be far enough out to exit, or deep enough in).
    """
    if not crossings:
        return walk_keys
    crossed = np.array(sorted(crossings), dtype=np.int64)
    redo = np.flatnonzero(member_grouped(pairs.key, crossed))
    if len(redo):
        some = pairs.classes[redo]
        index.refine(pairs.fix[redo], pairs.slot[redo], batch.columns, some)
        pairs.classes[redo] = some
    return np.union1d(walk_keys, crossed)


class PairLookup:
    """A pair's class and distance outside by its cell (key * fixes in batch + fix)."""

    def __init__(self, pairs: Pairs, count: int) -> None:
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


class Steps:
    """One batch's steps, for segment crossing: which to test, against which fences."""

    def __init__(
        self,
        index: FenceIndex,
        batch: Batch,
        pairs: Pairs,
        *,
        max_gap_s: float,
        max_speed_kmh: float,
    ) -> None:
        columns = batch.columns
        self.index = index
        self.batch = batch
        self.pairs = pairs
        self.lookup = PairLookup(pairs, len(batch.t))
        self.length_m = np.hypot(columns.x - batch.prev_x, columns.y - batch.prev_y) * columns.scale
        gap_s = batch.t - batch.prev_t
        self.usable = (
            (gap_s <= max_gap_s)
            # Faster than a car goes: one of the fixes is off (a jump the filters let by,
            # or a step across the antimeridian, which the plane takes the long way round).
            & (self.length_m <= gap_s * (max_speed_kmh / 3.6))
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
            *self.queried(far & ~near_end, inside_keys),
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

    def queried(self, steps: BoolArray, inside_keys: IntArray) -> list[_StepPairs]:
        """Steps with the fences the grid finds about them (by the boxes of their pieces)."""
        far = np.flatnonzero(steps)
        if len(far) == 0:
            return []
        batch = self.batch
        size = self.index.size
        piece, (ax, ay, bx, by) = self._pieces(far)
        found, fence = self.index.query(
            np.minimum(ax, bx), np.minimum(ay, by), np.maximum(ax, bx), np.maximum(ay, by)
        )
        step = far[piece[found]]
        if len(piece) > len(far):
            # A fence near several pieces of a step is found by each.
            _, first = np.unique(step * size + fence, return_index=True)
            step, fence = step[first], fence[first]
        key = batch.vehicle[step] * size + fence
        end_class, end_out = self.lookup.lookup(key, step, missing_m=self.pad_m)
        start_class, start_out = self.lookup.lookup(key, step - 1, missing_m=self.pad_m)
        carried = ~self.in_batch[step]
        start_class[carried] = self._carried_class(key[carried], inside_keys)
        start_out[carried] = 0.0
        return [(step, fence, start_class, start_out, end_class, end_out)]

    def _pieces(
        self, far: IntArray
    ) -> tuple[IntArray, tuple[FloatArray, FloatArray, FloatArray, FloatArray]]:
        """Steps cut into pieces of at most STEP_PIECE_M: each piece's step, and its ends.

        A piece's ends are computed once and shared with its neighbours, and a step's own
        ends are kept exactly: together the pieces cover the step.
        """
        batch = self.batch
        count = np.clip(np.ceil(self.length_m[far] / STEP_PIECE_M), 1, MAX_STEP_PIECES)
        if count.max() == 1:
            # No step to cut (the usual batch): each is its own piece.
            return np.arange(len(far)), (
                batch.prev_x[far],
                batch.prev_y[far],
                batch.columns.x[far],
                batch.columns.y[far],
            )
        count = count.astype(np.int64)
        piece = np.repeat(np.arange(len(far)), count)
        k = np.arange(len(piece)) - np.repeat(np.cumsum(count) - count, count)
        step = far[piece]
        ax, ay = batch.prev_x[step], batch.prev_y[step]
        dx, dy = batch.columns.x[step] - ax, batch.columns.y[step] - ay
        # Fractions along the step: k / n at the start of piece k, (k + 1) / n at its end.
        start, end = k / count[piece], (k + 1) / count[piece]
        last = k + 1 == count[piece]
        return piece, (
            ax + start * dx,
            ay + start * dy,
            np.where(last, batch.columns.x[step], ax + end * dx),
            np.where(last, batch.columns.y[step], ay + end * dy),
        )

    @staticmethod
    def _carried_class(keys: IntArray, inside_keys: IntArray) -> ClassArray:
        # A first step starts where the previous batch left the vehicle: its state says
        # whether it was inside; how far outside it was is not known (0).
        classes: ClassArray = np.where(member(keys, inside_keys), _DEEP, _FAR_OUT).astype(np.int8)
        return classes
