"""A batch of fixes as columns: sorted by vehicle and time, replays out, projected.

Each kept fix also knows the step that ends at it: where and when the vehicle was before (the
previous fix of the batch, or the newest one evaluated before it), for segment crossing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Final

import numpy as np

from hub.geofences.index import FixColumns
from hub.geofences.projection import metres_per_unit, to_plane

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hub.geofences.index import FloatArray, IntArray
    from hub.geofences.model import EngineStats, Fix
    from hub.geofences.state import FleetState

# Latitude beyond which a fix is placed on the plane as if at this latitude. Mercator's
# plane ends at the poles (y is infinite at 90 degrees, and the scale 0), so a fix there would
# reach every fence; fences end at 85 degrees (validation), at least 300 km short of this,
# so a fix moved here is as far out of every fence as it was.
MAX_PLANE_LATITUDE: Final = 89.0

# The fields of a fix, read for a whole batch at once.
_TS: Final = attrgetter("ts")
_LAT: Final = attrgetter("lat")
_LON: Final = attrgetter("lon")
_ACCURACY: Final = attrgetter("accuracy_m")


@dataclass(slots=True)
class Batch:
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


def prepare(
    fixes: Sequence[Fix],
    state: FleetState,
    *,
    default_accuracy_m: float,
    max_accuracy_m: float,
    stats: EngineStats,
) -> Batch | None:
    """Columns of the fixes with a usable position, sorted by vehicle and time, replays out.

    A fix vaguer than `max_accuracy_m` is left out as a fix without a position is: it is
    stored, but decides nothing here.
    """
    count = len(fixes)
    if count == 0:
        return None
    # One C-level pass per field (map and attrgetter, no Python loop); None becomes nan.
    lat = np.fromiter(map(_LAT, fixes), dtype=float, count=count)
    lon = np.fromiter(map(_LON, fixes), dtype=float, count=count)
    acc = np.fromiter(map(_ACCURACY, fixes), dtype=float, count=count)
    positioned = ~(np.isnan(lat) | np.isnan(lon))
    stats.without_position += count - int(positioned.sum())
    vague = positioned & (acc > max_accuracy_m)  # nan (none given) compares False
    stats.vague += int(vague.sum())
    positioned &= ~vague
    vehicle = state.numbers(fixes)
    stamps = list(map(_TS, fixes))
    # Epoch seconds cost a third of this phase; nothing found beats the C method itself
    # (datetime64 conversion of aware datetimes is ten times slower).
    t = np.fromiter(map(datetime.timestamp, stamps), dtype=float, count=count)

    order = np.lexsort((t, vehicle))
    order = order[positioned[order]]
    vehicle, t = vehicle[order], t[order]
    # Replays: not newer than the vehicle's last evaluated fix, or a repeated time.
    fresh = t > state.last_t[vehicle]
    fresh[1:] &= (vehicle[1:] != vehicle[:-1]) | (t[1:] != t[:-1])
    stats.replayed += len(order) - int(fresh.sum())
    keep = np.flatnonzero(fresh)
    if len(keep) == 0:
        return None
    order, vehicle, t = order[keep], vehicle[keep], t[keep]
    lat, lon, acc = lat[order], lon[order], acc[order]
    acc = np.where(np.isnan(acc), default_accuracy_m, np.maximum(acc, 0.0))
    plane_lat = np.clip(lat, -MAX_PLANE_LATITUDE, MAX_PLANE_LATITUDE)
    x, y = to_plane(lon, plane_lat)
    columns = FixColumns(lon=lon, lat=lat, acc=acc, x=x, y=y, scale=metres_per_unit(plane_lat))

    starts = np.flatnonzero(np.concatenate([[True], vehicle[1:] != vehicle[:-1]]))
    ends = np.concatenate([starts[1:], [len(vehicle)]])
    first = np.full(len(state.last_t), -1, dtype=np.int64)
    end = np.full(len(state.last_t), -1, dtype=np.int64)
    first[vehicle[starts]] = starts
    end[vehicle[starts]] = ends

    # Each fix's step starts at the vehicle's previous fix: in this batch, or the last
    # one evaluated before it (nan when unknown).
    prev_x = np.empty_like(x)
    prev_y = np.empty_like(y)
    prev_t = np.empty_like(t)
    prev_x[1:], prev_y[1:], prev_t[1:] = x[:-1], y[:-1], t[:-1]
    carried = vehicle[starts]
    prev_x[starts], prev_y[starts] = to_plane(
        state.last_lon[carried],
        np.clip(state.last_lat[carried], -MAX_PLANE_LATITUDE, MAX_PLANE_LATITUDE),
    )
    prev_t[starts] = state.last_t[carried]
    return Batch(
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
