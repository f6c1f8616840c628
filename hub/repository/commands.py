"""`vehicle_commands` as the hub moves them: claimed, sent, acked, confirmed or expired."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, LiteralString

from psycopg.rows import class_row

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from datetime import datetime
    from uuid import UUID

    import psycopg

    from hub.batch import CommandAck

# A vehicle's answer to a command the hub sent: `done` means acked (for lock and unlock,
# confirmation comes with telemetry showing the new state; for the others the ack is the
# end), `rejected`/`failed` are final. Only a command in `sent` moves, and only by its own
# vehicle: a repeated ack, or one from another vehicle, does not.
_RECORD_COMMAND_ACKS: LiteralString = """
    UPDATE vehicle_commands AS c SET
        status = CASE a.status WHEN 'done' THEN 'acked' ELSE a.status END,
        acked_at = a.received_at,
        finished_at = CASE WHEN a.status = 'done' AND c.action IN ('lock', 'unlock')
                           THEN c.finished_at ELSE a.received_at END,
        outcome_reason = a.reason
    FROM unnest(
        %(cmd_id)s::uuid[], %(vehicle_id)s::text[], %(status)s::text[], %(reason)s::text[],
        %(received_at)s::timestamptz[]
    ) AS a(cmd_id, vehicle_id, status, reason, received_at)
    WHERE c.id = a.cmd_id AND c.vehicle_id = a.vehicle_id AND c.status = 'sent'
    RETURNING c.id, c.vehicle_id, c.action, c.status, c.outcome_reason, c.issued_by,
              a.received_at AS at
"""

# Acked lock and unlock commands are confirmed once the vehicle's state shows the lock state
# they asked for: the car's own report, not only its word in the ack.
_CONFIRM_COMMANDS: LiteralString = """
    UPDATE vehicle_commands AS c SET status = 'confirmed', confirmed_at = now(),
                                     finished_at = now()
    FROM vehicle_state AS s
    WHERE c.status = 'acked' AND c.vehicle_id = ANY(%(vehicle_ids)s)
      AND s.vehicle_id = c.vehicle_id
      AND ((c.action = 'lock' AND s.locked) OR (c.action = 'unlock' AND NOT s.locked))
"""

# Claiming marks the commands sent and commits before anything is published (side effects
# after the commit): a second hub skips what is locked and never sees these as queued, so
# each command goes out once. One that cannot be published is put back (`_UNCLAIM`); a hub
# that dies in between leaves it `sent`, and the expiry sweep ends it at its TTL.
# `clock_timestamp()`, not `now()`: a round whose transaction began a moment before a command
# was committed still claims it, and `now()` (the transaction's start) would then date the
# send before the command's creation (seen: 2.5 ms, on a loaded machine).
_CLAIM_COMMANDS: LiteralString = """
    UPDATE vehicle_commands AS c SET status = 'sent', sent_at = clock_timestamp(),
                                     sent_by = %(hub_id)s,
                                     key_id = %(key_id)s
    FROM (SELECT id FROM vehicle_commands
          WHERE status = 'queued'
            AND expires_at > now() + make_interval(secs => %(min_remaining_s)s)
          ORDER BY created_at
          LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED) AS q
    WHERE c.id = q.id
    RETURNING c.id, c.vehicle_id, c.action, c.expires_at
"""

_UNCLAIM_COMMANDS: LiteralString = """
    UPDATE vehicle_commands SET status = 'queued', sent_at = NULL, sent_by = NULL, key_id = NULL
    WHERE id = ANY(%(ids)s) AND status = 'sent'
"""

# A queued command with too little life left to be sent will never go; a sent one whose
# vehicle stayed silent past its TTL (plus a grace for an ack in flight) never will either.
# The car itself refuses a token past its `exp`, so `expired` here means "did not run".
_EXPIRE_COMMANDS: LiteralString = """
    UPDATE vehicle_commands AS c SET
        status = 'expired', finished_at = now(),
        outcome_reason = CASE c.status WHEN 'queued' THEN 'not_sent_in_time'
                                       ELSE 'no_answer_in_time' END
    FROM (SELECT id FROM vehicle_commands
          WHERE (status = 'queued'
                 AND expires_at <= now() + make_interval(secs => %(min_remaining_s)s))
             OR (status = 'sent' AND expires_at <= now() - make_interval(secs => %(grace_s)s))
          FOR UPDATE SKIP LOCKED) AS e
    WHERE c.id = e.id
    RETURNING c.id, c.vehicle_id, c.action, c.status, c.outcome_reason, c.issued_by,
              c.finished_at AS at
"""


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """A command that just moved on, with what the car (or the clock) said."""

    id: UUID
    vehicle_id: str
    action: str
    status: str
    outcome_reason: str | None
    issued_by: str
    at: datetime


def record_command_acks(
    conn: psycopg.Connection[Any], acks: Sequence[CommandAck]
) -> list[CommandOutcome]:
    """Move acknowledged commands on from `sent`; return those that moved."""
    if not acks:
        return []
    with conn.cursor(row_factory=class_row(CommandOutcome)) as cur:
        cur.execute(
            _RECORD_COMMAND_ACKS,
            {
                "cmd_id": [a.cmd_id for a in acks],
                "vehicle_id": [a.vehicle_id for a in acks],
                "status": [a.status for a in acks],
                "reason": [a.reason for a in acks],
                "received_at": [a.received_at for a in acks],
            },
        )
        return cur.fetchall()


def confirm_commands(conn: psycopg.Connection[Any], vehicle_ids: Collection[str]) -> int:
    """Confirm the acked lock/unlock commands of these vehicles that their state bears out."""
    if not vehicle_ids:
        return 0
    return conn.execute(_CONFIRM_COMMANDS, {"vehicle_ids": list(vehicle_ids)}).rowcount


@dataclass(frozen=True, slots=True)
class ClaimedCommand:
    """A command this hub has claimed to send."""

    id: UUID
    vehicle_id: str
    action: str
    expires_at: datetime


def claim_commands(
    conn: psycopg.Connection[Any],
    *,
    hub_id: str,
    key_id: str,
    min_remaining_s: int,
    limit: int,
) -> list[ClaimedCommand]:
    """Mark up to `limit` queued commands sent by this hub; the caller commits, then sends."""
    params = {
        "hub_id": hub_id,
        "key_id": key_id,
        "min_remaining_s": min_remaining_s,
        "limit": limit,
    }
    with conn.cursor(row_factory=class_row(ClaimedCommand)) as cur:
        return cur.execute(_CLAIM_COMMANDS, params).fetchall()


def unclaim_commands(conn: psycopg.Connection[Any], ids: Collection[UUID]) -> int:
    """Put claimed commands that could not be published back in the queue."""
    if not ids:
        return 0
    return conn.execute(_UNCLAIM_COMMANDS, {"ids": list(ids)}).rowcount


def expire_commands(
    conn: psycopg.Connection[Any], *, min_remaining_s: int, grace_s: float
) -> list[CommandOutcome]:
    """End the commands that can no longer run; return them."""
    params = {"min_remaining_s": min_remaining_s, "grace_s": grace_s}
    with conn.cursor(row_factory=class_row(CommandOutcome)) as cur:
        return cur.execute(_EXPIRE_COMMANDS, params).fetchall()
