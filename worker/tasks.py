"""Background tasks. Only `ping` so far; the domain issues add theirs."""

from __future__ import annotations

from celery import shared_task  # type: ignore[import-untyped] # celery ships no type hints


@shared_task(name="worker.ping")  # type: ignore[untyped-decorator] # celery is untyped
def ping() -> str:
    """Answer "pong": proves a worker consumes the queue."""
    return "pong"
