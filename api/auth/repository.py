"""Every SQL statement of sign-in, sessions and refresh tokens. The request wrapper commits."""

from __future__ import annotations

import uuid  # noqa: TC003 - class_row builds these dataclasses at runtime
from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 - idem
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any, LiteralString

from psycopg.rows import class_row

if TYPE_CHECKING:
    from psycopg import AsyncConnection

IpAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class Account:
    """What signing in needs to know about a user."""

    id: uuid.UUID
    role: str
    status: str
    display_name: str | None
    created: bool = False


@dataclass(frozen=True, slots=True)
class PasswordAccount:
    """A user found by email, with the hash to check."""

    id: uuid.UUID
    role: str
    status: str
    display_name: str | None
    password_hash: str | None


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session just created."""

    id: uuid.UUID
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SessionState:
    """What every authenticated request checks about its token's session."""

    user_id: uuid.UUID
    role: str
    live: bool
    stale: bool


@dataclass(frozen=True, slots=True)
class RefreshState:
    """A presented refresh token, its session and its user, locked for the rotation."""

    session_id: uuid.UUID
    spent: bool
    expired: bool
    revoked: bool
    user_id: uuid.UUID
    role: str
    status: str
    display_name: str | None


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One session as the sessions list shows it."""

    id: uuid.UUID
    user_id: uuid.UUID
    method: str
    device: str
    user_agent: str
    ip: IpAddress | None
    last_ip: IpAddress | None
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


# `xmax = 0` only on a row this statement inserted: tells a first sign-in from a return.
# The unionid is kept once known; WeChat sends it only when the app is bound to an
# open-platform account.
_UPSERT_WECHAT_ACCOUNT: LiteralString = """
    INSERT INTO users (wechat_openid, wechat_unionid) VALUES (%(openid)s, %(unionid)s)
    ON CONFLICT (wechat_openid) DO UPDATE
        SET wechat_unionid = coalesce(EXCLUDED.wechat_unionid, users.wechat_unionid)
    RETURNING id, role, status, display_name, (xmax = 0) AS created
"""

# Development sign-in: `dev:` cannot begin a real openid, so these never meet WeChat's. An
# existing account comes back as it is: the update only makes RETURNING give its row, and
# never touches the role (a sign-in must not promote anyone).
_UPSERT_DEV_ACCOUNT: LiteralString = """
    INSERT INTO users (wechat_openid, role, display_name)
    VALUES ('dev:' || %(username)s, %(role)s, %(username)s)
    ON CONFLICT (wechat_openid) DO UPDATE SET wechat_openid = users.wechat_openid
    RETURNING id, role, status, display_name, (xmax = 0) AS created
"""

_ACCOUNT_BY_EMAIL: LiteralString = """
    SELECT id, role, status, display_name, password_hash FROM users WHERE email = %(email)s
"""

_REHASH: LiteralString = """
    UPDATE users SET password_hash = %(hash)s, updated_at = now() WHERE id = %(user_id)s
"""

_CREATE_SESSION: LiteralString = """
    INSERT INTO auth_sessions (user_id, method, device, user_agent, ip, last_ip, expires_at)
    VALUES (%(user_id)s, %(method)s, %(device)s, %(user_agent)s, %(ip)s, %(ip)s,
            now() + make_interval(secs => %(ttl_s)s))
    RETURNING id, expires_at
"""

_INSERT_REFRESH: LiteralString = """
    INSERT INTO refresh_tokens (token_hash, session_id, expires_at)
    VALUES (%(token_hash)s, %(session_id)s, %(expires_at)s)
"""

# A session is live while not revoked, not past its expiry and its user not suspended.
_SESSION_STATE: LiteralString = """
    SELECT s.user_id, u.role,
           (s.revoked_at IS NULL AND s.expires_at > now() AND u.status = 'active') AS live,
           s.last_seen_at < now() - make_interval(secs => %(touch_s)s) AS stale
    FROM auth_sessions s JOIN users u ON u.id = s.user_id
    WHERE s.id = %(session_id)s
"""

_TOUCH_SESSION: LiteralString = """
    UPDATE auth_sessions SET last_seen_at = now(), last_ip = coalesce(%(ip)s, last_ip)
    WHERE id = %(session_id)s
"""

# Locks the token and its session: two refreshes racing with one token are serialised,
# and the second finds it spent.
_REFRESH_STATE: LiteralString = """
    SELECT t.session_id, t.used_at IS NOT NULL AS spent, t.expires_at <= now() AS expired,
           s.revoked_at IS NOT NULL AS revoked, s.user_id, u.role, u.status, u.display_name
    FROM refresh_tokens t
    JOIN auth_sessions s ON s.id = t.session_id
    JOIN users u ON u.id = s.user_id
    WHERE t.token_hash = %(token_hash)s
    FOR UPDATE OF t, s
"""

_SPEND_REFRESH: LiteralString = """
    UPDATE refresh_tokens SET used_at = now() WHERE token_hash = %(token_hash)s
"""

_EXTEND_SESSION: LiteralString = """
    UPDATE auth_sessions
    SET expires_at = now() + make_interval(secs => %(ttl_s)s), last_seen_at = now(),
        last_ip = coalesce(%(ip)s, last_ip)
    WHERE id = %(session_id)s
    RETURNING id, expires_at
"""

_REVOKE_SESSION: LiteralString = """
    UPDATE auth_sessions SET revoked_at = now(), revoke_reason = %(reason)s
    WHERE id = %(session_id)s AND revoked_at IS NULL
"""

_REVOKE_USER_SESSIONS: LiteralString = """
    UPDATE auth_sessions SET revoked_at = now(), revoke_reason = %(reason)s
    WHERE user_id = %(user_id)s AND revoked_at IS NULL
"""

_SESSION_COLUMNS: LiteralString = """
    id, user_id, method, device, user_agent, ip, last_ip, created_at, last_seen_at, expires_at
"""

_LIVE_SESSION: LiteralString = (
    "SELECT"
    + _SESSION_COLUMNS
    + """
    FROM auth_sessions
    WHERE id = %(session_id)s AND revoked_at IS NULL AND expires_at > now()
"""
)

# A rider has a handful of devices; the cap only bounds a pathological account.
_LIVE_SESSIONS: LiteralString = (
    "SELECT"
    + _SESSION_COLUMNS
    + """
    FROM auth_sessions
    WHERE user_id = %(user_id)s AND revoked_at IS NULL AND expires_at > now()
    ORDER BY last_seen_at DESC, id
    LIMIT 200
"""
)


async def upsert_wechat_account(
    conn: AsyncConnection[Any], openid: str, unionid: str | None
) -> Account:
    """The account of this WeChat openid, created on first sign-in."""
    async with conn.cursor(row_factory=class_row(Account)) as cur:
        await cur.execute(_UPSERT_WECHAT_ACCOUNT, {"openid": openid, "unionid": unionid})
        row = await cur.fetchone()
    assert row is not None  # an upsert always returns its row
    return row


async def upsert_dev_account(conn: AsyncConnection[Any], username: str, role: str) -> Account:
    """The development account `username`: created with `role`, or as it is if it exists."""
    async with conn.cursor(row_factory=class_row(Account)) as cur:
        await cur.execute(_UPSERT_DEV_ACCOUNT, {"username": username, "role": role})
        row = await cur.fetchone()
    assert row is not None
    return row


async def account_by_email(conn: AsyncConnection[Any], email: str) -> PasswordAccount | None:
    """The account with this (lower-cased) email, if any."""
    async with conn.cursor(row_factory=class_row(PasswordAccount)) as cur:
        await cur.execute(_ACCOUNT_BY_EMAIL, {"email": email.lower()})
        return await cur.fetchone()


async def set_password_hash(conn: AsyncConnection[Any], user_id: uuid.UUID, hash_: str) -> None:
    """Replace a user's password hash (rehash with today's parameters)."""
    await conn.execute(_REHASH, {"hash": hash_, "user_id": user_id})


async def create_session(  # noqa: PLR0913 - one column each
    conn: AsyncConnection[Any],
    *,
    user_id: uuid.UUID,
    method: str,
    device: str,
    user_agent: str,
    ip: IpAddress | None,
    ttl_s: int,
) -> NewSession:
    """Open a session (refresh family) for a user signing in."""
    async with conn.cursor(row_factory=class_row(NewSession)) as cur:
        await cur.execute(
            _CREATE_SESSION,
            {
                "user_id": user_id,
                "method": method,
                "device": device,
                "user_agent": user_agent,
                "ip": ip,
                "ttl_s": ttl_s,
            },
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def insert_refresh_token(
    conn: AsyncConnection[Any], token_hash: bytes, session_id: uuid.UUID, expires_at: datetime
) -> None:
    """Store a refresh token's hash for its session."""
    await conn.execute(
        _INSERT_REFRESH,
        {"token_hash": token_hash, "session_id": session_id, "expires_at": expires_at},
    )


async def session_state(
    conn: AsyncConnection[Any], session_id: uuid.UUID, touch_s: int
) -> SessionState | None:
    """The session behind an access token, checked on every request."""
    async with conn.cursor(row_factory=class_row(SessionState)) as cur:
        await cur.execute(_SESSION_STATE, {"session_id": session_id, "touch_s": touch_s})
        return await cur.fetchone()


async def touch_session(
    conn: AsyncConnection[Any], session_id: uuid.UUID, ip: IpAddress | None
) -> None:
    """Record that the session was just used (and from where)."""
    await conn.execute(_TOUCH_SESSION, {"session_id": session_id, "ip": ip})


async def refresh_state(conn: AsyncConnection[Any], token_hash: bytes) -> RefreshState | None:
    """The presented refresh token with its session and user, row-locked."""
    async with conn.cursor(row_factory=class_row(RefreshState)) as cur:
        await cur.execute(_REFRESH_STATE, {"token_hash": token_hash})
        return await cur.fetchone()


async def spend_refresh_token(conn: AsyncConnection[Any], token_hash: bytes) -> None:
    """Mark a refresh token used; presenting it again revokes its family."""
    await conn.execute(_SPEND_REFRESH, {"token_hash": token_hash})


async def extend_session(
    conn: AsyncConnection[Any], session_id: uuid.UUID, ip: IpAddress | None, ttl_s: int
) -> NewSession:
    """Push a session's expiry forward on refresh."""
    async with conn.cursor(row_factory=class_row(NewSession)) as cur:
        await cur.execute(_EXTEND_SESSION, {"session_id": session_id, "ip": ip, "ttl_s": ttl_s})
        row = await cur.fetchone()
    assert row is not None  # the caller holds the session's row lock
    return row


async def revoke_session(conn: AsyncConnection[Any], session_id: uuid.UUID, reason: str) -> bool:
    """End one session; False if it had already ended."""
    cur = await conn.execute(_REVOKE_SESSION, {"session_id": session_id, "reason": reason})
    return cur.rowcount > 0


async def revoke_user_sessions(conn: AsyncConnection[Any], user_id: uuid.UUID, reason: str) -> int:
    """End every live session of a user; how many there were."""
    cur = await conn.execute(_REVOKE_USER_SESSIONS, {"user_id": user_id, "reason": reason})
    return cur.rowcount


async def live_session(conn: AsyncConnection[Any], session_id: uuid.UUID) -> SessionRow | None:
    """A session that has not ended, whoever owns it (check ownership after)."""
    async with conn.cursor(row_factory=class_row(SessionRow)) as cur:
        await cur.execute(_LIVE_SESSION, {"session_id": session_id})
        return await cur.fetchone()


async def live_sessions(conn: AsyncConnection[Any], user_id: uuid.UUID) -> list[SessionRow]:
    """A user's sessions that have not ended, most recently seen first."""
    async with conn.cursor(row_factory=class_row(SessionRow)) as cur:
        await cur.execute(_LIVE_SESSIONS, {"user_id": user_id})
        return await cur.fetchall()
