"""Notifying one event, once per channel and target, and sweeping up events left behind.

`notify` is idempotent: every (event, channel, target) is recorded in
`notification_deliveries`, and one already `sent` (or `failed` for good) is skipped, so a
retried or redelivered task sends nothing twice. One task at a time works on an event (an
advisory lock); `events.notified_at` is set once no delivery is left to retry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from db.event_rules import RuleBook, load_rules, rule_for
from worker.notifications import repository
from worker.notifications.channels import PermanentDeliveryError, TransientDeliveryError
from worker.notifications.templates import render

if TYPE_CHECKING:
    import psycopg

    from worker.notifications.channels import Senders

log = logging.getLogger(__name__)

DONE_STATUSES: Final = frozenset({"sent", "failed"})
# Events handled per sweep run; the next run (a minute later) takes the rest.
SWEEP_LIMIT: Final = 1_000


@dataclass(slots=True)
class Outcome:
    """What one run of `notify` did."""

    sent: int = 0
    skipped: int = 0
    """Deliveries done by an earlier run."""
    failed: int = 0
    """Deliveries given up on (refused, or out of attempts)."""
    retry: list[str] = field(default_factory=list)
    """Errors of the deliveries a later attempt should try again."""
    busy: bool = False
    """Another task holds the event: this run did nothing."""
    done: bool = False
    """Nothing is left to do for the event."""


def notify(
    conn: psycopg.Connection[Any], event_id: int, *, senders: Senders, max_attempts: int
) -> Outcome:
    """Deliver the event's notifications that are not delivered yet (autocommit `conn`)."""
    if not repository.try_lock(conn, event_id):
        return Outcome(busy=True)
    try:
        return _notify_locked(conn, event_id, senders=senders, max_attempts=max_attempts)
    finally:
        repository.unlock(conn, event_id)


def _notify_locked(
    conn: psycopg.Connection[Any], event_id: int, *, senders: Senders, max_attempts: int
) -> Outcome:
    outcome = Outcome()
    event = repository.event(conn, event_id)
    if event is None or not event.notify or event.notified_at is not None:
        outcome.done = True
        return outcome
    rule = rule_for(conn, event.kind, event.geofence_id)
    channels = () if rule is None else rule.active_channels
    known = repository.deliveries(conn, event_id)
    message = render(event)
    for channel in channels:
        for target in senders.targets(conn, channel, event):
            prior = known.get((channel.value, target))
            if prior is not None and prior.status in DONE_STATUSES:
                outcome.skipped += 1
                continue
            attempt = 1 if prior is None else prior.attempts + 1
            try:
                senders.send(channel, target, event, message)
            except TransientDeliveryError as exc:
                final = attempt >= max_attempts
                status = "failed" if final else "retrying"
                repository.record(
                    conn,
                    event_id,
                    channel=channel.value,
                    target=target,
                    status=status,
                    error=str(exc),
                )
                log.warning(
                    "event %d: %s to %s failed (attempt %d/%d): %s",
                    event_id, channel, target, attempt, max_attempts, exc,
                )  # fmt: skip
                if final:
                    outcome.failed += 1
                else:
                    outcome.retry.append(f"{channel} {target}: {exc}")
            except PermanentDeliveryError as exc:
                repository.record(
                    conn,
                    event_id,
                    channel=channel.value,
                    target=target,
                    status="failed",
                    error=str(exc),
                )
                log.warning("event %d: %s to %s refused: %s", event_id, channel, target, exc)
                outcome.failed += 1
            else:
                repository.record(
                    conn, event_id, channel=channel.value, target=target, status="sent"
                )
                outcome.sent += 1
    if not outcome.retry:
        repository.mark_notified(conn, [event_id])
        outcome.done = True
    return outcome


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one sweep did."""

    queued: list[int]
    """Events handed to `notify_event` again."""
    nothing_to_send: int
    """Events whose rule has no channel, marked done."""


def sweep(
    conn: psycopg.Connection[Any], *, after_s: float, max_age_s: float, retry_grace_s: float
) -> SweepResult:
    """Find events whose notifications are overdue: the ids to queue again.

    Events whose rule names no channel are marked done here (there is nothing to send), so
    they leave the index of due events.
    """
    due = repository.due_events(
        conn,
        after_s=after_s,
        max_age_s=max_age_s,
        retry_grace_s=retry_grace_s,
        limit=SWEEP_LIMIT,
    )
    if not due:
        return SweepResult([], 0)
    rules = RuleBook(load_rules(conn))
    queued: list[int] = []
    silent: list[int] = []
    for event in due:
        rule = rules.match(event.kind, event.geofence_id)
        if rule is not None and rule.active_channels:
            queued.append(event.id)
        else:
            silent.append(event.id)
    return SweepResult(queued, repository.mark_notified(conn, silent))
