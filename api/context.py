"""The request id of the request being served, for log lines and error bodies."""

from __future__ import annotations

import logging
import re
import sys
import uuid
from contextvars import ContextVar
from typing import Final

REQUEST_ID_HEADER: Final = "X-Request-ID"
# What a request id from a client or a proxy may look like: a UUID, a hex string, a trace
# id. Anything else (too long, spaces, control characters) is replaced by our own, so log
# lines cannot be forged or bloated through the header.
_SANE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")
NO_REQUEST: Final = "-"

request_id_var: ContextVar[str] = ContextVar("freecar_request_id", default=NO_REQUEST)

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def current_request_id() -> str:
    """The id of the request being served, or `-` outside a request."""
    return request_id_var.get()


def accept_request_id(incoming: str | None) -> str:
    """The client's request id if it looks sane, else a fresh one."""
    if incoming is not None and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record, so a format string can show it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach the current request id; never drops a record."""
        record.request_id = current_request_id()
        return True


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr with the request id on every line (uvicorn's loggers included)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        named.handlers[:] = []
        named.propagate = True
