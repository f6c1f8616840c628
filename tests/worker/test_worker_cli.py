"""`freecar worker` as a process: it refuses a bad configuration, runs tasks, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

from support.vehicles import insert_vehicles
from support.waiting import WAIT_S, wait_until
from worker_testing import (
    OPS_EMAILS,
    insert_event,
    notified,
    worker_settings,
)

from jobs.names import NOTIFY_EVENT_TASK
from worker.app import create_celery

if TYPE_CHECKING:
    from pathlib import Path

    from worker_testing import SmtpSink


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREECAR_")}
    env.update(values)
    return env


def test_a_webhook_without_a_secret_is_a_configuration_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "freecar", "worker"],
        env=_env(FREECAR_NOTIFY_WEBHOOK_URL="https://ops.example/hook"),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert done.returncode == 2
    assert "NOTIFY_WEBHOOK_SECRET" in done.stderr


def test_the_worker_process_sends_notifications_and_stops_on_sigterm(
    migrated_database_url: str, redis_url: str, smtp: SmtpSink, tmp_path: Path
) -> None:
    url = migrated_database_url
    insert_vehicles(url, ["cli-car"])
    event_id = insert_event(url, "cli-car", "low_battery", details={"battery_pct": 8.0})
    env = _env(
        FREECAR_ENV="test",
        FREECAR_DATABASE_URL=url,
        FREECAR_REDIS_URL=redis_url,
        FREECAR_NOTIFY_SMTP_HOST="127.0.0.1",
        FREECAR_NOTIFY_SMTP_PORT=str(smtp.port),
        FREECAR_NOTIFY_OPS_EMAILS=",".join(OPS_EMAILS),
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "freecar", "worker", "--concurrency", "1", "--no-beat"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        sender = create_celery(worker_settings(url, redis_url))
        sender.send_task(NOTIFY_EVENT_TASK, args=[event_id])
        sender.close()
        wait_until(
            lambda: all(smtp.to(a) for a in OPS_EMAILS) or process.poll() is not None,
            what="the emails",
        )
        assert process.poll() is None, log_path.read_text()
        wait_until(lambda: notified(url, event_id), what="the event marked notified")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT_S) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT_S)
    assert "is low on battery (8.0%)" in smtp.to(OPS_EMAILS[0])[0]["Subject"]
