"""Rate limits in Redis: per client IP, per user (tiered by role) and per endpoint.

Moving windows from the `limits` library, shared by every API process through Redis. A
request counts against, in order: its IP's budget; its user's budget when it carries a valid
access token (customers get less than staff); and the endpoint's own budget if it has one,
keyed by user or else by IP. The first budget that is spent answers 429 with Retry-After;
every answer carries RateLimit-Limit/Remaining/Reset (IETF draft) for the tightest budget.

If Redis is down the API keeps serving without limits and logs it: a rate limit protects
capacity, it is not an access control.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from limits import parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError

from api.errors import RateLimitedError
from api.identity import Role

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import redis.asyncio
    from limits import RateLimitItem

    from api.settings import ApiSettings

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "freecar:ratelimit"


@dataclass(frozen=True, slots=True)
class Budget:
    """A named set of limits (`10/minute;100/hour`), all of which must hold."""

    name: str
    items: tuple[RateLimitItem, ...]

    @classmethod
    def parse(cls, name: str, text: str) -> Budget:
        """Parse a `limits` rate string such as `120/minute;2000/hour`."""
        return cls(name, tuple(parse_many(text)))


@dataclass(frozen=True, slots=True)
class Window:
    """One limit's state after a request: what the RateLimit headers report."""

    limit: int
    remaining: int
    reset_after_s: int
    window_s: int

    def headers(self) -> dict[str, str]:
        """RateLimit-* headers (draft-ietf-httpapi-ratelimit-headers)."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after_s),
            "RateLimit-Policy": f"{self.limit};w={self.window_s}",
        }


class RateLimiter:
    """Checks a request against its budgets; raises RateLimitedError when one is spent."""

    def __init__(
        self,
        storage: RedisStorage,
        *,
        per_ip: Budget,
        per_role: Mapping[Role, Budget],
        per_endpoint: Mapping[str, Budget],
    ) -> None:
        self._storage = storage
        self._strategy = MovingWindowRateLimiter(storage)
        self._per_ip = per_ip
        self._per_role = dict(per_role)
        self._per_endpoint = dict(per_endpoint)

    @classmethod
    def from_settings(cls, settings: ApiSettings, redis: redis.asyncio.Redis) -> RateLimiter:
        """A limiter on the API's Redis connection pool with the configured budgets."""
        url = settings.redis_url.get_secret_value()
        storage = RedisStorage(
            f"async+{url}",
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            wrap_exceptions=True,
            # One pool for the whole API: the limiter borrows the app's connections.
            connection_pool=redis.connection_pool,  # type: ignore[arg-type] # typed as scalars only
        )
        staff = Budget.parse("staff", settings.api_rate_limit_staff)
        return cls(
            storage,
            per_ip=Budget.parse("ip", settings.api_rate_limit_ip),
            per_role={
                Role.CUSTOMER: Budget.parse("customer", settings.api_rate_limit_customer),
                Role.FLEET_MANAGER: staff,
                Role.ADMIN: staff,
            },
            per_endpoint={
                endpoint: Budget.parse(f"endpoint:{endpoint}", text)
                for endpoint, text in settings.api_rate_limit_endpoints.items()
            },
        )

    async def check(
        self, *, ip: str, endpoint: str, user: str | None, role: Role | None
    ) -> Window | None:
        """Count one request; the tightest window, or None when nothing limits it."""
        checks: list[tuple[Budget, tuple[str, ...]]] = [(self._per_ip, ("ip", ip))]
        if user is not None and role is not None:
            checks.append((self._per_role[role], ("user", user)))
        endpoint_budget = self._per_endpoint.get(endpoint)
        if endpoint_budget is not None:
            who = ("user", user) if user is not None else ("ip", ip)
            checks.append((endpoint_budget, ("endpoint", endpoint, *who)))
        try:
            return await self._hit_all(checks)
        except (StorageError, RedisError, OSError) as exc:
            log.warning("rate limits not enforced, Redis failed: %s", exc)
            return None

    async def _hit_all(self, checks: Sequence[tuple[Budget, tuple[str, ...]]]) -> Window | None:
        windows: list[Window] = []
        for budget, key in checks:
            for item in budget.items:
                if not await self._strategy.hit(item, *key):
                    window = await self._window(item, key)
                    retry_after = max(window.reset_after_s, 1)
                    raise RateLimitedError(
                        f"rate limit {item} ({budget.name}) exceeded",
                        details={"budget": budget.name, "limit": str(item)},
                        headers={**window.headers(), "Retry-After": str(retry_after)},
                    )
                windows.append(await self._window(item, key))
        return min(windows, key=lambda w: (w.remaining, -w.reset_after_s), default=None)

    async def _window(self, item: RateLimitItem, key: tuple[str, ...]) -> Window:
        stats = await self._strategy.get_window_stats(item, *key)
        reset_after = max(0, math.ceil(stats.reset_time - time.time()))
        return Window(
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_after_s=reset_after,
            window_s=item.get_expiry(),
        )
