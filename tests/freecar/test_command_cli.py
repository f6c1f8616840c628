"""`freecar command --wait` says why a command was not carried out, never just an exit code.

Before, a command to a car that never answered ended in exit 4 and not a word (the CLI even
gave up before the hub's own answer grace, so it never saw the expiry). The test plays the
hub's part on the command's row, so every ending can be reached on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from db.command_cli import EXIT_NOT_CARRIED_OUT, EXIT_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Callable

WAIT_S = 60.0
# The shortest TTL a command may have: the CLI then waits it out plus its slack.
TTL = "5"


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREECAR_")}
    env["FREECAR_DATABASE_URL"] = url
    return env


def _seed(url: str, vehicle_id: str, *, presence: str | None) -> None:
    """A car; `presence` None: it never reported, else 'online' or 'offline' since 09:00."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO vehicles (id, plate, make, model, category, fuel_type,"
            " price_hour_minor, price_day_minor, currency)"
            " VALUES (%s, %s, 'Test', 'Car', 'standard', 'petrol', 1000, 9000, 'EUR')",
            (vehicle_id, f"P-{vehicle_id}"),
        )
        if presence is not None:
            conn.execute(
                "INSERT INTO vehicle_state (vehicle_id, ts, seq, locked, doors_open,"
                " engine_on, online, online_changed_at, last_seen_at)"
                " VALUES (%s, '2026-03-02 08:59:00+00', 1, true, false, false, %s,"
                " '2026-03-02 09:00:00+00', '2026-03-02 08:59:30+00')",
                (vehicle_id, presence == "online"),
            )


def _start(url: str, vehicle_id: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "freecar", "command", vehicle_id, "unlock", "--wait", *extra],
        env=_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _command_id(url: str, vehicle_id: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT id FROM vehicle_commands WHERE vehicle_id = %s", (vehicle_id,)
        ).fetchone()
    return None if row is None else str(row[0])


def _as_hub(url: str, vehicle_id: str, *updates: sql.Composable) -> None:
    """Move the car's command as a hub and the car would, one status at a time."""
    _until(lambda: _command_id(url, vehicle_id) is not None, "the command row")
    with psycopg.connect(url, autocommit=True) as conn:
        for update in updates:
            conn.execute(
                sql.SQL("UPDATE vehicle_commands SET {} WHERE vehicle_id = %s").format(update),
                (vehicle_id,),
            )


def _ended(status: str, reason: str) -> sql.Composable:
    return sql.SQL("status = {}, finished_at = now(), outcome_reason = {}").format(
        sql.Literal(status), sql.Literal(reason)
    )


SENT = sql.SQL("status = 'sent', sent_at = now(), sent_by = 'hub-t', key_id = 'k4.pid.test'")
UNCHANGED = sql.SQL("status = status")


def test_no_hub_to_send_it_is_said_and_exits_4(migrated_database_url: str) -> None:
    url = migrated_database_url
    _seed(url, "cmd-nohub", presence=None)
    process = _start(url, "cmd-nohub", "--ttl", TTL)
    _, stderr = process.communicate(timeout=WAIT_S)
    assert process.returncode == EXIT_TIMEOUT
    assert "still queued" in stderr, stderr
    assert "freecar hub" in stderr
    assert "never reported" in stderr


def test_an_unanswered_command_says_since_when_the_car_is_offline(
    migrated_database_url: str,
) -> None:
    url = migrated_database_url
    _seed(url, "cmd-silent", presence="offline")
    process = _start(url, "cmd-silent", "--ttl", TTL)
    _as_hub(url, "cmd-silent", SENT, _ended("expired", "no_answer_in_time"))
    _, stderr = process.communicate(timeout=WAIT_S)
    assert process.returncode == EXIT_NOT_CARRIED_OUT
    assert "expired unanswered" in stderr, stderr
    assert "offline since 2026-03-02 09:00:00 UTC" in stderr


@pytest.mark.parametrize(
    ("status", "reason", "says"),
    [
        ("rejected", "bad_signature", "the car refused it: bad_signature"),
        ("failed", "actuator_timeout", "the car could not do it: actuator_timeout"),
        ("expired", "not_sent_in_time", "no hub sent it in time"),
    ],
)
def test_a_refusal_says_why(
    migrated_database_url: str, status: str, reason: str, says: str
) -> None:
    url = migrated_database_url
    vehicle_id = f"cmd-{status}"
    _seed(url, vehicle_id, presence="online")
    process = _start(url, vehicle_id, "--ttl", "60")
    # An expiry before any hub sent it skips `sent`.
    first = UNCHANGED if status == "expired" else SENT
    _as_hub(url, vehicle_id, first, _ended(status, reason))
    _, stderr = process.communicate(timeout=WAIT_S)
    assert process.returncode == EXIT_NOT_CARRIED_OUT
    assert says in stderr, stderr


def test_sent_but_unanswered_when_the_wait_ends_says_so(migrated_database_url: str) -> None:
    url = migrated_database_url
    _seed(url, "cmd-sent", presence="online")
    process = _start(url, "cmd-sent", "--ttl", TTL)
    _as_hub(url, "cmd-sent", SENT)
    _, stderr = process.communicate(timeout=WAIT_S)
    assert process.returncode == EXIT_TIMEOUT
    assert "no answer from the car" in stderr, stderr
    assert "online, last seen 2026-03-02 08:59:30 UTC" in stderr
