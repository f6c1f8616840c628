"""One error shape everywhere, request ids, security headers, body limits, CORS, health, docs."""

from __future__ import annotations

import enum
import logging
import re
import typing

import pydantic
import pytest
from api_testing import Api, MakeApi, error_code
from fastapi.routing import APIRoute

from api.app import create_app
from api.context import LOG_FORMAT, RequestIdFilter, accept_request_id
from api.settings import ApiSettings
from core.settings import Environment

if typing.TYPE_CHECKING:
    from starlette.routing import BaseRoute

pytestmark = pytest.mark.anyio


async def test_unknown_paths_and_methods_have_the_error_shape(api: Api) -> None:
    missing = await api.client.get("/v1/nothing-here")
    assert (missing.status_code, error_code(missing)) == (404, "not_found")
    wrong = await api.client.put("/v1/me")
    assert (wrong.status_code, error_code(wrong)) == (405, "method_not_allowed")
    assert set(wrong.headers["Allow"].replace(" ", "").split(",")) == {"GET", "PATCH"}


async def test_bad_json_and_bad_fields_are_422_validation_error(api: Api) -> None:
    broken = await api.client.post(
        "/v1/auth/refresh", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert (broken.status_code, error_code(broken)) == (422, "validation_error")
    wrong_type = await api.client.post("/v1/auth/refresh", json={"refresh_token": 7})
    details = wrong_type.json()["error"]["details"]
    assert details[0]["loc"] == ["body", "refresh_token"]
    assert set(details[0]) == {"loc", "message", "type"}


async def test_validation_errors_never_echo_the_rejected_input(api: Api) -> None:
    secret = "hunter2-" * 40  # longer than any password is allowed to be
    response = await api.client.post(
        "/v1/auth/staff", json={"email": "a@example.com", "password": secret}
    )
    assert response.status_code == 422
    assert "hunter2" not in response.text


async def test_an_unexpected_exception_is_a_logged_500_with_the_request_id(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode() -> None:
        raise RuntimeError("kaboom: internal detail")

    api.app.add_api_route("/v1/explode", explode)
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.ERROR, logger="api.middleware"):
        response = await api.client.get("/v1/explode", headers={"X-Request-ID": "trace-12345678"})
    assert (response.status_code, error_code(response)) == (500, "internal_error")
    assert response.headers["X-Request-ID"] == "trace-12345678"
    assert response.headers["Cache-Control"] == "no-store"
    assert "kaboom" not in response.text
    logged = [r for r in caplog.records if r.name == "api.middleware"]
    assert logged
    assert logged[0].request_id == "trace-12345678"  # type: ignore[attr-defined]
    assert "kaboom" in (logged[0].exc_text or "")
    assert "%(request_id)s" in LOG_FORMAT


async def test_every_response_has_a_request_id_a_sane_incoming_one_is_kept(api: Api) -> None:
    fresh = await api.client.get("/health")
    assert len(fresh.headers["X-Request-ID"]) == 32
    assert (
        fresh.headers["X-Request-ID"] != (await api.client.get("/health")).headers["X-Request-ID"]
    )
    kept = await api.client.get("/health", headers={"X-Request-ID": "abc-123.def:456"})
    assert kept.headers["X-Request-ID"] == "abc-123.def:456"
    for bad in ("short", "has spaces in it", "x" * 200, "evil\r\nlog: line"):
        assert accept_request_id(bad) != bad


async def test_security_headers_on_api_answers_and_errors(api: Api) -> None:
    for response in (await api.client.get("/health"), await api.client.get("/v1/me")):
        headers = response.headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Cache-Control"] == "no-store"
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert "Strict-Transport-Security" not in headers  # development serves plain HTTP
        assert "server" not in headers


async def test_oversized_bodies_get_413_declared_or_streamed(make_api: MakeApi) -> None:
    async with make_api(api_max_body_bytes=2048) as api:
        big = b'{"refresh_token": "' + b"A" * 4096 + b'"}'
        declared = await api.client.post(
            "/v1/auth/refresh", content=big, headers={"Content-Type": "application/json"}
        )
        assert (declared.status_code, error_code(declared)) == (413, "payload_too_large")

        async def chunks():  # no Content-Length: counted as it arrives
            for start in range(0, len(big), 512):
                yield big[start : start + 512]

        streamed = await api.client.post(
            "/v1/auth/refresh", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert (streamed.status_code, error_code(streamed)) == (413, "payload_too_large")
        small = await api.client.post("/v1/auth/refresh", json={"refresh_token": "A" * 43})
        assert error_code(small) == "invalid_refresh_token"


async def test_cors_answers_configured_origins_only(make_api: MakeApi) -> None:
    async with make_api(api_cors_origins="https://ops.example.com") as api:
        preflight = {
            "Origin": "https://ops.example.com",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        allowed = await api.client.options("/v1/me", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["Access-Control-Allow-Origin"] == "https://ops.example.com"
        other = await api.client.options(
            "/v1/me", headers=preflight | {"Origin": "https://evil.example"}
        )
        assert "Access-Control-Allow-Origin" not in other.headers
        simple = await api.client.get("/health", headers={"Origin": "https://ops.example.com"})
        assert "X-Request-ID" in simple.headers["Access-Control-Expose-Headers"]


async def test_health_and_readiness(api: Api) -> None:
    live = await api.client.get("/health")
    assert live.json() == {"status": "ok", "database": "unchecked", "redis": "unchecked"}
    ready = await api.client.get("/health/ready")
    assert ready.json() == {"status": "ok", "database": "ok", "redis": "ok"}


async def test_docs_are_served_with_examples_and_bearer_auth(api: Api) -> None:
    docs = await api.client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    assert "Content-Security-Policy" not in docs.headers  # Swagger UI loads its scripts
    schema = (await api.client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    dev_login = schema["paths"]["/v1/auth/dev-login"]["post"]
    assert "security" not in dev_login
    assert schema["paths"]["/v1/me"]["get"]["security"] == [{"bearer": []}]
    examples = schema["components"]["schemas"]["WeChatSignIn"]["examples"]
    assert examples[0]["code"]
    me_get = schema["paths"]["/v1/me"]["get"]["responses"]
    assert {"200", "401", "422", "429", "503"} <= set(me_get)
    error_schema = me_get["401"]["content"]["application/json"]["schema"]["$ref"]
    assert error_schema.endswith("/ErrorResponse")


async def test_docs_can_be_turned_off(make_api: MakeApi) -> None:
    async with make_api(api_docs=False) as api:
        assert (await api.client.get("/docs")).status_code == 404
        assert (await api.client.get("/openapi.json")).status_code == 404


async def test_an_unknown_query_parameter_is_refused_with_its_name(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    response = await api.client.get("/v1/admin/users?limt=5", headers=admin.headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unknown_query_parameter"
    assert error["details"]["unknown"] == ["limt"]
    assert "limit" in error["details"]["allowed"]


def _literals_of_enum_members(annotation: object, seen: set[int]) -> list[str]:
    """Literal[...] types made of enum members inside `annotation` (pydantic reprs those)."""
    if id(annotation) in seen:
        return []
    seen.add(id(annotation))
    found: list[str] = []
    if typing.get_origin(annotation) is typing.Literal:
        members = [arg for arg in typing.get_args(annotation) if isinstance(arg, enum.Enum)]
        if members:
            found.append(f"Literal{[str(m) for m in members]}")
    for arg in typing.get_args(annotation):
        found += _literals_of_enum_members(arg, seen)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        for name, field in annotation.model_fields.items():
            found += [
                f"{annotation.__name__}.{name}: {hit}"
                for hit in _literals_of_enum_members(field.annotation, seen)
            ]
    return found


def _api_routes(routes: list[BaseRoute]) -> list[APIRoute]:
    """Every endpoint, inside included routers too (FastAPI includes them lazily)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        included = getattr(route, "original_router", None)
        if included is not None:
            found += _api_routes(included.routes)
    return found


def test_no_input_is_checked_against_enum_members_that_messages_would_repr() -> None:
    """A Literal of enum members makes pydantic say `Input should be <Role.ADMIN: 'admin'>`."""
    app = create_app(ApiSettings(env=Environment.DEVELOPMENT))
    found: list[str] = []
    seen: set[int] = set()
    for route in _api_routes(app.routes):
        params = [*route.dependant.body_params, *route.dependant.query_params]
        params += [p for dep in route.dependant.dependencies for p in dep.query_params]
        for param in params:
            found += [
                f"{route.path}: {hit}"
                for hit in _literals_of_enum_members(param.field_info.annotation, seen)
            ]
    assert len(seen) > 50, "the walk found too few parameters to be trusted"
    assert found == []


async def test_validation_messages_show_values_not_enum_reprs(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    refused = [
        await api.post(
            "/v1/admin/users",
            admin,
            json={
                "email": "new@example.com",
                "password": "a passphrase for ops",
                "role": "customer",
                "display_name": "x",
            },
        ),
        await api.get("/v1/admin/users", admin, params={"role": "owner"}),
        await api.get("/v1/vehicles", admin, params={"lat": 1, "lon": 1, "sort": "nearest"}),
    ]
    for response in refused:
        assert (response.status_code, error_code(response)) == (422, "validation_error")
        messages = " ".join(d["message"] for d in response.json()["error"]["details"])
        assert re.search(r"<\w+\.\w+: ", messages) is None, messages
    role = refused[0].json()["error"]["details"][0]["message"]
    assert role == "Input should be 'fleet_manager' or 'admin'"
