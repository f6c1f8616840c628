"""Liveness and readiness for load balancers and the demo; outside /v1 and its rate limits."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal, cast

from fastapi import APIRouter
from pydantic import BaseModel
from redis.exceptions import RedisError

from api.deps import ResourcesDep, unit_of_work
from api.errors import ServiceUnavailableError, error_responses

if TYPE_CHECKING:
    from collections.abc import Awaitable

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The process answers, and which of its services do."""

    status: Literal["ok"]
    database: Literal["ok", "unchecked"]
    redis: Literal["ok", "unchecked"]


@router.get("/health", summary="Liveness")
async def live() -> Health:
    """The process is up; checks nothing else (a restart would not fix a database)."""
    return Health(status="ok", database="unchecked", redis="unchecked")


@router.get("/health/ready", summary="Readiness", responses=error_responses(503))
async def ready(resources: ResourcesDep) -> Health:
    """The database and Redis answer; 503 `service_unavailable` otherwise."""
    async with unit_of_work(resources) as conn:
        await conn.execute("SELECT 1")
    try:
        # redis-py types ping() for both its sync and async clients.
        await cast("Awaitable[bool]", resources.redis.ping())
    except (RedisError, OSError) as exc:
        raise ServiceUnavailableError("redis unavailable") from exc
    return Health(status="ok", database="ok", redis="ok")
