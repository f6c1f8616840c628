"""Create a staff account from the command line: the first admin, or one when none can sign in.

Reads the password from stdin with --password-stdin (for scripts), else asks twice without
echo. The database comes from FREECAR_DATABASE_URL and must be migrated (`freecar migrate`).

Exit codes: 0 created; 1 refused (email taken, schema missing, database unreachable);
2 usage error (bad email, password too short or too long, passwords differ).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

EXIT_REFUSED = 1
EXIT_USAGE = 2


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
    parser.add_argument("--database-url", help="PostgreSQL URL (default: FREECAR_DATABASE_URL)")
    parser.add_argument("--json", action="store_true", help="print the new account as JSON")


def _read_password(from_stdin: bool) -> str | None:  # noqa: FBT001 - mirrors the flag
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        print("freecar create-admin: the passwords differ", file=sys.stderr)
        return None
    return first


def run(args: argparse.Namespace) -> int:
    """Run `freecar create-admin`."""
    import asyncio
    import json

    from pydantic import TypeAdapter, ValidationError

    from api.users.schemas import StaffCreate

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
        created = asyncio.run(_create(staff, args.database_url))
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


async def _create(staff: object, database_url: str | None) -> tuple[str, str, str]:
    import psycopg
    from psycopg import errors

    from api.errors import ApiError
    from api.identity import Role
    from api.users import service
    from api.users.schemas import StaffCreate
    from core.settings import Settings

    assert isinstance(staff, StaffCreate)
    url = database_url or Settings().database_url.get_secret_value()
    try:
        async with await psycopg.AsyncConnection.connect(url) as conn:
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
