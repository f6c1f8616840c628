"""/v1/vehicles: search filters, sorts, cursors, availability, details, validation.

Each test places its own vehicles around its own centre, a degree of latitude away from
every other test's, so the tests of the module share one database without seeing each
other's cars.
"""

from __future__ import annotations

import itertools
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from api_testing import Api, SignedIn, error_code
from support.vehicles import insert_vehicles

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio

EARTH_RADIUS_M = 6_371_008.8
BUFFER = timedelta(minutes=15)  # the default FREECAR_API_BOOKING_BUFFER_S
_centres = itertools.count()


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def soon() -> datetime:
    """A window start a day ahead, on a whole hour (cursor windows stay valid)."""
    return (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)


class Fleet:
    """Vehicles around one centre, with bookings, maintenance and ratings, written directly."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        n = next(_centres)
        self.conn = conn
        # Centres a degree of latitude apart (111 km): far beyond any test's radius.
        self.lat, self.lon = -40.0 + n, 121.47
        self.prefix = f"t{uuid.uuid4().hex[:6]}"
        self._count = 0
        row = conn.execute(
            "INSERT INTO users (wechat_openid) VALUES (%s) RETURNING id", (f"t:{uuid.uuid4()}",)
        ).fetchone()
        assert row is not None
        self.user: uuid.UUID = row[0]

    def at(self, north_m: float, east_m: float = 0.0) -> tuple[float, float]:
        lat = self.lat + math.degrees(north_m / EARTH_RADIUS_M)
        lon = self.lon + math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
        return lat, lon

    def vehicle(
        self,
        north_m: float,
        east_m: float = 0.0,
        *,
        category: str = "economy",
        features: tuple[str, ...] = (),
        price: int = 3000,
        status: str = "available",
        fuel_pct: float | None = 80.0,
    ) -> str:
        self._count += 1
        vehicle_id = f"{self.prefix}-{self._count:03d}"
        lat, lon = self.at(north_m, east_m)
        insert_vehicles(
            self.conn,
            [vehicle_id],
            plate=vehicle_id.upper(),
            year=2023,
            category=category,
            fuel_type="petrol",
            features=list(features),
            price_hour_minor=price,
            price_day_minor=price * 6,
            status=status,
        )
        self.conn.execute(
            "INSERT INTO vehicle_state (vehicle_id, ts, seq, lat, lon, fuel_pct, locked,"
            " doors_open, engine_on, online, last_seen_at)"
            " VALUES (%s, now(), 1, %s, %s, %s, true, false, false, true, now())",
            (vehicle_id, lat, lon, fuel_pct),
        )
        return vehicle_id

    def book(
        self, vehicle_id: str, starts: datetime, ends: datetime, status: str = "confirmed"
    ) -> uuid.UUID:
        row = self.conn.execute(
            "INSERT INTO bookings (vehicle_id, user_id, period, status)"
            " VALUES (%s, %s, tstzrange(%s, %s, '[)'), %s) RETURNING id",
            (vehicle_id, self.user, starts, ends, status),
        ).fetchone()
        assert row is not None
        booking_id: uuid.UUID = row[0]
        return booking_id

    def maintenance(self, vehicle_id: str, starts: datetime, ends: datetime) -> None:
        self.conn.execute(
            "INSERT INTO maintenance_windows (vehicle_id, period, reason)"
            " VALUES (%s, tstzrange(%s, %s, '[)'), 'service')",
            (vehicle_id, starts, ends),
        )

    def rate(self, vehicle_id: str, *stars: int) -> None:
        for value in stars:
            self.conn.execute(
                "INSERT INTO vehicle_ratings (vehicle_id, user_id, stars) VALUES (%s, %s, %s)",
                (vehicle_id, self.user, value),
            )

    def params(self, **extra: Any) -> dict[str, Any]:
        values: dict[str, Any] = {"lat": self.lat, "lon": self.lon, "radius_m": 5_000}
        values.update(extra)
        return values


@pytest.fixture
def fleet(migrated_database_url: str) -> Iterator[Fleet]:
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        yield Fleet(conn)


async def search(api: Api, who: SignedIn, params: dict[str, Any]) -> dict[str, Any]:
    response = await api.get("/v1/vehicles", who, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def ids(api: Api, who: SignedIn, params: dict[str, Any]) -> list[str]:
    return [item["id"] for item in (await search(api, who, params))["items"]]


async def all_pages(api: Api, who: SignedIn, params: dict[str, Any]) -> list[str]:
    """Follow next_cursor to the end, a page of `limit` at a time."""
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = await search(api, who, {**params, **({"cursor": cursor} if cursor else {})})
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")


async def test_search_filters(api: Api, fleet: Fleet) -> None:
    rider = await api.dev_login()
    near_economy = fleet.vehicle(100, features=("child_seat", "usb_charging"), price=2000)
    suv = fleet.vehicle(200, category="suv", features=("child_seat",), price=6000)
    electric = fleet.vehicle(300, category="electric", features=("usb_charging",), price=4000)
    far = fleet.vehicle(4_000, price=1000)
    fleet.vehicle(6_000)  # outside 5 km
    fleet.vehicle(150, status="maintenance")
    fleet.vehicle(160, status="retired")

    everything = await ids(api, rider, fleet.params())
    assert everything == [near_economy, suv, electric, far]
    assert await ids(api, rider, fleet.params(radius_m=1_000)) == [near_economy, suv, electric]
    assert await ids(api, rider, fleet.params(category=["suv", "electric"])) == [suv, electric]
    assert await ids(api, rider, fleet.params(features=["child_seat"])) == [near_economy, suv]
    assert await ids(api, rider, fleet.params(features=["child_seat", "usb_charging"])) == [
        near_economy
    ]
    assert await ids(api, rider, fleet.params(price_max=4000)) == [near_economy, electric, far]


async def test_rented_vehicle_shows_for_windows_its_booking_leaves_free(
    api: Api, fleet: Fleet
) -> None:
    rider = await api.dev_login()
    start = soon()
    rented = fleet.vehicle(100, status="rented")
    fleet.book(rented, start, start + hours(2))
    free_window = {"from": (start + hours(3)).isoformat(), "to": (start + hours(4)).isoformat()}
    busy_window = {"from": (start + hours(1)).isoformat(), "to": (start + hours(3)).isoformat()}
    assert await ids(api, rider, fleet.params(**free_window)) == [rented]
    assert await ids(api, rider, fleet.params(**busy_window)) == []


async def test_search_excludes_bookings_with_buffer_and_maintenance(api: Api, fleet: Fleet) -> None:
    rider = await api.dev_login()
    start = soon()
    window = {"from": start.isoformat(), "to": (start + hours(2)).isoformat()}
    free = fleet.vehicle(100)
    overlapping = fleet.vehicle(110)
    fleet.book(overlapping, start + hours(1), start + hours(3))
    ends_inside_buffer = fleet.vehicle(120)
    fleet.book(ends_inside_buffer, start - hours(2), start - BUFFER + timedelta(minutes=1))
    ends_at_buffer = fleet.vehicle(130)
    fleet.book(ends_at_buffer, start - hours(2), start - BUFFER)  # exactly the buffer: fine
    starts_inside_buffer = fleet.vehicle(140)
    fleet.book(starts_inside_buffer, start + hours(2) + timedelta(minutes=5), start + hours(4))
    cancelled = fleet.vehicle(150)
    fleet.book(cancelled, start, start + hours(2), status="cancelled")
    in_maintenance = fleet.vehicle(160)
    fleet.maintenance(in_maintenance, start + hours(1), start + hours(5))
    maintenance_before = fleet.vehicle(170)
    fleet.maintenance(maintenance_before, start - hours(3), start)  # ends as the window starts

    found = await ids(api, rider, fleet.params(**window))
    assert found == [free, ends_at_buffer, cancelled, maintenance_before]


async def test_default_window_is_now(api: Api, fleet: Fleet) -> None:
    rider = await api.dev_login()
    now = datetime.now(UTC)
    busy_now = fleet.vehicle(100)
    fleet.book(busy_now, now - hours(1), now + hours(1))
    free_now = fleet.vehicle(200)
    fleet.book(free_now, now + hours(2), now + hours(3))
    page = await search(api, rider, fleet.params())
    assert [item["id"] for item in page["items"]] == [free_now]
    window_from = datetime.fromisoformat(page["window"]["from"])
    window_to = datetime.fromisoformat(page["window"]["to"])
    assert window_to - window_from == timedelta(minutes=15)
    assert abs(window_from - now) < timedelta(minutes=1)


@pytest.mark.parametrize("sort", ["distance", "price", "rating"])
async def test_sorts_and_pages_without_skipping_or_repeating(
    api: Api, fleet: Fleet, sort: str
) -> None:
    rider = await api.dev_login()
    staff = await api.dev_login(role="fleet_manager")
    made = []
    for i in range(23):
        # Ties on purpose: prices repeat, ratings repeat, some cars share a spot.
        vehicle_id = fleet.vehicle(50 + 97 * (i % 9), 30 * i, price=1000 + 500 * (i % 4))
        if i % 3:
            fleet.rate(vehicle_id, 1 + i % 5, 5)
        made.append(vehicle_id)
    for who in (rider, staff):
        full = await search(api, who, fleet.params(sort=sort, limit=100))
        items = full["items"]
        assert sorted(item["id"] for item in items) == sorted(made)
        assert full["next_cursor"] is None
        keys = [_key(item, sort, exact=who is staff) for item in items]
        assert keys == sorted(keys)
        paged = await all_pages(api, who, fleet.params(sort=sort, limit=4))
        assert paged == [item["id"] for item in items]


def _key(item: dict[str, Any], sort: str, *, exact: bool) -> tuple[float, float, str]:
    distance = float(item["distance_m"])
    if sort == "distance":
        # Nearest first; among cars equally near (riders see 100 m steps), cheapest first.
        return (distance if exact else round(distance, -2), item["price"]["hour_minor"], item["id"])
    if sort == "price":
        return (float(item["price"]["hour_minor"]), distance, item["id"])
    average = item["rating"]["average"]
    return (-(average or 0.0), distance, item["id"])


async def test_distances_and_positions(api: Api, fleet: Fleet) -> None:
    rider = await api.dev_login()
    staff = await api.dev_login(role="admin")
    vehicle_id = fleet.vehicle(1_234, 567)
    lat, lon = fleet.at(1_234, 567)
    expected = EARTH_RADIUS_M * math.hypot(
        math.radians(lat - fleet.lat), math.radians(lon - fleet.lon) * math.cos(math.radians(lat))
    )
    [as_staff] = (await search(api, staff, fleet.params()))["items"]
    assert as_staff["location"] == {
        "lat": pytest.approx(lat, abs=1e-12),
        "lon": pytest.approx(lon, abs=1e-12),
        "approximate": False,
        "reported_at": as_staff["location"]["reported_at"],
    }
    assert as_staff["distance_m"] == pytest.approx(expected, abs=1.5)
    [as_rider] = (await search(api, rider, fleet.params()))["items"]
    assert as_rider["id"] == vehicle_id
    assert as_rider["location"]["approximate"] is True
    assert as_rider["location"]["lat"] == round(lat, 3)
    assert as_rider["location"]["lon"] == round(lon, 3)
    assert as_rider["distance_m"] % 100 == 0
    assert abs(as_rider["distance_m"] - expected) <= 50.5


async def test_search_validation(api: Api, fleet: Fleet) -> None:
    rider = await api.dev_login()
    start = soon()

    async def code(**params: Any) -> tuple[int, str]:
        response = await api.get("/v1/vehicles", rider, params=fleet.params(**params))
        return response.status_code, error_code(response)

    assert await code(radius_m=10) == (422, "validation_error")
    assert await code(radius_m=50_001) == (422, "validation_error")
    assert await code(lat=91) == (422, "validation_error")
    assert await code(lat="nan") == (422, "validation_error")
    assert await code(lon="inf") == (422, "validation_error")
    assert await code(limit=0) == (422, "validation_error")
    assert await code(limit=101) == (422, "validation_error")
    assert await code(sort="nearest") == (422, "validation_error")
    assert await code(category="truck") == (422, "validation_error")
    # Features are the fleet's vocabulary: a name no car can carry is refused, not unmatched.
    assert await code(features="usb") == (422, "validation_error")
    assert await code(features="autopilot") == (422, "validation_error")
    assert await code(**{"from": "2031-01-01T10:00:00"}) == (422, "validation_error")  # naive
    iso = start.isoformat()
    assert await code(**{"from": iso}) == (409, "invalid_window")
    assert await code(**{"from": iso, "to": iso}) == (409, "invalid_window")
    later = (start + timedelta(minutes=10)).isoformat()
    assert await code(**{"from": iso, "to": later}) == (409, "invalid_window")  # too short
    month = (start + timedelta(days=31)).isoformat()
    assert await code(**{"from": iso, "to": month}) == (409, "invalid_window")  # too long
    past = (start - timedelta(days=3)).isoformat()
    assert await code(**{"from": past, "to": iso}) == (409, "invalid_window")
    far = "9999-12-31T23:00:00+00:00"
    assert await code(**{"from": "9999-12-31T22:00:00+00:00", "to": far}) == (
        409,
        "invalid_window",
    )
    assert await code(cursor="bm9wZQ") == (409, "invalid_cursor")
    assert await code(cursor="!!") == (422, "validation_error")


async def test_search_and_fleet_speak_one_vocabulary(api: Api) -> None:
    schema = api.app.openapi()
    search = schema["paths"]["/v1/vehicles"]["get"]["parameters"]
    create = schema["components"]["schemas"]["VehicleCreate"]["properties"]

    def enum_of(node: dict[str, Any]) -> list[str]:
        while "enum" not in node:
            node = (
                node.get("items")
                or next((o for o in node.get("anyOf", []) if o.get("type") != "null"), None)
                or schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
            )
        return sorted(node["enum"])

    by_name = {p["name"]: p["schema"] for p in search}
    assert enum_of(by_name["features"]) == enum_of(create["features"])
    assert enum_of(by_name["category"]) == enum_of(create["category"])
    assert "usb_charging" in enum_of(by_name["features"])


async def test_cursor_belongs_to_its_search(api: Api, fleet: Fleet) -> None:
    rider = await api.dev_login()
    for i in range(3):
        fleet.vehicle(100 * (i + 1))
    page = await search(api, rider, fleet.params(limit=1))
    cursor = page["next_cursor"]
    assert cursor
    other = await api.get(
        "/v1/vehicles", rider, params=fleet.params(limit=1, sort="price", cursor=cursor)
    )
    assert other.status_code == 409
    assert error_code(other) == "invalid_cursor"
    same = await search(api, rider, fleet.params(limit=1, cursor=cursor))
    assert same["window"] == page["window"]  # a "now" search keeps its first page's now


async def test_vehicle_details(api: Api, fleet: Fleet, migrated_database_url: str) -> None:
    rider = await api.dev_login()
    staff = await api.dev_login(role="fleet_manager")
    vehicle_id = fleet.vehicle(300, features=("usb",), fuel_pct=42.5)
    fleet.rate(vehicle_id, 5, 4, 4)
    image = uuid.uuid4()
    fleet.conn.execute(
        "INSERT INTO vehicle_images (id, vehicle_id, key, content_type, width, height,"
        " size_bytes, status, variants) VALUES (%s, %s, %s, 'image/jpeg', 1600, 1200, 1000,"
        " 'ready', '{\"thumb\": {}, \"large\": {}}')",
        (image, vehicle_id, f"vehicles/{vehicle_id}/{image}"),
    )
    fleet.conn.execute(
        "INSERT INTO vehicle_images (vehicle_id, key, content_type, width, height, size_bytes)"
        " VALUES (%s, %s, 'image/jpeg', 10, 10, 10)",
        (vehicle_id, f"vehicles/{vehicle_id}/pending"),
    )
    response = await api.get(f"/v1/vehicles/{vehicle_id}", rider)
    assert response.status_code == 200, response.text
    body = response.json()
    lat, lon = fleet.at(300)
    assert body["plate"] == vehicle_id.upper()
    assert body["category"] == "economy"
    assert body["features"] == ["usb"]
    assert body["price"] == {"hour_minor": 3000, "day_minor": 18000, "currency": "CNY"}
    assert body["fuel_pct"] == 42.5
    assert body["battery_pct"] is None
    assert body["online"] is True
    assert body["rating"] == {"average": 4.33, "count": 3}
    assert body["location"]["approximate"] is True
    assert body["location"]["lat"] == round(lat, 3)
    assert body["location"]["lon"] == round(lon, 3)
    assert body["images"] == [
        {
            "id": str(image),
            "content_type": "image/jpeg",
            "width": 1600,
            "height": 1200,
            "variants": ["large", "thumb"],
        }
    ]
    exact = (await api.get(f"/v1/vehicles/{vehicle_id}", staff)).json()
    assert exact["location"]["approximate"] is False
    assert exact["location"]["lat"] == pytest.approx(lat, abs=1e-12)

    retired = fleet.vehicle(400, status="retired")
    missing = await api.get(f"/v1/vehicles/{retired}", rider)
    assert missing.status_code == 404
    assert error_code(missing) == "not_found"
    assert (await api.get(f"/v1/vehicles/{retired}", staff)).status_code == 200
    assert (await api.get("/v1/vehicles/no-such-car", rider)).status_code == 404
    bad = await api.get("/v1/vehicles/bad%20id", rider)
    assert (bad.status_code, error_code(bad)) == (422, "validation_error")
    unauthenticated = await api.get(f"/v1/vehicles/{vehicle_id}")
    assert unauthenticated.status_code == 401


async def test_search_needs_a_sign_in(api: Api, fleet: Fleet) -> None:
    response = await api.get("/v1/vehicles", params=fleet.params())
    assert (response.status_code, error_code(response)) == (401, "missing_token")
