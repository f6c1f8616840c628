"""Send a command to a vehicle (lock, unlock, locate, honk, immobilize, mobilize).

Queues the command in the database; a running `freecar hub` signs and sends it. With
--wait, follows it until the car confirms, refuses or fails it, or its TTL passes:

    $ freecar command sh-0001 unlock --wait
    command 3f6c...: queued
      sent       +0.03s  by hub-a (key k4.pid.…)
      acked      +0.41s
      confirmed  +0.62s

When it was not carried out, the last line (on stderr) says why: the car refused it and
its reason, no hub sent it (is `freecar hub` running?), or the car never answered, with
whether it is online and since when:

    freecar command: expired unanswered: sent at 2026-03-02 09:01:12 UTC by hub-a, the car
    never acknowledged it; sh-0001 is offline since 2026-03-02 08:57:40 UTC (last seen ...)

Reads FREECAR_DATABASE_URL. Exit codes: 0 queued (or, with --wait, carried out: confirmed,
or acked for actions telemetry cannot show); 1 the car refused or failed it, or it expired;
2 bad arguments or unknown/retired vehicle; 3 the database is unreachable; 4 --wait ran out
of time before the command finished.
"""

from __future__ import annotations

import getpass
import json
import sys
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from db.commands import Command
    from db.vehicle_presence import Presence

EXIT_NOT_CARRIED_OUT = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3
EXIT_TIMEOUT = 4
# Actions as the protocol names them (protocol/commands.py `Action`); listed here so that
# `--help` does not import the protocol package.
ACTIONS = ("lock", "unlock", "locate", "honk", "immobilize", "mobilize")
# Seconds --wait allows beyond the command's TTL: a hub gives an unanswered command
# FREECAR_HUB_COMMAND_ANSWER_GRACE_S (10 s) past its TTL before it expires it, and its sweep
# runs every second; waiting a little longer lets the CLI report the hub's verdict.
WAIT_SLACK_S = 15.0


def configure(parser: argparse.ArgumentParser) -> None:
    """Add `freecar command` arguments."""
    parser.add_argument("vehicle_id", metavar="VEHICLE_ID", help="the vehicle to command")
    parser.add_argument("action", choices=ACTIONS, help="what the vehicle should do")
    parser.add_argument(
        "--ttl",
        type=int,
        default=60,
        metavar="SECONDS",
        help="the command is void after this many seconds, sent or not (5-3600; default 60)",
    )
    parser.add_argument("--reason", default="", help="why, for the audit trail")
    parser.add_argument(
        "--issued-by",
        help="who asks, for the audit trail (default operator:<your login name>)",
    )
    parser.add_argument(
        "--wait", action="store_true", help="follow the command until it is finished"
    )
    parser.add_argument("--json", action="store_true", help="print the final row as JSON")


def run(args: argparse.Namespace) -> int:
    """Queue the command and, with --wait, follow it."""
    import psycopg
    from pydantic import ValidationError

    from core.settings import Settings
    from db.commands import CommandError, issue_command, wait_for_command
    from db.vehicle_presence import presence
    from protocol.commands import Action

    try:
        url = Settings().database_url.get_secret_value()
    except ValidationError as exc:
        print(f"freecar command: bad configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    issued_by = args.issued_by or f"operator:{getpass.getuser()}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            command = issue_command(
                conn,
                args.vehicle_id,
                Action(args.action),
                issued_by=issued_by,
                reason=args.reason,
                ttl_s=args.ttl,
            )
            car = None
            if args.wait:
                printer = _Progress(quiet=args.json)
                command = wait_for_command(
                    conn, command.id, timeout_s=args.ttl + WAIT_SLACK_S, on_change=printer
                )
                car = presence(conn, command.vehicle_id)
    except CommandError as exc:
        print(f"freecar command: {exc} ({exc.code})", file=sys.stderr)
        return EXIT_USAGE
    except psycopg.OperationalError as exc:
        print(f"freecar command: cannot reach the database: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    if args.json:
        print(json.dumps(_as_json(command), indent=2))
    elif not args.wait:
        print(f"command {command.id}: queued (expires {command.expires_at.isoformat()})")
    code = _exit_code(command, waited=args.wait)
    if code != 0:
        waited = args.ttl + WAIT_SLACK_S
        print(f"freecar command: {verdict(command, car, waited_s=waited)}", file=sys.stderr)
    return code


def verdict(command: Command, car: Presence | None, *, waited_s: float) -> str:
    """Why a command was not carried out, in a sentence for the person who sent it."""
    from db.commands import CommandStatus

    reason = command.outcome_reason or "no reason given"
    sent = f"sent at {_when(command.sent_at)} by {command.sent_by}"
    no_hub = "is `freecar hub` running on this database?"
    where = _presence(command.vehicle_id, car)
    match command.status:
        case CommandStatus.REJECTED:
            text = f"the car refused it: {reason}"
        case CommandStatus.FAILED:
            text = f"the car could not do it: {reason}"
        case CommandStatus.EXPIRED if command.sent_at is None:
            text = f"expired: no hub sent it in time ({no_hub})"
        case CommandStatus.EXPIRED:
            text = f"expired unanswered: {sent}, the car never acknowledged it; {where}"
        case CommandStatus.QUEUED:
            text = f"still queued after {waited_s:.0f} s: no hub has sent it ({no_hub}); {where}"
        case CommandStatus.SENT:
            text = f"{sent}, no answer from the car after {waited_s:.0f} s; {where}"
        case _:
            text = f"{command.status}, but the car's telemetry has not shown it yet; {where}"
    return text


def _presence(vehicle_id: str, car: Presence | None) -> str:
    if car is None:
        return f"{vehicle_id} has never reported"
    if car.online:
        return f"{vehicle_id} is online, last seen {_when(car.last_seen_at)}"
    return (
        f"{vehicle_id} is offline since {_when(car.online_changed_at)} "
        f"(last seen {_when(car.last_seen_at)})"
    )


def _when(moment: datetime | None) -> str:
    from datetime import UTC

    if moment is None:
        return "an unknown time"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _exit_code(command: Command, *, waited: bool) -> int:
    from db.commands import CommandStatus

    if not waited:
        return 0
    if not command.finished:
        return EXIT_TIMEOUT
    if command.status in {CommandStatus.CONFIRMED, CommandStatus.ACKED}:
        return 0
    return EXIT_NOT_CARRIED_OUT


class _Progress:
    """Prints each status a command takes, with the time since it was created."""

    def __init__(self, *, quiet: bool) -> None:
        self._quiet = quiet
        self._first = True

    def __call__(self, command: Command) -> None:
        if self._quiet:
            return
        if self._first:
            self._first = False
            print(f"command {command.id}: {command.status}", flush=True)
            return
        changed_at = {
            "sent": command.sent_at,
            "acked": command.acked_at,
            "confirmed": command.confirmed_at,
        }.get(command.status, command.finished_at)
        offset = ""
        if changed_at is not None:
            offset = f"+{(changed_at - command.created_at).total_seconds():.2f}s"
        detail = ""
        if command.status == "sent":
            detail = f"by {command.sent_by} (key {command.key_id})"
        elif command.outcome_reason:
            detail = command.outcome_reason
        print(f"  {command.status:<10} {offset:>8}  {detail}".rstrip(), flush=True)


def _as_json(command: Command) -> dict[str, Any]:
    def plain(value: object) -> object:
        if isinstance(value, datetime):
            return value.isoformat()
        return value if value is None or isinstance(value, str) else str(value)

    return {name: plain(value) for name, value in asdict(command).items()}
