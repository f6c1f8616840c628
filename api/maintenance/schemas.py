"""Request and response bodies of /v1/admin/vehicles/{id}/maintenance."""

import uuid
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.schemas import LongText


class MaintenanceCreate(BaseModel):
    """A maintenance window to schedule."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "from": "2030-05-01T08:00:00Z",
                    "to": "2030-05-01T12:00:00Z",
                    "reason": "tyre change",
                }
            ]
        },
    )

    from_: AwareDatetime = Field(alias="from")
    to: AwareDatetime
    reason: LongText


class MaintenanceWindow(BaseModel):
    """A scheduled maintenance window: the vehicle cannot be booked during it."""

    model_config = ConfigDict(populate_by_name=True)

    id: uuid.UUID
    vehicle_id: str
    from_: datetime = Field(alias="from")
    to: datetime
    reason: str
    created_by: uuid.UUID | None
    created_at: datetime


class MaintenanceCreated(MaintenanceWindow):
    """The new window, with the bookings it collides with (staff must move them)."""

    conflicting_bookings: list[uuid.UUID]


class MaintenanceList(BaseModel):
    """A vehicle's maintenance windows, earliest first."""

    items: list[MaintenanceWindow]
