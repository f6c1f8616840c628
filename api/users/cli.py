"""Create a staff account from the command line: the first admin, or one when none can sign in.

The password comes, in this order, from the first line of stdin with --password-stdin
(scripts: `echo "$PW" | freecar create-admin EMAIL --password-stdin`), from
FREECAR_ADMIN_PASSWORD (as containers pass secrets), or from the terminal, asked twice
without echo. With none of them (no terminal: cron, CI, a container) it says so and exits
2. Never put the password on the command line: any user of the machine can read those.

The database comes from FREECAR_DATABASE_URL (or --database-url) and must be migrated
(`freecar migrate`).

Exit codes: 0 created; 1 refused (email taken, schema missing, database unreachable or its
URL malformed); 2 usage error (bad email, password too short or too long, passwords differ,
no way to read a password).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

EXIT_REFUSED = 1
EXIT_USAGE = 2
# The name of the variable, not a password.
PASSWORD_ENV = "FREECAR_ADMIN_PASSWORD"  # noqa: S105


def configure(parser: argparse.ArgumentParser) -> None:
    """Add `freecar create-admin` options."""
    parser.add_argument("email", help="the admin's email; they sign in with it")
    parser.add_argument(
        "--name", default="Administrator", help="display name (default Administrator)"
    )
    parser.add_argument(
        "--role",
        default="admin",
        choices=["admin", "fleet_manager"],
        help="the account's role (default admin)",
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin instead of prompting",
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (default: FREECAR_DATABASE_URL, which keeps a password off the "
        "command line, where every user can read it)",
    )
    parser.add_argument("--json", action="store_true", help="print the new account as JSON")


def _read_password(from_stdin: bool) -> str | None:  # noqa: FBT001 - mirrors the flag
    """The password from stdin, the environment or the terminal; None (said why) if none."""
    import os

    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV]
    if not _has_terminal():
        print(
            "freecar create-admin: no terminal to ask the password on; pipe it in with "
            f"--password-stdin or set {PASSWORD_ENV}",
            file=sys.stderr,
        )
        return None
    import getpass

    try:
        first = getpass.getpass("password: ")
        again = getpass.getpass("again: ")
    except EOFError:  # Ctrl-D at the prompt
        print("\nfreecar create-admin: no password given", file=sys.stderr)
        return None
    if again != first:
        print("freecar create-admin: the passwords differ", file=sys.stderr)
        return None
    return first


def _has_terminal() -> bool:
    """Whether getpass can ask without echo: the controlling terminal, or stdin if a tty."""
    import os

    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return sys.stdin is not None and sys.stdin.isatty()
    os.close(fd)
    return True


def run(args: argparse.Namespace) -> int:
    """Run `freecar create-admin`."""
    import asyncio
    import json

    from pydantic import TypeAdapter, ValidationError

    from api.users.schemas import StaffCreate
    from core.settings import Settings

    # Before asking for a password: a missing FREECAR_DATABASE_URL fails here, with its name.
    url: str = args.database_url or Settings().database_url.get_secret_value()
    password = _read_password(args.password_stdin)
    if password is None:
        return EXIT_USAGE
    try:
        staff = TypeAdapter(StaffCreate).validate_python(
            {
                "email": args.email,
                "password": password,
                "role": args.role,
                "display_name": args.name,
            }
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"freecar create-admin: {problems}", file=sys.stderr)
        return EXIT_USAGE
    try:
        created = asyncio.run(_create(staff, url))
    except _RefusedError as exc:
        print(f"freecar create-admin: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        print(json.dumps({"id": str(created[0]), "email": created[1], "role": created[2]}))
    else:
        print(f"created {created[2]} {created[1]} ({created[0]}); sign in at POST /v1/auth/staff")
    return 0


class _RefusedError(Exception):
    """The account could not be created; the message says why."""


async def _create(staff: object, url: str) -> tuple[str, str, str]:
    import psycopg
    from psycopg import errors

    from api.errors import ApiError
    from api.identity import Role
    from api.users import service
    from api.users.schemas import StaffCreate

    assert isinstance(staff, StaffCreate)
    try:
        conn = await psycopg.AsyncConnection.connect(url)
    except psycopg.OperationalError as exc:
        raise _RefusedError(f"cannot reach the database: {exc}") from exc
    except psycopg.ProgrammingError as exc:  # libpq could not parse it
        raise _RefusedError(f"bad database URL: {exc}") from exc
    try:
        async with conn:
            user = await service.create_staff(
                conn,
                email=str(staff.email),
                password=staff.password,
                role=Role(staff.role),
                display_name=staff.display_name,
                actor=None,
                client=None,
            )
            await conn.commit()
    except ApiError as exc:
        raise _RefusedError(f"{exc.message} ({exc.code})") from exc
    except errors.UndefinedTable as exc:
        raise _RefusedError("the schema is missing; run `freecar migrate` first") from exc
    except psycopg.OperationalError as exc:
        raise _RefusedError(f"cannot reach the database: {exc}") from exc
    return str(user.id), user.email or "", user.role.value
