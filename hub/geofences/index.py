"""The active fences of one load: their shapes, a grid of their boxes, vectorised measurements.

A whole batch of fixes is measured at once. The grid finds, for every fix, the fences that
may be within its reach (the largest exit margin plus its accuracy), by bounding boxes
only: that is several times cheaper than testing shapes, and the exact tests that follow
are vectorised by kind. Each (fix, fence) pair gets a `Depth` class: the four answers the
hysteresis rules need, and nothing more. A fence the grid did not return for a fix is
outside by more than any exit margin: `FAR_OUT`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Final, cast

import numpy as np
import shapely
from numpy.typing import NDArray

from hub.geofences.grid import BoxGrid
from hub.geofences.projection import from_plane, metres_per_unit, to_plane
from hub.geofences.shapes import (
    INSCRIBED_TOLERANCE,
    QUAD_SEGS,
    FenceShape,
    ShapeKind,
    build_shape,
    circle_distances_m,
    circle_polygons,
    point_to_segment,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from db.geofences.model import Geofence, Schedule

log = logging.getLogger(__name__)

IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float64]
ClassArray = NDArray[np.int8]
GeomArray = NDArray[np.object_]

# Accuracy up to which a fix is looked up in the grid as a bare point (the grid's boxes are
# grown by this much more than the largest exit margin). A consumer GPS reports 3-15 m under
# open sky and 20-50 m in urban canyons; a worse fix is rare and gets a box of its own.
QUERY_ACCURACY_M: Final = 50.0
# Most facets an area may have to be measured with arrays rather than by GEOS, which finds
# the nearest through an index of them (and needs a Point). The arrays' cost grows with the
# facets, GEOS's barely; on the benchmark's areas (24 facets typically, 90% under 40) the
# arrays cost less up to this many at least.
MAX_FACETS: Final = 64
# The disc shortcuts measure with the fix's scale; across a disc of up to 50 km the scale
# drifts by under 0.5% (tan(lat) * r / R), so their depths are taken 1% short.
_DISC_SAFETY: Final = 0.99
# Steps tested against areas and corridors at once, at most: each is a linestring (and
# maybe an intersection), so this bounds the memory of a batch of long steps downtown.
_SHAPES_AT_ONCE: Final = 4096
# How far from a step's line (plane units: about a micrometre) a box still counts as met:
# the box test that spares exact ones must never drop a step that touches a shape, whatever
# the rounding of its arithmetic.
_ON_THE_LINE: Final = 1e-6
# Fraction of a step past which a crossing counts as reaching its end (floating point).
_END_OF_STEP: Final = 1 - 1e-9
# Schedule answers remembered per (fence, minute); windows are whole minutes, so one answer
# holds for its minute. Cleared past this many, which a day of a few hundred scheduled
# fences does not reach.
_SCHEDULE_CACHE_LIMIT: Final = 100_000


class Depth(IntEnum):
    """Where a fix is relative to one fence, in the terms of its hysteresis."""

    FAR_OUT = 0  # outside by at least the exit margin plus the fix's accuracy
    OUT = 1  # outside, but not that far
    IN = 2  # inside (the boundary counts), not as deep as the enter margin plus accuracy
    DEEP = 3  # inside by at least the enter margin plus the fix's accuracy


def _steady(
    pair_key: IntArray,
    inside: BoolArray,
    engaged_inside: BoolArray,
    fixes_of_vehicle: IntArray,
    unsettled: BoolArray,
) -> BoolArray:
    """Pairs of a (vehicle, fence) that keeps its state all batch: all in, or all out.

    Pairs come grouped by key. Only the steadiness of `unsettled` pairs matters (a settled
    pair's class is exact already), so none is computed when there are none.
    """
    if not unsettled.any():
        steady: BoolArray = np.ones(len(pair_key), dtype=bool)
        return steady
    starts = runs(pair_key)
    pairs = np.diff(starts, append=len(pair_key))
    inside_pairs = np.add.reduceat(inside, starts, dtype=np.int64)
    all_inside = (pairs == fixes_of_vehicle[starts]) & (inside_pairs == pairs)
    return np.repeat(np.where(engaged_inside[starts], all_inside, inside_pairs == 0), pairs)


def runs(keys: IntArray) -> IntArray:
    """Where each run of equal values starts, in an array grouped by value."""
    if len(keys) == 0:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))


def member_grouped(values: IntArray, sorted_keys: IntArray) -> BoolArray:
    """`member` for values grouped by value (equal ones together): one search per run."""
    starts = runs(values)
    return np.repeat(member(values[starts], sorted_keys), np.diff(starts, append=len(values)))


def member(values: IntArray, sorted_keys: IntArray) -> BoolArray:
    """Whether each value is one of `sorted_keys` (sorted, unique): np.isin, without a sort."""
    found: BoolArray = np.zeros(len(values), dtype=bool)
    if len(sorted_keys) and len(values):
        where = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
        found = sorted_keys[where] == values
    return found


def _polar_scale(bounds: FloatArray) -> FloatArray:
    """Ground metres per plane unit at each box's edge nearest a pole (the fewest)."""
    _, lat_low = from_plane(bounds[:, 0], bounds[:, 1])
    _, lat_high = from_plane(bounds[:, 2], bounds[:, 3])
    return metres_per_unit(np.maximum(np.abs(lat_low), np.abs(lat_high)))


def _floats(values: list[float]) -> FloatArray:
    return np.array(values, dtype=float)


def _objects(items: list[shapely.Geometry | None]) -> GeomArray:
    array: GeomArray = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _rim_m(radius: FloatArray, gap: FloatArray, scale: FloatArray) -> FloatArray:
    """Metres from points `gap` (plane units) from a disc's centre out to its rim, taken short."""
    rim: FloatArray = (radius - gap) * (scale * _DISC_SAFETY)
    return rim


def _from_depth(
    depth: NDArray[np.float64], need_enter: NDArray[np.float64], need_exit: NDArray[np.float64]
) -> ClassArray:
    classes: ClassArray = np.full(depth.shape, Depth.OUT, dtype=np.int8)
    classes[-depth >= need_exit] = Depth.FAR_OUT
    classes[depth >= 0] = Depth.IN
    classes[depth >= need_enter] = Depth.DEEP
    return classes


class FenceIndex:
    """Fences in slots 0..size-1, with per-slot arrays and one grid over their outlines.

    The grid holds each outline's bounding box grown by `query_pad_m` (the largest exit
    margin plus `QUERY_ACCURACY_M`), so most fixes are looked up as bare points; a fix
    whose accuracy is worse is looked up with a box of its own reach. Immutable once built:
    build it on any thread and hand it to the engine.
    """

    def __init__(self, geofences: Iterable[Geofence]) -> None:
        shapes: list[FenceShape] = []
        for fence in geofences:
            try:
                shapes.append(build_shape(fence))
            except (shapely.errors.ShapelyError, ValueError):
                # Validated fences build; a bug here must cost one fence, not the hub.
                log.exception("geofence %d could not be built and is ignored", fence.id)
        self.shapes = shapes
        self.size = len(shapes)
        fences = [shape.fence for shape in shapes]
        self.ids: IntArray = np.array([f.id for f in fences], dtype=np.int64)
        self.slot_of = {f.id: slot for slot, f in enumerate(fences)}
        self.geofence_ids = [f.id for f in fences]
        self.fence_kinds = [f.kind for f in fences]
        self.kinds: NDArray[np.int8] = np.array([s.kind for s in shapes], dtype=np.int8)
        self.enter_m = _floats([f.enter_margin_m for f in fences])
        self.exit_m = _floats([f.exit_margin_m for f in fences])
        self.dwell_s = [f.dwell_s for f in fences]
        self.reach_m = _floats([s.reach_m for s in shapes])
        self.centre_lon = _floats([s.centre_lon for s in shapes])
        self.centre_lat = _floats([s.centre_lat for s in shapes])
        self.centre_x, self.centre_y = to_plane(self.centre_lon, self.centre_lat)
        self.scale = _floats([s.scale for s in shapes])
        self._derive([s.geometry for s in shapes], _floats([s.least_scale for s in shapes]))
        self.schedules: list[Schedule | None] = [f.schedule for f in fences]
        # Fences whose rules need time (dwell, schedule): walked fix by fix, not in bulk.
        self.stepwise: BoolArray = np.array(
            [f.dwell_s > 0 or f.schedule is not None for f in fences], dtype=bool
        )
        self.max_exit_m = float(self.exit_m.max()) if self.size else 0.0
        self.min_crossing_depth_m = float(self.crossing_depth_m.min()) if self.size else 0.0
        self.query_pad_m = self.max_exit_m + QUERY_ACCURACY_M
        bounds, self._owner = self._padded_boxes()
        # Grid boxes that are one piece of a corridor: a fix near a joint finds two.
        self._piece: BoolArray = self.kinds[self._owner] == ShapeKind.CORRIDOR
        self._grid = BoxGrid(bounds)
        # Areas too big for the grid's cells, like a service area: most fixes are deep
        # inside them, which one disc test for the whole batch shows (see `deep_in`).
        big = self._owner[self._grid.big]
        self.vast: list[int] = np.unique(big[self.kinds[big] == ShapeKind.AREA]).tolist()
        self._active: dict[tuple[int, int], bool] = {}

    def _derive(self, geometries: list[shapely.Geometry | None], least_scale: FloatArray) -> None:
        """Outlines, boundaries, discs, eroded and dilated shapes: every fence at once."""
        size = self.size
        area = np.flatnonzero(self.kinds == ShapeKind.AREA)
        circle = np.flatnonzero(self.kinds == ShapeKind.CIRCLE)
        corridor = np.flatnonzero(self.kinds == ShapeKind.CORRIDOR)
        drawn = _objects(geometries)
        scale = self.scale
        # A step crosses a circle or corridor by passing this close to its centre (line):
        # the radius or half width less the enter margin, or, when the margin eats it
        # all, anywhere through it; and must pass this deep into a fence.
        inward = self.reach_m - self.enter_m
        self.crossing_reach_m = np.where(inward > 0, inward, self.reach_m)
        self.crossing_depth_m = np.where(inward > 0, self.enter_m, 0.0)

        self.outlines = _objects([None] * size)
        self.boundaries = _objects([None] * size)
        self.lines = _objects([None] * size)
        self.eroded = _objects([None] * size)
        self.dilated = _objects([None] * size)
        self.disc_x, self.disc_y = np.full(size, np.nan), np.full(size, np.nan)
        self.inner_radius, self.outer_radius = np.full(size, np.nan), np.full(size, np.nan)
        if len(circle):
            self.outlines[circle] = circle_polygons(
                self.centre_lon[circle], self.centre_lat[circle], self.reach_m[circle]
            )
        if len(corridor):
            lines = drawn[corridor]
            self.lines[corridor] = lines
            self.outlines[corridor] = shapely.buffer(
                lines, self.reach_m[corridor] / least_scale[corridor], quad_segs=QUAD_SEGS
            )
            self.eroded[corridor] = shapely.buffer(
                lines, self.crossing_reach_m[corridor] / scale[corridor], quad_segs=QUAD_SEGS
            )
            self.dilated[corridor] = shapely.buffer(
                lines,
                (self.reach_m[corridor] + self.exit_m[corridor]) / scale[corridor],
                quad_segs=QUAD_SEGS,
            )
        rings, ring_slot = _rings(drawn[area], area)
        self.facets = _Facets(
            np.concatenate([self.lines[corridor], rings]),
            np.concatenate([corridor, ring_slot]),
            size,
        )
        if len(area):
            polygons = drawn[area]
            self.outlines[area] = polygons
            self.boundaries[area] = shapely.boundary(polygons)
            shrunk = shapely.buffer(
                polygons, -self.enter_m[area] / scale[area], quad_segs=QUAD_SEGS
            )
            # A fence narrower than twice its margin: any passage through it counts.
            gone = shapely.is_empty(shrunk)
            shrunk[gone] = polygons[gone]
            self.crossing_depth_m[area] = np.where(gone, 0.0, self.enter_m[area])
            self.eroded[area] = shrunk
            self.dilated[area] = shapely.buffer(
                polygons, self.exit_m[area] / scale[area], quad_segs=QUAD_SEGS
            )
            self._discs(area, polygons)
        shapely.prepare(self.outlines)
        shapely.prepare(self.boundaries)
        shapely.prepare(self.lines)
        shapely.prepare(self.eroded)
        shapely.prepare(self.dilated)
        self.eroded_bounds: FloatArray = shapely.bounds(self.eroded)

    def _discs(self, area: IntArray, polygons: GeomArray) -> None:
        """Each area's largest inscribed disc, and the disc about its centre holding it all."""
        bounds = shapely.bounds(polygons)
        size = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
        inscribed = shapely.maximum_inscribed_circle(polygons, size * INSCRIBED_TOLERANCE)
        centres = shapely.get_coordinates(shapely.get_point(inscribed, 0))
        self.disc_x[area], self.disc_y[area] = centres[:, 0], centres[:, 1]
        self.inner_radius[area] = shapely.length(inscribed)
        coords, owner = shapely.get_coordinates(polygons, return_index=True)
        reach = np.hypot(coords[:, 0] - centres[owner, 0], coords[:, 1] - centres[owner, 1])
        outer = np.zeros(len(area))
        np.maximum.at(outer, owner, reach)
        self.outer_radius[area] = outer

    def _padded_boxes(self) -> tuple[FloatArray, IntArray]:
        """The grid's boxes (bounds) and the slot of each: one per fence, one per corridor piece.

        A long corridor's box is mostly far from it (a diagonal road's box is a square),
        so each of its straight pieces gets a box of its own.
        """
        slots = np.flatnonzero(self.kinds != ShapeKind.CORRIDOR)
        bounds = shapely.bounds(self.outlines[slots]).reshape(-1, 4)
        pad = self.query_pad_m / _polar_scale(bounds)
        owner = [slots]
        lows_x, lows_y = [bounds[:, 0] - pad], [bounds[:, 1] - pad]
        highs_x, highs_y = [bounds[:, 2] + pad], [bounds[:, 3] + pad]
        for slot in np.flatnonzero(self.kinds == ShapeKind.CORRIDOR).tolist():
            coords = shapely.get_coordinates(self.lines[slot])
            x0, y0, x1, y1 = coords[:-1, 0], coords[:-1, 1], coords[1:, 0], coords[1:, 1]
            pieces = np.column_stack(
                [np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)]
            )
            reach = (self.reach_m[slot] + self.query_pad_m) / _polar_scale(pieces)
            owner.append(np.full(len(pieces), slot))
            lows_x.append(pieces[:, 0] - reach)
            lows_y.append(pieces[:, 1] - reach)
            highs_x.append(pieces[:, 2] + reach)
            highs_y.append(pieces[:, 3] + reach)
        bounds = np.column_stack(
            [
                np.concatenate(lows_x),
                np.concatenate(lows_y),
                np.concatenate(highs_x),
                np.concatenate(highs_y),
            ]
        )
        return bounds, np.concatenate(owner).astype(np.int64)

    def query(
        self, low_x: FloatArray, low_y: FloatArray, high_x: FloatArray, high_y: FloatArray
    ) -> tuple[IntArray, IntArray]:
        """(box, slot) pairs where a query box meets a fence's padded box: each pair once."""
        return self._once(*self._grid.query_boxes(low_x, low_y, high_x, high_y))

    def _once(self, item: IntArray, box: IntArray) -> tuple[IntArray, IntArray]:
        """(item, slot) pairs of (item, box) pairs: a fence found by several boxes once."""
        slot = self._owner[box]
        twice = self._piece[box]
        if twice.any():
            # Pieces of one corridor found by one geometry: keep one pair.
            pieces = np.flatnonzero(twice)
            _, first = np.unique(item[pieces] * self.size + slot[pieces], return_index=True)
            keep = np.concatenate([np.flatnonzero(~twice), pieces[first]])
            item, slot = item[keep], slot[keep]
        return item, slot

    def geofence(self, slot: int) -> Geofence:
        """The fence in a slot."""
        return self.shapes[slot].fence

    def geofence_id(self, slot: int) -> int:
        """The id of the fence in a slot."""
        return self.geofence_ids[slot]

    def is_active(self, slot: int, ts: float) -> bool:
        """Whether the fence's schedule is open at `ts` (epoch seconds)."""
        schedule = self.schedules[slot]
        if schedule is None:
            return True
        minute = int(ts // 60)
        key = (slot, minute)
        known = self._active.get(key)
        if known is None:
            if len(self._active) >= _SCHEDULE_CACHE_LIMIT:
                self._active.clear()
            known = self._active[key] = schedule.is_active(datetime.fromtimestamp(ts, UTC))
        return known

    def candidates(self, columns: FixColumns) -> tuple[IntArray, IntArray]:
        """(fix, slot) pairs: every fence that may be within the fix's reach, and some more.

        A fix's reach is the largest exit margin plus its accuracy: a fence further away
        is outside by more than any exit margin, so it is FAR_OUT without looking.
        """
        if self.size == 0 or len(columns.x) == 0:
            empty: IntArray = np.empty(0, dtype=np.int64)
            return empty, empty.copy()
        fix, slot = self._once(*self._grid.query_points(columns.x, columns.y))
        vague = np.flatnonzero(columns.acc > QUERY_ACCURACY_M)
        if len(vague):
            x, y = columns.x[vague], columns.y[vague]
            reach = (self.max_exit_m + columns.acc[vague]) / columns.scale[vague]
            more, found = self.query(x - reach, y - reach, x + reach, y + reach)
            # Those fixes' point answers are contained in their box answers.
            keep = columns.acc[fix] <= QUERY_ACCURACY_M
            fix = np.concatenate([fix[keep], vague[more]])
            slot = np.concatenate([slot[keep], found])
        return fix, slot

    def deep_in(self, slot: int, columns: FixColumns) -> BoolArray:
        """Which fixes of a batch `classify` finds DEEP in an area by its inscribed disc."""
        gap = np.hypot(columns.x - self.disc_x[slot], columns.y - self.disc_y[slot])
        depth = _rim_m(self.inner_radius[slot], gap, columns.scale)
        deep: BoolArray = depth >= self.enter_m[slot] + columns.acc
        return deep

    def classify(  # noqa: PLR0913 - one batch's arrays
        self,
        fix: IntArray,
        slot: IntArray,
        columns: FixColumns,
        *,
        pair_key: IntArray,
        fixes_of_vehicle: IntArray,
        engaged_inside: BoolArray,
    ) -> tuple[ClassArray, FloatArray]:
        """The `Depth` of each (fix, slot) pair, and how far outside it is at least (metres).

        Areas are measured only as far as the rules need: a vehicle inside the fence
        before the batch with every fix of the batch inside it cannot enter, so its fixes
        need no depth; one outside with every fix outside cannot exit, so its fixes need
        no distance. `pair_key` names each pair's (vehicle, fence), `fixes_of_vehicle`
        counts the batch's fixes of its vehicle, `engaged_inside` marks vehicles inside the
        fence before the batch. The distance outside is exact for circles and corridors, a
        lower bound for areas (0 when inside or not measured); segment crossing uses it to
        rule steps out. `refine` completes the classes of steady pairs when needed.
        """
        classes: ClassArray = np.full(len(fix), Depth.OUT, dtype=np.int8)
        outside: FloatArray = np.zeros(len(fix))
        if len(fix) == 0:
            return classes, outside
        kinds = self.kinds[slot]
        need_enter = self.enter_m[slot] + columns.acc[fix]
        need_exit = self.exit_m[slot] + columns.acc[fix]

        pick = np.flatnonzero(kinds == ShapeKind.CIRCLE)
        if len(pick):
            f, s = fix[pick], slot[pick]
            distance = circle_distances_m(
                columns.lon[f], columns.lat[f], self.centre_lon[s], self.centre_lat[s]
            )
            depth = self.reach_m[s] - distance
            classes[pick] = _from_depth(depth, need_enter[pick], need_exit[pick])
            outside[pick] = np.maximum(-depth, 0.0)

        pick = np.flatnonzero(kinds == ShapeKind.CORRIDOR)
        if len(pick):
            f, s = fix[pick], slot[pick]
            distance = self.facets.distances(s, columns.x[f], columns.y[f]) * columns.scale[f]
            depth = self.reach_m[s] - distance
            classes[pick] = _from_depth(depth, need_enter[pick], need_exit[pick])
            outside[pick] = np.maximum(-depth, 0.0)

        pick = np.flatnonzero(kinds == ShapeKind.AREA)
        if len(pick):
            classes[pick], outside[pick] = self._classify_areas(
                fix[pick],
                slot[pick],
                columns,
                pair_key=pair_key[pick],
                fixes_of_vehicle=fixes_of_vehicle[pick],
                engaged_inside=engaged_inside[pick],
                need_enter=need_enter[pick],
                need_exit=need_exit[pick],
            )
        return classes, outside

    def _classify_areas(  # noqa: PLR0913 - the slices of one batch for one kind
        self,
        fix: IntArray,
        slot: IntArray,
        columns: FixColumns,
        *,
        pair_key: IntArray,
        fixes_of_vehicle: IntArray,
        engaged_inside: BoolArray,
        need_enter: FloatArray,
        need_exit: FloatArray,
    ) -> tuple[ClassArray, FloatArray]:
        classes: ClassArray = np.full(len(fix), Depth.OUT, dtype=np.int8)
        x, y, scale = columns.x[fix], columns.y[fix], columns.scale[fix]
        # First the discs: within the inner one a fix is inside by at least the rest of its
        # radius; beyond the outer one, outside by at least the distance to it.
        gap = np.hypot(x - self.disc_x[slot], y - self.disc_y[slot])
        depth = _rim_m(self.inner_radius[slot], gap, scale)
        clear = _rim_m(self.outer_radius[slot], gap, scale)
        inner = depth >= 0
        outer = clear < 0
        outside: FloatArray = np.maximum(-clear, 0.0)
        classes[inner] = Depth.IN
        classes[inner & (depth >= need_enter)] = Depth.DEEP
        classes[outer & (-clear >= need_exit)] = Depth.FAR_OUT
        # Then the exact tests, only where the discs left a question that matters.
        unsure = np.flatnonzero(~inner & ~outer)
        if len(unsure):
            f = fix[unsure]
            inside = shapely.intersects_xy(self.outlines[slot[unsure]], columns.x[f], columns.y[f])
            classes[unsure[inside]] = Depth.IN
        inside = classes >= Depth.IN
        # A pair whose vehicle is steady (inside all batch, or outside all batch) needs no
        # more: it cannot enter again, or cannot exit. The others need their exact class.
        unsettled = np.where(inside, classes != Depth.DEEP, classes != Depth.FAR_OUT)
        steady = _steady(pair_key, inside, engaged_inside, fixes_of_vehicle, unsettled)
        self._settle_areas(classes, fix, slot, columns, wanted=~steady)
        return classes, outside

    def refine(
        self, fix: IntArray, slot: IntArray, columns: FixColumns, classes: ClassArray
    ) -> None:
        """Make exact, in place, the classes `classify` left short for steady pairs.

        Only an area's IN (maybe DEEP) and OUT (maybe FAR_OUT) can be short; how far
        outside a pair is, `classify` measured in full for every pair.
        """
        pick = np.flatnonzero(
            (self.kinds[slot] == ShapeKind.AREA) & ((classes == Depth.IN) | (classes == Depth.OUT))
        )
        if len(pick):
            some = classes[pick]
            self._settle_areas(some, fix[pick], slot[pick], columns, wanted=None)
            classes[pick] = some

    def _settle_areas(
        self,
        classes: ClassArray,
        fix: IntArray,
        slot: IntArray,
        columns: FixColumns,
        *,
        wanted: BoolArray | None,
    ) -> None:
        """Settle, in place, IN as DEEP or not and OUT as FAR_OUT or not (`wanted` pairs)."""
        acc = columns.acc[fix]
        inside = classes >= Depth.IN
        # Deep enough to enter? Depth is the distance to the boundary.
        ask = inside & (classes != Depth.DEEP)
        ask = np.flatnonzero(ask if wanted is None else ask & wanted)
        if len(ask):
            reach = (self.enter_m[slot[ask]] + acc[ask]) / columns.scale[fix[ask]]
            near = self._within(self.boundaries, slot[ask], fix[ask], columns, reach)
            classes[ask[(reach <= 0) | ~near]] = Depth.DEEP
        # Far enough to exit?
        ask = ~inside & (classes != Depth.FAR_OUT)
        ask = np.flatnonzero(ask if wanted is None else ask & wanted)
        if len(ask):
            reach = (self.exit_m[slot[ask]] + acc[ask]) / columns.scale[fix[ask]]
            near = self._within(self.outlines, slot[ask], fix[ask], columns, reach)
            classes[ask[~near]] = Depth.FAR_OUT

    def _within(
        self,
        shapes: GeomArray,
        slot: IntArray,
        fix: IntArray,
        columns: FixColumns,
        reach: FloatArray,
    ) -> BoolArray:
        """`shapely.dwithin(shapes[slot], fix, reach)`, for fixes on the boundary or outside.

        Either way the distance is to the area's rings: measured here for areas of a few
        dozen facets, by GEOS's index for bigger ones. (For a point on the boundary and a
        distance below 0 the two differ; `reach` is never negative.)
        """
        near: BoolArray = np.zeros(len(slot), dtype=bool)
        few = self.facets.count[slot] <= MAX_FACETS
        pick = np.flatnonzero(few)
        if len(pick):
            f = fix[pick]
            distance = self.facets.distances(slot[pick], columns.x[f], columns.y[f])
            near[pick] = distance <= reach[pick]
        pick = np.flatnonzero(~few)
        if len(pick):
            near[pick] = shapely.dwithin(  # type: ignore[call-overload] # the stubs allow one distance, shapely takes an array
                shapes[slot[pick]], columns.points(fix[pick]), reach[pick]
            )
        return near

    def _cross_shapes(  # noqa: PLR0913, PLR0917 - the columns of `crossings`, filled in place
        self,
        lines: GeomArray,
        pick: IntArray,
        slot: IntArray,
        step: tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray],
        exits: BoolArray,
        hits: BoolArray,
        into: FloatArray,
        out: FloatArray,
    ) -> None:
        """`crossings` for areas and corridors: the steps' lines against their shapes."""
        ax, ay, dx, dy, length2 = step
        s = slot[pick]
        hit = shapely.intersects(self.eroded[s], lines)
        hits[pick] = hit
        found = pick[hit]
        if len(found):
            into[found] = _fractions(
                shapely.intersection(lines[hit], self.eroded[s[hit]]),
                (ax[found], ay[found], dx[found], dy[found], length2[found]),
                first=True,
            )
        leave = exits[found]
        if leave.any():
            gone = found[leave]
            out[gone] = _fractions(
                shapely.intersection(lines[hit][leave], self.dilated[slot[gone]]),
                (ax[gone], ay[gone], dx[gone], dy[gone], length2[gone]),
                first=False,
            )

    def contains(self, slot: IntArray, x: FloatArray, y: FloatArray) -> BoolArray:
        """Whether each plane point is inside (at any depth) its fence."""
        inside: BoolArray = np.zeros(len(slot), dtype=bool)
        kinds = self.kinds[slot]
        pick = np.flatnonzero(kinds == ShapeKind.CIRCLE)
        if len(pick):
            s = slot[pick]
            gap = np.hypot(x[pick] - self.centre_x[s], y[pick] - self.centre_y[s])
            inside[pick] = gap * self.scale[s] <= self.reach_m[s]
        pick = np.flatnonzero(kinds != ShapeKind.CIRCLE)
        if len(pick):
            s = slot[pick]
            inside[pick] = shapely.intersects_xy(self.outlines[s], x[pick], y[pick])
            corridors = pick[kinds[pick] == ShapeKind.CORRIDOR]
            if len(corridors):
                s = slot[corridors]
                gap = self.facets.distances(s, x[corridors], y[corridors]) * self.scale[s]
                inside[corridors] = gap <= self.reach_m[s]
        return inside

    def crossings(
        self, segments: Segments, pair_segment: IntArray, slot: IntArray, *, exits: BoolArray
    ) -> tuple[BoolArray, FloatArray, FloatArray]:
        """Which steps pass at least the enter margin inside their fence, and where.

        Returns (hit, into, out): for a hit, how far along the step (0..1) it first reaches
        the enter margin, and last is within the exit margin. `out` is only measured where
        `exits` says the step may end outside far enough to exit (nan elsewhere): for an
        area or a corridor that is a polygon overlay, the dearest test there is.
        """
        count = len(slot)
        hits: BoolArray = np.zeros(count, dtype=bool)
        into: FloatArray = np.full(count, np.nan)
        out: FloatArray = np.full(count, np.nan)
        kinds = self.kinds[slot]
        ax, ay = segments.ax[pair_segment], segments.ay[pair_segment]
        dx, dy = segments.bx[pair_segment] - ax, segments.by[pair_segment] - ay
        length2 = dx * dx + dy * dy

        pick = np.flatnonzero(kinds == ShapeKind.CIRCLE)
        if len(pick):
            # Where |a + f d - centre| = radius: the roots of a quadratic in f.
            s = slot[pick]
            cx, cy = ax[pick] - self.centre_x[s], ay[pick] - self.centre_y[s]
            a = length2[pick]
            b = 2 * (cx * dx[pick] + cy * dy[pick])
            c = cx * cx + cy * cy
            inner = self.crossing_reach_m[s] / self.scale[s]
            outer = (self.reach_m[s] + self.exit_m[s]) / self.scale[s]
            with np.errstate(invalid="ignore"):
                root_in = np.sqrt(b * b - 4 * a * (c - inner * inner))
                root_out = np.sqrt(b * b - 4 * a * (c - outer * outer))
                first = (-b - root_in) / (2 * a)
                last = (-b + root_in) / (2 * a)
                hit = (first <= 1) & (last >= 0)  # nan (no root: never that close) is False
            hits[pick] = hit
            into[pick] = np.clip(first, 0.0, 1.0)
            out[pick] = np.clip((-b + root_out) / (2 * a), 0.0, 1.0)

        pick = np.flatnonzero(kinds != ShapeKind.CIRCLE)
        if len(pick):
            # Boxes first: the grid's boxes are padded, the eroded shapes' are not.
            s = slot[pick]
            lows_x, lows_y = (
                np.minimum(ax[pick], ax[pick] + dx[pick]),
                np.minimum(ay[pick], ay[pick] + dy[pick]),
            )
            highs_x, highs_y = (
                np.maximum(ax[pick], ax[pick] + dx[pick]),
                np.maximum(ay[pick], ay[pick] + dy[pick]),
            )
            box = self.eroded_bounds[s]
            meet = (
                (lows_x <= box[:, 2])
                & (highs_x >= box[:, 0])
                & (lows_y <= box[:, 3])
                & (highs_y >= box[:, 1])
            )
            pick, box = pick[meet], box[meet]
            pick = pick[_line_meets_box(ax[pick], ay[pick], dx[pick], dy[pick], box)]
        step = (ax, ay, dx, dy, length2)
        # Linestrings only for these (circles are solved above without any), a bounded
        # number at a time.
        for start in range(0, len(pick), _SHAPES_AT_ONCE):
            some = pick[start : start + _SHAPES_AT_ONCE]
            self._cross_shapes(
                segments.lines(pair_segment[some]), some, slot, step, exits, hits, into, out
            )
        # A step that reaches the margin only at its very end is no crossing: its fix is
        # judged by itself (otherwise a fix on a zero-margin boundary would enter and exit
        # at the same instant, then enter again).
        return hits & (into < _END_OF_STEP), into, np.maximum(out, into)


def _line_meets_box(
    ax: FloatArray, ay: FloatArray, dx: FloatArray, dy: FloatArray, box: FloatArray
) -> BoolArray:
    """Whether each step's line passes through its box (or within a micrometre of it).

    A box lies wholly on one side of a line when its centre is farther from the line than
    the box reaches across it (the separating axis is the line's normal). For a long
    diagonal step, that rules out most of the boxes within its own bounding box.
    """
    half_x, half_y = (box[:, 2] - box[:, 0]) / 2, (box[:, 3] - box[:, 1]) / 2
    # Both sides times the step's length: the centre's distance from the line, and the
    # box's reach across it.
    off = np.abs(dx * (box[:, 1] + half_y - ay) - dy * (box[:, 0] + half_x - ax))
    reach = np.abs(dx) * half_y + np.abs(dy) * half_x + np.hypot(dx, dy) * _ON_THE_LINE
    meets: BoolArray = off <= reach
    return meets


def _fractions(
    parts: GeomArray,
    step: tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray],
    *,
    first: bool,
) -> FloatArray:
    """Per step, the first (or last) fraction along it of any point of its part."""
    ax, ay, dx, dy, length2 = step
    coords, owner = shapely.get_coordinates(parts, return_index=True)
    along = ((coords[:, 0] - ax[owner]) * dx[owner] + (coords[:, 1] - ay[owner]) * dy[owner]) / (
        length2[owner]
    )
    result: FloatArray = np.full(len(parts), np.nan)
    (np.fmin if first else np.fmax).at(result, owner, np.clip(along, 0.0, 1.0))
    return result


class _Facets:
    """The straight pieces (facets) of fences' lines: corridor centre lines, area rings.

    GEOS measures a point's distance to a line or polygon as the least of
    `Distance::pointToSegment` over its facets (`shapes.point_to_segment` repeats it), and
    `dwithin` asks whether that least is within the distance. For fences of a few dozen
    facets, arrays do that for a whole batch at once, with no Point built per fix, to the
    same doubles.
    """

    def __init__(self, lines: GeomArray, slots: IntArray, size: int) -> None:
        # `lines`: linestrings and rings, each a piece of the fence in its slot.
        coords, line = shapely.get_coordinates(lines, return_index=True)
        # Consecutive vertices of one line make a facet.
        joined = np.flatnonzero(line[1:] == line[:-1])
        owner = slots[line[joined]]
        order = np.argsort(owner, kind="stable")  # grouped by slot, in drawing order
        start, end = coords[joined[order]], coords[joined[order] + 1]
        self.ax, self.ay, self.bx, self.by = start[:, 0], start[:, 1], end[:, 0], end[:, 1]
        self.count: IntArray = np.bincount(owner, minlength=size).astype(np.int64)
        self.first: IntArray = np.cumsum(self.count) - self.count

    def distances(self, slot: IntArray, x: FloatArray, y: FloatArray) -> FloatArray:
        """Plane distance from each point to its fence's facets, as `shapely.distance`."""
        if len(slot) == 0:
            return np.empty(0)
        count = self.count[slot]
        starts = np.cumsum(count) - count
        owner = np.repeat(np.arange(len(slot)), count)
        piece = np.repeat(self.first[slot] - starts, count) + np.arange(len(owner))
        each = point_to_segment(
            x[owner], y[owner], self.ax[piece], self.ay[piece], self.bx[piece], self.by[piece]
        )
        # The least of each point's facets; fmin skips a NaN as GEOS's `<` does (only a
        # facet shorter than 1e-154, whose squared length is 0, gives one).
        nearest: FloatArray = np.fmin.reduceat(each, starts)
        return nearest


def _rings(polygons: GeomArray, slots: IntArray) -> tuple[GeomArray, IntArray]:
    """Every ring (exterior and holes) of each polygon or multipolygon, with its slot."""
    parts, part = shapely.get_parts(polygons, return_index=True)
    rings, ring = shapely.get_rings(parts, return_index=True)
    return rings, slots[part[ring]]


class FixColumns:
    """One batch's fixes as columns (sorted by vehicle, then time), with lazy points."""

    def __init__(  # noqa: PLR0913 - the columns themselves
        self,
        *,
        lon: FloatArray,
        lat: FloatArray,
        acc: FloatArray,
        x: FloatArray,
        y: FloatArray,
        scale: FloatArray,
    ) -> None:
        self.lon = lon
        self.lat = lat
        self.acc = acc
        self.x = x
        self.y = y
        self.scale = scale
        # Shapely points, built for a fix when a test first needs it (most never do).
        self._points: GeomArray = np.empty(len(x), dtype=object)
        self._built: BoolArray = np.zeros(len(x), dtype=bool)

    def points(self, fix: IntArray) -> GeomArray:
        """Some fixes as shapely points in the plane."""
        wanted = fix[~self._built[fix]]
        if len(wanted):
            # Each once (a mark per fix: cheaper than sorting them out with np.unique).
            mark = np.zeros(len(self.x), dtype=bool)
            mark[wanted] = True
            new = np.flatnonzero(mark)
            self._points[new] = shapely.points(self.x[new], self.y[new])
            self._built[new] = True
        points: GeomArray = self._points[fix]
        return points


class Segments:
    """The straight steps between consecutive fixes of a vehicle."""

    def __init__(
        self,
        ax: FloatArray,
        ay: FloatArray,
        bx: FloatArray,
        by: FloatArray,
        scale: FloatArray,
    ) -> None:
        self.ax = ax
        self.ay = ay
        self.bx = bx
        self.by = by
        self.scale = scale

    def lines(self, some: IntArray) -> GeomArray:
        """Some of the segments as shapely linestrings in the plane."""
        coords = np.stack(
            [
                np.column_stack([self.ax[some], self.ay[some]]),
                np.column_stack([self.bx[some], self.by[some]]),
            ],
            axis=1,
        )
        return cast("GeomArray", shapely.linestrings(coords))
