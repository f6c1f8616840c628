"""ASGI middleware: request ids and the last-resort 500, security headers, body size limit.

Plain ASGI classes rather than `BaseHTTPMiddleware`: they do not buffer responses, do not
start task groups, and keep the request's context variables visible to the handlers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.context import REQUEST_ID_HEADER, accept_request_id, request_id_var
from api.errors import PayloadTooLargeError, error_response

if TYPE_CHECKING:
    from collections.abc import Iterable

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# Pages that load scripts and styles (Swagger UI, ReDoc) get no Content-Security-Policy;
# every other response is JSON and may forbid everything.
DOCS_PATHS: Final = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
API_CSP: Final = "default-src 'none'; frame-ancestors 'none'"
# Two years, the value HSTS preload lists ask for; sent only in production, where the API
# is served over TLS (a browser ignores it over plain HTTP anyway).
HSTS: Final = "max-age=63072000; includeSubDomains"


class RequestContextMiddleware:
    """Gives every request an id (echoed in X-Request-ID) and turns a crash into JSON 500.

    The id comes from the client's X-Request-ID if it looks sane, else a fresh UUID; it is
    set in a context variable that the log filter and the error bodies read.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request with its id set; answer 500 if the app raises."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        token = request_id_var.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # half a response is out; only the server can end the connection
            response = error_response(
                500,
                "internal_error",
                "internal error; quote the request id when reporting it",
            )
            await response(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class SecurityHeadersMiddleware:
    """Adds the headers every API response should carry unless the handler set its own."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self._common: list[tuple[str, str]] = [
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
            # Tokens and profiles must not linger in shared or browser caches.
            ("Cache-Control", "no-store"),
        ]
        if hsts:
            self._common.append(("Strict-Transport-Security", HSTS))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request, adding the headers to its response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_docs = scope.get("path") in DOCS_PATHS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                _set_defaults(headers, self._common)
                if not is_docs:
                    _set_defaults(headers, [("Content-Security-Policy", API_CSP)])
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _set_defaults(headers: MutableHeaders, pairs: Iterable[tuple[str, str]]) -> None:
    for name, value in pairs:
        if name not in headers:
            headers[name] = value


class _BodyTooLargeError(StarletteHTTPException):
    """Raised from `receive` once a streamed body passes the limit.

    An HTTPException on purpose: FastAPI re-raises those from body parsing (anything else
    becomes a 400), and the HTTP error handler gives it the `payload_too_large` code.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_bytes} bytes")


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` with the JSON 413, declared or streamed.

    A declared Content-Length over the limit is answered before the app runs; a chunked
    body is counted as the app reads it, and the read fails with PayloadTooLargeError, which the
    error handler turns into the same 413.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request whose body stays within the limit, else answer 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLargeError(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLargeError(
            f"request body larger than {self.max_bytes} bytes",
            details={"max_bytes": self.max_bytes},
        )
        response = error_response(error.status, error.code, error.message, details=error.details)
        await response(scope, receive, send)
