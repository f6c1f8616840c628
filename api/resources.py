"""The API process's long-lived resources, opened in the lifespan and closed after it."""

from __future__ import annotations

import logging
import time
import weakref
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import redis.asyncio
from psycopg_pool import AsyncConnectionPool

from api.auth.keys import generate_token_key, parse_token_key
from api.auth.service import SessionPolicy
from api.auth.tokens import TokenCodec
from api.auth.wechat import WeChatClient
from api.ratelimit import RateLimiter
from core.settings import Environment
from jobs.producer import create_producer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from psycopg import AsyncConnection

    from api.auth.tokens import Clock
    from api.settings import ApiSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resources:
    """Everything a request may borrow: handed out by the dependencies in `api.deps`."""

    settings: ApiSettings
    pool: AsyncConnectionPool[Any]
    redis: redis.asyncio.Redis
    celery: Any  # celery.Celery, which ships no type hints
    wechat: WeChatClient
    sessions: SessionPolicy
    limiter: RateLimiter | None


def token_codec(settings: ApiSettings, clock: Clock = time.time) -> TokenCodec:
    """The access-token codec; an ephemeral key when none is configured outside production."""
    keys = settings.token_keys()
    if not keys:
        # Settings already refuse an empty key ring in production (a placeholder secret).
        assert settings.env is not Environment.PRODUCTION
        keys = [parse_token_key(generate_token_key())]
        log.warning(
            "FREECAR_API_TOKEN_KEYS is not set: using a random key for this process only; "
            "every token dies with it (`freecar api --generate-key` makes a real one)"
        )
    return TokenCodec(
        keys,
        audience=settings.api_token_audience,
        issuer=settings.api_token_issuer,
        ttl_s=settings.api_access_ttl_s,
        clock=clock,
    )


class IdleConnectionCheck:
    """Probes a pooled connection before it is lent, unless it was busy a moment ago.

    After a database restart the pool's connections are dead: probing each before lending
    it gives requests fresh connections instead of errors. But a connection that answered
    a query within the last second is alive, and probing it anyway costs every request a
    round trip. A connection cut within that second fails its request with 503.
    """

    def __init__(self, fresh_s: float = 1.0, clock: Clock = time.monotonic) -> None:
        self._fresh_s = fresh_s
        self._clock = clock
        self._returned: weakref.WeakKeyDictionary[AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self.probes = 0
        """How many connections were probed (for tests)."""

    async def check(self, conn: AsyncConnection[Any]) -> None:
        """The pool's `check`: raise if a connection idle for a while no longer works."""
        returned = self._returned.get(conn)
        if returned is not None and self._clock() - returned < self._fresh_s:
            return
        self.probes += 1
        await AsyncConnectionPool.check_connection(conn)

    async def returned(self, conn: AsyncConnection[Any]) -> None:
        """The pool's `reset`: note when a connection came back."""
        self._returned[conn] = self._clock()


async def _utc_session(conn: AsyncConnection[Any]) -> None:
    """Every timestamp leaves the database in UTC, whatever the server's zone."""
    await conn.execute("SET TIME ZONE 'UTC'")
    await conn.commit()  # the pool wants new connections idle, outside a transaction


@asynccontextmanager
async def open_resources(
    settings: ApiSettings, *, clock: Clock = time.time
) -> AsyncIterator[Resources]:
    """Open the pool, Redis, the WeChat client and Celery; close them all on the way out."""
    codec = token_codec(settings, clock)
    idle_check = IdleConnectionCheck()
    async with AsyncExitStack() as stack:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.database_url.get_secret_value(),
            min_size=settings.api_db_pool_min,
            max_size=settings.api_db_pool_max,
            timeout=settings.api_db_pool_timeout_s,
            configure=_utc_session,
            check=idle_check.check,
            reset=idle_check.returned,
            open=False,
            name="api",
        )
        # Fail start-up, not the first request, when the database is unreachable.
        await pool.open(wait=True, timeout=settings.api_db_pool_timeout_s)
        stack.push_async_callback(pool.close)
        client = redis.asyncio.Redis.from_url(settings.redis_url.get_secret_value())
        stack.push_async_callback(client.aclose)
        http = httpx.AsyncClient(
            base_url=settings.api_wechat_base_url,
            timeout=settings.api_wechat_timeout_s,
            headers={"User-Agent": "freecar-api"},
        )
        stack.push_async_callback(http.aclose)
        celery = create_producer(settings)
        stack.callback(celery.close)
        limiter = RateLimiter.from_settings(settings, client) if settings.api_rate_limits else None
        yield Resources(
            settings=settings,
            pool=pool,
            redis=client,
            celery=celery,
            wechat=WeChatClient(
                http, appid=settings.api_wechat_appid, secret=settings.api_wechat_secret
            ),
            sessions=SessionPolicy(
                codec=codec,
                refresh_ttl_s=settings.api_refresh_ttl_s,
                touch_s=settings.api_session_touch_s,
            ),
            limiter=limiter,
        )
