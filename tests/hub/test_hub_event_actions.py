"""Event rules through a real hub and a real worker: the command, the email, the webhook.

A locked car whose fixes move 300 m raises `moving_while_locked`; the hub issues the rule's
`immobilize` command in the same transaction and queues the notification after the commit;
a Celery worker (a thread, on the devstack's Redis) sends the email to the test SMTP server
and the signed webhook to the test receiver.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from celery.contrib.testing.worker import start_worker  # type: ignore[import-untyped]
from hub_testing import (
    hub_settings,
    publish_theft,
    query_rows,
    running_hub,
    seed_vehicles,
    wait_until,
    worker_testing,
)

import worker.notifications.tasks  # noqa: F401 - registers the tasks
from core.settings import Settings
from db.event_rules import EventRule, RuleBook
from hub.events.actions import NotificationQueue, apply_rules
from hub.events.model import Event, EventKind
from hub.events.pipeline import store_events
from jobs.names import NOTIFY_PENDING_TASK
from worker.app import create_celery

if TYPE_CHECKING:
    from collections.abc import Callable

    from celery import Celery
    from hub_testing import Publisher

    from devstack.stack import DevStack


wt = worker_testing()


@pytest.fixture
def worker_app(migrated_database_url: str, redis_url: str, smtp: Any, webhook: Any) -> Celery:
    app = create_celery(
        wt.worker_settings(
            migrated_database_url,
            redis_url,
            smtp=smtp,
            webhook=webhook,
            notify_pending_after_s=0.0,
        )
    )
    app.conf.worker_hijack_root_logger = False
    return app


def _check_command(url: str, car: str) -> int:
    """The one event and its one immobilize command; the event's id."""
    [(event_id, notify)] = query_rows(
        url,
        "SELECT id, notify FROM events WHERE vehicle_id = %s AND kind = 'moving_while_locked'",
        car,
    )
    assert notify
    commands = query_rows(
        url,
        "SELECT action, issued_by, correlation_id FROM vehicle_commands WHERE vehicle_id = %s",
        car,
    )
    assert commands == [("immobilize", "rule:moving_while_locked", f"event:{event_id}")]
    return int(event_id)


def _check_notified(url: str, event_id: int, car: str, smtp: Any, webhook: Any) -> None:
    wait_until(
        lambda: all(smtp.to(a) for a in wt.OPS_EMAILS) and webhook.for_event(event_id),
        what="the email and the webhook",
    )
    wait_until(lambda: wt.notified(url, event_id), what="the event marked notified")
    for address in wt.OPS_EMAILS:
        [mail] = smtp.to(address)
        assert mail["Subject"].startswith("ALARM:")
        assert car in mail["Subject"]
    [delivery] = webhook.for_event(event_id)
    assert delivery.genuine
    assert json.loads(delivery.body)["kind"] == "moving_while_locked"


def test_a_car_moving_while_locked_is_immobilized_and_ops_are_told(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    smtp: Any,
    webhook: Any,
    worker_app: Celery,
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(url, [car])
    settings = hub_settings(devstack, database_url=url, redis_url=redis_url, root=root)
    with running_hub(settings) as hub:
        with start_worker(worker_app, perform_ping_check=False, shutdown_timeout=30):
            publish_theft(publisher(devstack.info.mqtt_url), car, root)
            wait_until(
                lambda: query_rows(url, "SELECT 1 FROM events WHERE vehicle_id = %s", car),
                what="the event stored",
            )
            event_id = _check_command(url, car)
            _check_notified(url, event_id, car, smtp, webhook)
        assert hub.events.notifications is not None
        assert hub.events.notifications.enqueued == 1
    assert wt.deliveries(url, event_id) == {
        ("ops_email", wt.OPS_EMAILS[0]): ("sent", 1),
        ("ops_email", wt.OPS_EMAILS[1]): ("sent", 1),
        ("ops_webhook", webhook.url): ("sent", 1),
    }


def test_when_the_hand_off_fails_the_sweep_sends_the_notifications(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    smtp: Any,
    webhook: Any,
    worker_app: Celery,
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(url, [car])
    settings = hub_settings(devstack, database_url=url, redis_url=redis_url, root=root)
    with running_hub(settings) as hub:
        # The hub's broker is a port nobody listens on: the hand-off fails, ingest goes on.
        dead = Settings(redis_url=f"redis://127.0.0.1:{wt.free_port()}/0")
        queue = NotificationQueue(create_celery(dead))
        assert hub.events.notifications is not None
        hub.events.notifications.close()
        hub.events.notifications = queue
        publish_theft(publisher(devstack.info.mqtt_url), car, root)
        wait_until(lambda: queue.failed == 1, what="the failed hand-off counted")
        event_id = _check_command(url, car)
        assert not wt.notified(url, event_id)
        with start_worker(worker_app, perform_ping_check=False, shutdown_timeout=30):
            assert worker_app.tasks[NOTIFY_PENDING_TASK].apply().result["queued"] == 1
            _check_notified(url, event_id, car, smtp, webhook)


def test_rules_command_only_fresh_events_of_cars_that_take_commands(
    migrated_database_url: str, mqtt_topic_root: str
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    active, retired = f"{root}-active", f"{root}-retired"
    seed_vehicles(url, [active, retired])
    rules = RuleBook(
        [EventRule(1, "moving_while_locked", None, ["ops_email"], "immobilize", enabled=True)]
    )
    at = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE vehicles SET status = 'retired' WHERE id = %s", (retired,))
        stored = store_events(
            conn,
            [
                Event(active, EventKind.MOVING_WHILE_LOCKED, at),
                Event(active, EventKind.MOVING_WHILE_LOCKED, at - timedelta(hours=1), notify=False),
                Event(active, EventKind.LOW_FUEL, at),  # no rule
                Event(retired, EventKind.MOVING_WHILE_LOCKED, at),
            ],
        )
        to_notify = apply_rules(conn, rules, stored)
    ids = {(e.vehicle_id, e.notify, e.kind): i for i, e in stored}
    fresh = ids[active, True, EventKind.MOVING_WHILE_LOCKED]
    # The retired car's event is still told to ops; only its command is refused.
    assert to_notify == [fresh, ids[retired, True, EventKind.MOVING_WHILE_LOCKED]]
    commands = query_rows(
        url,
        "SELECT vehicle_id, correlation_id FROM vehicle_commands WHERE vehicle_id LIKE %s",
        f"{root}%",
    )
    assert commands == [(active, f"event:{fresh}")]
