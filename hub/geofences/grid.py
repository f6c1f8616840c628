"""A uniform grid over the index's padded boxes: which boxes hold each of many points.

The STRtree answers the same question, but for shapely Points only: one built for each
fix (and freed after), then one tree walk per point, which together cost the hub more
than all the exact tests that follow. The batch's fixes are columns of numbers already,
so the grid looks them all up with a few array operations. Its answer is exactly the
tree's: a box holds a point when min <= coordinate <= max on both axes, GEOS's envelope
test, made on the same doubles.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

# Cell side, as a share of the median box side: a typical box covers about nine cells, and
# a cell holds few boxes that do not hold its points. Measured on the benchmark's city (10,000
# fences): a quarter to one whole median side cost within 10% of each other, half the least.
CELL_SHARE: Final = 0.5
# Most boxes are a few cells; a box over more cells than this (a service area over a whole
# region) goes to a coarser grid instead of filling this one.
MAX_CELLS_PER_BOX: Final = 1 << 12
# How much coarser each next grid is, per side: 4,096 cells of a grid are one of the next.
COARSER: Final = 64


class BoxGrid:
    """Boxes (rows of min x, min y, max x, max y) hashed into square cells of the plane.

    Cells are kept sparse (sorted ids), so fences in several cities far apart cost no empty
    cells between them.
    """

    def __init__(self, bounds: FloatArray, cell: float | None = None) -> None:
        # Each side on its own: four gathers of a column cost a fifth of one of rows.
        self.low_x, self.low_y = bounds[:, 0].copy(), bounds[:, 1].copy()
        self.high_x, self.high_y = bounds[:, 2].copy(), bounds[:, 3].copy()
        sides = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
        if cell is None:
            cell = float(np.median(sides)) * CELL_SHARE if len(sides) else 1.0
        self.cell = cell
        self.origin = (
            (float(bounds[:, 0].min()), float(bounds[:, 1].min())) if len(bounds) else (0.0, 0.0)
        )
        low_x, low_y = self._cell(bounds[:, 0], bounds[:, 1])
        high_x, high_y = self._cell(bounds[:, 2], bounds[:, 3])
        wide, tall = high_x - low_x + 1, high_y - low_y + 1
        spans = wide * tall
        big = spans > MAX_CELLS_PER_BOX
        self.coarser = BoxGrid(bounds[big], self.cell * COARSER) if big.any() else None
        self._big = np.flatnonzero(big)
        # One entry per (cell, box) of the other boxes, sorted by cell.
        small = np.flatnonzero(~big)
        count = spans[small]
        box = np.repeat(small, count)
        k = np.arange(len(box)) - np.repeat(np.cumsum(count) - count, count)
        self.columns = int(high_y[small].max()) + 1 if len(small) else 0
        self.rows = int(high_x[small].max()) + 1 if len(small) else 0
        cell_id = (low_x[box] + k // tall[box]) * self.columns + low_y[box] + k % tall[box]
        order = np.argsort(cell_id, kind="stable")
        self.cells, first = np.unique(cell_id[order], return_index=True)
        self.entries: IntArray = box[order]
        self.offsets: IntArray = np.append(first, len(box)).astype(np.int64)

    def _cell(self, x: FloatArray, y: FloatArray) -> tuple[IntArray, IntArray]:
        # Monotonic in each coordinate (subtraction, division and floor all are), so a
        # point between a box's corners falls in a cell between theirs.
        x0, y0 = self.origin
        return (
            np.floor((x - x0) / self.cell).astype(np.int64),
            np.floor((y - y0) / self.cell).astype(np.int64),
        )

    def query(self, x: FloatArray, y: FloatArray) -> tuple[IntArray, IntArray]:
        """(point, box) pairs where the box holds the point, in no particular order."""
        cell_x, cell_y = self._cell(x, y)
        # Off the grid no box is near (and an id made there could alias a cell on it).
        point = np.flatnonzero(
            (cell_x >= 0) & (cell_x < self.rows) & (cell_y >= 0) & (cell_y < self.columns)
        )
        points, boxes = [], []
        if len(point) and len(self.cells):
            cell_id = cell_x[point] * self.columns + cell_y[point]
            where = np.minimum(np.searchsorted(self.cells, cell_id), len(self.cells) - 1)
            hit = self.cells[where] == cell_id
            point, where = point[hit], where[hit]
            start = self.offsets[where]
            count = self.offsets[where + 1] - start
            owner = np.repeat(point, count)
            box = self.entries[
                np.repeat(start - (np.cumsum(count) - count), count) + np.arange(len(owner))
            ]
            keep = self._holds(box, x[owner], y[owner])
            points.append(owner[keep])
            boxes.append(box[keep])
        if self.coarser is not None:
            point, box = self.coarser.query(x, y)
            points.append(point)
            boxes.append(self._big[box])
        if not points:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return np.concatenate(points), np.concatenate(boxes)

    def _holds(self, box: IntArray, x: FloatArray, y: FloatArray) -> NDArray[np.bool_]:
        """Whether each box holds its point, borders included (GEOS's envelope test)."""
        held: NDArray[np.bool_] = (
            (self.low_x[box] <= x)
            & (x <= self.high_x[box])
            & (self.low_y[box] <= y)
            & (y <= self.high_y[box])
        )
        return held
