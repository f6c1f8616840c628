"""What the hub does about a stored event: the rule's command now, its notifications later.

In the batch transaction that stores the events, `apply_rules` issues the command a rule
names (say, immobilize a car moving while locked) with `db.commands.issue_command`, so the
command exists exactly when the event does: the event's id is new in this transaction, and
the command carries it as `correlation_id`. After the commit, `NotificationQueue` hands the
events with channels to the worker (`worker.notify_event`). That hand-off is best effort:
the worker's `worker.notify_pending` sweep finds whatever did not get through.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from db.commands import CommandError, issue_command
from jobs.names import NOTIFY_EVENT_TASK
from protocol.commands import Action

if TYPE_CHECKING:
    from collections.abc import Sequence

    import psycopg
    from celery import Celery  # type: ignore[import-untyped] # celery ships no type hints

    from db.event_rules import RuleBook
    from hub.events.model import Event

log = logging.getLogger(__name__)

# A rule's command is about the car's state now: if no hub sends it within five minutes,
# the situation it answered has changed and someone should decide again.
RULE_COMMAND_TTL_S: Final = 300


def apply_rules(
    conn: psycopg.Connection[Any], rules: RuleBook, stored: Sequence[tuple[int, Event]]
) -> list[int]:
    """Issue the rules' commands for stored events; return the ids of events to notify.

    Only events with `notify` act (an event found in old data commands nothing and tells
    nobody). Runs in the caller's transaction.
    """
    to_notify: list[int] = []
    for event_id, event in stored:
        if not event.notify:
            continue
        rule = rules.match(event.kind.value, event.geofence_id)
        if rule is None:
            continue
        if rule.active_channels:
            to_notify.append(event_id)
        command = rule.active_command
        if command is None:
            continue
        try:
            issue_command(
                conn,
                event.vehicle_id,
                Action(command),
                issued_by=f"rule:{event.kind.value}",
                reason=f"event {event_id}: {event.kind.value}",
                ttl_s=RULE_COMMAND_TTL_S,
                correlation_id=f"event:{event_id}",
            )
        except CommandError as exc:
            # A retired car takes no commands: the event stays, the rule does nothing.
            log.warning(
                "rule for %s on %s issued no command: %s", event.kind, event.vehicle_id, exc
            )
    return to_notify


class NotificationQueue:
    """Sends `worker.notify_event` tasks after a commit; a broker failure is logged, counted."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self.enqueued = 0
        self.failed = 0
        """Events whose task could not be sent: the worker's sweep picks them up later."""

    def enqueue(self, event_ids: Sequence[int]) -> int:
        """Queue one notification task per event; return how many were queued."""
        sent = 0
        for event_id in event_ids:
            try:
                # No publish retries: the writer thread must not stall on a Redis outage.
                self._app.send_task(NOTIFY_EVENT_TASK, args=[event_id], retry=False)
            except Exception as exc:  # noqa: BLE001 - kombu raises many types; all mean "not sent"
                self.failed += len(event_ids) - sent
                log.warning(
                    "could not queue notifications for %d events (%s); the sweep will",
                    len(event_ids) - sent,
                    exc,
                )
                break
            sent += 1
        self.enqueued += sent
        return sent

    def close(self) -> None:
        """Release the broker connections."""
        self._app.close()
