"""/v1/admin/events: what the hub noticed about the fleet (fleet managers, admins)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime

from api.deps import Conn, admin_network_guard
from api.errors import error_responses
from api.events import service
from api.events.auth import EventsReader
from api.events.schemas import EventPage
from api.pagination import CURSOR_RESPONSES, CursorQuery
from db.event_rules import EventKindName
from protocol.topics import VEHICLE_ID_PATTERN

admin_router = APIRouter(
    prefix="/admin/events",
    tags=["events"],
    dependencies=[Depends(admin_network_guard)],
    responses=error_responses(401, 403),
)

# A page of 50 fills an operator's screen; 500 bounds one query's cost.
DEFAULT_PAGE = 50
MAX_PAGE = 500


@admin_router.get("", summary="Find events", responses=CURSOR_RESPONSES)
async def list_events(  # noqa: PLR0913 - one per filter
    *,
    _staff: EventsReader,
    conn: Conn,
    vehicle_id: Annotated[str | None, Query(pattern=VEHICLE_ID_PATTERN)] = None,
    kind: Annotated[
        list[EventKindName] | None,
        Query(max_length=len(EventKindName), description="Repeat to ask for several kinds."),
    ] = None,
    geofence_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    since: Annotated[
        AwareDatetime | None,
        Query(alias="from", description="Events at or after this time (with a UTC offset)."),
    ] = None,
    until: Annotated[
        AwareDatetime | None,
        Query(alias="to", description="Events before this time (with a UTC offset)."),
    ] = None,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> EventPage:
    """Newest first, filtered by vehicle, kinds, geofence and time. Staff only.

    The window is `from` (included) to `to` (excluded); an empty window finds nothing.
    Filters that do not parse (an unknown kind, a time without a UTC offset) answer 422
    `validation_error`. Keep the same filters while following `next_cursor`: a cursor that
    is malformed or was made for other filters answers 409 `invalid_cursor`.
    """
    return await service.list_events(
        conn,
        vehicle_id=vehicle_id,
        kinds=None if kind is None else [k.value for k in kind],
        geofence_id=geofence_id,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
