"""`worker.notify_event` against a real SMTP server, a real HTTP receiver and PostgreSQL.

The task runs eagerly here (`apply`: the same code, retries included, in this thread); the
tests in test_worker_live.py go through a real worker on Redis.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from support.vehicles import insert_vehicles
from worker_testing import (
    OPS_EMAILS,
    deliveries,
    insert_event,
    notified,
    worker_settings,
)

import worker.notifications.tasks  # noqa: F401 - registers the tasks
from jobs.names import NOTIFY_EVENT_TASK, NOTIFY_PENDING_TASK
from worker.app import create_celery

if TYPE_CHECKING:
    from celery import Celery
    from worker_testing import SmtpSink, WebhookReceiver


def make_app(url: str, redis_url: str, **kwargs: Any) -> Celery:
    app = create_celery(worker_settings(url, redis_url, **kwargs))
    app.conf.worker_hijack_root_logger = False
    return app


def run(app: Celery, event_id: int) -> Any:
    return app.tasks[NOTIFY_EVENT_TASK].apply(args=[event_id])


@pytest.fixture
def car(migrated_database_url: str, request: pytest.FixtureRequest) -> str:
    vehicle = f"w-{request.node.name[-40:].replace('[', '-').replace(']', '')}"
    vehicle = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in vehicle)[:60]
    insert_vehicles(migrated_database_url, [vehicle])
    return vehicle


def test_an_alarm_goes_to_every_ops_address_and_the_webhook_once(
    migrated_database_url: str,
    redis_url: str,
    smtp: SmtpSink,
    webhook: WebhookReceiver,
    car: str,
) -> None:
    url = migrated_database_url
    app = make_app(url, redis_url, smtp=smtp, webhook=webhook)
    event_id = insert_event(url, car, "low_fuel", details={"fuel_pct": 9.5})

    result = run(app, event_id)
    assert result.successful(), result.traceback
    assert result.result["sent"] == 3
    # Run again (a redelivery, the sweep): nothing is sent twice.
    again = run(app, event_id)
    assert again.result["sent"] == 0

    for address in OPS_EMAILS:
        [mail] = smtp.to(address)
        assert mail["Subject"] == f"P-{car} ({car}) is low on fuel (9.5%)"
        assert mail["From"] == "FreeCar <alerts@fleet.example>"
        assert mail["X-FreeCar-Event-Id"] == str(event_id)
        assert "9.5% fuel left" in mail.get_content()
    [delivery] = webhook.for_event(event_id)
    assert delivery.genuine
    body = json.loads(delivery.body)
    assert body["id"] == event_id
    assert body["kind"] == "low_fuel"
    assert body["vehicle_id"] == car
    assert body["details"] == {"fuel_pct": 9.5}
    assert delivery.headers["X-FreeCar-Signature"].startswith("v1=")
    assert deliveries(url, event_id) == {
        ("ops_email", OPS_EMAILS[0]): ("sent", 1),
        ("ops_email", OPS_EMAILS[1]): ("sent", 1),
        ("ops_webhook", webhook.url): ("sent", 1),
    }
    assert notified(url, event_id)


def test_a_503_is_retried_until_the_receiver_takes_it(
    migrated_database_url: str,
    redis_url: str,
    smtp: SmtpSink,
    webhook: WebhookReceiver,
    car: str,
) -> None:
    url = migrated_database_url
    app = make_app(url, redis_url, smtp=smtp, webhook=webhook)
    event_id = insert_event(url, car, "door_open_while_locked")
    webhook.script = [503, 503]

    result = run(app, event_id)
    assert result.successful(), result.traceback

    assert [r.status for r in webhook.for_event(event_id)] == [503, 503, 200]
    assert deliveries(url, event_id)[("ops_webhook", webhook.url)] == ("sent", 3)
    # The emails went out on the first try and were not sent again by the retries.
    assert [len(smtp.to(a)) for a in OPS_EMAILS] == [1, 1]
    assert deliveries(url, event_id)[("ops_email", OPS_EMAILS[0])] == ("sent", 1)
    assert notified(url, event_id)


def test_a_400_is_not_retried(
    migrated_database_url: str,
    redis_url: str,
    smtp: SmtpSink,
    webhook: WebhookReceiver,
    car: str,
) -> None:
    url = migrated_database_url
    app = make_app(url, redis_url, smtp=smtp, webhook=webhook)
    event_id = insert_event(url, car, "offline")
    webhook.script = [400]

    result = run(app, event_id)
    assert result.successful(), result.traceback

    assert [r.status for r in webhook.for_event(event_id)] == [400]
    status, attempts = deliveries(url, event_id)[("ops_webhook", webhook.url)]
    assert (status, attempts) == ("failed", 1)
    assert notified(url, event_id)  # nothing left that a retry could fix


def test_a_dead_smtp_relay_is_retried_up_to_the_attempt_limit(
    migrated_database_url: str, redis_url: str, webhook: WebhookReceiver, car: str
) -> None:
    url = migrated_database_url
    # No SMTP server: every connection is refused (a transient error).
    app = make_app(url, redis_url, webhook=webhook, notify_max_attempts=3)
    event_id = insert_event(url, car, "overspeed", details={"speed_kmh": 160.0})

    run(app, event_id)

    found = deliveries(url, event_id)
    assert found[("ops_email", OPS_EMAILS[0])] == ("failed", 3)
    assert found[("ops_email", OPS_EMAILS[1])] == ("failed", 3)
    assert found[("ops_webhook", webhook.url)] == ("sent", 1)
    assert len(webhook.for_event(event_id)) == 1
    assert notified(url, event_id)


def test_rules_decide_the_channels(
    migrated_database_url: str,
    redis_url: str,
    smtp: SmtpSink,
    webhook: WebhookReceiver,
    car: str,
) -> None:
    url = migrated_database_url
    app = make_app(url, redis_url, smtp=smtp, webhook=webhook)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "INSERT INTO geofences (name, kind, geometry, radius_m) VALUES"
            " ('depot', 'parking_zone', '{\"type\": \"Point\", \"coordinates\": [121.4, 31.2]}',"
            " 100) RETURNING id"
        ).fetchone()
        assert row is not None
        depot = int(row[0])
        # At the depot, a low-fuel car is expected: only the webhook hears of it.
        conn.execute(
            "INSERT INTO event_rules (kind, geofence_id, channels) VALUES"
            " ('low_fuel', %s, '{ops_webhook}')",
            (depot,),
        )
    quiet = insert_event(url, car, "idle")  # no channels by default
    at_depot = insert_event(url, car, "low_fuel", geofence_id=depot)
    old = insert_event(url, car, "low_fuel", notify=False)  # from a backfill

    for event_id in (quiet, at_depot, old):
        assert run(app, event_id).successful()

    assert deliveries(url, quiet) == {}
    assert deliveries(url, at_depot) == {("ops_webhook", webhook.url): ("sent", 1)}
    assert deliveries(url, old) == {}
    assert smtp.messages == []
    assert notified(url, quiet)
    assert not notified(url, old)  # never to be sent: not "notified" either


def test_the_sweep_requeues_overdue_events_and_closes_silent_ones(
    migrated_database_url: str, redis_url: str, car: str
) -> None:
    url = migrated_database_url
    app = make_app(url, redis_url)
    overdue = insert_event(url, car, "low_battery", age_s=120)
    fresh = insert_event(url, car, "low_battery")
    silent = insert_event(url, car, "online", age_s=120)
    ancient = insert_event(url, car, "low_battery", age_s=3 * 86_400)

    result = app.tasks[NOTIFY_PENDING_TASK].apply()
    assert result.successful(), result.traceback
    assert result.result == {"queued": 1, "nothing_to_send": 1}

    # The re-queued task is in the broker (Redis), for a worker to run.
    with app.connection() as conn:
        message = conn.SimpleQueue("celery", no_ack=True).get(timeout=5)
    assert message.headers["task"] == NOTIFY_EVENT_TASK
    assert message.headers["argsrepr"] == f"[{overdue}]"
    assert notified(url, silent)
    assert not notified(url, fresh)
    assert not notified(url, ancient)
