"""Every SQL statement of vehicle search, details and availability."""

from __future__ import annotations

import uuid  # noqa: TC003 - class_row builds these dataclasses at runtime
from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 - idem
from typing import TYPE_CHECKING, Any, LiteralString

from psycopg.rows import class_row

if TYPE_CHECKING:
    from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class SearchRow:
    """A vehicle found by a search, with its sort keys."""

    id: str
    make: str
    model: str
    category: str
    fuel_type: str
    seats: int
    features: list[str]
    price_hour_minor: int
    price_day_minor: int
    currency: str
    lat: float
    lon: float
    reported_at: datetime
    fuel_pct: float | None
    battery_pct: float | None
    ratings: int
    stars_sum: int | None
    distance_m: float
    k1: float
    k2: float


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A search as the repository runs it: every bound already resolved and checked."""

    lat: float
    lon: float
    radius_m: float
    categories: list[str] | None
    features: list[str]
    price_max: int | None
    window_from: datetime
    window_to: datetime
    busy_from: datetime
    busy_to: datetime
    sort: str
    # Distances are rounded to this many metres before they are shown and sorted (riders
    # get approximate positions); 0 keeps them exact.
    distance_grain_m: float
    after: tuple[float, float, str] | None
    limit: int


@dataclass(frozen=True, slots=True)
class VehicleRow:
    """One vehicle with its live state and rating totals."""

    id: str
    plate: str
    make: str
    model: str
    year: int | None
    category: str
    fuel_type: str
    seats: int
    features: list[str]
    price_hour_minor: int
    price_day_minor: int
    currency: str
    status: str
    lat: float | None
    lon: float | None
    reported_at: datetime | None
    online: bool
    fuel_pct: float | None
    battery_pct: float | None
    ratings: int
    stars_sum: int | None


@dataclass(frozen=True, slots=True)
class ImageRow:
    """A ready photo of a vehicle."""

    id: uuid.UUID
    content_type: str
    width: int
    height: int
    variants: list[str]


@dataclass(frozen=True, slots=True)
class BusyRow:
    """A stretch during which a vehicle is taken (a booking with its buffer, or maintenance)."""

    starts: datetime
    ends: datetime
    reason: str


# geo_near (0037) is the index-backed prefilter, a superset of the circle; geo_distance_m
# then keeps exactly the circle. Both are inlined SQL functions whose body the migration
# chose (earthdistance GiST or btree bounding box), so this text is the same on every server.
# Vehicles that are out of service (maintenance, retired) never show; a rented car shows for
# windows its booking (plus buffer) leaves free. The sort keys k1, k2 and the id make the
# keyset: `(k1, k2, id) > cursor` resumes exactly after the last row of the previous page.
#
# The candidates inside the circle are sorted first (cheap: no per-row probe) and only then
# checked for bookings and maintenance, in that order, until the page is full: the OFFSET 0
# keeps the sorted subquery apart, the anti-joins keep its order, and LIMIT stops them early.
# Most cars are free at any time, so a page of 20 costs about 25 availability probes
# instead of one per car in the circle (hundreds downtown).
_SEARCH: LiteralString = """
    WITH hits AS (
        SELECT v.id, v.make, v.model, v.category, v.fuel_type, v.seats, v.features,
               v.price_hour_minor, v.price_day_minor, v.currency,
               s.lat, s.lon, s.ts AS reported_at, s.fuel_pct, s.battery_pct,
               t.ratings, t.stars_sum,
               geo_distance_m(%(lat)s, %(lon)s, s.lat, s.lon) AS exact_m
        FROM vehicle_state s
        JOIN vehicles v ON v.id = s.vehicle_id
        -- Only the rating sort needs every candidate's rating (a constant condition: the
        -- other sorts skip the lookup); the page's ratings are joined at the end.
        LEFT JOIN vehicle_rating_totals t
               ON t.vehicle_id = v.id AND %(sort)s::text = 'rating'
        WHERE geo_near(s.lat, s.lon, %(lat)s, %(lon)s, %(radius_m)s)
          AND v.status IN ('available', 'rented')
          AND (%(categories)s::text[] IS NULL OR v.category = ANY (%(categories)s::text[]))
          AND v.features @> %(features)s::text[]
          AND (%(price_max)s::integer IS NULL OR v.price_hour_minor <= %(price_max)s::integer)
    ), inside AS (
        SELECT hits.*,
               CASE WHEN %(grain)s::float8 > 0
                    THEN round(exact_m / %(grain)s::float8) * %(grain)s::float8
                    ELSE exact_m END AS distance_m
        FROM hits
        WHERE exact_m <= %(radius_m)s
    ), keyed AS (
        SELECT inside.*,
               CASE %(sort)s::text
                   WHEN 'distance' THEN distance_m
                   WHEN 'price' THEN price_hour_minor::float8
                   -- Best first; unrated vehicles (0) after every rated one (negative).
                   ELSE -coalesce(stars_sum::float8 / nullif(ratings, 0), 0)
               END AS k1,
               -- Never a constant: the planner drops constant sort keys inside the
               -- subquery and could then no longer see that its order is the one asked.
               CASE %(sort)s::text
                   WHEN 'distance' THEN price_hour_minor::float8
                   ELSE distance_m
               END AS k2
        FROM inside
    )
    SELECT p.id, p.make, p.model, p.category, p.fuel_type, p.seats, p.features,
           p.price_hour_minor, p.price_day_minor, p.currency, p.lat, p.lon, p.reported_at,
           p.fuel_pct, p.battery_pct, coalesce(r.ratings, 0) AS ratings, r.stars_sum,
           p.distance_m, p.k1, p.k2
    FROM (
        SELECT c.* FROM (
            SELECT * FROM keyed
            WHERE %(after_id)s::text IS NULL
               OR (k1, k2, id) > (%(after_k1)s::float8, %(after_k2)s::float8, %(after_id)s::text)
            ORDER BY k1, k2, id
            OFFSET 0
        ) AS c
        WHERE NOT EXISTS (
                  SELECT 1 FROM bookings b
                  WHERE b.vehicle_id = c.id AND b.status <> 'cancelled'
                    AND upper(b.period) > %(busy_from)s AND lower(b.period) < %(busy_to)s)
          AND NOT EXISTS (
                  SELECT 1 FROM maintenance_windows m
                  WHERE m.vehicle_id = c.id
                    AND upper(m.period) > %(window_from)s AND lower(m.period) < %(window_to)s)
        ORDER BY c.k1, c.k2, c.id
        LIMIT %(limit)s
    ) AS p
    LEFT JOIN vehicle_rating_totals r ON r.vehicle_id = p.id
    ORDER BY p.k1, p.k2, p.id
"""

_VEHICLE: LiteralString = """
    SELECT v.id, v.plate, v.make, v.model, v.year, v.category, v.fuel_type, v.seats, v.features,
           v.price_hour_minor, v.price_day_minor, v.currency, v.status,
           s.lat, s.lon, s.ts AS reported_at, coalesce(s.online, false) AS online,
           s.fuel_pct, s.battery_pct, coalesce(t.ratings, 0) AS ratings, t.stars_sum
    FROM vehicles v
    LEFT JOIN vehicle_state s ON s.vehicle_id = v.id
    LEFT JOIN vehicle_rating_totals t ON t.vehicle_id = v.id
    WHERE v.id = %(vehicle_id)s
"""

_IMAGES: LiteralString = """
    SELECT id, content_type, width, height,
           ARRAY(SELECT jsonb_object_keys(variants) ORDER BY 1) AS variants
    FROM vehicle_images
    WHERE vehicle_id = %(vehicle_id)s AND status = 'ready'
    ORDER BY created_at, id
"""

# Bookings count with their buffer on both sides; maintenance as scheduled.
_BUSY: LiteralString = """
    SELECT lower(period) - %(buffer)s AS starts, upper(period) + %(buffer)s AS ends,
           'booking' AS reason
    FROM bookings
    WHERE vehicle_id = %(vehicle_id)s AND status <> 'cancelled'
      AND upper(period) > %(from)s::timestamptz - %(buffer)s
      AND lower(period) < %(to)s::timestamptz + %(buffer)s
    UNION ALL
    SELECT lower(period), upper(period), 'maintenance'
    FROM maintenance_windows
    WHERE vehicle_id = %(vehicle_id)s AND upper(period) > %(from)s AND lower(period) < %(to)s
    ORDER BY starts, ends
"""


async def search(conn: AsyncConnection[Any], query: SearchQuery) -> list[SearchRow]:
    """Free vehicles within the radius, in the query's order, after its cursor."""
    after_k1, after_k2, after_id = query.after or (None, None, None)
    params: dict[str, Any] = {
        "lat": query.lat,
        "lon": query.lon,
        "radius_m": query.radius_m,
        "categories": query.categories,
        "features": query.features,
        "price_max": query.price_max,
        "window_from": query.window_from,
        "window_to": query.window_to,
        "busy_from": query.busy_from,
        "busy_to": query.busy_to,
        "grain": query.distance_grain_m,
        "sort": query.sort,
        "after_k1": after_k1,
        "after_k2": after_k2,
        "after_id": after_id,
        "limit": query.limit,
    }
    async with conn.cursor(row_factory=class_row(SearchRow)) as cur:
        await cur.execute(_SEARCH, params)
        return await cur.fetchall()


async def vehicle(conn: AsyncConnection[Any], vehicle_id: str) -> VehicleRow | None:
    """One vehicle with its live state and rating totals, or None."""
    async with conn.cursor(row_factory=class_row(VehicleRow)) as cur:
        await cur.execute(_VEHICLE, {"vehicle_id": vehicle_id})
        return await cur.fetchone()


async def images(conn: AsyncConnection[Any], vehicle_id: str) -> list[ImageRow]:
    """The vehicle's ready photos, oldest first (vehicle_images comes from 0030)."""
    async with conn.cursor(row_factory=class_row(ImageRow)) as cur:
        await cur.execute(_IMAGES, {"vehicle_id": vehicle_id})
        return await cur.fetchall()


async def busy(
    conn: AsyncConnection[Any],
    vehicle_id: str,
    starts: datetime,
    ends: datetime,
    buffer: Any,  # noqa: ANN401 - a timedelta, adapted to an interval
) -> list[BusyRow]:
    """Bookings (widened by the buffer) and maintenance that touch [starts, ends)."""
    async with conn.cursor(row_factory=class_row(BusyRow)) as cur:
        await cur.execute(
            _BUSY, {"vehicle_id": vehicle_id, "from": starts, "to": ends, "buffer": buffer}
        )
        return await cur.fetchall()
