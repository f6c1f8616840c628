"""Every SQL statement of the notifications. The task owns the connection; nothing here commits.

The connection is in autocommit mode: each delivery's record is durable as soon as it is
written, so a worker that dies after sending an email does not send it again on redelivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 - class_row builds these dataclasses at runtime
from typing import TYPE_CHECKING, Any, Final, LiteralString

from psycopg.rows import class_row

if TYPE_CHECKING:
    from collections.abc import Sequence

    import psycopg

# Advisory-lock namespace of "one notification task per event at a time" (any fixed 32-bit
# number; this one is "ntfy" in ASCII, recognisable in pg_locks).
LOCK_NAMESPACE: Final = 0x6E746679


@dataclass(frozen=True, slots=True)
class EventRow:
    """An event as the notifications read it, with its vehicle's plate."""

    id: int
    vehicle_id: str
    plate: str | None
    kind: str
    ts: datetime
    lat: float | None
    lon: float | None
    geofence_id: int | None
    details: dict[str, Any]
    notify: bool
    notified_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    """What is known of one notification (event, channel, target)."""

    channel: str
    target: str
    status: str
    attempts: int


# Two 32-bit keys: the namespace and the event id folded into 31 bits. Two events that fold
# to the same key only wait for each other (the second task finds the lock taken, and the
# sweep runs it again a minute later).
_TRY_LOCK: LiteralString = """
    SELECT pg_try_advisory_lock(%(ns)s::int4, (%(id)s::int8 %% 2147483647)::int4)
"""
_UNLOCK: LiteralString = """
    SELECT pg_advisory_unlock(%(ns)s::int4, (%(id)s::int8 %% 2147483647)::int4)
"""

_EVENT: LiteralString = """
    SELECT e.id, e.vehicle_id, v.plate, e.kind, e.ts, e.lat, e.lon, e.geofence_id, e.details,
           e.notify, e.notified_at, e.created_at
    FROM events AS e LEFT JOIN vehicles AS v ON v.id = e.vehicle_id
    WHERE e.id = %(id)s
"""

_DELIVERIES: LiteralString = """
    SELECT channel, target, status, attempts FROM notification_deliveries
    WHERE event_id = %(id)s
"""

_RECORD: LiteralString = """
    INSERT INTO notification_deliveries AS d (event_id, channel, target, status, attempts,
                                              last_error, sent_at)
    VALUES (%(id)s, %(channel)s, %(target)s, %(status)s, 1, %(error)s,
            CASE WHEN %(status)s = 'sent' THEN now() END)
    ON CONFLICT (event_id, channel, target) DO UPDATE SET
        status = EXCLUDED.status,
        attempts = d.attempts + 1,
        last_error = coalesce(EXCLUDED.last_error, d.last_error),
        sent_at = EXCLUDED.sent_at,
        updated_at = now()
"""

_MARK_NOTIFIED: LiteralString = """
    UPDATE events SET notified_at = now() WHERE id = ANY(%(ids)s) AND notified_at IS NULL
"""

# Events still due, oldest first; the partial index `events_notification_due` holds only
# these. An event whose task is waiting to retry (a `retrying` delivery written within the
# longest backoff) is left to that task.
_DUE: LiteralString = """
    SELECT e.id, e.kind, e.geofence_id FROM events AS e
    WHERE e.notify AND e.notified_at IS NULL
      AND e.created_at < now() - make_interval(secs => %(after_s)s)
      AND e.created_at > now() - make_interval(secs => %(max_age_s)s)
      AND NOT EXISTS (
          SELECT 1 FROM notification_deliveries AS d
          WHERE d.event_id = e.id AND d.status = 'retrying'
            AND d.updated_at > now() - make_interval(secs => %(retry_grace_s)s))
    ORDER BY e.created_at
    LIMIT %(limit)s
"""


@dataclass(frozen=True, slots=True)
class DueEvent:
    """An event whose notifications are not done."""

    id: int
    kind: str
    geofence_id: int | None


def try_lock(conn: psycopg.Connection[Any], event_id: int) -> bool:
    """Take the event's notification lock for this session; False if another task holds it."""
    row = conn.execute(_TRY_LOCK, {"ns": LOCK_NAMESPACE, "id": event_id}).fetchone()
    return bool(row and row[0])


def unlock(conn: psycopg.Connection[Any], event_id: int) -> None:
    """Release the event's notification lock."""
    conn.execute(_UNLOCK, {"ns": LOCK_NAMESPACE, "id": event_id})


def event(conn: psycopg.Connection[Any], event_id: int) -> EventRow | None:
    """The event with this id, or None."""
    with conn.cursor(row_factory=class_row(EventRow)) as cur:
        return cur.execute(_EVENT, {"id": event_id}).fetchone()


def deliveries(conn: psycopg.Connection[Any], event_id: int) -> dict[tuple[str, str], Delivery]:
    """The event's deliveries so far, by (channel, target)."""
    with conn.cursor(row_factory=class_row(Delivery)) as cur:
        rows = cur.execute(_DELIVERIES, {"id": event_id}).fetchall()
    return {(d.channel, d.target): d for d in rows}


def record(  # noqa: PLR0913 - the row's columns
    conn: psycopg.Connection[Any],
    event_id: int,
    *,
    channel: str,
    target: str,
    status: str,
    error: str | None = None,
) -> None:
    """Record one attempt at a delivery: `sent`, `retrying` or `failed`."""
    params = {
        "id": event_id,
        "channel": channel,
        "target": target,
        "status": status,
        "error": error,
    }
    conn.execute(_RECORD, params)


def mark_notified(conn: psycopg.Connection[Any], event_ids: Sequence[int]) -> int:
    """Note that the events' notifications are done; return how many changed."""
    if not event_ids:
        return 0
    return conn.execute(_MARK_NOTIFIED, {"ids": list(event_ids)}).rowcount


def due_events(
    conn: psycopg.Connection[Any],
    *,
    after_s: float,
    max_age_s: float,
    retry_grace_s: float,
    limit: int,
) -> list[DueEvent]:
    """Events to notify created between `max_age_s` and `after_s` ago, still not done."""
    params = {
        "after_s": after_s,
        "max_age_s": max_age_s,
        "retry_grace_s": retry_grace_s,
        "limit": limit,
    }
    with conn.cursor(row_factory=class_row(DueEvent)) as cur:
        return cur.execute(_DUE, params).fetchall()
