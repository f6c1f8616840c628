"""What the geofence engine remembers between batches: each vehicle's newest fix and its stays.

A stay is one vehicle's engaged state with one fence: inside it, or dwelling (inside, not yet
entered). Outside with no dwell under way is the default and is not kept. Vehicles are
numbered densely as they come, so per-vehicle values live in arrays, and a (vehicle, fence)
pair has a key: vehicle * index size + the fence's slot.
"""

from __future__ import annotations

import math
from operator import attrgetter
from typing import TYPE_CHECKING, Final

import numpy as np

from db.geofences.model import GeofenceState

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

    from db.geofences.model import Geofence, VehiclePosition
    from hub.geofences.index import FenceIndex, FloatArray, IntArray
    from hub.geofences.model import Fix

# Initial room for per-vehicle arrays; they double as the fleet grows.
_INITIAL_VEHICLES: Final = 1024

_VEHICLE: Final = attrgetter("vehicle_id")


class Stay:
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


class FleetState:
    """Every vehicle's newest evaluated fix and engaged stays, and the changes not yet saved.

    Not thread-safe: the engine's one caller owns it.
    """

    def __init__(self, index: FenceIndex) -> None:
        self.index = index
        self.vehicle_ids: list[str] = []
        self.vehicle_index: dict[str, int] = {}
        # The newest evaluated fix per vehicle (dense by vehicle number).
        self.last_t: FloatArray = np.full(_INITIAL_VEHICLES, -math.inf)
        self.last_lon: FloatArray = np.full(_INITIAL_VEHICLES, math.nan)
        self.last_lat: FloatArray = np.full(_INITIAL_VEHICLES, math.nan)
        # Engaged states only: vehicle number -> geofence id -> stay. Absent means outside.
        self.stays: dict[int, dict[int, Stay]] = {}
        self.dirty: dict[tuple[int, int], GeofenceState] = {}
        # Every engaged state by key (vehicle * index size + slot): True inside, False
        # dwelling; and the same as sorted arrays, rebuilt when it changed.
        self.engaged: dict[int, bool] = {}
        self.key_arrays: tuple[IntArray, IntArray] | None = None

    # --- fences --------------------------------------------------------------------------------

    def reload(self, index: FenceIndex) -> None:
        """Switch to a new set of fences: drop the stays of those gone, renumber the keys."""
        self.index = index
        for stays in self.stays.values():
            for geofence_id in [g for g in stays if g not in index.slot_of]:
                del stays[geofence_id]
        size = index.size
        slot_of = index.slot_of
        self.engaged = {
            vehicle * size + slot_of[geofence_id]: stay.inside
            for vehicle, stays in self.stays.items()
            for geofence_id, stay in stays.items()
        }
        self.key_arrays = None

    def inside(self, vehicle_id: str) -> list[Geofence]:
        """The fences a vehicle is inside now (by the hysteresis state)."""
        number = self.vehicle_index.get(vehicle_id)
        stays = self.stays.get(number) if number is not None else None
        if not stays:
            return []
        index = self.index
        return [
            index.geofence(index.slot_of[geofence_id])
            for geofence_id, stay in stays.items()
            if stay.inside
        ]

    # --- engaged keys ----------------------------------------------------------------------------

    def keys(self) -> tuple[IntArray, IntArray]:
        """Sorted keys (vehicle * size + slot) of every inside and every dwelling state."""
        if self.key_arrays is None:
            engaged = self.engaged
            keys = np.fromiter(engaged.keys(), dtype=np.int64, count=len(engaged))
            inside = np.fromiter(engaged.values(), dtype=bool, count=len(engaged))
            self.key_arrays = (np.sort(keys[inside]), np.sort(keys[~inside]))
        return self.key_arrays

    def note(self, vehicle: int, slot: int, stay: Stay) -> None:
        """Keep the engaged keys in step with a state that changed."""
        key = vehicle * self.index.size + slot
        if stay.idle:
            self.engaged.pop(key, None)
        else:
            self.engaged[key] = stay.inside
        self.key_arrays = None

    # --- stays -----------------------------------------------------------------------------------

    def stay(self, vehicle: int, geofence_id: int) -> Stay | None:
        """A vehicle's engaged state with a fence, or None when outside."""
        stays = self.stays.get(vehicle)
        return None if stays is None else stays.get(geofence_id)

    def store(self, vehicle: int, slot: int, stay: Stay) -> None:
        """Keep a changed state (or forget it when idle) and mark it for saving."""
        geofence_id = self.index.geofence_ids[slot]
        self.dirty[(vehicle, geofence_id)] = self.snapshot(vehicle, geofence_id, stay)
        self.note(vehicle, slot, stay)
        stays = self.stays.setdefault(vehicle, {})
        if stay.idle:
            stays.pop(geofence_id, None)
        else:
            stays[geofence_id] = stay

    def snapshot(self, vehicle: int, geofence_id: int, stay: Stay) -> GeofenceState:
        """A stay as the row that stores it."""
        return GeofenceState(
            self.vehicle_ids[vehicle],
            geofence_id,
            stay.inside,
            stay.since,
            stay.pending_since,
            stay.fix_ts,
            stay.fix_lat,
            stay.fix_lon,
        )

    def states(self) -> list[GeofenceState]:
        """Every engaged (inside or dwelling) state."""
        return [
            self.snapshot(vehicle, geofence_id, stay)
            for vehicle, stays in self.stays.items()
            for geofence_id, stay in stays.items()
        ]

    def take_dirty(self) -> list[GeofenceState]:
        """States changed since the last call; clears the list."""
        dirty = list(self.dirty.values())
        self.dirty.clear()
        return dirty

    # --- loading ---------------------------------------------------------------------------------

    def load(self, states: Iterable[GeofenceState], positions: Iterable[VehiclePosition]) -> None:
        """Take stored states and positions over what is known of those vehicles and fences."""
        for state in states:
            vehicle = self.vehicle(state.vehicle_id)
            stays = self.stays.setdefault(vehicle, {})
            pending = state.pending_since
            stay = Stay(
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
            self.last_t[vehicle] = max(self.last_t[vehicle], stay.fix_t)
            slot = self.index.slot_of.get(state.geofence_id)
            if slot is None:
                stays.pop(state.geofence_id, None)
                continue
            if stay.idle:
                stays.pop(state.geofence_id, None)
            else:
                stays[state.geofence_id] = stay
            # The keys follow state by state, so that reloading a few vehicles (several
            # hubs take turns on them every batch) costs no rebuild of the whole fleet's.
            self.note(vehicle, slot, stay)
        for position in positions:
            vehicle = self.vehicle(position.vehicle_id)
            t = position.ts.timestamp()
            if t >= self.last_t[vehicle]:
                self.last_t[vehicle] = t
                self.last_lon[vehicle] = position.lon
                self.last_lat[vehicle] = position.lat

    def forget(self, vehicle_ids: Iterable[str]) -> None:
        """Drop all that is known of some vehicles: stays, newest fix, unsaved changes."""
        size = self.index.size
        slot_of = self.index.slot_of
        forgotten = {self.vehicle(vehicle_id) for vehicle_id in vehicle_ids}
        for vehicle in forgotten:
            for geofence_id in self.stays.pop(vehicle, {}):
                slot = slot_of.get(geofence_id)
                if slot is not None:
                    self.engaged.pop(vehicle * size + slot, None)
            self.last_t[vehicle] = -math.inf
            self.last_lon[vehicle] = math.nan
            self.last_lat[vehicle] = math.nan
        self.dirty = {key: s for key, s in self.dirty.items() if key[0] not in forgotten}
        self.key_arrays = None

    # --- vehicles --------------------------------------------------------------------------------

    def vehicle(self, vehicle_id: str) -> int:
        """A vehicle's number, given a new one when it is new."""
        number = self.vehicle_index.get(vehicle_id)
        if number is None:
            number = self.vehicle_index[vehicle_id] = len(self.vehicle_ids)
            self.vehicle_ids.append(vehicle_id)
            self._grow(number + 1)
        return number

    def numbers(self, fixes: Sequence[Fix]) -> IntArray:
        """The vehicle number of each fix, numbering new vehicles as they come."""
        known = self.vehicle_index
        try:
            # Every vehicle known: the usual batch, looked up without a Python loop.
            return np.fromiter(
                map(known.__getitem__, map(_VEHICLE, fixes)), dtype=np.int64, count=len(fixes)
            )
        except KeyError:
            before = len(known)
            numbers = [known.setdefault(f.vehicle_id, len(known)) for f in fixes]
            self.vehicle_ids.extend(list(known)[before:])
            self._grow(len(known))
            return np.array(numbers, dtype=np.int64)

    def _grow(self, needed: int) -> None:
        size = len(self.last_t)
        if needed <= size:
            return
        while size < needed:
            size *= 2
        extra = size - len(self.last_t)
        self.last_t = np.concatenate([self.last_t, np.full(extra, -math.inf)])
        self.last_lon = np.concatenate([self.last_lon, np.full(extra, math.nan)])
        self.last_lat = np.concatenate([self.last_lat, np.full(extra, math.nan)])

    def advance(self, vehicle: IntArray, t: FloatArray, lon: FloatArray, lat: FloatArray) -> None:
        """Make each vehicle's last fix of a batch (sorted by vehicle and time) its newest."""
        last = np.flatnonzero(np.concatenate([vehicle[1:] != vehicle[:-1], [True]]))
        self.last_t[vehicle[last]] = t[last]
        self.last_lon[vehicle[last]] = lon[last]
        self.last_lat[vehicle[last]] = lat[last]
