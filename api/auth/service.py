"""Sign-in, refresh rotation, sessions and the per-request session check.

A sign-in opens a session, which is a refresh-token family: the refresh token handed out is
random, stored only as its SHA-256, and spent by its first use, which hands out the next
one. A spent token presented again means two parties hold the family's tokens (a thief and
the rider, in some order): the whole session is revoked and both must sign in again.

Nothing here commits: the request's unit of work does (see `api.deps`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from api.auth import repository
from api.auth.passwords import hash_password_async, needs_rehash, verify_password
from api.auth.schemas import SessionList, SessionOut, SignedInUser, TokenPair
from api.errors import ConflictError, ForbiddenError, SessionRevokedError, UnauthorizedError
from api.identity import Client, Principal, Role, UserStatus
from api.ownership import owned_or_404
from api.users.repository import record_audit

if TYPE_CHECKING:
    import uuid

    from psycopg import AsyncConnection

    from api.auth.repository import Account
    from api.auth.tokens import AccessClaims, TokenCodec
    from api.auth.wechat import WeChatSession

log = logging.getLogger(__name__)

# 256 bits: unguessable, and 43 characters of base64url.
REFRESH_TOKEN_BYTES: Final = 32


class InvalidCredentialsError(UnauthorizedError):
    """Unknown email or wrong password (never said which)."""

    code = "invalid_credentials"
    default_message = "email or password is wrong"
    keeps_changes = True  # the failed attempt stays in the account's history


class InvalidRefreshTokenError(UnauthorizedError):
    """A refresh token this API never issued."""

    code = "invalid_refresh_token"
    default_message = "unknown refresh token; sign in again"


class RefreshTokenExpiredError(UnauthorizedError):
    """The refresh token (and so its session) outlived its lifetime."""

    code = "refresh_token_expired"
    default_message = "the refresh token expired; sign in again"


class RefreshTokenReusedError(UnauthorizedError):
    """A spent refresh token came back: its whole family is now revoked."""

    code = "refresh_token_reused"
    default_message = "this refresh token was already used; the session is revoked for safety"
    keeps_changes = True  # the revocation must outlive the failed request


class AccountSuspendedError(ForbiddenError):
    """The account is suspended; it cannot sign in or refresh."""

    code = "account_suspended"
    default_message = "this account is suspended"
    keeps_changes = True  # the refused attempt stays in the account's history


class DevLoginNotLocalError(ForbiddenError):
    """Dev login answers only this machine: anyone who reaches it may be anyone."""

    code = "dev_login_not_local"
    default_message = (
        "dev login answers only clients on this machine (a loopback address); sign in "
        "with WeChat or as staff instead"
    )


class DevLoginRoleMismatchError(ConflictError):
    """The account exists with another role, and dev login never changes a role."""

    code = "dev_login_role_mismatch"
    default_message = "this account has another role; dev login never changes a role"


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How sessions are made: the access-token codec and the lifetimes."""

    codec: TokenCodec
    refresh_ttl_s: int
    touch_s: int


def hash_refresh_token(token: str) -> bytes:
    """The stored form of a refresh token."""
    return hashlib.sha256(token.encode("ascii", errors="replace")).digest()


async def _audit(
    conn: AsyncConnection[Any],
    user_id: uuid.UUID,
    action: str,
    client: Client,
    *,
    actor_id: uuid.UUID | None = None,
    **details: Any,  # noqa: ANN401 - JSON values
) -> None:
    await record_audit(
        conn,
        user_id=user_id,
        action=action,
        actor_id=actor_id,
        details=details,
        ip=client.ip,
        request_id=client.request_id,
    )


async def _issue_pair(  # noqa: PLR0913 - keyword-only, one per token field
    conn: AsyncConnection[Any],
    policy: SessionPolicy,
    *,
    user_id: uuid.UUID,
    role: Role,
    display_name: str | None,
    session: repository.NewSession,
    new_user: bool,
) -> TokenPair:
    refresh_token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
    await repository.insert_refresh_token(
        conn, hash_refresh_token(refresh_token), session.id, session.expires_at
    )
    access = policy.codec.issue(user_id=user_id, role=role, session_id=session.id)
    return TokenPair(
        access_token=access.token,
        expires_in=access.expires_in,
        refresh_token=refresh_token,
        refresh_expires_at=session.expires_at,
        session_id=session.id,
        user=SignedInUser(id=user_id, role=role, display_name=display_name),
        new_user=new_user,
    )


async def _open_session(  # noqa: PLR0913 - the sign-in's facts, each needed
    conn: AsyncConnection[Any],
    policy: SessionPolicy,
    account: Account | repository.PasswordAccount,
    *,
    method: str,
    device: str | None,
    client: Client,
    new_user: bool = False,
) -> TokenPair:
    if account.status != UserStatus.ACTIVE:
        await _audit(conn, account.id, "sign_in_refused", client, method=method)
        raise AccountSuspendedError
    session = await repository.create_session(
        conn,
        user_id=account.id,
        method=method,
        device=device or "",
        # Long enough for any real browser or WeChat UA; the cap bounds the row.
        user_agent=client.user_agent[:512],
        ip=client.ip,
        ttl_s=policy.refresh_ttl_s,
    )
    if new_user:
        await _audit(conn, account.id, "account_created", client, method=method)
    await _audit(conn, account.id, "signed_in", client, method=method, session_id=str(session.id))
    return await _issue_pair(
        conn,
        policy,
        user_id=account.id,
        role=Role(account.role),
        display_name=account.display_name,
        session=session,
        new_user=new_user,
    )


async def sign_in_wechat(
    conn: AsyncConnection[Any],
    policy: SessionPolicy,
    identity: WeChatSession,
    *,
    device: str | None,
    client: Client,
) -> TokenPair:
    """Sign a rider in once WeChat vouched for them; the account is created on first sign-in."""
    account = await repository.upsert_wechat_account(conn, identity.openid, identity.unionid)
    return await _open_session(
        conn,
        policy,
        account,
        method="wechat",
        device=device,
        client=client,
        new_user=account.created,
    )


async def sign_in_staff(  # noqa: PLR0913 - the sign-in's facts, each needed
    conn: AsyncConnection[Any],
    policy: SessionPolicy,
    *,
    email: str,
    password: str,
    device: str | None,
    client: Client,
) -> TokenPair:
    """Sign a staff member in with email and password."""
    account = await repository.account_by_email(conn, email)
    # An unknown email still pays for one argon2 verification: timing tells nothing.
    password_hash = account.password_hash if account is not None else None
    if not await verify_password(password_hash, password):
        if account is not None:
            await _audit(conn, account.id, "sign_in_failed", client, method="password")
        raise InvalidCredentialsError
    assert account is not None  # verify_password never matches a missing hash
    assert password_hash is not None
    if needs_rehash(password_hash):
        await repository.set_password_hash(conn, account.id, await hash_password_async(password))
    return await _open_session(
        conn, policy, account, method="password", device=device, client=client
    )


async def dev_login(  # noqa: PLR0913 - the sign-in's facts, each needed
    conn: AsyncConnection[Any],
    policy: SessionPolicy,
    *,
    username: str,
    role: Role | None,
    device: str | None,
    client: Client,
) -> TokenPair:
    """Development only: sign in as `username`, created with `role` (customer by default).

    Only from this machine, and never a change of role: an existing account signs in as it
    is (409 `dev_login_role_mismatch` when another role is asked for).
    """
    if not client.is_local:
        raise DevLoginNotLocalError
    account = await repository.upsert_dev_account(conn, username, (role or Role.CUSTOMER).value)
    if role is not None and account.role != role.value:
        raise DevLoginRoleMismatchError(
            f"{username} is a {account.role} and dev login never changes a role; sign in "
            f"without a role, or as another username to get a new {role.value}",
            details={"username": username, "role": account.role, "requested": role.value},
        )
    return await _open_session(
        conn,
        policy,
        account,
        method="dev",
        device=device,
        client=client,
        new_user=account.created,
    )


async def refresh(
    conn: AsyncConnection[Any], policy: SessionPolicy, *, refresh_token: str, client: Client
) -> TokenPair:
    """Spend a refresh token for a new pair; a spent one revokes its whole session."""
    token_hash = hash_refresh_token(refresh_token)
    state = await repository.refresh_state(conn, token_hash)
    if state is None:
        raise InvalidRefreshTokenError
    if state.spent:
        if await repository.revoke_session(conn, state.session_id, "refresh_reuse"):
            log.warning("refresh token reused; session %s revoked", state.session_id)
            await _audit(
                conn, state.user_id, "refresh_reuse", client, session_id=str(state.session_id)
            )
        raise RefreshTokenReusedError
    if state.revoked or state.status != UserStatus.ACTIVE:
        raise SessionRevokedError
    if state.expired:
        raise RefreshTokenExpiredError
    await repository.spend_refresh_token(conn, token_hash)
    session = await repository.extend_session(
        conn, state.session_id, client.ip, policy.refresh_ttl_s
    )
    return await _issue_pair(
        conn,
        policy,
        user_id=state.user_id,
        role=Role(state.role),
        display_name=state.display_name,
        session=session,
        new_user=False,
    )


async def authenticate(
    conn: AsyncConnection[Any], policy: SessionPolicy, claims: AccessClaims, client: Client
) -> Principal:
    """The principal of a verified token, if its session is still live (else SessionRevokedError).

    One primary-key lookup per request is what makes revocation immediate.
    """
    state = await repository.session_state(conn, claims.sid, policy.touch_s)
    if state is None or not state.live or state.user_id != claims.sub:
        raise SessionRevokedError
    if state.stale:
        await repository.touch_session(conn, claims.sid, client.ip)
    # The role is the account's current one, not the token's: a demotion acts at once.
    return Principal(user_id=state.user_id, role=Role(state.role), session_id=claims.sid)


async def logout(conn: AsyncConnection[Any], principal: Principal, client: Client) -> None:
    """End the caller's own session."""
    if await repository.revoke_session(conn, principal.session_id, "logout"):
        await _audit(
            conn, principal.user_id, "signed_out", client, session_id=str(principal.session_id)
        )


def _session_out(row: repository.SessionRow, principal: Principal) -> SessionOut:
    return SessionOut(
        id=row.id,
        method=row.method,  # the column's CHECK allows only the Literal's values
        device=row.device,
        user_agent=row.user_agent,
        ip=None if row.ip is None else str(row.ip),
        last_ip=None if row.last_ip is None else str(row.last_ip),
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        expires_at=row.expires_at,
        current=row.id == principal.session_id,
    )


async def list_sessions(conn: AsyncConnection[Any], principal: Principal) -> SessionList:
    """The caller's live sessions."""
    rows = await repository.live_sessions(conn, principal.user_id)
    return SessionList(items=[_session_out(row, principal) for row in rows])


async def get_session(
    conn: AsyncConnection[Any], principal: Principal, session_id: uuid.UUID
) -> SessionOut:
    """One of the caller's live sessions (404 for anyone else's)."""
    row = owned_or_404(await repository.live_session(conn, session_id), principal, "session")
    return _session_out(row, principal)


async def delete_session(
    conn: AsyncConnection[Any], principal: Principal, session_id: uuid.UUID, client: Client
) -> None:
    """Sign one of the caller's devices out (404 for anyone else's)."""
    row = owned_or_404(await repository.live_session(conn, session_id), principal, "session")
    if await repository.revoke_session(conn, row.id, "deleted"):
        await _audit(conn, principal.user_id, "session_revoked", client, session_id=str(row.id))
