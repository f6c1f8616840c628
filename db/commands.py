"""Commands to vehicles: issue one, read it, wait for its outcome.

The API and the `freecar command` CLI use this module; neither imports the hub. Issuing a
command inserts a `vehicle_commands` row; a trigger NOTIFYs the hubs' dispatchers when it
commits, and one hub claims, signs and publishes it. Every status change NOTIFYs too, so a
caller can wait for the outcome without polling:

    command = issue_command(conn, "car-1", Action.UNLOCK, issued_by="user:42", ttl_s=30)
    conn.commit()                                   # the hubs hear of it only now
    final = wait_for_command(listen_conn, command.id, timeout_s=30)

The caller owns the transaction: nothing here commits, except that waiting needs an
autocommit connection (LISTEN takes effect only outside a transaction).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, LiteralString

from psycopg import sql
from psycopg.rows import class_row

from protocol.commands import Action
from protocol.schema import MAX_COMMAND_TTL_S

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from uuid import UUID

    import psycopg

# Channels the 0020 migration's trigger notifies on.
COMMANDS_CHANNEL: Final = "freecar_commands"
STATUS_CHANNEL: Final = "freecar_command_status"

# A rider's unlock is useless a minute later (they have walked away or tapped again), and
# a short life bounds how long a stolen or replayed token could matter.
DEFAULT_TTL_S: Final = 60
# Shorter than this and the hub could not sign, publish and have the car act in time.
MIN_TTL_S: Final = 5
# Longest a reason or issuer may be: they are audit text, not documents.
_MAX_TEXT: Final = 500


class CommandStatus(StrEnum):
    """Where a command is in its life: queued -> sent -> acked -> confirmed, or an end."""

    QUEUED = "queued"  # stored, no hub has published it yet
    SENT = "sent"  # a hub published it and the broker took it
    ACKED = "acked"  # the vehicle says it carried it out
    CONFIRMED = "confirmed"  # the vehicle's telemetry shows the new state
    REJECTED = "rejected"  # the vehicle refused it (bad signature, expired, unsafe...)
    FAILED = "failed"  # the vehicle tried and could not
    EXPIRED = "expired"  # its TTL passed before it was sent or answered


FINAL_STATUSES: Final = frozenset(
    {CommandStatus.CONFIRMED, CommandStatus.REJECTED, CommandStatus.FAILED, CommandStatus.EXPIRED}
)

CONFIRMABLE_ACTIONS: Final = frozenset({Action.LOCK, Action.UNLOCK})
"""Actions whose effect shows in telemetry (the lock state). For the others (honk, locate,
immobilize...) the vehicle's ack is the last word: `acked` is their final status."""


class CommandError(Exception):
    """A command could not be issued; `code` is stable, for API errors and exit codes."""

    code = "command_error"


class UnknownVehicleError(CommandError):
    """No vehicle has that id."""

    code = "unknown_vehicle"


class RetiredVehicleError(CommandError):
    """The vehicle is retired: it takes no commands."""

    code = "vehicle_retired"


class InvalidCommandError(CommandError):
    """The request itself is wrong (TTL out of range, text too long)."""

    code = "invalid_command"


@dataclass(frozen=True, slots=True)
class Command:
    """One `vehicle_commands` row: the command and its audit trail."""

    id: UUID
    vehicle_id: str
    action: str
    status: str
    issued_by: str
    reason: str
    correlation_id: str | None
    expires_at: datetime
    created_at: datetime
    sent_at: datetime | None
    acked_at: datetime | None
    confirmed_at: datetime | None
    finished_at: datetime | None
    sent_by: str | None
    key_id: str | None
    outcome_reason: str | None

    @property
    def finished(self) -> bool:
        """Whether nothing more will happen to this command."""
        if self.status in FINAL_STATUSES:
            return True
        return self.status == CommandStatus.ACKED and self.action not in CONFIRMABLE_ACTIONS


# Retired vehicles take no commands; the row is only written for a vehicle that may get one.
_ISSUE: LiteralString = """
    INSERT INTO vehicle_commands (vehicle_id, action, issued_by, reason, correlation_id,
                                  expires_at)
    SELECT v.id, %(action)s, %(issued_by)s, %(reason)s, %(correlation_id)s,
           now() + make_interval(secs => %(ttl_s)s)
    FROM vehicles AS v
    WHERE v.id = %(vehicle_id)s AND v.status <> 'retired'
    RETURNING id, vehicle_id, action, status, issued_by, reason, correlation_id, expires_at,
              created_at, sent_at, acked_at, confirmed_at, finished_at, sent_by, key_id,
              outcome_reason
"""

_VEHICLE_STATUS: LiteralString = "SELECT status FROM vehicles WHERE id = %(vehicle_id)s"

_GET: LiteralString = """
    SELECT id, vehicle_id, action, status, issued_by, reason, correlation_id, expires_at,
           created_at, sent_at, acked_at, confirmed_at, finished_at, sent_by, key_id,
           outcome_reason
    FROM vehicle_commands WHERE id = %(id)s
"""

_LIST_FOR_VEHICLE: LiteralString = """
    SELECT id, vehicle_id, action, status, issued_by, reason, correlation_id, expires_at,
           created_at, sent_at, acked_at, confirmed_at, finished_at, sent_by, key_id,
           outcome_reason
    FROM vehicle_commands WHERE vehicle_id = %(vehicle_id)s
    ORDER BY created_at DESC LIMIT %(limit)s
"""

_LISTEN_STATUS: Final = sql.SQL("LISTEN {}").format(sql.Identifier(STATUS_CHANNEL))
_UNLISTEN_STATUS: Final = sql.SQL("UNLISTEN {}").format(sql.Identifier(STATUS_CHANNEL))


def _issue_params(  # noqa: PLR0913 - the columns a caller chooses
    vehicle_id: str,
    *,
    action: Action,
    issued_by: str,
    reason: str,
    ttl_s: int,
    correlation_id: str | None,
) -> dict[str, Any]:
    if not MIN_TTL_S <= ttl_s <= MAX_COMMAND_TTL_S:
        raise InvalidCommandError(f"ttl_s must be between {MIN_TTL_S} and {MAX_COMMAND_TTL_S}")
    if not issued_by or len(issued_by) > _MAX_TEXT:
        raise InvalidCommandError(f"issued_by must hold 1 to {_MAX_TEXT} characters")
    if len(reason) > _MAX_TEXT or (correlation_id is not None and len(correlation_id) > _MAX_TEXT):
        raise InvalidCommandError(f"reason and correlation_id hold at most {_MAX_TEXT} characters")
    return {
        "vehicle_id": vehicle_id,
        "action": Action(action).value,
        "issued_by": issued_by,
        "reason": reason,
        "correlation_id": correlation_id,
        "ttl_s": ttl_s,
    }


def _not_issued(vehicle_id: str, status: object) -> CommandError:
    if status is None:
        return UnknownVehicleError(f"no vehicle {vehicle_id!r}")
    return RetiredVehicleError(f"vehicle {vehicle_id!r} is retired")


def issue_command(  # noqa: PLR0913 - keyword-only audit fields
    conn: psycopg.Connection[Any],
    vehicle_id: str,
    action: Action,
    *,
    issued_by: str,
    reason: str = "",
    ttl_s: int = DEFAULT_TTL_S,
    correlation_id: str | None = None,
) -> Command:
    """Queue a command; hubs hear of it when the caller's transaction commits."""
    params = _issue_params(
        vehicle_id,
        action=action,
        issued_by=issued_by,
        reason=reason,
        ttl_s=ttl_s,
        correlation_id=correlation_id,
    )
    with conn.cursor(row_factory=class_row(Command)) as cur:
        command = cur.execute(_ISSUE, params).fetchone()
    if command is None:
        row = conn.execute(_VEHICLE_STATUS, params).fetchone()
        raise _not_issued(vehicle_id, None if row is None else row[0])
    return command


def get_command(conn: psycopg.Connection[Any], command_id: UUID) -> Command | None:
    """The command with this id, or None."""
    with conn.cursor(row_factory=class_row(Command)) as cur:
        return cur.execute(_GET, {"id": command_id}).fetchone()


def list_commands(
    conn: psycopg.Connection[Any], vehicle_id: str, *, limit: int = 50
) -> list[Command]:
    """A vehicle's latest commands, newest first."""
    with conn.cursor(row_factory=class_row(Command)) as cur:
        return cur.execute(_LIST_FOR_VEHICLE, {"vehicle_id": vehicle_id, "limit": limit}).fetchall()


def wait_for_command(
    conn: psycopg.Connection[Any],
    command_id: UUID,
    *,
    timeout_s: float,
    on_change: Callable[[Command], None] | None = None,
) -> Command:
    """Wait until the command is finished or `timeout_s` passes; return its latest row.

    `conn` must be in autocommit mode. `on_change` sees every status the command takes,
    starting with the one it has now.
    """
    if not conn.autocommit:
        raise ValueError("waiting for a command needs an autocommit connection")
    deadline = time.monotonic() + timeout_s
    conn.execute(_LISTEN_STATUS)
    try:
        seen: str | None = None
        while True:
            # Read after LISTEN: a change that commits in between is either in this read or
            # in a notification, never lost.
            command = get_command(conn, command_id)
            if command is None:
                raise LookupError(f"no command {command_id}")
            if command.status != seen:
                seen = command.status
                if on_change is not None:
                    on_change(command)
            remaining = deadline - time.monotonic()
            if command.finished or remaining <= 0:
                return command
            for _ in conn.notifies(timeout=remaining, stop_after=1):
                pass
    finally:
        conn.execute(_UNLISTEN_STATUS)
