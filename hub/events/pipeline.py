"""Events in the hub's unit of work: detect in the batch's transaction, publish after commit.

The writer calls `prepare()` first in each batch's transaction and `detect()` after the
fixes and states are written (fixes, presence changes and command outcomes in; geofence and
status events, and the detectors' changed state, stored in the same transaction), then
`published()` after the commit. A transaction that fails leaves the detectors' memory ahead
of the database, so `rolled_back()` makes the next batch reload what the database holds
first: the retried batch then raises its events again, once.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import redis

from db.event_rules import EVENT_RULES_CHANNEL, LISTEN_EVENT_RULES, RuleBook, load_rules
from hub import repository
from hub.events.actions import apply_rules
from hub.events.conditions import ConditionDetector, Conditions
from hub.events.fences import FenceEvents
from hub.events.model import Event, EventKind
from hub.fanout import LIVE_CHANNEL, REDIS_TIMEOUT_S

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    import psycopg

    from db.telemetry import TelemetryRow
    from hub.events.actions import NotificationQueue
    from hub.repository import CommandOutcome, LiveState
    from hub.stats import HubStats

log = logging.getLogger(__name__)

# Command outcomes that are failures worth an event (`acked`/`confirmed` are success).
FAILED_COMMAND_STATUSES: Final = frozenset({"rejected", "failed", "expired"})


def command_failed_events(outcomes: Iterable[CommandOutcome]) -> list[Event]:
    """`command_failed` events for the outcomes that are failures."""
    return [
        Event(
            o.vehicle_id,
            EventKind.COMMAND_FAILED,
            o.at,
            details={
                "cmd_id": str(o.id),
                "action": o.action,
                "status": o.status,
                "reason": o.outcome_reason,
                "issued_by": o.issued_by,
            },
        )
        for o in outcomes
        if o.status in FAILED_COMMAND_STATUSES
    ]


def event_message(event_id: int, event: Event) -> dict[str, Any]:
    """The compact JSON sent on the live channel for one event."""
    return {
        "type": "event",
        "id": event_id,
        "vid": event.vehicle_id,
        "kind": event.kind.value,
        "ts": int(event.ts.timestamp() * 1000),
        "lat": event.lat,
        "lon": event.lon,
        "geofence_id": event.geofence_id,
        "details": event.details,
    }


def publish_events(
    client: redis.Redis, stored: Sequence[tuple[int, Event]], stats: HubStats
) -> int:
    """Send committed events to the live channel (best effort); return how many went."""
    if not stored:
        return 0
    stats.events_raised += len(stored)
    pipe = client.pipeline(transaction=False)
    for event_id, event in stored:
        message = event_message(event_id, event)
        pipe.publish(LIVE_CHANNEL, json.dumps(message, separators=(",", ":"), default=str))
    try:
        pipe.execute()
    except redis.RedisError as exc:
        # Best effort, like the state fan-out: the events are in the database.
        stats.live_errors += len(stored)
        log.warning("live fan-out of %d events failed: %s", len(stored), exc)
        return 0
    return len(stored)


def store_events(conn: psycopg.Connection[Any], events: Sequence[Event]) -> list[tuple[int, Event]]:
    """Store events in the caller's transaction; return (id, event) of those stored."""
    rows = repository.store_events(conn, events)
    # Events of vehicles not in the inventory are not stored; match the rest back by key.
    by_key = {(e.vehicle_id, e.kind.value, e.ts): e for e in events}
    return [(r.id, by_key[r.vehicle_id, r.kind, r.ts]) for r in rows]


class EventPipeline:
    """Status events for one hub: detection in the batch transaction, fan-out after it."""

    def __init__(
        self,
        redis_url: str,
        *,
        stats: HubStats,
        detector: ConditionDetector | None = None,
        notifications: NotificationQueue | None = None,
    ) -> None:
        self.detector = detector or ConditionDetector()
        self.fences = FenceEvents(notify_horizon_s=self.detector.config.notify_horizon_s)
        self.rules = RuleBook()
        self.notifications = notifications
        self._to_notify: list[int] = []
        self._stats = stats
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        self._loaded = False
        self._rules_changed = False
        """A NOTIFY said the rules changed: `prepare` reloads them (see `listen`)."""
        self._revisions: dict[str, int] = {}
        """Each vehicle state's revision as this hub last wrote or read it (see `prepare`)."""
        self._rented: set[str] = set()
        self._stored: list[tuple[int, Event]] = []

    def refresh(self, conn: psycopg.Connection[Any]) -> None:
        """Re-read which vehicles have a trip under way and the event rules (periodic sweep)."""
        self._rented = repository.rented_vehicles(conn)
        self.rules = RuleBook(load_rules(conn))

    def listen(self, conn: psycopg.Connection[Any]) -> None:
        """Set up a new writer connection: hear when geofences or event rules change."""
        self.fences.listen(conn)
        conn.add_notify_handler(self._on_notify)
        conn.execute(LISTEN_EVENT_RULES)
        # Whatever changed while there was no connection went unheard.
        self._rules_changed = True

    def _on_notify(self, notify: psycopg.Notify) -> None:
        # Every handler hears every channel the connection listens on.
        if notify.channel == EVENT_RULES_CHANNEL:
            self._rules_changed = True

    def rolled_back(self) -> None:
        """The transaction that ran `detect()` failed: reload state before the next one."""
        self._loaded = False
        self.fences.rolled_back()
        self._stored.clear()
        self._to_notify.clear()

    def prepare(self, conn: psycopg.Connection[Any], vehicle_ids: Collection[str] = ()) -> None:
        """Get ready to detect the events of `vehicle_ids`; call first in their transaction.

        Loads the state the first time (and after a failed transaction), then locks the
        vehicles until the commit and reloads those another hub moved on meanwhile: hubs
        sharing a subscription each get some of a vehicle's fixes, and must take turns on
        its state rather than each keep a copy that sees half the track.
        """
        if not self._loaded:
            # Revisions first: state read after them is at least as new, so a hub that
            # commits in between shows up as a revision mismatch, not as lost news.
            self._revisions = repository.state_revisions(conn)
            saved = repository.load_conditions(conn)
            self.detector.load(
                {vid: Conditions.from_json(s) for vid, s in saved.items()},
                repository.newest_fixes(conn),
            )
            # Cleared before the load: a change committed meanwhile is heard, and reloaded.
            self._rules_changed = False
            self.refresh(conn)
            self._loaded = True
        elif self._rules_changed:
            self._rules_changed = False
            self.rules = RuleBook(load_rules(conn))
            log.info("event rules reloaded: %d", len(self.rules))
        self.fences.prepare(conn)
        if vehicle_ids:
            self._take_turn(conn, vehicle_ids)

    def hold_parked(self, rows: list[TelemetryRow], latest: dict[str, TelemetryRow]) -> None:
        """Hold parked cars at their parked point, in place: after `prepare`, before storing.

        `rows` are the batch's fixes and `latest` each vehicle's newest of them (what
        vehicle_state moves to). Both are rewritten, so all the batch stores and evaluates
        (telemetry, vehicle_state, geofences, the live map, events) sees the held point; the
        fix as received stays in each held row's `extra._hub.raw` (hub/parking.py). Rows held
        by an earlier attempt at the same batch are decided afresh.
        """
        if not rows:
            return
        rows[:] = self.detector.hold_parked(rows)
        newest: dict[str, TelemetryRow] = {}
        for row in rows:
            known = newest.get(row.vehicle_id)
            if known is None or row.ts > known.ts:  # the first of equal times, as Batch does
                newest[row.vehicle_id] = row
        latest.update((vid, newest[vid]) for vid in list(latest) if vid in newest)

    def _take_turn(self, conn: psycopg.Connection[Any], vehicle_ids: Collection[str]) -> None:
        repository.lock_vehicles(conn, vehicle_ids)
        revisions = repository.state_revisions(conn, vehicle_ids)
        moved = [vid for vid, rev in revisions.items() if self._revisions.get(vid) != rev]
        if not moved:
            return
        saved = repository.load_conditions(conn, moved)
        self.detector.replace(
            moved,
            {vid: Conditions.from_json(s) for vid, s in saved.items()},
            repository.newest_fixes(conn, moved),
        )
        self.fences.reload_vehicles(conn, moved)
        self._revisions.update((vid, revisions[vid]) for vid in moved)
        self._stats.state_reloads += len(moved)

    def detect(
        self,
        conn: psycopg.Connection[Any],
        *,
        rows: Sequence[TelemetryRow],
        states: Iterable[LiveState],
        outcomes: Iterable[CommandOutcome] = (),
    ) -> int:
        """Find and store the events of one batch, in its transaction; return how many.

        Call `prepare` first with the vehicles of `rows` and `states`.
        """
        now = datetime.now(UTC)
        # Fences first: the condition detector asks them for the speed limit where a car is.
        events = self.fences.evaluate(conn, rows, now=now)
        events += self.detector.apply_fixes(
            rows,
            now=now,
            speed_limit=self.fences.speed_limit,
            on_trip=lambda vehicle_id: vehicle_id in self._rented,
        )
        for state in states:
            # This transaction wrote that revision; if it rolls back, everything reloads.
            self._revisions[state.vehicle_id] = state.rev
            event = self.detector.apply_presence(
                state.vehicle_id,
                online=state.online,
                at=state.last_seen_at if state.online else now,
            )
            if event is not None:
                events.append(event)
        events += command_failed_events(outcomes)
        dirty = self.detector.take_dirty()
        repository.save_conditions(conn, {vid: c.to_json() for vid, c in dirty.items()})
        stored = store_events(conn, events)
        self._stored += stored
        # Rules act in this transaction (commands); notifications leave after the commit.
        self._to_notify += apply_rules(conn, self.rules, stored)
        return len(stored)

    def published(self) -> int:
        """After the commit: send the stored events to the live channel; return how many."""
        stored, self._stored = self._stored, []
        to_notify, self._to_notify = self._to_notify, []
        if to_notify and self.notifications is not None:
            self.notifications.enqueue(to_notify)
        return publish_events(self._redis, stored, self._stats)

    def close(self) -> None:
        """Close the Redis connection pool and the notification queue."""
        self._redis.close()
        if self.notifications is not None:
            self.notifications.close()
