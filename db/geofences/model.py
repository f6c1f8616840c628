"""The geofence definition shared by the API (which manages it) and the hub (which evaluates it).

`GeofenceSpec` is what a client sends (create or full update), `Geofence` is a stored row.
Both validate on construction: the GeoJSON shape (`db.geofences.validation`), the margins and
the schedule. A validation failure is a pydantic `ValidationError` whose error `type` is one
of the stable codes (`GeometryErrorCode`, `schedule_days`, `schedule_time`,
`unknown_time_zone`), so the API can return it as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 - pydantic needs it at runtime
from enum import StrEnum
from typing import Annotated, Any, Final, NamedTuple, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from db.geofences.validation import GeometryError, check_margins, check_shape, normalize_geometry

ISO_DAYS: Final = (1, 2, 3, 4, 5, 6, 7)  # Monday = 1 ... Sunday = 7, as datetime.isoweekday
MINUTES_PER_DAY: Final = 24 * 60
# A name is a label on a map and in an event, not a description.
MAX_NAME_LENGTH: Final = 200
# The database's default hysteresis (0005_geofences.sql): a few times a consumer GPS's
# error, so a car parked on the line does not flap.
DEFAULT_MARGIN_M: Final = 10.0
# More than a kilometre of hysteresis is a different, bigger fence.
MAX_MARGIN_M: Final = 1_000.0
# A day: a longer dwell is a report, not a geofence rule.
MAX_DWELL_S: Final = 86_400
# The fix filters' own ceiling (hub.filters.FilterConfig.max_speed_kmh).
MAX_SPEED_LIMIT_KMH: Final = 250.0

_HH_MM = re.compile(r"^(?P<h>[01]\d|2[0-3]):(?P<m>[0-5]\d)$")


class GeofenceKind(StrEnum):
    """What a geofence means to the business."""

    SERVICE_AREA = "service_area"  # where cars may be driven; leaving it is an event
    PARKING_ZONE = "parking_zone"  # where a trip may end
    RESTRICTED = "restricted"  # where cars must not go


def _minutes(value: str) -> int:
    match = _HH_MM.match(value)
    assert match is not None  # validated on construction
    return int(match["h"]) * 60 + int(match["m"])


class Schedule(BaseModel):
    """When a geofence is in force: a daily window on some weekdays, in a time zone.

    Stored as `{"days": [1..7], "from": "HH:MM", "to": "HH:MM", "tz": "Area/City"}`. The
    window is [from, to) in local wall-clock time and belongs to the day it starts on: with
    `to` at or before `from` it runs overnight into the next day (22:00-06:00 on Friday is
    Friday 22:00 to Saturday 06:00), and `from` equal to `to` is a whole 24 hours.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    days: tuple[int, ...] = ISO_DAYS
    start: str = Field(default="00:00", alias="from")
    end: str = Field(default="00:00", alias="to")
    tz: str

    @field_validator("days")
    @classmethod
    def _check_days(cls, days: tuple[int, ...]) -> tuple[int, ...]:
        if not days or any(day not in ISO_DAYS for day in days) or len(set(days)) != len(days):
            raise PydanticCustomError(
                "schedule_days",
                "days must be distinct ISO weekdays, 1 (Monday) to 7 (Sunday), at least one",
            )
        return tuple(sorted(days))

    @field_validator("start", "end")
    @classmethod
    def _check_time(cls, value: str) -> str:
        if _HH_MM.match(value) is None:
            raise PydanticCustomError(
                "schedule_time", "times are HH:MM, 00:00 to 23:59, got {value}", {"value": value}
            )
        return value

    @field_validator("tz")
    @classmethod
    def _check_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "unknown_time_zone",
                "{value} is not an IANA time zone (such as Asia/Shanghai)",
                {"value": value},
            ) from None
        return value

    def is_active(self, at: datetime) -> bool:
        """Whether the window is open at `at` (an aware datetime)."""
        if at.tzinfo is None:
            raise ValueError("is_active needs an aware datetime")
        local = at.astimezone(ZoneInfo(self.tz))
        minute = local.hour * 60 + local.minute
        day = local.isoweekday()
        start, end = _minutes(self.start), _minutes(self.end)
        if start < end:
            return day in self.days and start <= minute < end
        # Overnight (or 24 h): the evening part belongs to today's window, the early-morning
        # part to yesterday's.
        yesterday = 7 if day == 1 else day - 1
        return (day in self.days and minute >= start) or (yesterday in self.days and minute < end)

    def to_json(self) -> dict[str, Any]:
        """The stored form: `{"days": [...], "from": ..., "to": ..., "tz": ...}`."""
        return self.model_dump(mode="json", by_alias=True)


def _custom_error(error: GeometryError) -> PydanticCustomError:
    return PydanticCustomError(str(error.code), "{detail}", {"detail": error.message})


Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME_LENGTH)
]
Margin = Annotated[float, Field(ge=0, le=MAX_MARGIN_M, allow_inf_nan=False)]


class GeofenceSpec(BaseModel):
    """A geofence as a client defines it: everything but its id and timestamps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    kind: GeofenceKind
    # GeoJSON Polygon, MultiPolygon, Point (circle, with radius_m) or LineString (corridor,
    # with width_m); stored canonical (see db.geofences.validation.normalize_geometry).
    geometry: dict[str, Any]
    radius_m: float | None = None
    # A corridor's full width: the centre line plus half of it on either side.
    width_m: float | None = None
    speed_limit_kmh: Annotated[float, Field(gt=0, le=MAX_SPEED_LIMIT_KMH)] | None = None
    # None: always in force.
    schedule: Schedule | None = None
    # Hysteresis (docs/geofences.md): how deep inside a fix must be to enter, how far
    # outside to exit, or how long a vehicle must stay inside to enter (0 = no dwell rule).
    enter_margin_m: Margin = DEFAULT_MARGIN_M
    exit_margin_m: Margin = DEFAULT_MARGIN_M
    dwell_s: Annotated[int, Field(ge=0, le=MAX_DWELL_S)] = 0
    active: bool = True

    @field_validator("geometry", mode="before")
    @classmethod
    def _normalize_geometry(cls, value: object) -> dict[str, Any]:
        try:
            return normalize_geometry(value)
        except GeometryError as error:
            raise _custom_error(error) from None

    @model_validator(mode="after")
    def _check_shape(self) -> Self:
        try:
            facts = check_shape(self.geometry, radius_m=self.radius_m, width_m=self.width_m)
            check_margins(facts, enter_margin_m=self.enter_margin_m, dwell_s=self.dwell_s)
        except GeometryError as error:
            raise _custom_error(error) from None
        return self

    @property
    def is_circle(self) -> bool:
        """A Point with a radius."""
        return bool(self.geometry["type"] == "Point")

    @property
    def is_corridor(self) -> bool:
        """A LineString with a width."""
        return bool(self.geometry["type"] == "LineString")


class Geofence(GeofenceSpec):
    """A stored geofence: a `geofences` row."""

    id: int
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def spec(self) -> GeofenceSpec:
        """The client-editable part, e.g. to merge a partial update into."""
        return GeofenceSpec.model_validate(
            self.model_dump(exclude={"id", "created_at", "updated_at"})
        )


# A NamedTuple, not a frozen dataclass: the hub builds one per changed state per batch, and
# a tuple is several times cheaper to build.
class GeofenceState(NamedTuple):
    """Where one vehicle stands with one geofence: a `geofence_state` row.

    `inside` is the hysteresis state; `since` is when it last flipped (None if it never
    did); `pending_since` is when a dwell began (inside, not yet entered). `fix_*` is the
    fix that last changed the row: a fix older than it never changes it again.
    """

    vehicle_id: str
    geofence_id: int
    inside: bool
    since: datetime | None
    pending_since: datetime | None
    fix_ts: datetime
    fix_lat: float
    fix_lon: float


@dataclass(frozen=True, slots=True)
class VehiclePosition:
    """A vehicle's newest known fix: where segment crossing resumes after a restart."""

    vehicle_id: str
    ts: datetime
    lat: float
    lon: float


# Feature properties that map onto GeofenceSpec fields; anything else is ignored on import.
_FEATURE_FIELDS: Final = frozenset(GeofenceSpec.model_fields) - {"geometry"}


@dataclass(frozen=True, slots=True)
class FeatureProblem:
    """Why one feature of an imported file was refused."""

    index: int
    name: str | None
    code: str
    message: str


class GeofenceImportError(ValueError):
    """Some features of a GeoJSON document are not valid geofences; nothing was imported."""

    def __init__(self, problems: list[FeatureProblem]) -> None:
        self.problems = problems
        lines = [
            f"feature {p.index}{f' ({p.name})' if p.name else ''}: {p.code}: {p.message}"
            for p in problems
        ]
        super().__init__("\n".join(lines))


def specs_from_geojson(document: object) -> list[GeofenceSpec]:
    """Geofences from a GeoJSON FeatureCollection (or one Feature), as `freecar geofence import`.

    Each feature's `properties` hold `name`, `kind` and optionally the other GeofenceSpec
    fields (`radius_m`, `width_m`, `schedule`, margins...). Every feature is checked; if any
    fails, GeofenceImportError lists them all.
    """
    if isinstance(document, dict) and document.get("type") == "Feature":
        features: object = [document]
    elif isinstance(document, dict) and document.get("type") == "FeatureCollection":
        features = document.get("features")
    else:
        raise GeofenceImportError(
            [FeatureProblem(0, None, "not_a_feature_collection", "expected a FeatureCollection")]
        )
    if not isinstance(features, list):
        raise GeofenceImportError(
            [FeatureProblem(0, None, "not_a_feature_collection", "`features` must be a list")]
        )
    specs: list[GeofenceSpec] = []
    problems: list[FeatureProblem] = []
    for index, feature in enumerate(features):
        properties = feature.get("properties") if isinstance(feature, dict) else None
        if not isinstance(feature, dict) or not isinstance(properties, dict):
            problems.append(
                FeatureProblem(index, None, "not_a_feature", "a feature with properties")
            )
            continue
        name = properties.get("name")
        fields = {key: value for key, value in properties.items() if key in _FEATURE_FIELDS}
        try:
            fields["geometry"] = feature.get("geometry")
            specs.append(GeofenceSpec.model_validate(fields))
        except ValidationError as error:
            problems.extend(
                FeatureProblem(
                    index,
                    name if isinstance(name, str) else None,
                    detail["type"],
                    _located(detail["loc"], detail["msg"]),
                )
                for detail in error.errors()
            )
    if problems:
        raise GeofenceImportError(problems)
    return specs


def _located(loc: tuple[int | str, ...], message: str) -> str:
    where = ".".join(str(part) for part in loc)
    return f"{where}: {message}" if where else message
