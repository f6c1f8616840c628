"""Which fixes the hub stores, and where: duplicates, bad clocks, bad positions, GPS jumps.

Pure logic with no I/O: the caller passes the time, so tests can drive it freely. One
`FixFilter` keeps a small `Track` per vehicle (the newest accepted time, status and
position), seeded from `vehicle_state` when the hub starts.

The rules, in order:

1. **Duplicate**: a (vehicle, ts) seen recently is dropped (the database drops older repeats).
2. **Future**: a fix more than `max_future_ms` ahead of the hub's clock is dropped.
3. **Too old**: a fix older than `max_age_ms` is dropped.
4. **Invalid position**: exactly (0, 0), where a GPS without a fix often reports.
5. **Impossible jump**: reaching the fix from the last accepted position needs more than
   `max_speed_kmh`, after allowing for both fixes' accuracy. A jump confirmed by the next fix
   (the two agree with each other) is accepted: then it was the old position that was wrong.

A fix without a position (status-only) is always kept and placed at the last known position.
Nothing that changes `locked`, `doors_open`, `engine_on` or `alarm` is ever dropped: a fix
whose position is refused becomes a status-only fix at the last known position, a fix from
the future is kept as a status-only fix at the hub's clock, a too-old fix is kept as it is.

A track's newest status and position move only to a newer fix, by `hub.ordering.is_newer`
(the unit's `seq` first, its clock second), the rule that also orders `vehicle_state`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Final, NamedTuple

from hub.ordering import is_newer

if TYPE_CHECKING:
    from protocol.telemetry import Telemetry

EARTH_RADIUS_M: Final = 6_371_008.8  # mean radius (IUGG); the speed check needs no better
MS_PER_HOUR: Final = 3_600_000


class Reason(StrEnum):
    """Why a filter refused a fix (or only its position, or its time)."""

    DUPLICATE = "duplicate"
    FUTURE = "future"
    TOO_OLD = "too_old"
    INVALID_POSITION = "invalid_position"
    IMPOSSIBLE_JUMP = "impossible_jump"


@dataclass(frozen=True, slots=True)
class FilterConfig:
    """The filters' limits; `HubSettings` supplies them from the environment."""

    max_future_ms: int = 300_000
    max_age_ms: int = 30 * 86_400_000
    max_speed_kmh: float = 250.0
    # Horizontal error assumed for a fix that does not report `accuracy_m`: a consumer GPS
    # under open sky is within about 5-15 m; the larger value avoids refusing real fixes.
    default_accuracy_m: float = 15.0
    # Timestamps remembered per vehicle to spot repeats. QoS 1 redeliveries arrive within a
    # few messages of the original; the database's ON CONFLICT catches anything older, so a
    # short memory (about 2 KiB per vehicle) is enough.
    recent_per_vehicle: int = 32


class Position(NamedTuple):
    """A place a vehicle was at, with the fix's time (ms), accuracy (m) and counter."""

    lat: float
    lon: float
    ts: int
    accuracy_m: float
    seq: int | None = None


# (locked, doors_open, engine_on, alarm): what a filter must never drop a change of.
Status = tuple[bool, bool, bool, bool | None]


# NamedTuples, not frozen dataclasses: one of each is built per fix, and a tuple is several
# times cheaper to build.
class Decision(NamedTuple):
    """What to do with one fix."""

    keep: bool
    # The filter that fired: why it was dropped, or why it was kept only for its status.
    reason: Reason | None = None
    # The time to store it at (ms): the fix's own, or the hub's clock for a future fix.
    ts: int = 0
    # True: store the fix's own position, speed, heading and accuracy. False: store `lat`
    # and `lon` (the last known position, or None when there is none) and no speed/heading.
    own_position: bool = False
    lat: float | None = None
    lon: float | None = None
    # For a carried position: the time of the fix it came from.
    position_ts: int | None = None
    # The newest fix of the vehicle so far (by `hub.ordering`): its status is the state's.
    newest: bool = False


_DROPPED: Final = {reason: Decision(keep=False, reason=reason) for reason in Reason}


@dataclass(slots=True)
class Track:
    """What the hub remembers about one vehicle between fixes."""

    last_ts: int = 0
    last_seq: int | None = None
    status: Status | None = None
    position: Position | None = None
    # A fix refused as a jump; if the next fix agrees with it, the anchor was the glitch.
    witness: Position | None = None
    recent: deque[int] = field(default_factory=deque)
    recent_set: set[int] = field(default_factory=set)

    def changes_status(self, status: Status) -> bool:
        """Whether this status differs from the newest one known (unknown counts as a change)."""
        known = self.status
        if known is None:
            return True
        alarm = status[3]
        return (
            status[0] != known[0]
            or status[1] != known[1]
            or status[2] != known[2]
            or (alarm is not None and alarm != known[3])
        )

    def remember(self, ts: int, capacity: int) -> None:
        """Note a timestamp as seen, forgetting the oldest beyond `capacity`."""
        self.recent.append(ts)
        self.recent_set.add(ts)
        if len(self.recent) > capacity:
            self.recent_set.discard(self.recent.popleft())


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Distance in metres, equirectangular: within 0.1% of great-circle below ~100 km.

    The jump check compares distances that driving could cover in seconds or minutes;
    beyond that any error only makes an absurd speed a little more or less absurd. It
    costs a quarter of the haversine formula, and it runs for every fix.
    """
    dlon = lon2 - lon1
    if dlon > 180:  # the short way round across the antimeridian
        dlon -= 360
    elif dlon < -180:
        dlon += 360
    x = math.radians(dlon) * math.cos(math.radians((lat1 + lat2) / 2))
    y = math.radians(lat2 - lat1)
    return EARTH_RADIUS_M * math.hypot(x, y)


class FixFilter:
    """Decides fix by fix, remembering a `Track` per vehicle. Not thread-safe: one caller."""

    def __init__(self, config: FilterConfig | None = None) -> None:
        self.config = config or FilterConfig()
        self._tracks: dict[str, Track] = {}

    def __len__(self) -> int:
        return len(self._tracks)

    def track(self, vehicle_id: str) -> Track | None:
        """The vehicle's memory, if it has any."""
        return self._tracks.get(vehicle_id)

    def seed(  # noqa: PLR0913 - the fields of a stored state, by keyword
        self,
        vehicle_id: str,
        *,
        ts: int,
        seq: int | None,
        status: Status,
        lat: float | None,
        lon: float | None,
    ) -> None:
        """Start from a stored state (the hub's start-up), as if that fix had just passed."""
        position = None
        if lat is not None and lon is not None:
            position = Position(lat, lon, ts, self.config.default_accuracy_m, seq)
        self._tracks[vehicle_id] = Track(last_ts=ts, last_seq=seq, status=status, position=position)

    def check(self, vehicle_id: str, fix: Telemetry, now_ms: int) -> Decision:
        """Decide what to store for `fix`, and remember it if it is kept."""
        config = self.config
        track = self._tracks.get(vehicle_id)
        if track is None:
            track = self._tracks[vehicle_id] = Track()
        ts = fix.ts
        if ts in track.recent_set:
            return _DROPPED[Reason.DUPLICATE]
        status: Status = (fix.locked, fix.doors_open, fix.engine_on, fix.alarm)
        changed = track.changes_status(status)

        if ts > now_ms + config.max_future_ms:
            # The car's clock is wrong but a lock or door change is real: keep that, at the
            # hub's clock, where the car last was.
            return self._status_only(
                track, fix.seq, ts, now_ms, status, Reason.FUTURE, keep=changed
            )
        too_old = ts < now_ms - config.max_age_ms
        if too_old and not changed:
            return _DROPPED[Reason.TOO_OLD]
        time_reason = Reason.TOO_OLD if too_old else None

        lat, lon = fix.lat, fix.lon
        if lat is None or lon is None:
            # Status-only by the unit's choice (no GPS fix): always kept.
            return self._status_only(track, fix.seq, ts, ts, status, time_reason, keep=True)
        refused = self._refuse_position(track, fix, lat, lon)
        if refused is not None:
            return self._status_only(track, fix.seq, ts, ts, status, refused, keep=changed)

        track.remember(ts, config.recent_per_vehicle)
        track.witness = None
        anchor = track.position
        if anchor is None or is_newer(
            fix.seq, ts, than_seq=anchor.seq, than_ts=anchor.ts, allowance=config.max_future_ms
        ):
            track.position = Position(lat, lon, ts, self._accuracy(fix), fix.seq)
        newest = self._advance(track, fix.seq, ts, status)
        return Decision(
            keep=True,
            reason=time_reason,
            ts=ts,
            own_position=True,
            lat=lat,
            lon=lon,
            newest=newest,
        )

    def _refuse_position(
        self, track: Track, fix: Telemetry, lat: float, lon: float
    ) -> Reason | None:
        if lat == 0 and lon == 0:
            return Reason.INVALID_POSITION
        anchor = track.position
        if anchor is None:
            return None
        accuracy = self._accuracy(fix)
        if not self._too_fast(anchor, lat, lon, fix.ts, accuracy):
            return None
        witness = track.witness
        if (
            witness is not None
            and witness.ts != fix.ts
            and not self._too_fast(witness, lat, lon, fix.ts, accuracy)
        ):
            # Two fixes in a row agree with each other and not with the anchor: the anchor was
            # the glitch (or the car was carried, e.g. towed with the unit off). Re-anchor.
            track.position = None
            return None
        track.witness = Position(lat, lon, fix.ts, accuracy, fix.seq)
        return Reason.IMPOSSIBLE_JUMP

    def _too_fast(
        self, anchor: Position, lat: float, lon: float, ts: int, accuracy_m: float
    ) -> bool:
        # Both fixes may be off by their accuracy; only the distance beyond that must be
        # explained by driving.
        excess_m = distance_m(anchor.lat, anchor.lon, lat, lon) - anchor.accuracy_m - accuracy_m
        if excess_m <= 0:
            return False
        elapsed_ms = abs(ts - anchor.ts)
        if elapsed_ms == 0:
            return True
        speed_kmh = excess_m / 1000 / (elapsed_ms / MS_PER_HOUR)
        return speed_kmh > self.config.max_speed_kmh

    def _accuracy(self, fix: Telemetry) -> float:
        accuracy = fix.accuracy_m
        return self.config.default_accuracy_m if accuracy is None else accuracy

    def _status_only(  # noqa: PLR0913, PLR0917 - keyword-free by design would not read better
        self,
        track: Track,
        seq: int,
        sent_ts: int,
        ts: int,
        status: Status,
        reason: Reason | None,
        *,
        keep: bool,
    ) -> Decision:
        """Keep the fix without its own position, at the last known one; or drop it."""
        if not keep:
            assert reason is not None
            return _DROPPED[reason]
        # Remember the time the unit sent, so a redelivery of the same message is a duplicate.
        track.remember(sent_ts, self.config.recent_per_vehicle)
        position = track.position
        newest = self._advance(track, seq, ts, status)
        if position is None:
            return Decision(keep=True, reason=reason, ts=ts, newest=newest)
        return Decision(
            keep=True,
            reason=reason,
            ts=ts,
            lat=position.lat,
            lon=position.lon,
            position_ts=position.ts,
            newest=newest,
        )

    def _advance(self, track: Track, seq: int, ts: int, status: Status) -> bool:
        """Move the vehicle's newest fix and status forward (never back); True if it moved."""
        if track.status is not None and not is_newer(
            seq, ts, than_seq=track.last_seq, than_ts=track.last_ts,
            allowance=self.config.max_future_ms,
        ):  # fmt: skip
            return False
        track.last_ts = ts
        track.last_seq = seq
        if status[3] is None and track.status is not None:
            # An omitted alarm means unknown, not off: keep the last known value.
            status = (status[0], status[1], status[2], track.status[3])
        track.status = status
        return True
