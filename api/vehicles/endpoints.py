"""/v1/vehicles: search, details and availability (riders and staff)."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from api.deps import Conn, SettingsDep
from api.errors import error_responses
from api.pagination import CursorQuery
from api.schemas import VehicleIdPath
from api.vehicles import service
from api.vehicles.auth import VehicleSearcher
from api.vehicles.schemas import (
    Availability,
    Sort,
    VehicleDetail,
    VehiclePage,
)
from db.vehicle_vocabulary import Category, Feature

router = APIRouter(prefix="/vehicles", tags=["vehicles"], responses=error_responses(401))
# A street-level search needs a few hundred metres; 50 km covers a whole city, beyond
# which a "nearby" list means nothing and the candidate set stops being small.
MIN_RADIUS_M = 50
MAX_RADIUS_M = 50_000
DEFAULT_RADIUS_M = 3_000
# 20 cards fill a phone's list; 100 bounds one query's cost.
DEFAULT_PAGE = 20
MAX_PAGE = 100
# A price per hour in minor units: ten thousand yuan is beyond any car in the fleet.
MAX_PRICE_MINOR = 1_000_000

WindowFrom = Annotated[
    AwareDatetime | None,
    Query(alias="from", description="Start of the window (inclusive), with a UTC offset."),
]
WindowTo = Annotated[
    AwareDatetime | None,
    Query(alias="to", description="End of the window (exclusive), with a UTC offset."),
]


@router.get("", summary="Find vehicles nearby", responses=error_responses(409))
async def search_vehicles(  # noqa: PLR0913 - one per filter
    *,
    principal: VehicleSearcher,
    conn: Conn,
    settings: SettingsDep,
    lat: Annotated[float, Query(ge=-90, le=90, description="Latitude of the search centre.")],
    lon: Annotated[float, Query(ge=-180, le=180, description="Longitude of the search centre.")],
    radius_m: Annotated[
        int, Query(ge=MIN_RADIUS_M, le=MAX_RADIUS_M, description="Search radius in metres.")
    ] = DEFAULT_RADIUS_M,
    category: Annotated[
        list[Category] | None,
        Query(max_length=5, description="Any of these categories (repeat the parameter)."),
    ] = None,
    features: Annotated[
        list[Feature],
        Query(max_length=10, description="Every one of these features (repeat the parameter)."),
    ] = [],  # noqa: B006 - FastAPI copies defaults per request
    price_max: Annotated[
        int | None,
        Query(ge=0, le=MAX_PRICE_MINOR, description="Highest hourly price, in minor units."),
    ] = None,
    from_: WindowFrom = None,
    to: WindowTo = None,
    sort: Annotated[Sort, Query(description="distance, price (cheapest) or rating (best).")] = (
        Sort.DISTANCE
    ),
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: CursorQuery = None,
) -> VehiclePage:
    """Vehicles free for the whole [from, to) window within the radius, in the asked order.

    Without `from` and `to` the window is the next 15 minutes: cars free right now. A
    vehicle is free when no booking (widened by the buffer between bookings) and no
    maintenance window overlaps the window, and it is not out of service. Riders get
    positions rounded to about 100 m and distances to 100 m. 409 `invalid_window` for a
    window that is half given, reversed, shorter than 15 minutes, longer than 30 days, in
    the past or more than 180 days ahead; 409 `invalid_cursor` for a cursor that is
    malformed, more than a day old, or from another search.
    """
    return await service.search(
        conn,
        principal,
        service.SearchRequest(
            lat=lat,
            lon=lon,
            radius_m=float(radius_m),
            categories=category,
            features=[feature.value for feature in features],
            price_max=price_max,
            window_from=from_,
            window_to=to,
            sort=sort,
            limit=limit,
            cursor=cursor,
        ),
        buffer=timedelta(seconds=settings.api_booking_buffer_s),
    )


@router.get("/{vehicle_id}", summary="One vehicle", responses=error_responses(404))
async def get_vehicle(
    vehicle_id: VehicleIdPath, principal: VehicleSearcher, conn: Conn
) -> VehicleDetail:
    """Details, photos, level of fuel or charge, rating, and where it is (approximately)."""
    return await service.detail(conn, principal, vehicle_id)


@router.get(
    "/{vehicle_id}/availability",
    summary="A vehicle's free and busy time",
    responses=error_responses(404, 409),
)
async def vehicle_availability(  # noqa: PLR0913 - the path, the window, the caller
    *,
    vehicle_id: VehicleIdPath,
    principal: VehicleSearcher,
    conn: Conn,
    settings: SettingsDep,
    from_: Annotated[AwareDatetime, Query(alias="from", description="Window start.")],
    to: Annotated[AwareDatetime, Query(description="Window end (exclusive).")],
) -> Availability:
    """Busy slots (bookings widened by the buffer, maintenance) and the free gaps, clipped.

    Up to 31 days, from a month ago to a year ahead (409 `invalid_window` otherwise).
    """
    return await service.availability(
        conn,
        principal,
        vehicle_id,
        from_,
        to,
        buffer=timedelta(seconds=settings.api_booking_buffer_s),
    )
