"""/v1/admin/geofences: the service area and the zones (fleet managers, admins).

Hubs reload the fences by themselves: a trigger NOTIFYs them when the request commits.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from api.deps import Conn, admin_network_guard
from api.errors import error_responses
from api.geofences import service
from api.geofences.auth import GeofenceManager
from api.geofences.schemas import Geofence, GeofenceCreate, GeofencePage, GeofenceUpdate
from api.pagination import CURSOR_RESPONSES, CursorQuery
from db.geofences.model import GeofenceKind

admin_router = APIRouter(
    prefix="/admin/geofences",
    tags=["geofences"],
    dependencies=[Depends(admin_network_guard)],
    responses=error_responses(401, 403),
)

# A map screen's worth per page; 500 bounds one query's cost (geometries can be large).
DEFAULT_PAGE = 100
MAX_PAGE = 500

GeofenceId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The geofence's id.")]


@admin_router.post(
    "",
    summary="Create a geofence",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409),
)
async def create_geofence(_staff: GeofenceManager, conn: Conn, body: GeofenceCreate) -> Geofence:
    """Validate and store a fence; hubs evaluate it as soon as this returns. Staff only.

    A body the schema refuses answers 422 `validation_error`. A shape that is not usable
    (ring not closed, self-intersecting, too large or too small, a circle without a
    radius...) answers 409 `invalid_geofence`; each detail's `type` is a stable code listed
    in docs/geofences.md.
    """
    return await service.create_geofence(conn, body)


@admin_router.get("", summary="List geofences", responses=CURSOR_RESPONSES)
async def list_geofences(
    *,
    _staff: GeofenceManager,
    conn: Conn,
    kind: GeofenceKind | None = None,
    active: bool | None = None,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> GeofencePage:
    """In id order, optionally of one kind or activity. Staff only.

    Keep the same filters while following `next_cursor` (409 `invalid_cursor` otherwise).
    """
    return await service.list_geofences(conn, kind=kind, active=active, cursor=cursor, limit=limit)


@admin_router.get("/{geofence_id}", summary="Get a geofence", responses=error_responses(404))
async def get_geofence(_staff: GeofenceManager, conn: Conn, geofence_id: GeofenceId) -> Geofence:
    """One fence, active or not. Staff only."""
    return await service.get_geofence(conn, geofence_id)


@admin_router.patch(
    "/{geofence_id}", summary="Change a geofence", responses=error_responses(404, 409)
)
async def update_geofence(
    _staff: GeofenceManager, conn: Conn, geofence_id: GeofenceId, body: GeofenceUpdate
) -> Geofence:
    """Change some fields; the result is validated whole, like a new fence. Staff only.

    A result that is not usable answers 409 `invalid_geofence`, as for a new fence.

    Deactivating a fence (`"active": false`) stops its evaluation and forgets its vehicles'
    inside/outside state.
    """
    return await service.update_geofence(conn, geofence_id, body)


@admin_router.delete(
    "/{geofence_id}",
    summary="Delete a geofence",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(404),
)
async def delete_geofence(_staff: GeofenceManager, conn: Conn, geofence_id: GeofenceId) -> None:
    """Delete a fence and its rules; its past events stay, with no fence. Staff only."""
    await service.delete_geofence(conn, geofence_id)
