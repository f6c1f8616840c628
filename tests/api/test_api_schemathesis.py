"""Schemathesis over the OpenAPI document: no 500, no answer that breaks its own schema.

Every operation is called with generated valid and invalid input, once as a customer and
once as an admin (so protected endpoints are exercised past their 401), and every response
is checked against the schema: status code documented, body valid, content type right.
Bounded and derandomised: the same cases run every time, in well under a minute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from api_testing import make_settings
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.python import asgi

from api.app import create_app
from api.settings import ApiSettings
from core.settings import Environment

if TYPE_CHECKING:
    from collections.abc import Iterator

    from api_wechat_fake import FakeWeChatServer
    from starlette.types import ASGIApp, Receive, Scope, Send

    from devstack.testing import RedisIndexPool

ROLES = ("customer", "admin")
# Enough to reach every branch of these small handlers; each operation runs this many
# generated cases per role, plus schemathesis's own examples and boundary cases.
MAX_EXAMPLES = 20


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) for every operation, read from the schema without starting the app.

    Operations that take no input have no invalid input to send: positive mode only.
    """
    app = create_app(ApiSettings(env=Environment.DEVELOPMENT))
    cases = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            cases.append((method.upper(), path, GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody"):
                cases.append((method.upper(), path, GenerationMode.NEGATIVE))
    return cases


CASES = _cases()


class FromLoopback:
    """The app, called as from 127.0.0.1: schemathesis's client calls itself `testclient`.

    Dev login answers only loopback clients, and the token jar signs in through it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in {"http", "websocket"}:
            scope = {**scope, "client": ("127.0.0.1", 50000)}
        await self.app(scope, receive, send)


class TokenJar:
    """One signed-in session per role, replaced when a generated call ends it (logout)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._headers: dict[str, dict[str, str]] = {}

    def headers(self, role: str) -> dict[str, str]:
        if role not in self._headers:
            with asgi.get_client(self._app) as client:
                response = client.post(
                    "/v1/auth/dev-login", json={"username": f"fuzz-{role}", "role": role}
                )
            assert response.status_code == 200, response.text
            token = response.json()["access_token"]
            self._headers[role] = {"Authorization": f"Bearer {token}"}
        return self._headers[role]

    def saw(self, role: str, response: Any) -> None:
        if response.status_code == 401 and b"session_revoked" in response.content:
            self._headers.pop(role, None)


@pytest.fixture(scope="module")
def fuzz_app(
    migrated_database_url: str, redis_indexes: RedisIndexPool, wechat: FakeWeChatServer
) -> Iterator[ASGIApp]:
    """The app in development mode (dev-login included), rate limits off."""
    with redis_indexes.lease() as redis_url:
        app = create_app(
            make_settings(migrated_database_url, redis_url, wechat.url, api_rate_limits=False)
        )
        yield FromLoopback(app)
        # Schemathesis runs the lifespan on its own event loop thread; end it before the
        # database and Redis index go away.
        asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def api_schema(fuzz_app: ASGIApp) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


@pytest.fixture(scope="module")
def tokens(fuzz_app: ASGIApp, api_schema: Any) -> TokenJar:
    del api_schema  # loaded first: it starts the app's lifespan
    return TokenJar(fuzz_app)


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES]
)
def test_api_honours_its_schema(
    api_schema: Any,
    tokens: TokenJar,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def call_as_each_role(case: Any) -> None:
        for role in ROLES:
            response = case.call_and_validate(headers=tokens.headers(role))
            tokens.saw(role, response)

    call_as_each_role()
