"""The Celery app: Redis broker, JSON only, results ignored unless a task asks.

`freecar worker` (or `celery -A worker.app worker`) runs the tasks. Senders (the API, the
hub) never import this module: they queue tasks by name through `jobs.producer`, whose
conventions this app shares. `worker.ping` lets an operator check the pipe end to end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from celery import Celery  # type: ignore[import-untyped] # celery ships no type hints

from jobs.names import NOTIFY_PENDING_TASK
from jobs.producer import celery_config
from worker.settings import WorkerSettings

if TYPE_CHECKING:
    from collections.abc import Mapping

    from core.settings import Settings

# Modules whose tasks the worker registers.
TASK_MODULES: Final = ("worker.tasks", "worker.notifications.tasks")

# The sweep for notifications whose task never arrived: once a minute, as promised in
# docs/events.md (an event waits at most about two minutes for its notifications).
NOTIFY_PENDING_EVERY_S: Final = 60.0


def create_celery(settings: Settings | None = None) -> Celery:
    """A Celery app on the configured Redis, with the project's conventions."""
    settings = settings or WorkerSettings()
    grace = (
        settings.worker_shutdown_grace_s
        if isinstance(settings, WorkerSettings)
        else WorkerSettings.model_fields["worker_shutdown_grace_s"].default
    )
    url = settings.redis_url.get_secret_value()
    app = Celery("freecar", broker=url, include=list(TASK_MODULES))
    conf: Mapping[str, object] = {
        **celery_config(),
        # Acknowledge after the task ran, so a worker killed mid-task does not lose it;
        # every task is idempotent for that reason (notifications record each delivery,
        # thumbnails are written under the same keys).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Stopping (SIGTERM remapped to Celery's cold shutdown, see worker.cli): tasks in
        # hand get this long to finish, then go back to the queue unacknowledged and the
        # worker exits. Without it, a warm shutdown waits for them however long they take,
        # and a supervisor's SIGKILL then strands them until Redis's visibility timeout.
        "worker_soft_shutdown_timeout": grace,
        # One task at a time per worker process: OCR and invoices are heavy, and prefetched
        # tasks would wait behind them instead of going to an idle worker.
        "worker_prefetch_multiplier": 1,
        # Run by the beat embedded in `freecar worker` (one per deployment).
        # Beat keeps its schedule in memory: the only entry runs every minute, so a restart
        # at worst runs it a little early, and there is no state file to race on at exit.
        "beat_scheduler": "celery.beat:Scheduler",
        "beat_schedule": {
            "notify-pending": {"task": NOTIFY_PENDING_TASK, "schedule": NOTIFY_PENDING_EVERY_S}
        },
    }
    app.conf.update(conf)
    # The tasks read their settings from the app that runs them (tests pass their own).
    app.freecar_settings = settings
    return app


def __getattr__(name: str) -> Celery:
    """`celery -A worker.app` finds `app` here, built from the environment on first use."""
    if name == "app":
        app = create_celery()
        globals()["app"] = app
        return app
    raise AttributeError(name)
