"""Profiles, their completeness, and what admins do to accounts. Nothing here commits."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, get_args

from psycopg.errors import UniqueViolation

from api import pagination
from api.auth import repository as auth_repository
from api.auth.passwords import hash_password_async
from api.errors import ConflictError, NotFoundError
from api.identity import Role, UserStatus
from api.users import repository
from api.users.schemas import (
    Address,
    AdminUser,
    AuditEntry,
    Completeness,
    EmergencyContact,
    History,
    Preferences,
    Profile,
    ProfileField,
    ProfileUpdate,
    SignInMethod,
    UserPage,
)

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from api.identity import Client, Principal
    from api.users.repository import AdminUserRow, UserRow

# What a rider needs before a first booking (licence verification and invoices use them).
REQUIRED_FIELDS: Final[tuple[ProfileField, ...]] = get_args(ProfileField)


class EmailTakenError(ConflictError):
    """Another account uses this email."""

    code = "email_taken"
    default_message = "another account uses this email"


class EmailRequiredError(ConflictError):
    """Staff sign in with their email; it cannot be removed."""

    code = "email_required"
    default_message = "a staff account signs in with its email and cannot remove it"


class CannotSuspendSelfError(ConflictError):
    """An admin cannot lock themselves out."""

    code = "cannot_suspend_self"
    default_message = "you cannot suspend your own account"


def completeness(row: UserRow) -> Completeness:
    """The share of required profile fields filled in, and which are missing."""
    missing = [name for name in REQUIRED_FIELDS if getattr(row, name) in (None, "", {})]
    filled = len(REQUIRED_FIELDS) - len(missing)
    return Completeness(percent=round(100 * filled / len(REQUIRED_FIELDS)), missing=missing)


def _preferences(stored: dict[str, Any]) -> Preferences:
    # Keys a later version dropped are ignored rather than failing every read.
    return Preferences.model_validate(
        {key: value for key, value in stored.items() if key in Preferences.model_fields}
    )


def _profile_fields(row: UserRow) -> dict[str, Any]:
    methods: list[SignInMethod] = []
    if row.has_wechat:
        methods.append("wechat")
    if row.has_password:
        methods.append("password")
    if row.has_dev_login:
        methods.append("dev")
    return {
        "id": row.id,
        "role": Role(row.role),
        "status": UserStatus(row.status),
        "display_name": row.display_name,
        "phone": row.phone,
        "email": row.email,
        "emergency_contact": None
        if row.emergency_contact is None
        else EmergencyContact.model_validate(row.emergency_contact),
        "address": None if row.address is None else Address.model_validate(row.address),
        "preferences": _preferences(row.preferences),
        "sign_in_methods": methods,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "completeness": completeness(row),
    }


def to_profile(row: UserRow) -> Profile:
    """The API view of the caller's own account."""
    return Profile(**_profile_fields(row))


def to_admin_user(row: AdminUserRow) -> AdminUser:
    """The API view of an account for admins."""
    return AdminUser(
        **_profile_fields(row),
        suspended_at=row.suspended_at,
        suspended_reason=row.suspended_reason,
        live_sessions=row.live_sessions,
    )


async def _user_or_404(conn: AsyncConnection[Any], user_id: uuid.UUID) -> UserRow:
    row = await repository.user_by_id(conn, user_id)
    if row is None:
        raise NotFoundError("user not found")
    return row


async def _audit(
    conn: AsyncConnection[Any],
    user_id: uuid.UUID,
    action: str,
    client: Client | None,
    *,
    actor_id: uuid.UUID | None = None,
    **details: Any,  # noqa: ANN401 - JSON values
) -> None:
    await repository.record_audit(
        conn,
        user_id=user_id,
        action=action,
        actor_id=actor_id,
        details=details,
        ip=None if client is None else client.ip,
        request_id=None if client is None else client.request_id,
    )


async def profile(conn: AsyncConnection[Any], principal: Principal) -> Profile:
    """The caller's profile."""
    return to_profile(await _user_or_404(conn, principal.user_id))


async def update_profile(
    conn: AsyncConnection[Any], principal: Principal, update: ProfileUpdate, client: Client
) -> Profile:
    """Apply a PATCH to the caller's profile; 409 `email_taken` when the email is in use."""
    current = await _user_or_404(conn, principal.user_id)
    changes: dict[str, Any] = {}
    for name in update.model_fields_set:
        value = getattr(update, name)
        if name == "preferences":
            # Preferences merge: sending {"language": "en"} keeps the other choices.
            changes[name] = (
                {}
                if value is None
                else {**current.preferences, **value.model_dump(exclude_unset=True)}
            )
        elif name == "email":
            changes[name] = None if value is None else str(value).lower()
        elif isinstance(value, EmergencyContact | Address):
            changes[name] = value.model_dump(mode="json", exclude_none=True)
        else:
            changes[name] = value
    if "email" in changes and changes["email"] is None and current.has_password:
        raise EmailRequiredError
    if not changes:
        return to_profile(current)
    try:
        row = await repository.update_profile(conn, principal.user_id, changes)
    except UniqueViolation as exc:
        raise EmailTakenError from exc
    assert row is not None  # the caller's session proved the row exists
    await _audit(conn, principal.user_id, "profile_updated", client, fields=sorted(changes))
    return to_profile(row)


async def list_users(  # noqa: PLR0913 - one per filter
    conn: AsyncConnection[Any],
    *,
    query: str | None,
    role: Role | None,
    status: UserStatus | None,
    cursor: str | None,
    limit: int,
) -> UserPage:
    """A page of users matching the filters, newest first."""
    filters = pagination.fingerprint({"list": "users", "q": query, "role": role, "status": status})
    after = None
    if cursor is not None:
        created_at, user_id = pagination.decode_cursor(cursor, (datetime, uuid.UUID), filters).key
        assert isinstance(created_at, datetime)  # the shape says so
        assert isinstance(user_id, uuid.UUID)
        after = (created_at, user_id)
    rows, total = await repository.list_users(
        conn,
        query=query,
        role=None if role is None else role.value,
        status=None if status is None else status.value,
        after=after,
        limit=limit + 1,  # one more tells whether a next page exists
    )
    page = pagination.next_page(rows, limit, lambda row: (row.created_at, row.id), filters)
    return UserPage(
        items=[to_admin_user(row) for row in page.rows],
        total=total,
        next_cursor=page.next_cursor,
    )


async def get_user(conn: AsyncConnection[Any], user_id: uuid.UUID) -> AdminUser:
    """One user with their live session count (as this transaction sees it)."""
    row = await repository.admin_user_by_id(conn, user_id)
    if row is None:
        raise NotFoundError("user not found")
    return to_admin_user(row)


async def suspend_user(
    conn: AsyncConnection[Any],
    actor: Principal,
    user_id: uuid.UUID,
    reason: str,
    client: Client,
) -> AdminUser:
    """Suspend an account and end every session it has (idempotent)."""
    if user_id == actor.user_id:
        raise CannotSuspendSelfError
    if await repository.suspend(conn, user_id, reason):
        ended = await auth_repository.revoke_user_sessions(conn, user_id, "suspended")
        await _audit(
            conn,
            user_id,
            "suspended",
            client,
            actor_id=actor.user_id,
            reason=reason,
            sessions=ended,
        )
    return await get_user(conn, user_id)  # 404, or already suspended: as it is


async def reactivate_user(
    conn: AsyncConnection[Any], actor: Principal, user_id: uuid.UUID, client: Client
) -> AdminUser:
    """Lift a suspension (idempotent); the user signs in again to get a session."""
    if await repository.reactivate(conn, user_id):
        await _audit(conn, user_id, "reactivated", client, actor_id=actor.user_id)
    return await get_user(conn, user_id)


async def create_staff(  # noqa: PLR0913 - the account's fields
    conn: AsyncConnection[Any],
    *,
    email: str,
    password: str,
    role: Role,
    display_name: str,
    actor: Principal | None,
    client: Client | None,
) -> AdminUser:
    """Create a fleet manager or admin account; 409 `email_taken` if the email is in use."""
    password_hash = await hash_password_async(password)
    user_id = await repository.create_staff(
        conn, email=email, password_hash=password_hash, role=role.value, display_name=display_name
    )
    if user_id is None:
        raise EmailTakenError
    await _audit(
        conn,
        user_id,
        "staff_created",
        client,
        actor_id=None if actor is None else actor.user_id,
        role=role.value,
    )
    return await get_user(conn, user_id)


async def history(
    conn: AsyncConnection[Any], user_id: uuid.UUID, *, cursor: str | None, limit: int
) -> History:
    """A page of a user's history, newest first."""
    await _user_or_404(conn, user_id)
    filters = pagination.fingerprint({"list": "user_history", "user_id": user_id})
    before = None
    if cursor is not None:
        (last_id,) = pagination.decode_cursor(cursor, (int,), filters).key
        assert isinstance(last_id, int)  # the shape says so
        before = last_id
    found = await repository.history(conn, user_id, before=before, limit=limit + 1)
    page = pagination.next_page(found, limit, lambda row: (row.id,), filters)
    rows = page.rows
    items = [
        AuditEntry(
            id=row.id,
            action=row.action,
            actor_id=row.actor_id,
            details=row.details,
            ip=None if row.ip is None else str(row.ip),
            request_id=row.request_id,
            created_at=row.created_at,
        )
        for row in rows
    ]
    return History(items=items, next_cursor=page.next_cursor)
