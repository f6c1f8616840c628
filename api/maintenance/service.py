"""Scheduling, listing and cancelling maintenance windows. Nothing here commits.

Two windows of one car never overlap: the database refuses it (an exclusion constraint, or
the trigger of 0035 where btree_gist is missing), and the refusal is 409
`maintenance_overlap`. Bookings a new window collides with are listed, not cancelled.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from psycopg.errors import ExclusionViolation

from api.errors import ConflictError, NotFoundError
from api.maintenance import repository
from api.maintenance.schemas import MaintenanceCreated, MaintenanceList, MaintenanceWindow
from api.timewindows import InvalidWindowError, check_length

if TYPE_CHECKING:
    import uuid
    from collections.abc import Callable

    from psycopg import AsyncConnection

    from api.identity import Principal

    Clock = Callable[[], datetime]

# Staff record a window that began up to a month ago (a car already in the workshop) and
# plan up to a year ahead (annual services), like the availability calendar shows.
MAX_PAST: Final = timedelta(days=31)
MAX_AHEAD: Final = timedelta(days=366)
# Shorter than a minute is a typo, not a service.
MIN_WINDOW: Final = timedelta(minutes=1)
# Maintenance windows listed per vehicle at most: years of weekly services.
MAX_LIST: Final = 500


class MaintenanceOverlapError(ConflictError):
    """The vehicle already has maintenance scheduled during part of this window."""

    code = "maintenance_overlap"
    default_message = "the vehicle already has maintenance scheduled during this window"


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def _window(row: repository.MaintenanceRow) -> MaintenanceWindow:
    return MaintenanceWindow(
        id=row.id,
        vehicle_id=row.vehicle_id,
        from_=row.starts,
        to=row.ends,
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
    )


async def schedule(  # noqa: PLR0913 - the window's fields
    conn: AsyncConnection[Any],
    actor: Principal,
    vehicle_id: str,
    *,
    starts: datetime,
    ends: datetime,
    reason: str,
    clock: Clock = utc_now,
) -> MaintenanceCreated:
    """Schedule a window; 409 `maintenance_overlap` when it overlaps another one."""
    now = clock()
    if ends <= now:
        raise InvalidWindowError("the window is already over")
    if ends > now + MAX_AHEAD:
        raise InvalidWindowError(f"`to` is more than {MAX_AHEAD.days} days ahead")
    if starts < now - MAX_PAST:
        raise InvalidWindowError(f"`from` is more than {MAX_PAST.days} days ago")
    check_length(starts, ends, MIN_WINDOW, MAX_AHEAD)
    if not await repository.vehicle_exists(conn, vehicle_id):
        raise NotFoundError("vehicle not found")
    try:
        row = await repository.insert_window(
            conn,
            vehicle_id=vehicle_id,
            starts=starts,
            ends=ends,
            reason=reason,
            created_by=actor.user_id,
        )
    except ExclusionViolation as exc:
        raise MaintenanceOverlapError from exc
    conflicts = await repository.overlapping_bookings(conn, vehicle_id, starts, ends)
    return MaintenanceCreated(**_window(row).model_dump(), conflicting_bookings=list(conflicts))


async def list_windows(
    conn: AsyncConnection[Any], vehicle_id: str, *, include_past: bool, clock: Clock = utc_now
) -> MaintenanceList:
    """The vehicle's windows, earliest first; only current and future ones unless asked."""
    if not await repository.vehicle_exists(conn, vehicle_id):
        raise NotFoundError("vehicle not found")
    since = datetime.min.replace(tzinfo=UTC) if include_past else clock()
    rows = await repository.list_windows(conn, vehicle_id, since=since, limit=MAX_LIST)
    return MaintenanceList(items=[_window(row) for row in rows])


async def cancel(conn: AsyncConnection[Any], vehicle_id: str, window_id: uuid.UUID) -> None:
    """Remove a window; 404 when the vehicle has no such window."""
    if not await repository.delete_window(conn, vehicle_id, window_id):
        raise NotFoundError("maintenance window not found")
