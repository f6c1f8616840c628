"""Response bodies of /v1/vehicles: search results, details and availability."""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from db.vehicle_vocabulary import Category


class Sort(StrEnum):
    """Search result order."""

    DISTANCE = "distance"
    PRICE = "price"
    RATING = "rating"


BusyReason = Literal["booking", "maintenance", "out_of_service"]


class Location(BaseModel):
    """Where the vehicle last reported itself."""

    lat: float
    lon: float
    approximate: bool = Field(
        description="True for riders: rounded to about 100 m until they book the vehicle."
    )
    reported_at: datetime = Field(description="When the vehicle sent this position.")


class Rating(BaseModel):
    """What riders thought of the vehicle."""

    average: float | None = Field(description="Mean stars, 1 to 5; null before any rating.")
    count: int = Field(ge=0)


class Price(BaseModel):
    """Prices in integer minor units of `currency` (fen for CNY)."""

    hour_minor: int = Field(ge=0)
    day_minor: int = Field(ge=0)
    currency: str


class Window(BaseModel):
    """A [from, to) time range."""

    model_config = ConfigDict(populate_by_name=True)

    from_: datetime = Field(alias="from")
    to: datetime


class VehicleSummary(BaseModel):
    """One search result."""

    id: str
    make: str
    model: str
    category: Category
    fuel_type: str
    seats: int
    features: list[str]
    price: Price
    location: Location
    distance_m: int = Field(
        ge=0, description="From the searched point; riders get it rounded to 100 m."
    )
    fuel_pct: float | None
    battery_pct: float | None
    rating: Rating


class VehiclePage(BaseModel):
    """One page of search results, in the requested order."""

    items: list[VehicleSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )
    window: Window = Field(description="The window every listed vehicle is free for.")


class Image(BaseModel):
    """A photo of the vehicle (ready ones only)."""

    id: uuid.UUID
    content_type: str
    width: int
    height: int
    variants: list[str] = Field(description="Sizes made from it, such as thumb and large.")


class VehicleDetail(BaseModel):
    """Everything a rider sees about one vehicle."""

    id: str
    plate: str
    make: str
    model: str
    year: int | None
    category: Category
    fuel_type: str
    seats: int
    features: list[str]
    price: Price
    status: str = Field(description="available, rented or maintenance (retired ones are 404).")
    location: Location | None = Field(description="Null until the vehicle reports a position.")
    online: bool
    fuel_pct: float | None
    battery_pct: float | None
    rating: Rating
    images: list[Image]


class Slot(BaseModel):
    """A free stretch of time."""

    model_config = ConfigDict(populate_by_name=True)

    from_: datetime = Field(alias="from")
    to: datetime


class BusySlot(Slot):
    """A stretch when the vehicle cannot be booked, and why."""

    reasons: list[BusyReason]


class Availability(BaseModel):
    """A vehicle's free and busy time within the asked window, merged and clipped to it."""

    model_config = ConfigDict(populate_by_name=True)

    vehicle_id: str
    from_: datetime = Field(alias="from")
    to: datetime
    buffer_s: int = Field(description="Kept free before and after every booking.")
    free: list[Slot]
    busy: list[BusySlot]
