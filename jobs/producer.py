"""A Celery app configured as the worker's, for processes that only send tasks.

The conventions (JSON only, late acknowledgement, timeouts) live here once: the worker's own
app (`worker.app.create_celery`) starts from `celery_config` and adds its task modules and
its schedule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from celery import Celery  # type: ignore[import-untyped] # celery ships no type hints

if TYPE_CHECKING:
    from core.settings import Settings

# Senders (the hub's writer thread, API requests) must not hang on a dead Redis: a few
# seconds to connect or answer, then the send fails and the caller moves on.
BROKER_SOCKET_TIMEOUT_S: Final = 3.0


def celery_config() -> dict[str, Any]:
    """The settings every FreeCar Celery app shares, sender or worker."""
    return {
        # JSON only: pickle would let whoever can write to Redis run code in the worker.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "enable_utc": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": BROKER_SOCKET_TIMEOUT_S,
        "broker_transport_options": {
            "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_S,
        },
    }


def create_producer(settings: Settings) -> Celery:
    """A Celery app on the configured Redis that knows no task: send by name (`jobs.names`)."""
    app = Celery("freecar", broker=settings.redis_url.get_secret_value())
    app.conf.update(celery_config())
    return app
