"""The API's one exception tree and the handlers that turn every failure into the same JSON.

Every error body is `{"error": {"code", "message", "details", "request_id"}}`; `code` is
stable and machine-readable (clients switch on it), `message` is for people. Services raise
`ApiError` subclasses; one handler maps them. FastAPI's validation errors and Starlette's
404/405 get the same shape; anything unexpected becomes 500 `internal_error` in
`api.middleware`, which logs it with the request id.
"""

from __future__ import annotations

import http
import logging
from typing import TYPE_CHECKING, Any, ClassVar, Final

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.context import REQUEST_ID_HEADER, current_request_id

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fastapi import FastAPI, Request

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    """What went wrong."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "not_found",
                    "message": "session not found",
                    "details": None,
                    "request_id": "5f0c6a3e9b2d4c1e8f7a6b5c4d3e2f1a",
                }
            ]
        }
    )

    code: str = Field(description="Stable, machine-readable error code.")
    message: str = Field(description="Human-readable explanation.")
    details: JsonValue = Field(default=None, description="Structured context, code-specific.")
    request_id: str = Field(description="The request's id, also in the X-Request-ID header.")


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class ApiError(Exception):
    """Root of every error the API reports on purpose; subclasses fix status and code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "internal error"
    # The request's transaction is rolled back on an error, except after one of these:
    # an error that is also a decision worth keeping (a reused refresh token revokes the
    # family and must stay revoked although the request fails).
    keeps_changes: ClassVar[bool] = False

    def __init__(
        self,
        message: str | None = None,
        *,
        details: JsonValue = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = details
        self.headers = dict(headers or {})
        super().__init__(self.message)


class BadRequestError(ApiError):
    """The request cannot be served as sent."""

    status = 400
    code = "bad_request"
    default_message = "bad request"


class UnauthorizedError(ApiError):
    """No valid credentials: sign in (again)."""

    status = 401
    code = "unauthorized"
    default_message = "authentication required"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: JsonValue = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # RFC 6750: a 401 names the scheme, and the error lets a client tell "refresh" from
        # "sign in again" without parsing the body.
        challenge = f'Bearer error="invalid_token", error_description="{self.code}"'
        super().__init__(
            message, details=details, headers={"WWW-Authenticate": challenge, **(headers or {})}
        )


class MissingTokenError(UnauthorizedError):
    """No bearer token on an endpoint that needs one."""

    code = "missing_token"
    default_message = "this endpoint needs an access token (Authorization: Bearer ...)"


class InvalidTokenError(UnauthorizedError):
    """The token is malformed, tampered with, made with an unknown key or not for us."""

    code = "invalid_token"
    default_message = "invalid access token"


class TokenExpiredError(UnauthorizedError):
    """The access token's time is up: refresh it."""

    code = "token_expired"
    default_message = "access token expired; use the refresh token"


class SessionRevokedError(UnauthorizedError):
    """The token's session was signed out, revoked, expired or its user suspended."""

    code = "session_revoked"
    default_message = "this session has ended; sign in again"


class ForbiddenError(ApiError):
    """Signed in, but not allowed to do this."""

    status = 403
    code = "forbidden"
    default_message = "your role may not do this"


class NotFoundError(ApiError):
    """No such resource, or none that this caller may see (ownership is never revealed)."""

    status = 404
    code = "not_found"
    default_message = "not found"


class ConflictError(ApiError):
    """The request collides with the current state."""

    status = 409
    code = "conflict"
    default_message = "conflict with the current state"


class PayloadTooLargeError(ApiError):
    """The request body exceeds FREECAR_API_MAX_BODY_BYTES."""

    status = 413
    code = "payload_too_large"
    default_message = "request body too large"


class RateLimitedError(ApiError):
    """A rate-limit budget is spent; Retry-After says when to come back."""

    status = 429
    code = "rate_limited"
    default_message = "too many requests"


class ServiceUnavailableError(ApiError):
    """A service the API depends on is down or overloaded; retry later."""

    status = 503
    code = "service_unavailable"
    default_message = "service temporarily unavailable"


def error_body(code: str, message: str, details: JsonValue = None) -> dict[str, Any]:
    """The JSON error body for one failure."""
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details,
            "request_id": current_request_id(),
        }
    }


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: JsonValue = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A JSON error response carrying the request id."""
    return JSONResponse(
        error_body(code, message, details),
        status_code=status,
        headers={**(headers or {}), REQUEST_ID_HEADER: current_request_id()},
    )


_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

# Starlette raises HTTPException for routing failures (404, 405) and a few protocol ones.
_HTTP_CODES: Final[dict[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


async def handle_api_error(_request: Request, exc: Exception) -> JSONResponse:
    """Every ApiError, whatever the subclass: its status, code, message, details, headers."""
    assert isinstance(exc, ApiError)
    if exc.status >= 500:
        log.warning("%s: %s", exc.code, exc.message)
    return error_response(
        exc.status, exc.code, exc.message, details=exc.details, headers=exc.headers
    )


async def handle_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """Request validation failures: 422 `validation_error` listing each field's problem."""
    assert isinstance(exc, RequestValidationError)
    # Only where, what and which rule: the rejected input itself may be a password.
    problems = [
        {
            "loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
            "message": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]
    return error_response(
        422, "validation_error", "the request is not valid", details=jsonable_encoder(problems)
    )


def _allowed_methods(request: Request) -> str | None:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    allowed: set[str] = set()
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.add(method)
    return ", ".join(sorted(allowed)) or None


async def handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own HTTP errors (unknown path, wrong method...) in the API's shape."""
    assert isinstance(exc, StarletteHTTPException)
    try:
        phrase = http.HTTPStatus(exc.status_code).phrase.lower()
    except ValueError:
        phrase = "http error"
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else phrase
    headers = dict(exc.headers or {})
    if exc.status_code == http.HTTPStatus.METHOD_NOT_ALLOWED:
        allow = _allowed_methods(request)
        if allow:
            headers["Allow"] = allow
    return error_response(exc.status_code, code, message, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map ApiError, validation errors and Starlette's HTTP errors to JSON error bodies."""
    app.add_exception_handler(ApiError, handle_api_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring the error body for each status."""
    return {
        status: {"model": ErrorResponse, "description": http.HTTPStatus(status).phrase}
        for status in statuses
    }
