"""/v1/admin/vehicles/{id}/maintenance: when a car cannot be booked (fleet managers, admins).

A sub-resource of fleet administration's `/v1/admin/vehicles`, in a router of its own; like
every admin route it answers only FREECAR_API_ADMIN_NETWORKS.
"""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi import status as http_status

from api.deps import Conn, admin_network_guard
from api.errors import error_responses
from api.maintenance import service
from api.maintenance.auth import MaintenanceManager
from api.maintenance.schemas import MaintenanceCreate, MaintenanceCreated, MaintenanceList
from api.schemas import VehicleIdPath

router = APIRouter(
    prefix="/admin/vehicles",
    tags=["maintenance"],
    dependencies=[Depends(admin_network_guard)],
    responses=error_responses(401, 403),
)


@router.post(
    "/{vehicle_id}/maintenance",
    status_code=http_status.HTTP_201_CREATED,
    summary="Schedule maintenance",
    responses=error_responses(404, 409),
)
async def schedule_maintenance(
    vehicle_id: VehicleIdPath, body: MaintenanceCreate, staff: MaintenanceManager, conn: Conn
) -> MaintenanceCreated:
    """The vehicle cannot be booked during [from, to). Fleet managers and admins.

    409 `maintenance_overlap` when it overlaps another window of the vehicle. Bookings that
    already overlap it are listed in `conflicting_bookings`; staff move them.
    """
    return await service.schedule(
        conn, staff, vehicle_id, starts=body.from_, ends=body.to, reason=body.reason
    )


@router.get(
    "/{vehicle_id}/maintenance", summary="Maintenance windows", responses=error_responses(404)
)
async def list_maintenance(
    *,
    vehicle_id: VehicleIdPath,
    _staff: MaintenanceManager,
    conn: Conn,
    include_past: Annotated[bool, Query(description="Also windows that have ended.")] = False,
) -> MaintenanceList:
    """The vehicle's current and future windows, earliest first. Fleet managers and admins."""
    return await service.list_windows(conn, vehicle_id, include_past=include_past)


@router.delete(
    "/{vehicle_id}/maintenance/{window_id}",
    status_code=http_status.HTTP_204_NO_CONTENT,
    summary="Cancel maintenance",
    responses=error_responses(404),
)
async def cancel_maintenance(
    vehicle_id: VehicleIdPath, window_id: uuid.UUID, _staff: MaintenanceManager, conn: Conn
) -> None:
    """The window is removed and the vehicle bookable again then. Fleet managers and admins."""
    await service.cancel(conn, vehicle_id, window_id)
