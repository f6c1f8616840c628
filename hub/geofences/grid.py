"""A uniform grid over the index's padded boxes: which boxes meet each of many points or boxes.

An STRtree answers the same question, but for shapely geometries only: a Point built for
each fix (and freed after), then one tree walk per point, which together cost the hub more
than the exact tests that follow. The batch's fixes are columns of numbers already, so the
grid looks them all up with a few array operations. Its answer is exactly the tree's: two
boxes meet when neither lies wholly beyond the other on either axis, borders included
(GEOS's envelope test), made on the same doubles.

What a lookup costs is bounded whatever it asks: a box held is at most `MAX_CELLS_PER_BOX`
cells of its grid (bigger ones go to a coarser grid), and so is a query box; a bigger query
box (a continent, or a point near a pole grown by its accuracy) is looked up in an STRtree
of the boxes instead, whose cost follows its answer, not its size.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import shapely
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# Cell side, as a share of the median box side: a typical box covers about nine cells, and
# a cell holds few boxes that do not hold its points. Measured on the benchmark's city
# (10,000 fences): a quarter to one whole median side cost within 10% of each other, half
# the least.
CELL_SHARE: Final = 0.5
# Most boxes are a few cells; a box over more cells than this (16 by 16: a service area
# over a whole region) is kept apart instead of filling the grid. It also bounds the grid's
# memory: 8 bytes per cell of a box, so at most 2 kB per box. A query box over more cells
# than this is looked up in an STRtree instead: expanded into cells, a box as wide as a
# continent over a grid of 100 m cells would be billions of them.
MAX_CELLS_PER_BOX: Final = 256
# Boxes kept apart, up to this many, are each checked against every point (a few array
# operations per box); more go to a grid of their own, of cells this many times wider
# (where a box kept apart here is again a few cells).
FEW_BIG_BOXES: Final = 16
COARSER: Final = 16
# Most cells a side of the grid may have: its cells are then numbered well within int64.
MAX_SIDE_CELLS: Final = 1 << 20
# Up to this many cells, a cell's entries are found by its number in a table (8 bytes a
# cell); beyond it (fences in cities far apart), by searching the cells that hold any.
TABLE_CELLS: Final = 1 << 20


class BoxGrid:
    """Boxes (rows of min x, min y, max x, max y) hashed into square cells of the plane."""

    def __init__(self, bounds: FloatArray, cell: float | None = None) -> None:
        # Each side on its own: four gathers of a column cost a fifth of one of rows.
        self.low_x, self.low_y = bounds[:, 0].copy(), bounds[:, 1].copy()
        self.high_x, self.high_y = bounds[:, 2].copy(), bounds[:, 3].copy()
        sides = np.maximum(self.high_x - self.low_x, self.high_y - self.low_y)
        if cell is None:
            cell = float(np.median(sides)) * CELL_SHARE if len(sides) else 1.0
        self.origin = (float(self.low_x.min()), float(self.low_y.min())) if len(sides) else (0, 0)
        span = (
            max(
                float(self.high_x.max()) - self.origin[0], float(self.high_y.max()) - self.origin[1]
            )
            if len(sides)
            else 0.0
        )
        # The boxes' span (min x, min y, max x, max y), and an STRtree of them for query boxes
        # too big for the cells, built when first needed.
        self._span = (
            (self.origin[0], self.origin[1], float(self.high_x.max()), float(self.high_y.max()))
            if len(sides)
            else (0.0, 0.0, 0.0, 0.0)
        )
        self._tree: shapely.STRtree | None = None
        # Never so small that the cells could not be numbered (nor 0, for boxes all points).
        self.cell = max(cell, span / MAX_SIDE_CELLS) or 1.0
        low_x, low_y = self._cell(self.low_x, self.low_y)
        high_x, high_y = self._cell(self.high_x, self.high_y)
        big = (high_x - low_x + 1) * (high_y - low_y + 1) > MAX_CELLS_PER_BOX
        self.big = np.flatnonzero(big)
        self.coarser = (
            BoxGrid(bounds[self.big], self.cell * COARSER)
            if len(self.big) > FEW_BIG_BOXES
            else None
        )
        small = np.flatnonzero(~big)
        self.rows = int(high_x[small].max()) + 1 if len(small) else 0
        self.columns = int(high_y[small].max()) + 1 if len(small) else 0
        # One entry per (cell, box) of the other boxes, grouped by cell.
        cell_id, box = self._cells_of(small, low_x, low_y, high_x, high_y)
        order = np.argsort(cell_id, kind="stable")
        cell_id, self.entries = cell_id[order], box[order]
        if self.rows * self.columns <= TABLE_CELLS:
            # Where each cell's entries start, for every cell (the next cell's start ends them).
            self.table: IntArray | None = np.searchsorted(
                cell_id, np.arange(self.rows * self.columns + 1)
            )
        else:
            self.table = None
            self.cells, first = np.unique(cell_id, return_index=True)
            self.offsets: IntArray = np.append(first, len(cell_id))

    def _cell(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Each point's cell, as whole numbers in floats (far off the grid, they are huge).

        Monotonic in each coordinate (subtraction, division and floor all are), so a point
        between a box's corners falls in a cell between theirs.
        """
        x0, y0 = self.origin
        return np.floor((x - x0) / self.cell), np.floor((y - y0) / self.cell)

    def _clipped(
        self, low_x: FloatArray, low_y: FloatArray, high_x: FloatArray, high_y: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        """Cell ranges cut to the grid, and how many cells each holds (0 for a NaN range).

        In floats: a range far off the grid is huge, and a count of cells may exceed int64.
        """
        # A range wholly off the grid ends before it starts.
        low_x = np.clip(low_x, 0, self.rows)
        low_y = np.clip(low_y, 0, self.columns)
        high_x = np.clip(high_x, -1, self.rows - 1)
        high_y = np.clip(high_y, -1, self.columns - 1)
        # fmax, not maximum: a NaN side (a range with no cells) counts 0.
        count = np.fmax(high_x - low_x + 1, 0) * np.fmax(high_y - low_y + 1, 0)
        return low_x, low_y, high_x, high_y, count

    def _cells_of(
        self,
        item: IntArray,
        low_x: FloatArray,
        low_y: FloatArray,
        high_x: FloatArray,
        high_y: FloatArray,
    ) -> tuple[IntArray, IntArray]:
        """(cell number, item) for every cell of the grid within each item's cell range.

        The caller bounds the ranges: this makes an entry for each of their cells.
        """
        left, bottom, _, top, cells = self._clipped(
            low_x[item], low_y[item], high_x[item], high_y[item]
        )
        count = cells.astype(np.int64)
        # Ranges with no cells are never expanded; their (maybe NaN) corners are not read.
        some = count > 0
        first_x = np.where(some, left, 0).astype(np.int64)
        first_y = np.where(some, bottom, 0).astype(np.int64)
        tall = np.where(some, top, 0).astype(np.int64) - first_y + 1
        owner = np.repeat(np.arange(len(item)), count)
        k = np.arange(len(owner)) - np.repeat(np.cumsum(count) - count, count)
        cell_id = (
            (first_x[owner] + k // tall[owner]) * self.columns + first_y[owner] + (k % tall[owner])
        )
        return cell_id, item[owner]

    def _entries(self, cell_id: IntArray) -> tuple[IntArray, IntArray]:
        """Where each cell's entries start, and how many there are."""
        if self.table is not None:
            start = self.table[cell_id]
            return start, self.table[cell_id + 1] - start
        where = np.minimum(np.searchsorted(self.cells, cell_id), max(len(self.cells) - 1, 0))
        found = self.cells[where] == cell_id if len(self.cells) else np.zeros(0, dtype=bool)
        start = self.offsets[where]
        return start, np.where(found, self.offsets[where + 1] - start, 0)

    def _expand(self, item: IntArray, cell_id: IntArray) -> tuple[IntArray, IntArray]:
        """(item, box) for every box entered in each item's cell."""
        start, count = self._entries(cell_id)
        owner = np.repeat(item, count)
        entry = np.repeat(start - (np.cumsum(count) - count), count) + np.arange(len(owner))
        return owner, self.entries[entry]

    def query_points(self, x: FloatArray, y: FloatArray) -> tuple[IntArray, IntArray]:
        """(point, box) pairs where the box holds the point, in no particular order."""
        return self.query_boxes(x, y, x, y, points=True)

    def query_boxes(
        self,
        low_x: FloatArray,
        low_y: FloatArray,
        high_x: FloatArray,
        high_y: FloatArray,
        *,
        points: bool = False,
    ) -> tuple[IntArray, IntArray]:
        """(query, box) pairs where the boxes meet, each once, in no particular order.

        A query box with a NaN side, or a low side above its high side, meets nothing.
        """
        items, boxes = [], []
        cell_low_x, cell_low_y = self._cell(low_x, low_y)
        if not points:
            cell_high_x, cell_high_y = self._cell(high_x, high_y)
            cells = self._clipped(cell_low_x, cell_low_y, cell_high_x, cell_high_y)[4]
            vast = cells > MAX_CELLS_PER_BOX
            if vast.any():
                item, box = self._query_tree(np.flatnonzero(vast), low_x, low_y, high_x, high_y)
                items.append(item)
                boxes.append(box)
                # The others, by the grid (a few cells each).
                keep = np.flatnonzero(~vast)
                item, box = self.query_boxes(low_x[keep], low_y[keep], high_x[keep], high_y[keep])
                items.append(keep[item])
                boxes.append(box)
                return np.concatenate(items), np.concatenate(boxes)
        if points:
            # A point is in one cell; off the grid no box is near.
            item = np.flatnonzero(
                (cell_low_x >= 0)
                & (cell_low_x < self.rows)
                & (cell_low_y >= 0)
                & (cell_low_y < self.columns)
            )
            cell_id = cell_low_x[item].astype(np.int64) * self.columns + cell_low_y[item].astype(
                np.int64
            )
        else:
            cell_id, item = self._cells_of(
                np.arange(len(low_x)), cell_low_x, cell_low_y, cell_high_x, cell_high_y
            )
        if len(item) and len(self.entries):
            item, box = self._expand(item, cell_id)
            meet = self._meet(box, low_x[item], low_y[item], high_x[item], high_y[item])
            item, box = item[meet], box[meet]
            if not points:
                # A box in several of a query's cells was found in each.
                _, first = np.unique(item * len(self.low_x) + box, return_index=True)
                item, box = item[first], box[first]
            items.append(item)
            boxes.append(box)
        if self.coarser is not None:
            item, box = self.coarser.query_boxes(low_x, low_y, high_x, high_y, points=points)
            items.append(item)
            boxes.append(self.big[box])
        else:
            for one in self.big.tolist():
                item = np.flatnonzero(self._meet(one, low_x, low_y, high_x, high_y))
                items.append(item)
                boxes.append(np.full(len(item), one))
        if not items:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return np.concatenate(items), np.concatenate(boxes)

    def _query_tree(
        self,
        item: IntArray,
        low_x: FloatArray,
        low_y: FloatArray,
        high_x: FloatArray,
        high_y: FloatArray,
    ) -> tuple[IntArray, IntArray]:
        """(query, box) pairs for some query boxes, by an STRtree of every box held."""
        if len(self.low_x) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        if self._tree is None:
            # Built on the first vast query: most grids never see one.
            self._tree = shapely.STRtree(
                shapely.box(self.low_x, self.low_y, self.high_x, self.high_y)
            )
        # Cut to the span of the boxes held, which meets each of them as the query box does
        # (a box held lies within it), and is finite: GEOS needs no infinity. A query box
        # wholly beyond that span, empty, or NaN meets nothing and is dropped first.
        least_x, least_y, most_x, most_y = self._span
        low_x, low_y, high_x, high_y = low_x[item], low_y[item], high_x[item], high_y[item]
        some = (
            (low_x <= high_x)
            & (low_y <= high_y)
            & (low_x <= most_x)
            & (high_x >= least_x)
            & (low_y <= most_y)
            & (high_y >= least_y)
        )
        item = item[some]
        query = shapely.box(
            np.maximum(low_x[some], least_x),
            np.maximum(low_y[some], least_y),
            np.minimum(high_x[some], most_x),
            np.minimum(high_y[some], most_y),
        )
        found, box = self._tree.query(query)
        return item[found], box.astype(np.int64)

    def _meet(
        self,
        box: IntArray | int,
        low_x: FloatArray,
        low_y: FloatArray,
        high_x: FloatArray,
        high_y: FloatArray,
    ) -> BoolArray:
        """Whether each box meets its query box, borders included (GEOS's envelope test)."""
        meet: BoolArray = (
            (self.low_x[box] <= high_x)
            & (low_x <= self.high_x[box])
            & (self.low_y[box] <= high_y)
            & (low_y <= self.high_y[box])
        )
        return meet
