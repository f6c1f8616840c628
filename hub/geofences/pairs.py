"""Which (fix, fence) pairs of a batch matter, their classes, and which states could change.

The index finds each fix's candidate fences; a pair's key is its (vehicle, fence), as in
`FleetState`. Pairs are kept grouped by key in time order: then every question about a
(vehicle, fence) is asked once per key and spread over its pairs, and later steps need no
sort or search per pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

import numpy as np

from hub.geofences.index import Depth, member, runs

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from hub.geofences.batch import Batch
    from hub.geofences.index import BoolArray, ClassArray, FenceIndex, FloatArray, IntArray
    from hub.geofences.state import FleetState

_T = TypeVar("_T", bound=np.generic)

_FAR_OUT: Final = int(Depth.FAR_OUT)
_IN: Final = int(Depth.IN)


@dataclass(slots=True)
class Pairs:
    """A batch's live pairs, grouped by key (vehicle * size + slot) in time order."""

    fix: IntArray
    slot: IntArray
    key: IntArray
    classes: ClassArray
    outside: FloatArray  # metres, at least (see FenceIndex.classify)


@dataclass(slots=True)
class Candidates:
    """The index's (fix, slot) pairs with their keys, grouped by key, in time order."""

    fix: IntArray
    slot: IntArray
    key: IntArray
    # Inside keys whose pairs were left out: deep in a vast fence all batch long.
    settled: IntArray
    # How many pairs the index found, those left out included.
    found: int


class Keys:
    """The keys of pairs grouped by key: where each key's run starts, and its length."""

    def __init__(self, batch: Batch, pair_key: IntArray, *, size: int) -> None:
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


def candidates(index: FenceIndex, state: FleetState, batch: Batch) -> Candidates:
    """The index's candidate pairs of a batch, less those nothing in it can move."""
    fix, slot = index.candidates(batch.columns)
    found = len(fix)
    fix, slot, settled = _skip_settled(index, state, batch, fix, slot)
    pair_key = batch.vehicle[fix] * index.size + slot
    # Fixes are sorted by vehicle and time, so by key and fix number is by key and time.
    # (lexsort: stable sorts of nearly sorted columns, several times faster than one
    # argsort of a combined key.)
    order = np.lexsort((fix, pair_key))
    return Candidates(fix[order], slot[order], pair_key[order], settled, found)


def _skip_settled(
    index: FenceIndex, state: FleetState, batch: Batch, fix: IntArray, slot: IntArray
) -> tuple[IntArray, IntArray, IntArray]:
    """Leave out the pairs of vehicles deep inside a vast fence they are inside.

    Nothing in the batch can move a vehicle inside a fence whose every fix is deep in
    it: such pairs would be classified only to be dropped as steady. For a vast fence
    (every car inside its service area, the bulk of all pairs) one disc test over the
    whole batch finds them. Returns the pairs left, and the keys of those left out.
    """
    settled: list[IntArray] = []
    if not index.vast:
        return fix, slot, np.empty(0, dtype=np.int64)
    inside_keys = state.keys()[0]
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


def measure(
    index: FenceIndex, state: FleetState, batch: Batch, found: Candidates
) -> tuple[Pairs, IntArray]:
    """Classify the candidates; keep the pairs of keys whose state could change.

    Returns those pairs, and every key that could change (sorted): some have no pair at
    all (a vehicle inside a fence that none of its fixes came near).
    """
    fix, slot, pair_key = found.fix, found.slot, found.key
    inside_keys, pending_keys = state.keys()
    keys = Keys(batch, pair_key, size=index.size)
    engaged = member(keys.keys, inside_keys)
    classes, outside = index.classify(
        fix,
        slot,
        batch.columns,
        pair_key=pair_key,
        fixes_of_vehicle=keys.spread(keys.fixes),
        engaged_inside=keys.spread(engaged),
    )
    walk_keys, walking = _keys_to_walk(
        index,
        keys,
        classes=classes,
        engaged=engaged,
        inside_keys=inside_keys,
        pending_keys=pending_keys,
        settled=found.settled,
    )
    # A vehicle inside a fence that nothing in the batch can move is done with it: the
    # bulk of all pairs (what `_skip_settled` left), dropped before the rest.
    live = np.flatnonzero(keys.spread(~engaged | walking))
    return Pairs(fix[live], slot[live], pair_key[live], classes[live], outside[live]), walk_keys


def _keys_to_walk(  # noqa: PLR0913 - one batch's arrays, by keyword
    index: FenceIndex,
    keys: Keys,
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
    vehicle = absent // index.size
    absent = absent[keys.batch.end[vehicle] - keys.batch.first[vehicle] > 0]
    walk_keys = np.unique(np.concatenate([keys.keys[walking], absent, pending_keys]))
    return walk_keys, walking
