"""Request and response bodies of /v1/admin/geofences.

The bodies check types and ranges; the meaning of the whole (closed rings, a valid and
sanely sized shape, a radius only for a circle, a margin that fits the fence, a real time
zone) is checked by `db.geofences.model.GeofenceSpec`, and its failures answer 409
`invalid_geofence`, with the stable code in each detail's `type`.
"""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 - pydantic reads the annotations at runtime
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from api.schemas import PRINTABLE_TRIMMED, Keep, PatchBody
from db.geofences.model import (
    MAX_DWELL_S,
    MAX_MARGIN_M,
    MAX_NAME_LENGTH,
    MAX_SPEED_LIMIT_KMH,
    GeofenceKind,
)

GEOMETRY_EXAMPLE: Final = {
    "type": "Polygon",
    "coordinates": [
        [[121.46, 31.22], [121.48, 31.22], [121.48, 31.24], [121.46, 31.24], [121.46, 31.22]]
    ],
}

Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, pattern=PRINTABLE_TRIMMED),
]
Geometry = Annotated[
    dict[str, JsonValue],
    Field(
        description=(
            "GeoJSON `Polygon` or `MultiPolygon` (holes allowed), a `Point` with `radius_m` "
            "(a circle) or a `LineString` with `width_m` (a corridor); [longitude, latitude]."
        ),
        examples=[GEOMETRY_EXAMPLE],
    ),
]
Metres = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Margin = Annotated[float, Field(ge=0, le=MAX_MARGIN_M, allow_inf_nan=False)]
SpeedLimit = Annotated[float, Field(gt=0, le=MAX_SPEED_LIMIT_KMH, allow_inf_nan=False)]
Dwell = Annotated[int, Field(ge=0, le=MAX_DWELL_S)]
# HH:MM and an IANA zone name: the spec checks the values, the pattern keeps control
# characters (PostgreSQL refuses NUL in text and jsonb) out before they get that far.
Clock = Annotated[str, StringConstraints(max_length=5, pattern=r"^[0-9:]+$")]
Zone = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+/-]+$")]


class ScheduleBody(BaseModel):
    """When a fence is in force: `[from, to)` local time on some ISO weekdays (1 = Monday)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    days: Annotated[list[int], Field(min_length=1, max_length=7)] = [1, 2, 3, 4, 5, 6, 7]
    start: Clock = Field(default="00:00", alias="from")
    end: Clock = Field(default="00:00", alias="to")
    tz: Zone = Field(examples=["Asia/Shanghai"])


class GeofenceCreate(BaseModel):
    """A new geofence (docs/geofences.md): everything but its id and timestamps."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    kind: GeofenceKind
    geometry: Geometry
    radius_m: Metres | None = Field(default=None, description="A circle's radius.")
    width_m: Metres | None = Field(default=None, description="A corridor's full width.")
    speed_limit_kmh: SpeedLimit | None = None
    schedule: ScheduleBody | None = Field(default=None, description="null: always in force.")
    enter_margin_m: Margin = 10.0
    exit_margin_m: Margin = 10.0
    dwell_s: Dwell = Field(default=0, description="Seconds inside before entering; 0: off.")
    active: bool = True

    def fields(self) -> dict[str, Any]:
        """The values as `GeofenceSpec` takes them."""
        return self.model_dump(by_alias=True)


class GeofenceUpdate(PatchBody):
    """A PATCH: the fields sent replace the stored ones, then the whole is validated again.

    `null` clears an optional field (a circle turned polygon sends `"radius_m": null`).
    """

    model_config = ConfigDict(extra="forbid")

    name: Name | Keep = None
    kind: GeofenceKind | Keep = None
    geometry: Geometry | Keep = None
    radius_m: Metres | None = None
    width_m: Metres | None = None
    speed_limit_kmh: SpeedLimit | None = None
    schedule: ScheduleBody | None = None
    enter_margin_m: Margin | Keep = None
    exit_margin_m: Margin | Keep = None
    dwell_s: Dwell | Keep = None
    active: bool | Keep = None

    def changes(self) -> dict[str, Any]:
        """Only the fields the client sent, as `GeofenceSpec` takes them."""
        return self.model_dump(exclude_unset=True, by_alias=True)


class Geofence(BaseModel):
    """A stored geofence; its geometry as stored (canonical: only `type` and `coordinates`)."""

    id: int
    name: str
    kind: GeofenceKind
    geometry: dict[str, JsonValue]
    radius_m: float | None
    width_m: float | None
    speed_limit_kmh: float | None
    schedule: dict[str, JsonValue] | None = Field(
        description='`{"days": [...], "from": "HH:MM", "to": "HH:MM", "tz": ...}`, or null.'
    )
    enter_margin_m: float
    exit_margin_m: float
    dwell_s: int
    active: bool
    created_at: datetime | None
    updated_at: datetime | None


class GeofencePage(BaseModel):
    """A page of geofences in id order."""

    items: list[Geofence]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )
