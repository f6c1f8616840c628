"""Request and response models of /v1/admin/vehicles."""

from __future__ import annotations

import uuid  # noqa: TC003 - pydantic reads the annotations at runtime
from datetime import datetime  # noqa: TC003 - idem
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from api.fleet.settings import VinCheck
from api.schemas import Keep, PatchBody
from db.vehicle_vocabulary import Category, Feature, FuelType, VehicleStatus
from protocol.topics import VEHICLE_ID_PATTERN

# ISO 4217 codes in circulation (2024); an unknown code is refused by the schema.
CURRENCIES: Final = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG""".split()  # noqa: SIM905 - 150 codes read better as words
)


def _known_currency(code: str) -> str:
    if code not in CURRENCIES:
        raise ValueError(f"{code} is not an ISO 4217 currency code")
    return code


Currency = Annotated[
    str,
    AfterValidator(_known_currency),
    WithJsonSchema({"type": "string", "enum": sorted(CURRENCIES)}),
]
"""An ISO 4217 code in circulation; the schema enumerates them."""

# Like api.schemas.PRINTABLE_TRIMMED, but also without C1 controls and with U+FEFF counted as
# a blank: pydantic's `\s` (Unicode White_Space) includes U+0085 and the schema's (ECMAScript)
# does not, while ECMAScript counts U+FEFF and Unicode does not. Spelled out, both engines,
# and so the document and the API, accept exactly the same text.
_EDGE: Final = r"[^\s\ufeff\x00-\x1f\x7f-\x9f]"
TRIMMED_TEXT: Final = rf"^{_EDGE}(?:[^\x00-\x1f\x7f-\x9f]*{_EDGE})?$"

VehicleId = Annotated[str, StringConstraints(pattern=VEHICLE_ID_PATTERN)]
# Letters (Chinese included), digits, the middle dot and dash of Chinese plates, spaces.
Plate = Annotated[str, StringConstraints(min_length=1, max_length=16, pattern=TRIMMED_TEXT)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=60, pattern=TRIMMED_TEXT)]
# 17 characters, I, O and Q excluded (ISO 3779); upper case only, as stamped on the car.
VIN_PATTERN: Final = r"^[A-HJ-NPR-Z0-9]{17}$"
Vin = Annotated[str, StringConstraints(pattern=VIN_PATTERN)]
Notes = Annotated[str, StringConstraints(max_length=2_000, pattern=r"^[^\x00]*$")]
# A car's fare fits in an int4 of minor units with room to spare (21 million yuan a day).
Price = Annotated[int, Field(ge=0, le=2_000_000_000)]
Year = Annotated[int, Field(ge=1950, le=2100)]
Seats = Annotated[int, Field(ge=1, le=12)]
Mileage = Annotated[float, Field(ge=0, le=10_000_000, allow_inf_nan=False)]


# Everything but retirement goes through `available`; retirement is possible from anywhere
# and final. A same-status "transition" is a no-op, not an error.
TRANSITIONS: Final[dict[VehicleStatus, frozenset[VehicleStatus]]] = {
    VehicleStatus.AVAILABLE: frozenset(
        {VehicleStatus.RENTED, VehicleStatus.MAINTENANCE, VehicleStatus.RETIRED}
    ),
    VehicleStatus.RENTED: frozenset({VehicleStatus.AVAILABLE, VehicleStatus.RETIRED}),
    VehicleStatus.MAINTENANCE: frozenset({VehicleStatus.AVAILABLE, VehicleStatus.RETIRED}),
    VehicleStatus.RETIRED: frozenset(),
}


VinCheckMode = VinCheck
"""A request's override of FREECAR_FLEET_VIN_CHECK (the same three modes)."""


class Location(BaseModel):
    """A point (WGS 84)."""

    model_config = ConfigDict(extra="forbid")

    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)


Features = Annotated[list[Feature], Field(max_length=len(Feature))]


class VehicleFields(BaseModel):
    """Fields every write may carry; unknown fields are refused so typos do not vanish."""

    model_config = ConfigDict(extra="forbid")


class VehicleCreate(VehicleFields):
    """A new vehicle; the id becomes its MQTT login and topic segment."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "sh-0101",
                    "plate": "沪A·D0101",
                    "make": "BYD",
                    "model": "Qin Plus",
                    "year": 2023,
                    "vin": "LGXC16DF3N0000001",
                    "category": "electric",
                    "fuel_type": "electric",
                    "seats": 5,
                    "features": ["gps", "bluetooth", "backup_camera"],
                    "price_hour_minor": 3500,
                    "price_day_minor": 22000,
                    "currency": "CNY",
                    "home": {"lat": 31.2304, "lon": 121.4737},
                }
            ]
        },
    )

    id: VehicleId
    plate: Plate
    make: Name
    model: Name
    year: Year | None = None
    vin: Vin | None = None
    category: Category
    fuel_type: FuelType
    seats: Seats = 5
    features: Features = Field(default_factory=list)
    price_hour_minor: Price
    price_day_minor: Price
    currency: Currency
    home: Location | None = None
    status: Literal["available", "maintenance"] = "available"
    notes: Notes = ""
    mileage_km: Mileage = 0


class VehicleUpdate(VehicleFields, PatchBody):
    """A PATCH: only the fields sent change; `null` clears an optional one."""

    plate: Plate | Keep = None
    make: Name | Keep = None
    model: Name | Keep = None
    year: Year | None = None
    vin: Vin | None = None
    category: Category | Keep = None
    fuel_type: FuelType | Keep = None
    seats: Seats | Keep = None
    features: Features | Keep = None
    price_hour_minor: Price | Keep = None
    price_day_minor: Price | Keep = None
    currency: Currency | Keep = None
    home: Location | None = None
    status: VehicleStatus | Keep = None
    notes: Notes | Keep = None
    mileage_km: Mileage | Keep = None


class BulkCreateRow(VehicleCreate):
    """A bulk row that adds a vehicle."""

    op: Literal["create"]


class BulkUpdateRow(VehicleUpdate):
    """A bulk row that changes a vehicle."""

    op: Literal["update"]
    id: VehicleId


BulkRow = Annotated[BulkCreateRow | BulkUpdateRow, Field(discriminator="op")]
"""One JSON bulk row (the schema the OpenAPI document shows; the endpoint parses by hand)."""


class BrokerState(BaseModel):
    """Whether the broker has the vehicle's current login."""

    provisioned: bool
    error: str | None = Field(description="Why not, when it has not.")
    synced_at: datetime | None


class Vehicle(BaseModel):
    """A vehicle as staff see it."""

    id: str
    plate: str
    make: str
    model: str
    year: int | None
    vin: str | None
    category: Category
    fuel_type: FuelType
    seats: int
    features: list[str]
    price_hour_minor: int
    price_day_minor: int
    currency: str
    home: Location | None
    status: VehicleStatus
    notes: str
    mileage_km: float
    created_at: datetime
    updated_at: datetime
    broker: BrokerState | None = Field(description="Null when no login was ever issued.")


class MqttCredentials(BaseModel):
    """A vehicle's MQTT login: the password is shown this once and never stored in clear."""

    username: str
    password: str
    mqtt_topic_root: str
    broker_provisioned: bool = Field(description="Whether the broker accepted the login now.")
    broker_error: str | None = Field(description="Why not, e.g. the broker has no dynsec.")


class VehicleCreated(Vehicle):
    """The new vehicle with its login."""

    credentials: MqttCredentials


class RetireResult(Vehicle):
    """The retired vehicle; `broker_disabled` says whether the broker refuses it now."""

    broker_disabled: bool
    broker_error: str | None


class VehiclePage(BaseModel):
    """One page of vehicles; pass `next_cursor` as `cursor` for the next one."""

    items: list[Vehicle]
    next_cursor: str | None = Field(description="Null on the last page.")


class BulkOp(StrEnum):
    """What a bulk row does."""

    CREATE = "create"
    UPDATE = "update"


class RowError(BaseModel):
    """One problem with one row of a bulk request."""

    row: int = Field(description="1-based row number (data rows; a CSV header is row 0).")
    field: str | None = Field(description="The column at fault, when one is.")
    code: str
    message: str


class BulkRowResult(BaseModel):
    """What happened to one row."""

    row: int
    op: BulkOp
    id: str
    credentials: MqttCredentials | None = Field(description="New vehicles only.")


class BulkResult(BaseModel):
    """Every row applied, in one transaction."""

    created: int
    updated: int
    rows: list[BulkRowResult]


class VehicleImage(BaseModel):
    """A photo of a vehicle with links that expire."""

    id: uuid.UUID
    vehicle_id: str
    content_type: str
    width: int
    height: int
    size_bytes: int
    status: Literal["pending", "ready", "failed"]
    url: str = Field(description="The original, signed; expires at `urls_expire_at`.")
    variants: dict[str, str] = Field(description="Variant name to signed URL (when ready).")
    urls_expire_at: datetime
    created_at: datetime


class VehicleImageList(BaseModel):
    """A vehicle's photos, oldest first."""

    items: list[VehicleImage]
