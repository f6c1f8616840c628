"""Helpers for the API tests: a clock to move, the app served in-process, signed-in callers."""

from __future__ import annotations

import secrets
import time
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from api_wechat_fake import APPID, SECRET

from api.app import create_app
from api.auth.keys import generate_token_key
from api.settings import ApiSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI
    from starlette.types import Receive, Scope, Send

# One key ring for the whole test run, made fresh: no key lives in the repository.
TEST_TOKEN_KEY = generate_token_key()
BASE_URL = "http://api.test"


class FakeClock:
    """A clock the tests move by hand: `clock.advance(901)` expires a 900 s token."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_settings(
    database_url: str, redis_url: str, wechat_url: str, **overrides: Any
) -> ApiSettings:
    """Settings for a test app: development mode, the test key, the fake WeChat."""
    values: dict[str, Any] = {
        "env": "development",
        "database_url": database_url,
        "redis_url": redis_url,
        "api_token_keys": TEST_TOKEN_KEY,
        "api_wechat_appid": APPID,
        "api_wechat_secret": SECRET,
        "api_wechat_base_url": wechat_url,
        "api_wechat_timeout_s": 0.5,
        "api_db_pool_max": 4,
    }
    values.update(overrides)
    return ApiSettings(**values)


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[Any]:
    """Run the app's lifespan and yield an ASGI app that hands each request its state.

    That is what an ASGI server does: the lifespan's state is copied into every request's
    scope (httpx's ASGITransport does not run lifespans itself).
    """
    async with app.router.lifespan_context(app) as state:
        shared = dict(state or {})

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] in {"http", "websocket"}:
                scope = {**scope, "state": dict(shared)}
            await app(scope, receive, send)

        yield with_state


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A token pair from a sign-in or a refresh."""

    access_token: str
    refresh_token: str
    session_id: str
    user_id: str
    role: str

    @classmethod
    def from_response(cls, response: httpx.Response) -> SignedIn:
        assert response.status_code == 200, response.text
        body = response.json()
        return cls(
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
            session_id=body["session_id"],
            user_id=body["user"]["id"],
            role=body["user"]["role"],
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class Api:
    """An httpx client bound to one in-process app, with sign-in shortcuts."""

    def __init__(self, asgi: Any, app: FastAPI, settings: ApiSettings) -> None:
        self.asgi = asgi
        self.app = app
        self.settings = settings
        self.client = self.client_from("127.0.0.1")

    def client_from(self, ip: str) -> httpx.AsyncClient:
        """A client whose requests come from `ip` (rate limits, session records)."""
        transport = httpx.ASGITransport(app=self.asgi, client=(ip, 40000))
        return httpx.AsyncClient(transport=transport, base_url=BASE_URL)

    async def dev_login(
        self, username: str | None = None, role: str = "customer", **extra: Any
    ) -> SignedIn:
        """Sign in through /v1/auth/dev-login (a fresh username unless given)."""
        name = username or f"u{secrets.token_hex(5)}"
        response = await self.client.post(
            "/v1/auth/dev-login", json={"username": name, "role": role, **extra}
        )
        return SignedIn.from_response(response)

    async def get(self, url: str, who: SignedIn | None = None, **kwargs: Any) -> httpx.Response:
        return await self.client.get(url, headers=who.headers if who else None, **kwargs)

    async def post(self, url: str, who: SignedIn | None = None, **kwargs: Any) -> httpx.Response:
        return await self.client.post(url, headers=who.headers if who else None, **kwargs)

    async def patch(self, url: str, who: SignedIn | None = None, **kwargs: Any) -> httpx.Response:
        return await self.client.patch(url, headers=who.headers if who else None, **kwargs)

    async def delete(self, url: str, who: SignedIn | None = None, **kwargs: Any) -> httpx.Response:
        return await self.client.delete(url, headers=who.headers if who else None, **kwargs)


@asynccontextmanager
async def running_api(settings: ApiSettings, clock: FakeClock | None = None) -> AsyncIterator[Api]:
    """The app for `settings`, started, with a client; stopped afterwards."""
    app = create_app(settings, clock=clock or time.time)
    async with serve(app) as asgi:
        api = Api(asgi, app, settings)
        try:
            yield api
        finally:
            await api.client.aclose()


class MakeApi(Protocol):
    """The `make_api` fixture: `async with make_api(api_x=...) as api`."""

    def __call__(self, **overrides: Any) -> AbstractAsyncContextManager[Api]: ...


def error_code(response: httpx.Response) -> str:
    """The stable error code of an error response (asserting the error shape on the way)."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details", "request_id"}, body
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    code: str = body["error"]["code"]
    return code
