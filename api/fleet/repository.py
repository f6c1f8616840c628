"""Every SQL statement of fleet management: vehicles and their MQTT credentials.

Vehicle photos have their own repository, `db.vehicle_images`, shared with the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 - idem
from typing import TYPE_CHECKING, Any, LiteralString

from psycopg.rows import class_row

if TYPE_CHECKING:
    from collections.abc import Mapping

    from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class VehicleRow:
    """A vehicle with the state of its broker login."""

    id: str
    plate: str
    make: str
    model: str
    year: int | None
    vin: str | None
    category: str
    fuel_type: str
    seats: int
    features: list[str]
    price_hour_minor: int
    price_day_minor: int
    currency: str
    home_lat: float | None
    home_lon: float | None
    status: str
    notes: str
    mileage_km: float
    created_at: datetime
    updated_at: datetime
    has_credentials: bool
    broker_provisioned: bool | None
    broker_error: str | None
    broker_synced_at: datetime | None


# Columns a write may set; the same names as the API's fields (home split in two).
WRITABLE: tuple[str, ...] = (
    "plate",
    "make",
    "model",
    "year",
    "vin",
    "category",
    "fuel_type",
    "seats",
    "features",
    "price_hour_minor",
    "price_day_minor",
    "currency",
    "home_lat",
    "home_lon",
    "status",
    "notes",
    "mileage_km",
)

_COLUMNS: LiteralString = """
    v.id, v.plate, v.make, v.model, v.year, v.vin, v.category, v.fuel_type, v.seats,
    v.features, v.price_hour_minor, v.price_day_minor, v.currency::text AS currency,
    v.home_lat, v.home_lon, v.status, v.notes, v.mileage_km, v.created_at, v.updated_at,
    c.vehicle_id IS NOT NULL AS has_credentials, c.broker_provisioned, c.broker_error,
    c.broker_synced_at
"""
_FROM: LiteralString = " FROM vehicles v LEFT JOIN vehicle_credentials c ON c.vehicle_id = v.id "

_GET: LiteralString = "SELECT" + _COLUMNS + _FROM + "WHERE v.id = %(id)s"
_GET_FOR_UPDATE: LiteralString = _GET + " FOR UPDATE OF v"

_INSERT: LiteralString = """
    INSERT INTO vehicles (id, plate, make, model, year, vin, category, fuel_type, seats, features,
                          price_hour_minor, price_day_minor, currency, home_lat, home_lon,
                          status, notes, mileage_km)
    VALUES (%(id)s, %(plate)s, %(make)s, %(model)s, %(year)s, %(vin)s, %(category)s,
            %(fuel_type)s, %(seats)s, %(features)s, %(price_hour_minor)s, %(price_day_minor)s,
            %(currency)s, %(home_lat)s, %(home_lon)s, %(status)s, %(notes)s, %(mileage_km)s)
"""

# One statement for any subset of columns: each changes only when its flag is set, so a
# PATCH can also clear a column (flag set, value null).
_UPDATE: LiteralString = """
    UPDATE vehicles SET
        plate = CASE WHEN %(set_plate)s THEN %(plate)s ELSE plate END,
        make = CASE WHEN %(set_make)s THEN %(make)s ELSE make END,
        model = CASE WHEN %(set_model)s THEN %(model)s ELSE model END,
        year = CASE WHEN %(set_year)s THEN %(year)s::smallint ELSE year END,
        vin = CASE WHEN %(set_vin)s THEN %(vin)s ELSE vin END,
        category = CASE WHEN %(set_category)s THEN %(category)s ELSE category END,
        fuel_type = CASE WHEN %(set_fuel_type)s THEN %(fuel_type)s ELSE fuel_type END,
        seats = CASE WHEN %(set_seats)s THEN %(seats)s::smallint ELSE seats END,
        features = CASE WHEN %(set_features)s THEN %(features)s::text[] ELSE features END,
        price_hour_minor = CASE WHEN %(set_price_hour_minor)s THEN %(price_hour_minor)s::integer
                                ELSE price_hour_minor END,
        price_day_minor = CASE WHEN %(set_price_day_minor)s THEN %(price_day_minor)s::integer
                               ELSE price_day_minor END,
        currency = CASE WHEN %(set_currency)s THEN %(currency)s ELSE currency END,
        home_lat = CASE WHEN %(set_home_lat)s THEN %(home_lat)s::double precision
                        ELSE home_lat END,
        home_lon = CASE WHEN %(set_home_lon)s THEN %(home_lon)s::double precision
                        ELSE home_lon END,
        status = CASE WHEN %(set_status)s THEN %(status)s ELSE status END,
        notes = CASE WHEN %(set_notes)s THEN %(notes)s ELSE notes END,
        mileage_km = CASE WHEN %(set_mileage_km)s THEN %(mileage_km)s::double precision
                          ELSE mileage_km END,
        updated_at = now()
    WHERE id = %(id)s
"""

# Filters are optional: a null parameter matches everything. The keyset condition pages
# newest first on (created_at, id), which the vehicles_created index serves.
_LIST: LiteralString = (
    "SELECT"
    + _COLUMNS
    + _FROM
    + """
    WHERE (%(status)s::text IS NULL OR v.status = %(status)s::text)
      AND (%(category)s::text IS NULL OR v.category = %(category)s::text)
      AND (%(pattern)s::text IS NULL
           OR v.plate ILIKE %(pattern)s::text OR v.make ILIKE %(pattern)s::text
           OR v.model ILIKE %(pattern)s::text OR v.id ILIKE %(pattern)s::text
           OR v.vin = upper(%(exact)s::text))
      AND (%(after_created)s::timestamptz IS NULL
           OR (v.created_at, v.id) < (%(after_created)s::timestamptz, %(after_id)s::text))
    ORDER BY v.created_at DESC, v.id DESC
    LIMIT %(limit)s
"""
)

_UPSERT_CREDENTIALS: LiteralString = """
    INSERT INTO vehicle_credentials (vehicle_id, username, password_hash)
    VALUES (%(vehicle_id)s, %(username)s, %(password_hash)s)
    ON CONFLICT (vehicle_id) DO UPDATE
        SET username = excluded.username, password_hash = excluded.password_hash,
            rotated_at = now(), broker_provisioned = false, broker_error = NULL,
            broker_synced_at = NULL
"""

_RECORD_BROKER: LiteralString = """
    UPDATE vehicle_credentials
    SET broker_provisioned = %(provisioned)s, broker_error = %(error)s, broker_synced_at = now()
    WHERE vehicle_id = %(vehicle_id)s
"""


async def get(
    conn: AsyncConnection[Any], vehicle_id: str, *, for_update: bool = False
) -> VehicleRow | None:
    """One vehicle (locked for the transaction when `for_update`)."""
    async with conn.cursor(row_factory=class_row(VehicleRow)) as cur:
        await cur.execute(_GET_FOR_UPDATE if for_update else _GET, {"id": vehicle_id})
        return await cur.fetchone()


async def insert(conn: AsyncConnection[Any], values: Mapping[str, Any]) -> None:
    """Insert a vehicle; psycopg's UniqueViolation names the constraint that refused it."""
    await conn.execute(_INSERT, {**values, "features": list(values["features"])})


async def update(conn: AsyncConnection[Any], vehicle_id: str, changes: Mapping[str, Any]) -> None:
    """Change the columns in `changes` (other keys of WRITABLE keep their values)."""
    params: dict[str, Any] = {"id": vehicle_id}
    for column in WRITABLE:
        params[f"set_{column}"] = column in changes
        value = changes.get(column)
        params[column] = list(value) if column == "features" and value is not None else value
    await conn.execute(_UPDATE, params)


async def list_vehicles(  # noqa: PLR0913 - one per filter
    conn: AsyncConnection[Any],
    *,
    status: str | None,
    category: str | None,
    query: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[VehicleRow]:
    """A page of vehicles, newest first, after the keyset position `after`."""
    pattern = None
    if query is not None:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
    async with conn.cursor(row_factory=class_row(VehicleRow)) as cur:
        await cur.execute(
            _LIST,
            {
                "status": status,
                "category": category,
                "pattern": pattern,
                "exact": query,
                "after_created": None if after is None else after[0],
                "after_id": None if after is None else after[1],
                "limit": limit,
            },
        )
        return await cur.fetchall()


async def save_credentials(
    conn: AsyncConnection[Any], vehicle_id: str, username: str, password_hash: str
) -> None:
    """Record a newly issued login (replacing the previous one)."""
    await conn.execute(
        _UPSERT_CREDENTIALS,
        {"vehicle_id": vehicle_id, "username": username, "password_hash": password_hash},
    )


async def record_broker(
    conn: AsyncConnection[Any], vehicle_id: str, *, provisioned: bool, error: str | None
) -> None:
    """Record whether the broker holds the vehicle's current login."""
    await conn.execute(
        _RECORD_BROKER, {"vehicle_id": vehicle_id, "provisioned": provisioned, "error": error}
    )
