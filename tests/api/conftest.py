"""Fixtures of the API tests: the fake WeChat, a movable clock, the app on real services.

Async tests run on anyio's pytest plugin (`@pytest.mark.anyio`, asyncio backend). Every
test gets its own app (lifespan included) on the module's migrated database and its own
Redis index; users are created with fresh names, so tests in a module do not collide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from api_testing import Api, FakeClock, MakeApi, make_settings, running_api
from api_wechat_fake import FakeWeChatServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from contextlib import AbstractAsyncContextManager


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def wechat() -> Iterator[FakeWeChatServer]:
    """A local jscode2session that behaves like WeChat's, errors included."""
    server = FakeWeChatServer().start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> FakeClock:
    """The access tokens' clock; starts at the real time, moves only when told."""
    return FakeClock()


@pytest.fixture
def make_api(
    migrated_database_url: str, redis_url: str, wechat: FakeWeChatServer, clock: FakeClock
) -> MakeApi:
    """Start an app with settings overridden (`async with make_api(api_...=...) as api`)."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[Api]:
        settings = make_settings(migrated_database_url, redis_url, wechat.url, **overrides)
        return running_api(settings, clock)

    return make


@pytest.fixture
async def api(make_api: MakeApi) -> AsyncIterator[Api]:
    """The app with the test settings, started, and a client on it."""
    async with make_api() as running:
        yield running
