"""The notification tasks: `worker.notify_event` (one event) and `worker.notify_pending` (sweep)."""

from __future__ import annotations

import logging
from typing import Any, Final

import psycopg
from celery import shared_task  # type: ignore[import-untyped] # celery ships no type hints

from jobs.names import NOTIFY_EVENT_TASK, NOTIFY_PENDING_TASK
from worker.notifications import service
from worker.notifications.channels import Senders, TransientDeliveryError
from worker.settings import worker_settings

log = logging.getLogger(__name__)

# Celery's own bound on retries of one task; the real bound is per delivery
# (FREECAR_NOTIFY_MAX_ATTEMPTS), and the sweep re-queues an event whose task gave up.
MAX_TASK_RETRIES: Final = 12
# Exponential backoff from 1 s, doubling, capped at 10 minutes, with full jitter so a
# receiver that comes back is not hit by every retry at once.
RETRY_BACKOFF_MAX_S: Final = 600
# Connecting to the database: fail fast and let the retry come back later.
CONNECT_TIMEOUT_S: Final = 5


class RetryNotificationError(TransientDeliveryError):
    """Some deliveries of the event failed in a way a later attempt may fix."""


def _connect(database_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        database_url,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name="freecar-worker",
    )


@shared_task(  # type: ignore[untyped-decorator] # celery is untyped
    bind=True,
    name=NOTIFY_EVENT_TASK,
    autoretry_for=(TransientDeliveryError, psycopg.OperationalError),
    retry_backoff=True,
    retry_backoff_max=RETRY_BACKOFF_MAX_S,
    retry_jitter=True,
    max_retries=MAX_TASK_RETRIES,
)
def notify_event(self: Any, event_id: int) -> dict[str, Any]:  # noqa: ANN401 - celery's Task
    """Send an event's notifications that are not sent yet; retried on transient errors."""
    settings = worker_settings(self.app)
    senders = Senders(settings)
    try:
        with _connect(settings.database_url.get_secret_value()) as conn:
            outcome = service.notify(
                conn, int(event_id), senders=senders, max_attempts=settings.notify_max_attempts
            )
    finally:
        senders.close()
    if outcome.retry:
        raise RetryNotificationError("; ".join(outcome.retry))
    return {
        "event_id": event_id,
        "sent": outcome.sent,
        "skipped": outcome.skipped,
        "failed": outcome.failed,
        "busy": outcome.busy,
    }


@shared_task(bind=True, name=NOTIFY_PENDING_TASK)  # type: ignore[untyped-decorator]
def notify_pending(self: Any) -> dict[str, int]:  # noqa: ANN401 - celery's Task
    """Queue `notify_event` again for events still not notified a minute after they arrived."""
    settings = worker_settings(self.app)
    with _connect(settings.database_url.get_secret_value()) as conn:
        result = service.sweep(
            conn,
            after_s=settings.notify_pending_after_s,
            max_age_s=settings.notify_pending_max_age_s,
            retry_grace_s=RETRY_BACKOFF_MAX_S + settings.notify_pending_after_s,
        )
    for event_id in result.queued:
        self.app.send_task(NOTIFY_EVENT_TASK, args=[event_id])
    if result.queued:
        log.info("re-queued notifications of %d events", len(result.queued))
    return {"queued": len(result.queued), "nothing_to_send": result.nothing_to_send}
