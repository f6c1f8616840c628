"""The FastAPI app factory: middleware, error handlers, routers, and the lifespan's resources.

uvicorn --factory api.app:create_app     # what `freecar api` runs
app = create_app(ApiSettings(...))      # tests, with their own settings
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Final

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from starlette.middleware import Middleware

from api import health
from api.auth.endpoints import dev_router as auth_dev_router
from api.auth.endpoints import router as auth_router
from api.context import REQUEST_ID_HEADER
from api.deps import RateLimit, RejectUnknownQuery
from api.errors import error_responses, install_error_handlers
from api.event_rules.endpoints import admin_router as event_rules_router
from api.events.endpoints import admin_router as events_router
from api.fleet.endpoints import router as fleet_router
from api.fleet.files import router as files_router
from api.geofences.endpoints import admin_router as geofences_router
from api.maintenance.endpoints import router as maintenance_router
from api.middleware import BodyLimitMiddleware, RequestContextMiddleware, SecurityHeadersMiddleware
from api.resources import open_resources
from api.settings import ApiSettings
from api.users.endpoints import admin_router, me_router
from api.vehicles.endpoints import router as vehicles_router
from core.settings import Environment

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from api.auth.tokens import Clock

log = logging.getLogger(__name__)

DESCRIPTION: Final = """
The FreeCar API for riders (the WeChat mini-program), fleet managers and admins.

**Trying it here:** in development (`freecar demo`), call `POST /v1/auth/dev-login` with
`{"username": "demo"}` (add `"role": "admin"` for the admin endpoints), copy the
`access_token` from the answer, press **Authorize** and paste it.

**Errors** are always `{"error": {"code", "message", "details", "request_id"}}`; switch on
`code`. Every response carries `X-Request-ID` (send your own to correlate). Rate-limited
answers are 429 with `Retry-After`; every answer carries `RateLimit-Limit`,
`RateLimit-Remaining` and `RateLimit-Reset`.
"""

TAGS: Final = [
    {"name": "auth", "description": "Sign in, refresh, sign out, devices."},
    {"name": "profile", "description": "The caller's own account."},
    {"name": "admin", "description": "User management for staff and admins."},
    {"name": "health", "description": "Liveness and readiness probes."},
    {"name": "vehicles", "description": "Find a car nearby, its details and free time."},
    {"name": "maintenance", "description": "Maintenance windows: when a car cannot be booked."},
    {"name": "fleet", "description": "Vehicles, bulk changes, photos and MQTT logins (staff)."},
    {"name": "files", "description": "Private files through signed, expiring links."},
    {"name": "events", "description": "What the hub noticed about the fleet (staff)."},
    {"name": "geofences", "description": "The service area, parking and restricted zones (staff)."},
]


def _version() -> str:
    try:
        return version("freecar")
    except PackageNotFoundError:
        return "0"


def _check_endpoint_budgets(settings: ApiSettings) -> None:
    """Warn about budgets for endpoints that do not exist (a typo would silently do nothing)."""
    routers = (
        auth_router,
        auth_dev_router,
        me_router,
        admin_router,
        vehicles_router,
        maintenance_router,
        fleet_router,
        files_router,
        geofences_router,
        events_router,
        event_rules_router,
    )
    known = {
        route.name for router in routers for route in router.routes if isinstance(route, APIRoute)
    }
    unknown = sorted(set(settings.api_rate_limit_endpoints) - known)
    if unknown:
        log.warning("FREECAR_API_RATE_LIMIT_ENDPOINTS names no endpoint: %s", ", ".join(unknown))


def create_app(settings: ApiSettings | None = None, *, clock: Clock = time.time) -> FastAPI:
    """Build the API; resources open when the ASGI lifespan starts.

    `clock` is the access tokens' clock (tests move it to expire tokens).
    """
    settings = settings or ApiSettings()
    # httpx logs every request URL at INFO, and jscode2session's URL carries the AppSecret.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_resources(settings, clock=clock) as resources:
            log.info("API ready (%s)", settings.env.value)
            yield {"resources": resources}

    # Outermost first. Security headers wrap everything, the last-resort 500 and CORS
    # preflights included; the request id is set before anything can log.
    middleware = [
        Middleware(SecurityHeadersMiddleware, hsts=settings.env is Environment.PRODUCTION),
        Middleware(RequestContextMiddleware),
    ]
    if settings.api_cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.api_cors_origins,
                allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
                allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
                expose_headers=[
                    REQUEST_ID_HEADER,
                    "Retry-After",
                    "RateLimit-Limit",
                    "RateLimit-Remaining",
                    "RateLimit-Reset",
                ],
                # Bearer tokens, not cookies: no credentialed CORS needed.
                allow_credentials=False,
                max_age=600,
            )
        )
    middleware.append(Middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes))
    docs = settings.api_docs
    app = FastAPI(
        title="FreeCar API",
        version=_version(),
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        middleware=middleware,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
    )
    install_error_handlers(app)

    _check_endpoint_budgets(settings)
    v1 = APIRouter(
        prefix="/v1",
        dependencies=[RateLimit, RejectUnknownQuery],
        # Any /v1 call may be refused for its input (400: a body that is not even text),
        # its rate, or a database outage.
        responses=error_responses(400, 422, 429, 503),
    )
    v1.include_router(auth_router)
    if settings.env is Environment.DEVELOPMENT:
        v1.include_router(auth_dev_router)
    v1.include_router(me_router)
    v1.include_router(admin_router)
    v1.include_router(fleet_router)
    v1.include_router(files_router)
    v1.include_router(vehicles_router)
    v1.include_router(maintenance_router)
    v1.include_router(events_router)
    v1.include_router(event_rules_router)
    v1.include_router(geofences_router)
    app.include_router(v1)
    app.include_router(health.router)

    @app.get("/", include_in_schema=False)
    async def root() -> dict[str, str]:
        return {"name": "FreeCar API", "docs": "/docs" if docs else "", "health": "/health"}

    return app
