"""Rate limits in Redis: they trip with 429 and Retry-After, and recover after it."""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio
from api_testing import Api, MakeApi, error_code
from limits.aio.storage import RedisStorage

from api.identity import Role
from api.ratelimit import Budget, RateLimiter

pytestmark = pytest.mark.anyio


async def test_a_customer_budget_trips_and_recovers_after_retry_after(make_api: MakeApi) -> None:
    async with make_api(api_rate_limit_customer="3/second") as api:
        rider = await api.dev_login()
        remaining = []
        for _ in range(3):
            response = await api.get("/v1/me", rider)
            assert response.status_code == 200
            assert response.headers["RateLimit-Limit"] == "3"
            remaining.append(int(response.headers["RateLimit-Remaining"]))
        assert remaining == [2, 1, 0]
        refused = await api.get("/v1/me", rider)
        assert (refused.status_code, error_code(refused)) == (429, "rate_limited")
        retry_after = int(refused.headers["Retry-After"])
        assert 1 <= retry_after <= 1
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert refused.json()["error"]["details"] == {
            "budget": "customer",
            "limit": "3 per 1 second",
        }
        # Waiting what Retry-After says is enough: the window has moved by then.
        await anyio.sleep(retry_after)
        assert (await api.get("/v1/me", rider)).status_code == 200


async def test_staff_get_a_bigger_budget_than_customers(make_api: MakeApi) -> None:
    async with make_api(api_rate_limit_customer="2/minute", api_rate_limit_staff="5/minute") as api:
        rider = await api.dev_login()
        admin = await api.dev_login(role="admin")
        rider_codes = [(await api.get("/v1/me", rider)).status_code for _ in range(3)]
        admin_codes = [(await api.get("/v1/me", admin)).status_code for _ in range(3)]
    assert rider_codes == [200, 200, 429]
    assert admin_codes == [200, 200, 200]


async def test_the_ip_budget_counts_per_address(make_api: MakeApi) -> None:
    async with make_api(api_rate_limit_ip="2/minute") as api:
        one, two = api.client_from("10.0.0.1"), api.client_from("10.0.0.2")
        try:
            first = [(await one.get("/v1/me")).status_code for _ in range(3)]
            second = (await two.get("/v1/me")).status_code
        finally:
            await one.aclose()
            await two.aclose()
    assert first == [401, 401, 429]  # unauthenticated requests count too
    assert second == 401


async def test_an_endpoint_budget_limits_that_endpoint_only(make_api: MakeApi) -> None:
    budgets = {"dev_login": "2/minute"}
    async with make_api(api_rate_limit_endpoints=budgets) as api:
        rider = await api.dev_login()
        await api.dev_login()
        third = await api.client.post("/v1/auth/dev-login", json={"username": "demo"})
        assert (third.status_code, error_code(third)) == (429, "rate_limited")
        assert third.json()["error"]["details"]["budget"] == "endpoint:dev_login"
        assert int(third.headers["Retry-After"]) >= 1
        assert (await api.get("/v1/me", rider)).status_code == 200


async def test_health_is_not_rate_limited(make_api: MakeApi) -> None:
    async with make_api(api_rate_limit_ip="1/minute") as api:
        codes = [(await api.client.get("/health")).status_code for _ in range(3)]
    assert codes == [200, 200, 200]


async def test_limits_off_sends_no_headers(make_api: MakeApi) -> None:
    async with make_api(api_rate_limits=False, api_rate_limit_customer="1/minute") as api:
        rider = await api.dev_login()
        responses = [await api.get("/v1/me", rider) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert "RateLimit-Limit" not in responses[-1].headers


async def test_a_redis_outage_lets_requests_through() -> None:
    # Nothing listens on port 9: every Redis call fails, and the limiter steps aside.
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.5)
    storage = RedisStorage(
        "async+redis://127.0.0.1:9/0",
        implementation="redispy",
        wrap_exceptions=True,
        connection_pool=client.connection_pool,  # type: ignore[arg-type]
    )
    limiter = RateLimiter(
        storage,
        per_ip=Budget.parse("ip", "1/minute"),
        per_role={role: Budget.parse("user", "1/minute") for role in Role},
        per_endpoint={},
    )
    try:
        for _ in range(3):
            assert (
                await limiter.check(ip="10.0.0.9", endpoint="GET /x", user=None, role=None) is None
            )
    finally:
        await client.aclose()


async def test_default_budgets_are_sane(api: Api) -> None:
    rider = await api.dev_login()
    response = await api.get("/v1/me", rider)
    assert int(response.headers["RateLimit-Limit"]) >= 100
    assert response.headers["RateLimit-Policy"].endswith(";w=60")
