"""Signing, templates, rules and settings: no services needed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from db.event_rules import EventRule, RuleBook
from worker.notifications.repository import EventRow
from worker.notifications.signing import sign, signature, verify
from worker.notifications.templates import MISSING, render
from worker.settings import WorkerSettings

SECRET = b"s3cret-for-tests"


def test_a_signature_verifies_and_a_tampered_or_stale_one_does_not() -> None:
    body = b'{"id":1}'
    headers = sign(SECRET, body, now=1_000_000)
    ts, sig = headers["X-FreeCar-Timestamp"], headers["X-FreeCar-Signature"]
    assert sig == signature(SECRET, "1000000", body)
    assert verify(SECRET, ts, body, sig, now=1_000_100)
    assert not verify(SECRET, ts, body + b" ", sig, now=1_000_100)
    assert not verify(b"other", ts, body, sig, now=1_000_100)
    assert not verify(SECRET, ts, body, sig, now=1_000_301)  # outside the tolerance
    assert not verify(SECRET, "not-a-number", body, sig)
    # During a secret rotation a sender may send two signatures; either one matching is enough.
    assert verify(SECRET, ts, body, f"v1=00, {sig}", now=1_000_000)


def _event(kind: str, **details: object) -> EventRow:
    return EventRow(
        id=7,
        vehicle_id="sh-0001",
        plate="沪A12345",
        kind=kind,
        ts=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        lat=31.23,
        lon=121.47,
        geofence_id=None,
        details=dict(details),
        notify=True,
        notified_at=None,
        created_at=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
    )


def test_templates_fill_in_fields_and_fall_back() -> None:
    moving = render(_event("moving_while_locked", moved_m=312.5, speed_kmh=24.0))
    assert moving.subject == "ALARM: 沪A12345 (sh-0001) is moving while locked"
    assert "moved 312.5 m (speed 24.0 km/h)" in moving.body
    assert "2026-01-02T03:04:05+00:00" in moving.body
    assert "Event: #7" in moving.body
    # A detail the event lacks reads n/a rather than failing the send.
    assert f"moved {MISSING} m" in render(_event("moving_while_locked")).body
    # A kind without a template: the generic text, listing the details.
    generic = render(_event("a_future_kind", note="line\nbreak"))
    assert generic.subject == "沪A12345 (sh-0001): a_future_kind"
    assert "note: line\nbreak" in generic.body
    # A subject stays on one line whatever a detail holds.
    assert "\n" not in render(_event("command_failed", action="x\ny")).subject


def _rule(rule_id: int, kind: str, fence: int | None, *, enabled: bool = True) -> EventRule:
    return EventRule(rule_id, kind, fence, ["ops_email", "carrier_pigeon"], None, enabled)


def test_the_most_specific_rule_decides() -> None:
    book = RuleBook([_rule(1, "overspeed", None), _rule(2, "overspeed", 5, enabled=False)])
    default = book.match("overspeed", None)
    assert default is not None
    assert default.id == 1
    assert [c.value for c in default.active_channels] == ["ops_email"]  # unknown name skipped
    assert book.match("overspeed", 6) == default
    silenced = book.match("overspeed", 5)
    assert silenced is not None
    assert silenced.active_channels == ()
    assert book.match("idle", None) is None


def test_settings_read_lists_and_guard_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREECAR_NOTIFY_OPS_EMAILS", "a@x.example, b@x.example,")
    # No relay is assumed (there used to be localhost:25): emails need one named.
    with pytest.raises(ValidationError, match="NOTIFY_SMTP_HOST"):
        WorkerSettings()
    monkeypatch.setenv("FREECAR_NOTIFY_SMTP_HOST", "relay.fleet.example")
    assert WorkerSettings().notify_ops_emails == ["a@x.example", "b@x.example"]
    with pytest.raises(ValidationError, match="NOTIFY_WEBHOOK_SECRET"):
        WorkerSettings(notify_webhook_url="https://ops.example/hook")
    with pytest.raises(ValidationError, match="WEBHOOK_SECRET holds a placeholder"):
        WorkerSettings(
            env="production",
            database_url="postgresql://db/freecar",
            redis_url="redis://redis:6379/0",
            notify_webhook_url="https://ops.example/hook",
            notify_webhook_secret="changeme",
        )
