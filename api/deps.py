"""Typed dependencies, declared once: the connection (the unit of work), the caller, roles.

`Conn` is a pooled connection inside one transaction per request: committed after the
endpoint returns and before the response is sent, rolled back if anything raises (except
an ApiError that `keeps_changes`); GET and HEAD requests read in autocommit instead
(`READ_METHODS`). Services never commit. An endpoint whose side effects must follow a
commit (the broker) takes `WorkDep` instead, and runs its own units of work (`api.work`).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from ipaddress import ip_address
from typing import TYPE_CHECKING, Annotated, Any, Final

import redis.asyncio
from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection, OperationalError
from psycopg_pool import PoolTimeout
from pydantic import JsonValue

from api.auth import service as auth_service
from api.context import current_request_id
from api.errors import (
    ApiError,
    BadRequestError,
    ForbiddenError,
    InvalidTokenError,
    MissingTokenError,
    ServiceUnavailableError,
    TokenExpiredError,
)
from api.identity import STAFF_ROLES, Client, Principal, Role
from api.resources import Resources
from api.settings import ApiSettings
from api.work import Work

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from fastapi.dependencies.models import Dependant

    from api.auth.tokens import AccessClaims


log = logging.getLogger(__name__)


# Dependencies are coroutines even when they do not await: FastAPI runs a plain function in
# a worker thread, a hop every request would pay for nothing.
async def _resources(request: Request) -> Resources:
    resources = request.state.resources
    assert isinstance(resources, Resources), "the app's lifespan did not run"
    return resources


ResourcesDep = Annotated[Resources, Depends(_resources)]


async def _settings(resources: ResourcesDep) -> ApiSettings:
    return resources.settings


SettingsDep = Annotated[ApiSettings, Depends(_settings)]


async def _redis(resources: ResourcesDep) -> redis.asyncio.Redis:
    return resources.redis


RedisDep = Annotated[redis.asyncio.Redis, Depends(_redis)]


@asynccontextmanager
async def _borrowed(resources: Resources) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection; 503 when the database cannot give one or dies meanwhile."""
    try:
        async with resources.pool.connection() as conn:
            yield conn
    except (PoolTimeout, OperationalError) as exc:
        log.warning("database unavailable: %s", exc)
        raise ServiceUnavailableError("database unavailable; retry shortly") from exc


@asynccontextmanager
async def unit_of_work(resources: Resources) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection in a transaction: committed on success, rolled back on error.

    `Conn` wraps this for endpoints; an endpoint that must call out (WeChat) before touching
    the database opens it itself, so no connection idles through the outside call.
    """
    async with _borrowed(resources) as conn:
        try:
            yield conn
        except ApiError as exc:
            if exc.keeps_changes:
                await conn.commit()
            raise


# Methods that only read. They run in autocommit: under READ COMMITTED every statement
# takes its own snapshot inside a transaction too, so a read loses nothing and saves the
# BEGIN and COMMIT round trips (two of a search's five). The one write a read may do, the
# session's last-seen touch, is a single statement.
READ_METHODS: Final = frozenset({"GET", "HEAD"})


@asynccontextmanager
async def reading(resources: Resources) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection in autocommit, for a request that only reads."""
    async with _borrowed(resources) as conn:
        await conn.set_autocommit(True)
        try:
            yield conn
        finally:
            # Back to the pool as it was lent: the next borrower may write.
            if not conn.closed:
                await conn.set_autocommit(False)


def _runs_own_units_of_work(request: Request) -> bool:
    """Whether the endpoint takes `WorkDep` (cached per route)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return False
    cache: dict[int, bool] | None = getattr(request.app.state, "own_units_of_work", None)
    if cache is None:
        cache = request.app.state.own_units_of_work = {}
    found = cache.get(id(route))
    if found is None:
        found = cache[id(route)] = _depends_on(route.dependant, _work)
    return found


def _depends_on(dependant: Dependant, call: object) -> bool:
    return any(sub.call is call or _depends_on(sub, call) for sub in dependant.dependencies)


async def _connection(
    request: Request, resources: ResourcesDep
) -> AsyncIterator[AsyncConnection[Any]]:
    # Reads, and requests that run their own units of work on it, go in autocommit.
    if request.method in READ_METHODS or _runs_own_units_of_work(request):
        async with reading(resources) as conn:
            yield conn
        return
    async with unit_of_work(resources) as conn:
        yield conn


# scope="function": the transaction ends when the endpoint returns, before the response is
# sent, so a client never sees a success that then fails to commit.
Conn = Annotated[AsyncConnection[Any], Depends(_connection, scope="function")]


async def _work(conn: Conn) -> Work:
    return Work(conn)


WorkDep = Annotated[Work, Depends(_work)]
"""The request's connection for units of work the endpoint runs itself (see `api.work`)."""


def _printable(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable())


def client_ip_key(request: Request) -> str:
    """The client's address as a rate-limit key (`unknown` when the server gives none)."""
    return request.client.host if request.client else "unknown"


async def _client(request: Request) -> Client:
    host = request.client.host if request.client else None
    try:
        ip = ip_address(host) if host else None
    except ValueError:
        ip = None  # a Unix socket or a test client's made-up name
    return Client(
        ip=ip,
        user_agent=_printable(request.headers.get("user-agent", "")),
        request_id=current_request_id(),
    )


ClientDep = Annotated[Client, Depends(_client)]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="PASETO v4.local",
    description="An access token from a sign-in or a refresh.",
)


def access_claims(request: Request, resources: Resources, token: str) -> AccessClaims:
    """The token's claims, decoded once per request whoever asks (the limiter, the caller).

    Raises InvalidTokenError or TokenExpiredError as the codec does, each time it is asked.
    """
    cached: tuple[str, AccessClaims | ApiError] | None = getattr(
        request.state, "access_claims", None
    )
    if cached is None or cached[0] != token:
        try:
            outcome: AccessClaims | ApiError = resources.sessions.codec.verify(token)
        except (InvalidTokenError, TokenExpiredError) as exc:
            outcome = exc
        cached = (token, outcome)
        request.state.access_claims = cached
    if isinstance(cached[1], ApiError):
        raise cached[1]
    return cached[1]


async def _principal(
    request: Request,
    conn: Conn,
    resources: ResourcesDep,
    client: ClientDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None:
        raise MissingTokenError
    claims = access_claims(request, resources, credentials.credentials)
    return await auth_service.authenticate(conn, resources.sessions, claims, client)


CurrentUser = Annotated[Principal, Depends(_principal)]
"""The signed-in caller, any role; 401 without a live session."""


def require_roles(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets only `roles` through (403 for the others)."""
    allowed = frozenset(roles)

    async def check(principal: CurrentUser) -> Principal:
        if principal.role not in allowed:
            raise ForbiddenError(f"this needs the role {' or '.join(sorted(allowed))}")
        return principal

    return check


RequireCustomer = Annotated[Principal, Depends(require_roles(Role.CUSTOMER))]
"""A signed-in rider."""
RequireStaff = Annotated[Principal, Depends(require_roles(*STAFF_ROLES))]
"""A signed-in fleet manager or admin."""
RequireAdmin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
"""A signed-in admin."""


async def rate_limit(request: Request, response: Response, resources: ResourcesDep) -> None:
    """Count the request against its budgets; 429 when one is spent (router dependency)."""
    limiter = resources.limiter
    if limiter is None:
        return
    # The matched route is the endpoint's own APIRoute; its name is the handler's name.
    endpoint = str(getattr(request.scope.get("route"), "name", "") or "")
    # The token picks the user's budget; the endpoint's own dependency reuses this decoding
    # and checks the session afterwards. A bad token counts against the IP only here, and is
    # refused by that dependency.
    claims = None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        try:
            claims = access_claims(request, resources, token.strip())
        except (InvalidTokenError, TokenExpiredError):
            claims = None
    window = await limiter.check(
        ip=client_ip_key(request),
        endpoint=endpoint,
        user=None if claims is None else str(claims.sub),
        role=None if claims is None else claims.role,
    )
    if window is not None:
        response.headers.update(window.headers())


RateLimit = Depends(rate_limit)


class UnknownQueryParameterError(BadRequestError):
    """A query parameter the endpoint does not take (a typo would otherwise be ignored)."""

    code = "unknown_query_parameter"


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _declared_query(request: Request, route: APIRoute) -> frozenset[str]:
    """The query parameters the route and its dependencies declare (cached per route)."""
    cache: dict[int, frozenset[str]] | None = getattr(request.app.state, "query_names", None)
    if cache is None:
        cache = request.app.state.query_names = {}
    names = cache.get(id(route))
    if names is None:
        names = cache[id(route)] = frozenset(_query_names(route.dependant))
    return names


async def reject_unknown_query(request: Request) -> None:
    """400 `unknown_query_parameter` for a parameter the endpoint does not declare.

    `?limt=5` silently ignored returns the default page and looks like a bug in the API;
    refusing it says what is wrong (router dependency).
    """
    route = request.scope.get("route")
    if not request.query_params or not isinstance(route, APIRoute):
        return
    names = _declared_query(request, route)
    unknown = list[JsonValue](sorted(set(request.query_params.keys()) - names))
    if unknown:
        allowed = list[JsonValue](sorted(names))
        raise UnknownQueryParameterError(
            f"unknown query parameter {', '.join(repr(u) for u in unknown)}",
            details={"unknown": unknown, "allowed": allowed},
        )


RejectUnknownQuery = Depends(reject_unknown_query)


async def admin_network_guard(request: Request, settings: SettingsDep) -> None:
    """403 `ip_not_allowed` outside FREECAR_API_ADMIN_NETWORKS, when that list is set."""
    networks = settings.api_admin_networks
    if not networks:
        return
    ip = (await _client(request)).ip
    if ip is None or not any(ip in network for network in networks):
        raise IpNotAllowedError


class IpNotAllowedError(ForbiddenError):
    """Admin endpoints answer only the configured networks."""

    code = "ip_not_allowed"
    default_message = "admin endpoints are not reachable from this address"
