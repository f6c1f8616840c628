"""When a parked car really moves, and where it stands until it does.

A GPS receiver with a poor view of the sky (an underground garage, a street between tall
buildings: where shared cars park) reports a standing car wandering by 100-200 m and
moving at 10 km/h or more. Taken fix by fix, that is a theft alarm, and a parking zone whose
edge the wander crosses is entered and left over and over. Fleet telematics filter this drift
while the ignition is off; so does this module. Pure logic, no I/O, no clock: the caller
passes each vehicle's fixes in time order with its `Parking` state, which is plain data (a
few numbers, whatever happens) that the hub saves as JSON with the vehicle's conditions.

- **Parked**: the engine is off. The first fix with the engine off (its own position, or the
  last known one) anchors the car: the **held point**. While parked, every fix is stored at
  the held point (speed 0, the anchor's heading and accuracy); what the car sent, where it
  differs, is kept in the row's `extra._hub.raw`. With the engine running the car is driven,
  never held.
- **Moved**: a parked car moves when `confirm_fixes` fixes in a row, spanning at least
  `confirm_s`, each lie further from the held point than `away_m` plus the held point's error
  plus the fix's own accuracy. Wander within the receivers' stated accuracy therefore never
  counts (the distance between two fixes within their accuracy of one point is at most the
  sum of the two), `away_m` covers receivers that understate their error, and the run of
  fixes covers a single wild one. GPS speed is no evidence: it is what wanders. A fix without
  a position of its own (a status change at the last known place) is no evidence either way.
  The fix that completes the run is stored as received and marked in `extra._hub.moved`;
  `moving_while_locked` is raised from that mark (hub/events/conditions.py).
- **Error of the held point**: it starts at the anchor's stated accuracy and shrinks when a
  later fix proves it smaller (the car is within that fix's accuracy of it, so the anchor is
  at most their distance plus that accuracy away from the car). The held point itself never
  moves, so a zone decided at parking stays decided.
- **Standing again**: after a move with the engine still off (a tow), fixes are stored as
  received until `confirm_fixes` fixes stay within the same radius of one point for
  `settle_s`; the car is then parked where the last of them puts it. Starting the engine and
  stopping it again parks it too.

`parked_at(state)` says whether, and where, a vehicle is parked: the held point a trip's end
is judged by (the bookings issue). `db.parking.parked_vehicles` reads the same from the
database for processes that are not the hub.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from hub.intake import HUB_NOTES_KEY

if TYPE_CHECKING:
    from collections.abc import Mapping

    from db.telemetry import TelemetryRow

EARTH_RADIUS_M: Final = 6_371_008.8
# Keys of the hub's notes (`extra._hub`) this module writes, and the one intake writes for
# a position carried over from an earlier fix (see hub/intake.py).
RAW_KEY: Final = "raw"
MOVED_KEY: Final = "moved"
CARRIED_KEY: Final = "position_ts"
# The fields a hold replaces, kept in the raw note so the fix as received can be restored
# (a batch written again after a rollback is decided again from what the cars sent).
_RAW_FIELDS: Final = ("lat", "lon", "speed_kmh", "heading", "accuracy_m")
# Decimals kept of the held point's error: it only ever shrinks, and a change of a few
# centimetres is not worth a write of the vehicle's state.
_ERROR_DECIMALS: Final = 1


@dataclass(frozen=True, slots=True)
class ParkingConfig:
    """How much evidence a move needs; every default says why it has its value."""

    # Receivers understate their error when the sky is poor: the widest recorded wander in
    # tests/hub/data/gpsd strays 207 m from its first fix, 105 m beyond what the two fixes'
    # stated accuracies add up to, and the issue saw 100-200 m. A tow at 30 km/h covers
    # this in 18 s.
    away_m: float = 150.0
    # Three fixes in a row beyond the radius, over at least 9 s: the agent reports every 5 s
    # while its GPS says it moves, so a tow is confirmed by its third fix away (10 s after the
    # first, less the timer's jitter); a car reporting each second needs ten. A single wild
    # fix, or a burst of them within a few seconds, is not a move.
    confirm_fixes: int = 3
    confirm_s: float = 9.0
    # A moved car stands again after two minutes within the radius of one point: longer than
    # a red light, so a tow truck waiting at one is not parked again.
    settle_s: float = 120.0
    # A fix without `accuracy_m`: a consumer GPS under open sky, as the fix filters assume.
    default_accuracy_m: float = 15.0


@dataclass(frozen=True, slots=True)
class Parking:
    """One vehicle's parking state (None: driving, or nothing known yet).

    `parked`: held at (`lat`, `lon`) since `since`. Not parked: it moved and is not yet
    standing again; (`lat`, `lon`) is where it has been since `since`, seen by `near_fixes`.
    Frozen: the conditions record compares states by value to know when to save them.
    """

    parked: bool
    lat: float
    lon: float
    since: float
    """Epoch seconds."""
    error_m: float
    """How far the car may be from (`lat`, `lon`): the radius's share of the anchor."""
    accuracy_m: float | None = None
    """The anchor fix's stated accuracy, as stored on held rows."""
    heading: float | None = None
    near_fixes: int = 1
    away_since: float | None = None
    """Epoch seconds of the first fix of the current run beyond the radius."""
    away_fixes: int = 0

    def to_json(self) -> dict[str, Any]:
        """The state as JSON-ready data."""
        return {
            "parked": self.parked,
            "lat": self.lat,
            "lon": self.lon,
            "since": self.since,
            "error_m": self.error_m,
            "accuracy_m": self.accuracy_m,
            "heading": self.heading,
            "near_fixes": self.near_fixes,
            "away_since": self.away_since,
            "away_fixes": self.away_fixes,
        }

    @classmethod
    def from_json(cls, data: object) -> Parking | None:
        """Rebuild a saved state; None (start afresh) for anything not saved by `to_json`."""
        if not isinstance(data, dict):
            return None
        try:
            state = cls(
                parked=_boolean(data["parked"]),
                lat=_number(data["lat"]),
                lon=_number(data["lon"]),
                since=_number(data["since"]),
                error_m=_number(data["error_m"]),
                accuracy_m=_optional_number(data.get("accuracy_m")),
                heading=_optional_number(data.get("heading")),
                near_fixes=_count(data.get("near_fixes", 1)),
                away_since=_optional_number(data.get("away_since")),
                away_fixes=_count(data.get("away_fixes", 0)),
            )
        except (KeyError, TypeError, ValueError):
            return None
        if not (-90 <= state.lat <= 90 and -180 <= state.lon <= 180) or state.error_m < 0:
            return None
        return state


class HeldPoint(NamedTuple):
    """Where a parked vehicle stands, as the hub holds it."""

    lat: float
    lon: float
    error_m: float
    """How far the car may be from the point."""
    since: float
    """Parked since, epoch seconds."""


def parked_at(state: Parking | None) -> HeldPoint | None:
    """Whether and where the vehicle is parked: its held point, or None (driving, moved)."""
    if state is None or not state.parked:
        return None
    return HeldPoint(state.lat, state.lon, state.error_m, state.since)


class Outcome(StrEnum):
    """What a fix means for a vehicle's stored position."""

    FREE = "free"
    """Not parked: stored as received."""
    HELD = "held"
    """Parked: stored at the held point."""
    MOVED = "moved"
    """This fix proved that the parked car moves: stored as received, and marked."""


class Sighting(NamedTuple):
    """What the parking rules read from one fix."""

    ts: float
    """Epoch seconds."""
    lat: float | None
    lon: float | None
    accuracy_m: float | None
    heading: float | None
    engine_on: bool
    own_position: bool
    """False for a position carried over from an earlier fix: no evidence of where it is."""


class Verdict(NamedTuple):
    """The outcome of one fix, and the vehicle's state after it."""

    outcome: Outcome
    state: Parking | None
    moved_m: float = 0.0
    """MOVED: the fix's distance from the held point."""
    away_s: float = 0.0
    """MOVED: how long the run of fixes beyond the radius lasted."""
    away_fixes: int = 0
    """MOVED: how many fixes it had."""


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Distance in metres, equirectangular: within 0.1% of great-circle below about 100 km.

    The rules compare distances with a radius of hundreds of metres; a car found farther
    than that is far, whatever the last digit. It runs for every fix of a parked car, at a
    third of the haversine formula's cost.
    """
    dlon = lon2 - lon1
    if dlon > 180:  # the short way round across the antimeridian
        dlon -= 360
    elif dlon < -180:
        dlon += 360
    x = math.radians(dlon) * math.cos(math.radians((lat1 + lat2) / 2))
    return EARTH_RADIUS_M * math.hypot(x, math.radians(lat2 - lat1))


def observe(state: Parking | None, seen: Sighting, config: ParkingConfig) -> Verdict:
    """Apply one fix, newer than any before it, to a vehicle's parking state."""
    if seen.engine_on:
        return Verdict(Outcome.FREE, None)  # driven: nothing is held, nothing to settle
    if seen.lat is None or seen.lon is None or (state is not None and not seen.own_position):
        # No position of its own: no evidence. A parked car is still where it was parked.
        return Verdict(Outcome.HELD if state and state.parked else Outcome.FREE, state)
    if state is None:
        # The engine was just switched off (or the hub sees the car for the first time):
        # parked here. A carried position is the last place it was seen: the best anchor.
        return Verdict(Outcome.HELD, _anchor(seen, config, parked=True))
    if state.parked:
        return _parked(state, seen, config)
    return _settling(state, seen, config)


def _radius(state: Parking, accuracy_m: float, config: ParkingConfig) -> float:
    """How far a fix of this accuracy may lie from the point with no evidence of a move."""
    return config.away_m + state.error_m + accuracy_m


def _parked(state: Parking, seen: Sighting, config: ParkingConfig) -> Verdict:
    assert seen.lat is not None
    assert seen.lon is not None
    accuracy = config.default_accuracy_m if seen.accuracy_m is None else seen.accuracy_m
    distance = distance_m(state.lat, state.lon, seen.lat, seen.lon)
    if distance <= _radius(state, accuracy, config):
        # The car stands within `accuracy` of this fix, so the held point is at most
        # `distance + accuracy` from it: perhaps less than the anchor's own accuracy said.
        bound = distance + accuracy
        if bound < state.error_m or state.away_fixes:
            error = min(state.error_m, round(bound, _ERROR_DECIMALS))
            state = replace(state, error_m=error, away_since=None, away_fixes=0)
        return Verdict(Outcome.HELD, state)
    away_since = seen.ts if state.away_since is None else state.away_since
    away_fixes = state.away_fixes + 1
    away_s = seen.ts - away_since
    if away_fixes >= config.confirm_fixes and away_s >= config.confirm_s:
        moved = _anchor(seen, config, parked=False)
        return Verdict(Outcome.MOVED, moved, distance, away_s, away_fixes)
    return Verdict(Outcome.HELD, replace(state, away_since=away_since, away_fixes=away_fixes))


def _settling(state: Parking, seen: Sighting, config: ParkingConfig) -> Verdict:
    assert seen.lat is not None
    assert seen.lon is not None
    accuracy = config.default_accuracy_m if seen.accuracy_m is None else seen.accuracy_m
    if distance_m(state.lat, state.lon, seen.lat, seen.lon) > _radius(state, accuracy, config):
        return Verdict(Outcome.FREE, _anchor(seen, config, parked=False))
    near_fixes = state.near_fixes + 1
    if near_fixes >= config.confirm_fixes and seen.ts - state.since >= config.settle_s:
        # Standing again, parked where it is now: the point it kept near may be where a tow
        # truck waited before it crept on, as the anchor of a car just parked is its last fix.
        return Verdict(Outcome.HELD, replace(_anchor(seen, config, parked=True), since=state.since))
    return Verdict(Outcome.FREE, replace(state, near_fixes=near_fixes))


def _anchor(seen: Sighting, config: ParkingConfig, *, parked: bool) -> Parking:
    assert seen.lat is not None
    assert seen.lon is not None
    error = config.default_accuracy_m if seen.accuracy_m is None else seen.accuracy_m
    return Parking(
        parked=parked,
        lat=seen.lat,
        lon=seen.lon,
        since=seen.ts,
        error_m=error,
        accuracy_m=seen.accuracy_m,
        heading=seen.heading,
    )


# --- fixes as the hub stores them ------------------------------------------------------------


def sighting(row: TelemetryRow, ts: float | None = None) -> Sighting:
    """What the parking rules read from a row (as received: see `received`).

    `ts` is the row's time in epoch seconds, if the caller has it already.
    """
    carried = row.extra is not None and CARRIED_KEY in _notes(row.extra)
    return Sighting(
        row.ts.timestamp() if ts is None else ts,
        row.lat,
        row.lon,
        row.accuracy_m,
        row.heading,
        row.engine_on,
        own_position=row.lat is not None and not carried,
    )


def received(row: TelemetryRow) -> TelemetryRow:
    """The row as the car sent it: undo a hold, drop a move mark (a retried batch, a forgery).

    A unit may send an `_hub` field of its own: only a well-formed raw note is restored, and
    a move mark is always dropped, so no fix can raise an alarm by saying it did.
    """
    if row.extra is None:
        return row
    notes = _notes(row.extra)
    if RAW_KEY not in notes and MOVED_KEY not in notes:
        return row
    raw = _raw_values(notes.get(RAW_KEY))
    if raw is not None:
        row = row._replace(
            lat=raw["lat"],
            lon=raw["lon"],
            speed_kmh=raw["speed_kmh"],
            heading=raw["heading"],
            accuracy_m=raw["accuracy_m"],
        )
    kept = {k: v for k, v in notes.items() if k not in {RAW_KEY, MOVED_KEY}}
    return row._replace(extra=_with_notes(row.extra, kept))


def apply(row: TelemetryRow, verdict: Verdict) -> TelemetryRow:
    """The row to store for a fix (as received) and its verdict."""
    outcome, state = verdict.outcome, verdict.state
    if outcome is Outcome.FREE:
        return row
    if outcome is Outcome.HELD and state is not None:
        return hold(row, state)
    if outcome is Outcome.MOVED:
        mark = {
            "moved_m": round(verdict.moved_m, 1),
            "away_s": round(verdict.away_s, 1),
            "fixes": verdict.away_fixes,
        }
        return row._replace(extra=_with_notes(row.extra, {**_notes(row.extra), MOVED_KEY: mark}))
    return row


def hold(row: TelemetryRow, state: Parking) -> TelemetryRow:
    """The row at the held point, what it said kept in its raw note (if it said otherwise)."""
    speed = None if row.speed_kmh is None else 0.0
    if (row.lat, row.lon, row.speed_kmh, row.heading, row.accuracy_m) == (
        state.lat,
        state.lon,
        speed,
        state.heading,
        state.accuracy_m,
    ):
        return row  # a receiver that holds still itself (or the anchor fix): nothing to keep
    raw = {
        "lat": row.lat,
        "lon": row.lon,
        "speed_kmh": row.speed_kmh,
        "heading": row.heading,
        "accuracy_m": row.accuracy_m,
    }
    # Built whole rather than with `_replace`: this runs for every fix of a parked car.
    return type(row)(
        row.vehicle_id,
        row.ts,
        row.seq,
        state.lat,
        state.lon,
        speed,
        state.heading,
        row.odometer_km,
        row.fuel_pct,
        row.battery_pct,
        row.locked,
        row.doors_open,
        row.engine_on,
        row.alarm,
        state.accuracy_m,
        {HUB_NOTES_KEY: {RAW_KEY: raw}}
        if row.extra is None
        else _with_notes(row.extra, {**_notes(row.extra), RAW_KEY: raw}),
    )


def hold_late(state: Parking | None, row: TelemetryRow) -> TelemetryRow:
    """A row older than the newest one decided: held if the car was parked by then."""
    if state is None or not state.parked or row.engine_on or row.ts.timestamp() < state.since:
        return row
    return hold(row, state)


def move_mark(row: TelemetryRow) -> dict[str, Any] | None:
    """The mark `apply` put on the fix that proved a parked car moves, else None."""
    mark = _notes(row.extra).get(MOVED_KEY)
    return mark if isinstance(mark, dict) else None


def _notes(extra: Mapping[str, Any] | None) -> Mapping[str, Any]:
    notes = None if extra is None else extra.get(HUB_NOTES_KEY)
    return notes if isinstance(notes, dict) else {}


def _with_notes(extra: Mapping[str, Any] | None, notes: Mapping[str, Any]) -> dict[str, Any] | None:
    """`extra` with its hub notes replaced (a new dict: rows may share the unit's extras)."""
    rest = {k: v for k, v in (extra or {}).items() if k != HUB_NOTES_KEY}
    if notes:
        rest[HUB_NOTES_KEY] = dict(notes)
    return rest or None


def _raw_values(raw: object) -> dict[str, float | None] | None:
    """The raw note's values if it is one `hold` wrote, else None."""
    if not isinstance(raw, dict) or set(raw) != set(_RAW_FIELDS):
        return None
    try:
        values = {name: _optional_number(raw[name]) for name in _RAW_FIELDS}
    except (TypeError, ValueError):
        return None
    lat, lon = values["lat"], values["lon"]
    if (lat is None) != (lon is None):
        return None
    if lat is not None and lon is not None and not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return values


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError("not a finite number")
    return float(value)


def _optional_number(value: object) -> float | None:
    return None if value is None else _number(value)


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError("not a boolean")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError("not a count")
    return value
