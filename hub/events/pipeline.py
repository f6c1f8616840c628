"""Events in the hub's unit of work: detect in the batch's transaction, publish after commit.

The writer calls `prepare()` first in each batch's transaction and `detect()` after the
fixes and states are written (fixes, presence changes and command outcomes in; geofence and
status events, and the detectors' changed state, stored in the same transaction), then
`published()` after the commit. A transaction that fails leaves the detectors' memory ahead
of the database, so `rolled_back()` makes the next batch reload what the database holds
first: the retried batch then raises its events again, once.

A bug in detection never stops ingest (Traccar's rule: a failing handler is logged and the
stream goes on). Loading runs under a savepoint; if it fails, the batch is stored without
events and loading is tried again later. Detection (conditions, fences, rules, what to fan
out) runs under a savepoint too; if it fails, the batch's vehicles are put back as they
were before it (from the database and the state read in `prepare`), then detected one
vehicle at a time, each under its own savepoint: only the vehicle whose detection fails
loses this batch's events. Each failure is logged with its vehicle and counted
(`detection_errors`); a vehicle that failed is detected on its own in later batches until it
succeeds again, so one broken vehicle does not make every batch slow.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypeVar

import redis

from db.event_rules import EVENT_RULES_CHANNEL, LISTEN_EVENT_RULES, RuleBook, load_rules
from db.geofences.model import VehiclePosition
from hub.database import is_outage
from hub.events.actions import apply_rules
from hub.events.conditions import ConditionDetector, Conditions
from hub.events.fences import FenceEvents
from hub.events.model import Event, EventKind
from hub.fanout import LIVE_CHANNEL, REDIS_TIMEOUT_S
from hub.repository import event_state, vehicle_state

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

    import psycopg

    from db.telemetry import TelemetryRow
    from hub.events.actions import NotificationQueue
    from hub.repository.commands import CommandOutcome
    from hub.repository.vehicle_state import LiveState, StateMark
    from hub.stats import HubStats

log = logging.getLogger(__name__)

# Command outcomes that are failures worth an event (`acked`/`confirmed` are success).
FAILED_COMMAND_STATUSES: Final = frozenset({"rejected", "failed", "expired"})
# After loading the event state failed, batches go without events this long before the next
# try: a full load per batch would slow ingest down while whatever broke it is fixed.
LOAD_RETRY_S: Final = 10.0
# Vehicles whose detection failed and that are detected on their own until it succeeds:
# past this many, the list starts over (they are then found again the slow way).
SUSPECTS_LIMIT: Final = 10_000


class _Found(NamedTuple):
    """What one detection pass stored: events with their ids, and those to notify."""

    stored: list[tuple[int, Event]]
    to_notify: list[int]


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
    # Events of vehicles not in the inventory are not stored; the rest come back by their
    # position in `events` (two events may share vehicle, kind and time: one fix, two fences).
    return [(r.id, events[r.position]) for r in event_state.store_events(conn, events)]


class EventPipeline:
    """Status events for one hub: detection in the batch transaction, fan-out after it."""

    def __init__(
        self,
        redis_url: str,
        *,
        stats: HubStats,
        detector: ConditionDetector | None = None,
        notifications: NotificationQueue | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.detector = detector or ConditionDetector()
        self.fences = FenceEvents(notify_horizon_s=self.detector.config.notify_horizon_s)
        self.rules = RuleBook()
        self.notifications = notifications
        self._to_notify: list[int] = []
        self._stats = stats
        self._clock = clock
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        self._loaded = False
        self._load_after = float("-inf")
        """Loading failed: no new try before this (monotonic seconds)."""
        self._ready = False
        """The state for this transaction is loaded: `detect` may run."""
        self._rules_changed = False
        """A NOTIFY said the rules changed: `prepare` reloads them (see `listen`)."""
        self._revisions: dict[str, int] = {}
        """Each vehicle state's revision as this hub last wrote or read it (see `prepare`)."""
        self._before: dict[str, StateMark] = {}
        """The batch's vehicles' states as they were before it (read in `prepare`)."""
        self._suspects: set[str] = set()
        """Vehicles whose detection failed: detected one by one until it succeeds."""
        self._rented: set[str] = set()
        self._stored: list[tuple[int, Event]] = []

    def refresh(self, conn: psycopg.Connection[Any]) -> None:
        """Re-read which vehicles have a trip under way and the event rules (periodic sweep)."""
        try:
            with conn.transaction():
                rented = event_state.rented_vehicles(conn)
                rules = RuleBook(load_rules(conn))
        except Exception as exc:
            if is_outage(exc):
                raise
            self._failed("refreshing rules and trips", exc)
            return
        self._rented, self.rules = rented, rules

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
        self._ready = False
        self.fences.rolled_back()
        self._stored.clear()
        self._to_notify.clear()

    def prepare(self, conn: psycopg.Connection[Any], vehicle_ids: Collection[str] = ()) -> None:
        """Get ready to detect the events of `vehicle_ids`; call first in their transaction.

        Locks the vehicles until the commit (hubs sharing a subscription each get some of a
        vehicle's fixes, and must take turns on its state rather than each keep a copy that
        sees half the track), then loads the state the first time (and after a failed
        transaction) and reloads the vehicles another hub moved on meanwhile. If loading
        fails, this transaction detects nothing (`detect` does nothing) and ingest goes on.
        """
        if vehicle_ids:
            event_state.lock_vehicles(conn, vehicle_ids)
        self._ready = False
        if not self._loaded and self._clock() < self._load_after:
            return
        try:
            with conn.transaction():
                self._load(conn, vehicle_ids)
        except Exception as exc:
            if is_outage(exc):
                raise
            self._loaded = False
            self._load_after = self._clock() + LOAD_RETRY_S
            self._failed("loading event state (this batch goes without events)", exc)
            return
        self._ready = True

    def _load(self, conn: psycopg.Connection[Any], vehicle_ids: Collection[str]) -> None:
        if not self._loaded:
            # Revisions first: state read after them is at least as new, so a hub that
            # commits in between shows up as a revision mismatch, not as lost news.
            self._revisions = vehicle_state.state_revisions(conn)
            self.detector.load(
                _conditions(event_state.load_conditions(conn)), vehicle_state.newest_fixes(conn)
            )
            # Cleared before the load: a change committed meanwhile is heard, and reloaded.
            self._rules_changed = False
            self._rented = event_state.rented_vehicles(conn)
            self.rules = RuleBook(load_rules(conn))
            self._loaded = True
        elif self._rules_changed:
            self._rules_changed = False
            self.rules = RuleBook(load_rules(conn))
            log.info("event rules reloaded: %d", len(self.rules))
        self.fences.prepare(conn)
        self._before = vehicle_state.state_marks(conn, vehicle_ids) if vehicle_ids else {}
        moved = [vid for vid, mark in self._before.items() if self._revisions.get(vid) != mark.rev]
        if moved:
            self._reload(conn, moved)
            self._revisions.update((vid, self._before[vid].rev) for vid in moved)
            self._stats.state_reloads += len(moved)

    def hold_parked(self, rows: Sequence[TelemetryRow]) -> list[TelemetryRow]:
        """The rows to store: parked cars at their parked point (hub/parking.py), one for one.

        Call after `prepare` and before anything stores or evaluates the rows, so telemetry,
        vehicle_state, geofences, the live map and events all see the held point; the fix as
        received stays in each held row's `extra._hub.raw`. Rows held by an earlier attempt
        at the same batch are decided afresh.
        """
        return self.detector.hold_parked(rows) if rows else list(rows)

    def _reload(self, conn: psycopg.Connection[Any], vehicle_ids: Sequence[str]) -> None:
        """Take these vehicles' event state as stored before this batch (`self._before`)."""
        marks = [self._before[vid] for vid in vehicle_ids if vid in self._before]
        self.detector.replace(
            vehicle_ids,
            _conditions(event_state.load_conditions(conn, vehicle_ids)),
            {m.vehicle_id: (m.ts_ms / 1000, m.seq) for m in marks},
        )
        self.fences.restore_vehicles(
            conn,
            vehicle_ids,
            [
                VehiclePosition(m.vehicle_id, m.ts, m.lat, m.lon)
                for m in marks
                if m.lat is not None and m.lon is not None
            ],
        )

    def detect(
        self,
        conn: psycopg.Connection[Any],
        *,
        rows: Sequence[TelemetryRow],
        states: Iterable[LiveState],
        outcomes: Iterable[CommandOutcome] = (),
    ) -> int:
        """Find and store the events of one batch, in its transaction; return how many.

        Call `prepare` first with the vehicles of `rows` and `states`. Never fails for a bug
        in detection (see the module's docstring); a database outage still raises.
        """
        batch_states = list(states)
        batch_outcomes = list(outcomes)
        for state in batch_states:
            # This transaction wrote that revision; if it rolls back, everything reloads.
            self._revisions[state.vehicle_id] = state.rev
        if not self._ready:
            return 0
        before = len(self._stored)
        now = datetime.now(UTC)
        vehicles = {
            *(row.vehicle_id for row in rows),
            *(state.vehicle_id for state in batch_states),
            *(outcome.vehicle_id for outcome in batch_outcomes),
        }
        alone = self._suspects & vehicles
        together = vehicles - alone
        if together:
            try:
                with conn.transaction():
                    found = self._detect(
                        conn,
                        rows=[row for row in rows if row.vehicle_id in together],
                        states=[state for state in batch_states if state.vehicle_id in together],
                        outcomes=[o for o in batch_outcomes if o.vehicle_id in together],
                        now=now,
                    )
            except Exception as exc:
                if is_outage(exc):
                    raise
                log.warning(
                    "event detection failed for a batch of %d vehicles (%r); one by one now",
                    len(together),
                    exc,
                )
                if not self._restore(conn, sorted(together)):
                    return 0
                alone = vehicles
            else:
                self._keep(found)
        if alone:
            self._one_by_one(
                conn,
                sorted(alone),
                rows=rows,
                states=batch_states,
                outcomes=batch_outcomes,
                now=now,
            )
        return len(self._stored) - before

    def _one_by_one(  # noqa: PLR0913 - one batch's inputs
        self,
        conn: psycopg.Connection[Any],
        vehicle_ids: Sequence[str],
        *,
        rows: Sequence[TelemetryRow],
        states: Sequence[LiveState],
        outcomes: Sequence[CommandOutcome],
        now: datetime,
    ) -> None:
        """Detect vehicle by vehicle, each under a savepoint; a failure costs one vehicle."""
        rows_of = _by_vehicle(rows)
        states_of = _by_vehicle(states)
        outcomes_of = _by_vehicle(outcomes)
        for vehicle_id in vehicle_ids:
            try:
                with conn.transaction():
                    found = self._detect(
                        conn,
                        rows=rows_of.get(vehicle_id, []),
                        states=states_of.get(vehicle_id, []),
                        outcomes=outcomes_of.get(vehicle_id, []),
                        now=now,
                    )
            except Exception as exc:
                if is_outage(exc):
                    raise
                self._failed(f"event detection for vehicle {vehicle_id}", exc)
                if len(self._suspects) >= SUSPECTS_LIMIT:
                    self._suspects.clear()
                self._suspects.add(vehicle_id)
                if not self._restore(conn, [vehicle_id]):
                    return
                continue
            self._suspects.discard(vehicle_id)
            self._keep(found)

    def _restore(self, conn: psycopg.Connection[Any], vehicle_ids: Sequence[str]) -> bool:
        """Put vehicles back as they were before this batch, after their detection failed.

        False if even that fails: then the rest of this batch goes without events, and
        everything is loaded afresh for the next one.
        """
        try:
            with conn.transaction():
                self._reload(conn, vehicle_ids)
        except Exception as exc:
            if is_outage(exc):
                raise
            self._failed("restoring event state (the rest of this batch goes without)", exc)
            self._loaded = False
            self._ready = False
            return False
        return True

    def _detect(
        self,
        conn: psycopg.Connection[Any],
        *,
        rows: Sequence[TelemetryRow],
        states: Sequence[LiveState],
        outcomes: Sequence[CommandOutcome],
        now: datetime,
    ) -> _Found:
        # Fences first: the condition detector asks them for the speed limit where a car is.
        events = self.fences.evaluate(conn, rows, now=now)
        events += self.detector.apply_fixes(
            rows,
            now=now,
            speed_limit=self.fences.speed_limit,
            on_trip=lambda vehicle_id: vehicle_id in self._rented,
        )
        for state in states:
            event = self.detector.apply_presence(
                state.vehicle_id,
                online=state.online,
                at=state.last_seen_at if state.online else now,
            )
            if event is not None:
                events.append(event)
        events += command_failed_events(outcomes)
        dirty = self.detector.take_dirty()
        event_state.save_conditions(conn, {vid: c.to_json() for vid, c in dirty.items()})
        stored = store_events(conn, events)
        # Rules act in this transaction (commands); notifications leave after the commit.
        return _Found(stored, apply_rules(conn, self.rules, stored))

    def _keep(self, found: _Found) -> None:
        self._stored += found.stored
        self._to_notify += found.to_notify

    def _failed(self, what: str, exc: Exception) -> None:
        self._stats.detection_errors += 1
        log.error("%s failed; ingest goes on", what, exc_info=exc)

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


def _conditions(saved: Mapping[str, dict[str, Any]]) -> dict[str, Conditions]:
    """Stored condition records; one that cannot be read starts afresh (and says so)."""
    records: dict[str, Conditions] = {}
    for vehicle_id, data in saved.items():
        try:
            records[vehicle_id] = Conditions.from_json(data)
        except (TypeError, ValueError) as exc:
            log.warning("conditions of %s unreadable (%s); starting afresh", vehicle_id, exc)
    return records


class _OfVehicle(Protocol):
    @property
    def vehicle_id(self) -> str: ...


_V = TypeVar("_V", bound=_OfVehicle)


def _by_vehicle(items: Iterable[_V]) -> dict[str, list[_V]]:
    grouped: defaultdict[str, list[_V]] = defaultdict(list)
    for item in items:
        grouped[item.vehicle_id].append(item)
    return grouped
