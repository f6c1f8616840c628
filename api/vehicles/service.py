"""Search, details and availability rules. Nothing here commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from api import pagination
from api.errors import NotFoundError
from api.pagination import InvalidCursorError
from api.timewindows import InvalidWindowError, check_length
from api.vehicles import repository
from api.vehicles.schemas import (
    Availability,
    BusyReason,
    BusySlot,
    Image,
    Location,
    Price,
    Rating,
    Slot,
    Sort,
    VehicleDetail,
    VehiclePage,
    VehicleSummary,
    Window,
)
from db.vehicle_vocabulary import Category

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from psycopg import AsyncConnection

    from api.identity import Principal

    Clock = Callable[[], datetime]

# A booking is at least 15 minutes (the shortest trip the tariff sells) and a search spans at
# most 30 days (longer rentals are a sales conversation, and the busy check stays bounded).
MIN_WINDOW: Final = timedelta(minutes=15)
MAX_WINDOW: Final = timedelta(days=30)
# Searches may start slightly in the past (a phone's clock, the time to fill the form) and
# at most 180 days ahead (bookings open that far).
PAST_TOLERANCE: Final = timedelta(minutes=15)
MAX_AHEAD: Final = timedelta(days=180)
# Availability answers for any window of up to 31 days (a month's calendar), from a month
# back (staff looking at what happened) to a year ahead.
MAX_AVAILABILITY_WINDOW: Final = timedelta(days=31)
AVAILABILITY_PAST: Final = timedelta(days=31)
AVAILABILITY_AHEAD: Final = timedelta(days=366)
# Riders see positions snapped to a 0.001-degree grid (111 m north-south, 95 m east-west in
# Shanghai) and distances rounded to 100 m until they book: enough to walk to the car's
# block, not enough to wait beside a stranger's parked car. Staff see exact values.
APPROX_DECIMALS: Final = 3
RIDER_DISTANCE_GRAIN_M: Final = 100.0


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A search as the endpoint received it (already schema-valid)."""

    lat: float
    lon: float
    radius_m: float
    categories: list[Category] | None
    features: list[str]
    price_max: int | None
    window_from: datetime | None
    window_to: datetime | None
    sort: Sort
    limit: int
    cursor: str | None


def _resolve_window(
    window_from: datetime | None, window_to: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The search's [from, to): as given, or the shortest booking starting now."""
    if window_from is None and window_to is None:
        return now, now + MIN_WINDOW
    if window_from is None or window_to is None:
        raise InvalidWindowError("give both `from` and `to`, or neither")
    # Bounds are checked before any arithmetic: a year-9999 `to` plus a buffer overflows.
    if window_from < now - PAST_TOLERANCE:
        raise InvalidWindowError("`from` is in the past")
    if window_to > now + MAX_AHEAD:
        raise InvalidWindowError(f"`to` is more than {MAX_AHEAD.days} days ahead")
    check_length(window_from, window_to, MIN_WINDOW, MAX_WINDOW)
    return window_from, window_to


def _filters(request: SearchRequest) -> str:
    """What a cursor must be used with: every parameter that shapes the result set."""
    return pagination.fingerprint(
        {
            "list": "search",
            "lat": round(request.lat, 9),
            "lon": round(request.lon, 9),
            "radius_m": request.radius_m,
            "categories": sorted(c.value for c in request.categories or []),
            "features": sorted(request.features),
            "price_max": request.price_max,
            "from": None if request.window_from is None else request.window_from.isoformat(),
            "to": None if request.window_to is None else request.window_to.isoformat(),
            "sort": request.sort.value,
        }
    )


def _resume(
    cursor: str, filters: str
) -> tuple[tuple[datetime, datetime], tuple[float, float, str]]:
    """The window and sort key a cursor resumes from; InvalidCursorError otherwise."""
    position = pagination.decode_cursor(cursor, (float, float, str), filters)
    window = position.state.get("w")
    if not (
        isinstance(window, list) and len(window) == 2 and all(isinstance(t, str) for t in window)
    ):
        raise InvalidCursorError
    try:
        w_from, w_to = (datetime.fromisoformat(str(text)) for text in window)
    except ValueError as exc:
        raise InvalidCursorError from exc
    if w_from.tzinfo is None or w_to.tzinfo is None:
        raise InvalidCursorError
    k1, k2, vehicle_id = position.key
    assert isinstance(k1, float)  # the shape says so
    assert isinstance(k2, float)
    assert isinstance(vehicle_id, str)
    return (w_from, w_to), (k1, k2, vehicle_id)


def _check_cursor_window(window_from: datetime, window_to: datetime, now: datetime) -> None:
    """A cursor's window must be one this API could have issued (a day of paging allowed)."""
    try:
        check_length(window_from, window_to, MIN_WINDOW, MAX_WINDOW)
    except InvalidWindowError as exc:
        raise InvalidCursorError from exc
    if window_from < now - timedelta(days=1) or window_to > now + MAX_AHEAD + timedelta(days=1):
        raise InvalidCursorError("this cursor has expired; start again without one")


def _rating(ratings: int, stars_sum: int | None) -> Rating:
    if ratings <= 0 or stars_sum is None:
        return Rating(average=None, count=0)
    return Rating(average=round(stars_sum / ratings, 2), count=ratings)


def _location(lat: float, lon: float, reported_at: datetime, *, exact: bool) -> Location:
    if exact:
        return Location(lat=lat, lon=lon, approximate=False, reported_at=reported_at)
    return Location(
        lat=round(lat, APPROX_DECIMALS),
        lon=round(lon, APPROX_DECIMALS),
        approximate=True,
        reported_at=reported_at,
    )


def _summary(row: repository.SearchRow, *, exact: bool) -> VehicleSummary:
    return VehicleSummary(
        id=row.id,
        make=row.make,
        model=row.model,
        category=Category(row.category),
        fuel_type=row.fuel_type,
        seats=row.seats,
        features=row.features,
        price=Price(
            hour_minor=row.price_hour_minor, day_minor=row.price_day_minor, currency=row.currency
        ),
        location=_location(row.lat, row.lon, row.reported_at, exact=exact),
        distance_m=round(row.distance_m),
        fuel_pct=row.fuel_pct,
        battery_pct=row.battery_pct,
        rating=_rating(row.ratings, row.stars_sum),
    )


async def search(
    conn: AsyncConnection[Any],
    principal: Principal,
    request: SearchRequest,
    *,
    buffer: timedelta,
    clock: Clock = utc_now,
) -> VehiclePage:
    """One page of vehicles free for the whole window within the radius, in the asked order.

    `buffer` is kept free before and after every booking (FREECAR_API_BOOKING_BUFFER_S).
    """
    filters = _filters(request)
    after: tuple[float, float, str] | None = None
    if request.cursor is not None:
        # A cursor carries its window, so paging through a "now" search keeps one "now".
        (window_from, window_to), after = _resume(request.cursor, filters)
        _check_cursor_window(window_from, window_to, clock())
    else:
        window_from, window_to = _resolve_window(request.window_from, request.window_to, clock())
    exact = principal.role.is_staff
    rows = await repository.search(
        conn,
        repository.SearchQuery(
            lat=request.lat,
            lon=request.lon,
            radius_m=request.radius_m,
            categories=None
            if request.categories is None
            else sorted({c.value for c in request.categories}),
            features=sorted(set(request.features)),
            price_max=request.price_max,
            window_from=window_from,
            window_to=window_to,
            busy_from=window_from - buffer,
            busy_to=window_to + buffer,
            sort=request.sort.value,
            distance_grain_m=0.0 if exact else RIDER_DISTANCE_GRAIN_M,
            after=after,
            # One more than asked tells whether another page exists.
            limit=request.limit + 1,
        ),
    )
    page = pagination.next_page(
        rows,
        request.limit,
        lambda row: (row.k1, row.k2, row.id),
        filters,
        state={"w": [window_from.isoformat(), window_to.isoformat()]},
    )
    return VehiclePage(
        items=[_summary(row, exact=exact) for row in page.rows],
        next_cursor=page.next_cursor,
        window=Window(from_=window_from, to=window_to),
    )


async def _visible_vehicle(
    conn: AsyncConnection[Any], principal: Principal, vehicle_id: str
) -> repository.VehicleRow:
    row = await repository.vehicle(conn, vehicle_id)
    # Retired vehicles are gone for riders; staff still look them up.
    if row is None or (row.status == "retired" and not principal.role.is_staff):
        raise NotFoundError("vehicle not found")
    return row


async def detail(
    conn: AsyncConnection[Any], principal: Principal, vehicle_id: str
) -> VehicleDetail:
    """One vehicle as the caller may see it: approximate position for riders."""
    row = await _visible_vehicle(conn, principal, vehicle_id)
    images = await repository.images(conn, vehicle_id)
    location = None
    if row.lat is not None and row.lon is not None and row.reported_at is not None:
        location = _location(row.lat, row.lon, row.reported_at, exact=principal.role.is_staff)
    return VehicleDetail(
        id=row.id,
        plate=row.plate,
        make=row.make,
        model=row.model,
        year=row.year,
        category=Category(row.category),
        fuel_type=row.fuel_type,
        seats=row.seats,
        features=row.features,
        price=Price(
            hour_minor=row.price_hour_minor, day_minor=row.price_day_minor, currency=row.currency
        ),
        status=row.status,
        location=location,
        online=row.online,
        fuel_pct=row.fuel_pct,
        battery_pct=row.battery_pct,
        rating=_rating(row.ratings, row.stars_sum),
        images=[
            Image(
                id=image.id,
                content_type=image.content_type,
                width=image.width,
                height=image.height,
                variants=image.variants,
            )
            for image in images
        ],
    )


def merge_busy(
    intervals: Sequence[tuple[datetime, datetime, BusyReason]],
    starts: datetime,
    ends: datetime,
) -> tuple[list[Slot], list[BusySlot]]:
    """Clip intervals to [starts, ends), merge overlapping or touching ones, and the gaps."""
    busy: list[BusySlot] = []
    for begins, finishes, reason in sorted(intervals, key=lambda item: (item[0], item[1])):
        lo, hi = max(begins, starts), min(finishes, ends)
        if lo >= hi:
            continue
        if busy and lo <= busy[-1].to:
            last = busy[-1]
            reasons = last.reasons if reason in last.reasons else sorted([*last.reasons, reason])
            busy[-1] = BusySlot(from_=last.from_, to=max(last.to, hi), reasons=reasons)
        else:
            busy.append(BusySlot(from_=lo, to=hi, reasons=[reason]))
    free: list[Slot] = []
    cursor = starts
    for slot in busy:
        if slot.from_ > cursor:
            free.append(Slot(from_=cursor, to=slot.from_))
        cursor = max(cursor, slot.to)
    if cursor < ends:
        free.append(Slot(from_=cursor, to=ends))
    return free, busy


async def availability(  # noqa: PLR0913 - the window's two ends, the buffer and the clock
    conn: AsyncConnection[Any],
    principal: Principal,
    vehicle_id: str,
    window_from: datetime,
    window_to: datetime,
    *,
    buffer: timedelta,
    clock: Clock = utc_now,
) -> Availability:
    """The vehicle's free and busy time in [from, to): bookings with buffer, maintenance."""
    now = clock()
    if window_from < now - AVAILABILITY_PAST or window_to > now + AVAILABILITY_AHEAD:
        raise InvalidWindowError(
            f"the window must lie between {AVAILABILITY_PAST.days} days ago and "
            f"{AVAILABILITY_AHEAD.days} days ahead"
        )
    check_length(window_from, window_to, timedelta(0), MAX_AVAILABILITY_WINDOW)
    row = await _visible_vehicle(conn, principal, vehicle_id)
    intervals: list[tuple[datetime, datetime, BusyReason]]
    if row.status in {"maintenance", "retired"}:
        # Out of service until staff say otherwise: nothing in the window can be booked.
        intervals = [(window_from, window_to, "out_of_service")]
    else:
        found = await repository.busy(conn, vehicle_id, window_from, window_to, buffer)
        intervals = [
            (item.starts, item.ends, "booking" if item.reason == "booking" else "maintenance")
            for item in found
        ]
    free, busy = merge_busy(intervals, window_from, window_to)
    return Availability(
        vehicle_id=vehicle_id,
        from_=window_from,
        to=window_to,
        buffer_s=int(buffer.total_seconds()),
        free=free,
        busy=busy,
    )
