"""The Celery app: Redis broker, JSON only, results ignored unless a task asks.

The API creates it in its lifespan to queue jobs after a request commits; `celery -A
worker.app worker` runs the tasks. Tasks arrive with later issues (OCR, invoices,
notifications, sweeps); `worker.ping` lets an operator check the pipe end to end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from celery import Celery  # type: ignore[import-untyped] # celery ships no type hints

from freecar.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Mapping

# Modules whose tasks the worker registers.
TASK_MODULES: Final = ("worker.tasks",)


def create_celery(settings: Settings | None = None) -> Celery:
    """A Celery app on the configured Redis, with the project's conventions."""
    settings = settings or Settings()
    url = settings.redis_url.get_secret_value()
    app = Celery("freecar", broker=url, include=list(TASK_MODULES))
    conf: Mapping[str, object] = {
        # JSON only: pickle would let whoever can write to Redis run code in the worker.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "enable_utc": True,
        # Acknowledge after the task ran, so a worker killed mid-task does not lose it;
        # tasks are written to be idempotent for that reason.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One task at a time per worker process: OCR and invoices are heavy, and prefetched
        # tasks would wait behind them instead of going to an idle worker.
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
    }
    app.conf.update(conf)
    return app


def __getattr__(name: str) -> Celery:
    """`celery -A worker.app` finds `app` here, built from the environment on first use."""
    if name == "app":
        app = create_celery()
        globals()["app"] = app
        return app
    raise AttributeError(name)
