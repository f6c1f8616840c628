"""/v1/me (every signed-in account) and /v1/admin/users (staff, admins)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi import status as http_status

from api.deps import ClientDep, Conn, admin_network_guard
from api.errors import error_responses
from api.identity import Role, UserStatus
from api.pagination import CURSOR_RESPONSES, CursorQuery
from api.schemas import PRINTABLE_TRIMMED
from api.users import service
from api.users.auth import ProfileOwner, UsersManager, UsersReader
from api.users.schemas import (
    AdminUser,
    History,
    Profile,
    ProfileUpdate,
    StaffCreate,
    SuspendRequest,
    UserPage,
)

me_router = APIRouter(prefix="/me", tags=["profile"])
admin_router = APIRouter(
    prefix="/admin/users",
    tags=["admin"],
    dependencies=[Depends(admin_network_guard)],
    responses=error_responses(401, 403),
)

# A page of 50 fills an admin's screen; 200 bounds one query's cost.
DEFAULT_PAGE = 50
MAX_PAGE = 200


@me_router.get("", summary="My profile", responses=error_responses(401))
async def get_me(principal: ProfileOwner, conn: Conn) -> Profile:
    """The caller's profile with its completeness and the fields a booking still needs."""
    return await service.profile(conn, principal)


@me_router.patch("", summary="Update my profile", responses=error_responses(401, 409))
async def patch_me(
    body: ProfileUpdate, principal: ProfileOwner, conn: Conn, client: ClientDep
) -> Profile:
    """Send only the fields to change; null clears one. Preferences merge field by field.

    409 `email_taken` when another account has the email; `email_required` when a staff
    account (which signs in with it) tries to remove its email.
    """
    return await service.update_profile(conn, principal, body, client)


@admin_router.get("", summary="Find users", responses=CURSOR_RESPONSES)
async def list_users(  # noqa: PLR0913 - one per filter
    *,
    _staff: UsersReader,
    conn: Conn,
    q: Annotated[
        str | None,
        Query(
            max_length=100,
            pattern=PRINTABLE_TRIMMED,
            description="Part of a name, email or phone, or a whole user id.",
        ),
    ] = None,
    role: Role | None = None,
    status: UserStatus | None = None,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> UserPage:
    """Newest accounts first, filtered by text, role and status. Staff only.

    Keep the same filters while following `next_cursor` (409 `invalid_cursor` otherwise).
    """
    return await service.list_users(
        conn, query=q, role=role, status=status, cursor=cursor, limit=limit
    )


@admin_router.post(
    "",
    status_code=http_status.HTTP_201_CREATED,
    summary="Create a staff account",
    responses=error_responses(409),
)
async def create_staff(
    body: StaffCreate, admin: UsersManager, conn: Conn, client: ClientDep
) -> AdminUser:
    """A fleet manager or admin who signs in at /v1/auth/staff. Admins only."""
    return await service.create_staff(
        conn,
        email=str(body.email),
        password=body.password,
        role=Role(body.role),
        display_name=body.display_name,
        actor=admin,
        client=client,
    )


@admin_router.get("/{user_id}", summary="One user", responses=error_responses(404))
async def get_user(user_id: uuid.UUID, _staff: UsersReader, conn: Conn) -> AdminUser:
    """The account with its profile, status and live session count. Staff only."""
    return await service.get_user(conn, user_id)


@admin_router.get(
    "/{user_id}/history", summary="A user's history", responses=error_responses(404, 409)
)
async def user_history(
    user_id: uuid.UUID,
    _admin: UsersManager,
    conn: Conn,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> History:
    """Sign-ins, refused attempts, refresh-token reuse, sign-outs, suspensions, profile changes.

    Newest first. Admins only.
    """
    return await service.history(conn, user_id, cursor=cursor, limit=limit)


@admin_router.post(
    "/{user_id}/suspend",
    summary="Suspend a user",
    responses=error_responses(404, 409),
)
async def suspend_user(
    user_id: uuid.UUID,
    body: SuspendRequest,
    admin: UsersManager,
    conn: Conn,
    client: ClientDep,
) -> AdminUser:
    """The account can no longer sign in and every session it has ends at once. Admins only."""
    return await service.suspend_user(conn, admin, user_id, body.reason, client)


@admin_router.post(
    "/{user_id}/reactivate", summary="Lift a suspension", responses=error_responses(404)
)
async def reactivate_user(
    user_id: uuid.UUID, admin: UsersManager, conn: Conn, client: ClientDep
) -> AdminUser:
    """The account may sign in again. Admins only."""
    return await service.reactivate_user(conn, admin, user_id, client)
