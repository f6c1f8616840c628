"""Every SQL statement of profiles, user administration and the audit trail."""

from __future__ import annotations

import uuid  # noqa: TC003 - class_row builds these dataclasses at runtime
from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 - idem
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any, LiteralString

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    from collections.abc import Mapping

    from psycopg import AsyncConnection

IpAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class UserRow:
    """A user as profiles and the admins' views read it."""

    id: uuid.UUID
    role: str
    status: str
    email: str | None
    display_name: str | None
    phone: str | None
    emergency_contact: dict[str, Any] | None
    address: dict[str, Any] | None
    preferences: dict[str, Any]
    has_wechat: bool
    has_dev_login: bool
    has_password: bool
    suspended_at: datetime | None
    suspended_reason: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AdminUserRow(UserRow):
    """A user as the admins' views read it: with the count of their live sessions."""

    live_sessions: int


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One entry of a user's history."""

    id: int
    actor_id: uuid.UUID | None
    action: str
    details: dict[str, Any]
    ip: IpAddress | None
    request_id: str | None
    created_at: datetime


_USER_COLUMNS: LiteralString = """
    id, role, status, email, display_name, phone, emergency_contact, address, preferences,
    coalesce(wechat_openid NOT LIKE 'dev:%%', false) AS has_wechat,
    coalesce(wechat_openid LIKE 'dev:%%', false) AS has_dev_login,
    password_hash IS NOT NULL AS has_password,
    suspended_at, suspended_reason, created_at, updated_at
"""

# A session is live until revoked or expired; auth_sessions_user_live serves the count.
_LIVE_SESSIONS: LiteralString = """
    (SELECT count(*) FROM auth_sessions s
     WHERE s.user_id = users.id AND s.revoked_at IS NULL AND s.expires_at > now())
        AS live_sessions
"""
_ADMIN_COLUMNS: LiteralString = _USER_COLUMNS + "," + _LIVE_SESSIONS

# Concatenations of LiteralString constants: no input ever reaches the SQL text.
_USER_BY_ID: LiteralString = "SELECT" + _USER_COLUMNS + "FROM users WHERE id = %(user_id)s"
_ADMIN_USER_BY_ID: LiteralString = "SELECT" + _ADMIN_COLUMNS + "FROM users WHERE id = %(user_id)s"

# One statement for any subset of fields: each column changes only when its flag is set,
# so a PATCH can also clear a field (flag set, value null).
_UPDATE_PROFILE: LiteralString = (
    """
    UPDATE users SET
        display_name = CASE WHEN %(set_display_name)s THEN %(display_name)s
                            ELSE display_name END,
        phone = CASE WHEN %(set_phone)s THEN %(phone)s ELSE phone END,
        email = CASE WHEN %(set_email)s THEN %(email)s ELSE email END,
        emergency_contact = CASE WHEN %(set_emergency_contact)s THEN %(emergency_contact)s
                                 ELSE emergency_contact END,
        address = CASE WHEN %(set_address)s THEN %(address)s ELSE address END,
        preferences = CASE WHEN %(set_preferences)s THEN %(preferences)s ELSE preferences END,
        updated_at = now()
    WHERE id = %(user_id)s
    RETURNING"""
    + _USER_COLUMNS
)

# Filters are optional: a null parameter matches everything. The text search is a scan;
# fine for the tens of thousands of accounts an operator has, and pg_trgm (contrib) is not
# available everywhere this runs.
_FILTER: LiteralString = """
    FROM users
    WHERE (%(role)s::text IS NULL OR role = %(role)s::text)
      AND (%(status)s::text IS NULL OR status = %(status)s::text)
      AND (%(pattern)s::text IS NULL
           OR display_name ILIKE %(pattern)s::text OR email ILIKE %(pattern)s::text
           OR phone LIKE %(pattern)s::text OR id::text = %(exact)s::text)
"""

# Newest first, keyset on (created_at, id), which users_created serves.
_LIST_USERS: LiteralString = (
    "SELECT"
    + _ADMIN_COLUMNS
    + _FILTER
    + """
      AND (%(after_created)s::timestamptz IS NULL
           OR (created_at, id) < (%(after_created)s::timestamptz, %(after_id)s::uuid))
    ORDER BY created_at DESC, id DESC
    LIMIT %(limit)s
"""
)

_COUNT_USERS: LiteralString = "SELECT count(*)" + _FILTER

_SUSPEND: LiteralString = """
    UPDATE users SET status = 'suspended', suspended_at = now(), suspended_reason = %(reason)s,
                     updated_at = now()
    WHERE id = %(user_id)s AND status = 'active'
    RETURNING id
"""

_REACTIVATE: LiteralString = """
    UPDATE users SET status = 'active', suspended_at = NULL, suspended_reason = NULL,
                     updated_at = now()
    WHERE id = %(user_id)s AND status = 'suspended'
    RETURNING id
"""

_CREATE_STAFF: LiteralString = """
    INSERT INTO users (email, password_hash, role, display_name)
    VALUES (%(email)s, %(password_hash)s, %(role)s, %(display_name)s)
    ON CONFLICT (email) DO NOTHING
    RETURNING id
"""

_RECORD_AUDIT: LiteralString = """
    INSERT INTO user_audit (user_id, actor_id, action, details, ip, request_id)
    VALUES (%(user_id)s, %(actor_id)s, %(action)s, %(details)s, %(ip)s, %(request_id)s)
"""

_HISTORY: LiteralString = """
    SELECT id, actor_id, action, details, ip, request_id, created_at
    FROM user_audit
    WHERE user_id = %(user_id)s AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
    ORDER BY id DESC
    LIMIT %(limit)s
"""


def _like_pattern(text: str) -> str:
    """`%text%` with LIKE's own wildcards escaped (backslash is LIKE's default escape)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def user_by_id(conn: AsyncConnection[Any], user_id: uuid.UUID) -> UserRow | None:
    """One user, or None."""
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(_USER_BY_ID, {"user_id": user_id})
        return await cur.fetchone()


async def admin_user_by_id(conn: AsyncConnection[Any], user_id: uuid.UUID) -> AdminUserRow | None:
    """One user with their live session count, or None."""
    async with conn.cursor(row_factory=class_row(AdminUserRow)) as cur:
        await cur.execute(_ADMIN_USER_BY_ID, {"user_id": user_id})
        return await cur.fetchone()


async def _returned_id(
    conn: AsyncConnection[Any], query: LiteralString, params: Mapping[str, Any]
) -> uuid.UUID | None:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return None if row is None else row[0]


async def update_profile(
    conn: AsyncConnection[Any], user_id: uuid.UUID, changes: Mapping[str, Any]
) -> UserRow | None:
    """Write the given profile fields (None clears one); the updated user."""
    params: dict[str, Any] = {"user_id": user_id}
    for name in ("display_name", "phone", "email"):
        params[f"set_{name}"] = name in changes
        params[name] = changes.get(name)
    for name in ("emergency_contact", "address", "preferences"):
        params[f"set_{name}"] = name in changes
        value = changes.get(name)
        params[name] = None if value is None else Jsonb(value)
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(_UPDATE_PROFILE, params)
        return await cur.fetchone()


async def list_users(  # noqa: PLR0913 - one per filter
    conn: AsyncConnection[Any],
    *,
    query: str | None,
    role: str | None,
    status: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> tuple[list[AdminUserRow], int]:
    """Users matching the filters, newest first after `after`, and how many match in all."""
    params = {
        "role": role,
        "status": status,
        "pattern": None if query is None else _like_pattern(query),
        "exact": query,
        "after_created": None if after is None else after[0],
        "after_id": None if after is None else after[1],
        "limit": limit,
    }
    async with conn.cursor(row_factory=class_row(AdminUserRow)) as cur:
        await cur.execute(_LIST_USERS, params)
        rows = await cur.fetchall()
    cur_count = await conn.execute(_COUNT_USERS, params)
    total = await cur_count.fetchone()
    return rows, int(total[0]) if total else 0


async def suspend(conn: AsyncConnection[Any], user_id: uuid.UUID, reason: str) -> bool:
    """Suspend an active user; False if there is none or it was already suspended."""
    return await _returned_id(conn, _SUSPEND, {"user_id": user_id, "reason": reason}) is not None


async def reactivate(conn: AsyncConnection[Any], user_id: uuid.UUID) -> bool:
    """Reactivate a suspended user; False if there is none or it was active."""
    return await _returned_id(conn, _REACTIVATE, {"user_id": user_id}) is not None


async def create_staff(
    conn: AsyncConnection[Any], *, email: str, password_hash: str, role: str, display_name: str
) -> uuid.UUID | None:
    """Create a staff account and return its id; None if the email is taken."""
    return await _returned_id(
        conn,
        _CREATE_STAFF,
        {
            "email": email.lower(),
            "password_hash": password_hash,
            "role": role,
            "display_name": display_name,
        },
    )


async def record_audit(  # noqa: PLR0913 - one column each
    conn: AsyncConnection[Any],
    *,
    user_id: uuid.UUID,
    action: str,
    actor_id: uuid.UUID | None = None,
    details: Mapping[str, Any] | None = None,
    ip: IpAddress | None = None,
    request_id: str | None = None,
) -> None:
    """Append one entry to a user's history."""
    await conn.execute(
        _RECORD_AUDIT,
        {
            "user_id": user_id,
            "actor_id": actor_id,
            "action": action,
            "details": Jsonb(dict(details or {})),
            "ip": ip,
            "request_id": request_id,
        },
    )


async def history(
    conn: AsyncConnection[Any], user_id: uuid.UUID, *, before: int | None, limit: int
) -> list[AuditRow]:
    """A user's history, newest first, before entry `before` if given."""
    async with conn.cursor(row_factory=class_row(AuditRow)) as cur:
        await cur.execute(_HISTORY, {"user_id": user_id, "before": before, "limit": limit})
        return await cur.fetchall()
