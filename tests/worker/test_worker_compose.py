"""The compose stack runs the scheduler: one beat, beside workers that have none.

Before, the compose worker ran without beat and nothing else ran it, so the notification
sweep (`worker.notify_pending`) never ran in production.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from jobs.names import NOTIFY_PENDING_TASK
from worker.app import create_celery
from worker.settings import WorkerSettings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def _runs_beat(command: list[str]) -> bool:
    """Whether a service's command runs Celery beat, alone or embedded in a worker."""
    if command[:4] == ["celery", "-A", "worker.app", "beat"]:
        return True
    if command[:4] == ["celery", "-A", "worker.app", "worker"]:
        return "-B" in command or "--beat" in command
    return command[:2] == ["freecar", "worker"] and "--no-beat" not in command


def test_exactly_one_service_runs_the_scheduler() -> None:
    beats = [
        name for name, service in _services().items() if _runs_beat(service.get("command") or [])
    ]
    assert beats == ["beat"]
    beat = _services()["beat"]
    assert beat["restart"] in {"unless-stopped", "always"}
    assert "replicas" not in (beat.get("deploy") or {})


def test_workers_stop_warmly_under_docker() -> None:
    worker = _services()["worker"]
    assert worker["environment"]["REMAP_SIGTERM"] == "SIGQUIT"


def test_the_schedule_runs_the_notification_sweep() -> None:
    app = create_celery(WorkerSettings(redis_url="redis://127.0.0.1:1/0"))
    tasks = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert NOTIFY_PENDING_TASK in tasks
