"""/v1/auth: sign in (WeChat, staff, development), refresh, log out, sessions."""

import uuid

from fastapi import APIRouter, status

from api.auth import service
from api.auth.schemas import (
    DevLogin,
    RefreshRequest,
    SessionList,
    SessionOut,
    StaffSignIn,
    TokenPair,
    WeChatSignIn,
)
from api.deps import ClientDep, Conn, CurrentUser, ResourcesDep, unit_of_work
from api.errors import error_responses

router = APIRouter(prefix="/auth", tags=["auth"])

# Only mounted when FREECAR_ENV=development (see api.app).
dev_router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/wechat",
    summary="Sign a rider in with a WeChat login code",
    responses=error_responses(401, 403, 502, 503),
)
async def wechat_sign_in(
    body: WeChatSignIn, resources: ResourcesDep, client: ClientDep
) -> TokenPair:
    """Exchange a `wx.login()` code for tokens; the first sign-in creates the account.

    WeChat's refusals become `wechat_invalid_code` (401, get a new code),
    `wechat_code_used` (401), `wechat_user_blocked` (403), `wechat_rate_limited` and
    `wechat_busy` (503 with Retry-After) and `wechat_unavailable` (502).
    """
    # WeChat first, then the database: no pooled connection waits on WeChat.
    identity = await resources.wechat.code_to_session(body.code)
    async with unit_of_work(resources) as conn:
        return await service.sign_in_wechat(
            conn, resources.sessions, identity, device=body.device, client=client
        )


@router.post(
    "/staff",
    summary="Sign a fleet manager or admin in",
    responses=error_responses(401, 403),
)
async def staff_sign_in(
    body: StaffSignIn, conn: Conn, resources: ResourcesDep, client: ClientDep
) -> TokenPair:
    """Email and password; `invalid_credentials` never says which of the two was wrong."""
    return await service.sign_in_staff(
        conn,
        resources.sessions,
        email=str(body.email),
        password=body.password,
        device=body.device,
        client=client,
    )


@dev_router.post(
    "/dev-login",
    summary="Development only: sign in as anyone",
    responses=error_responses(403, 409),
)
async def dev_login(
    body: DevLogin, conn: Conn, resources: ResourcesDep, client: ClientDep
) -> TokenPair:
    """Sign in as `username`, no WeChat or password; a new account gets `role`.

    Exists only when FREECAR_ENV=development (for the demo and for trying the API from
    /docs), and answers only clients on this machine (403 `dev_login_not_local`). It never
    changes an existing account's role (409 `dev_login_role_mismatch`).
    """
    return await service.dev_login(
        conn,
        resources.sessions,
        username=body.username,
        role=body.role,
        device=body.device,
        client=client,
    )


@router.post(
    "/refresh",
    summary="Trade a refresh token for a new token pair",
    responses=error_responses(401),
)
async def refresh(
    body: RefreshRequest, conn: Conn, resources: ResourcesDep, client: ClientDep
) -> TokenPair:
    """The presented refresh token is spent; keep the new one.

    Presenting a spent token again revokes the whole session (`refresh_token_reused`):
    sign in again.
    """
    return await service.refresh(
        conn, resources.sessions, refresh_token=body.refresh_token, client=client
    )


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End this session",
    responses=error_responses(401),
)
async def logout(principal: CurrentUser, conn: Conn, client: ClientDep) -> None:
    """Revokes the caller's session: its access and refresh tokens stop working at once."""
    await service.logout(conn, principal, client)


@router.get(
    "/sessions",
    summary="List my signed-in devices",
    responses=error_responses(401),
)
async def list_sessions(principal: CurrentUser, conn: Conn) -> SessionList:
    """Live sessions with device, IP, created and last-seen times; `current` marks this one."""
    return await service.list_sessions(conn, principal)


@router.get(
    "/sessions/{session_id}",
    summary="One of my sessions",
    responses=error_responses(401, 404),
)
async def get_session(session_id: uuid.UUID, principal: CurrentUser, conn: Conn) -> SessionOut:
    """404 for a session that is not the caller's, exactly as for one that does not exist."""
    return await service.get_session(conn, principal, session_id)


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Sign one of my devices out",
    responses=error_responses(401, 404),
)
async def delete_session(
    session_id: uuid.UUID, principal: CurrentUser, conn: Conn, client: ClientDep
) -> None:
    """Revokes that session at once; its next request is refused."""
    await service.delete_session(conn, principal, session_id, client)
