"""Apply the database migrations (safe to run again; refuses unknown versions).

Reads FREECAR_DATABASE_URL unless --database-url is given. Exit codes: 0 the schema is up
to date, 1 the database was refused (unknown or edited versions, or a migration failed) or
could not be reached, 2 usage error, 3 with --check when migrations are pending.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

EXIT_REFUSED = 1
EXIT_PENDING = 3


def configure(parser: argparse.ArgumentParser) -> None:
    """Add `freecar migrate` options."""
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (default: FREECAR_DATABASE_URL, which keeps a password off the "
        "command line, where every user can read it)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="apply nothing; exit 3 if migrations are pending (for deploy pipelines)",
    )
    parser.add_argument(
        "--no-timescaledb",
        action="store_true",
        help="create plain tables even if the TimescaleDB extension is available",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    """Run `freecar migrate`."""
    import psycopg

    from core.settings import Settings
    from db.migrate import Migration, MigrationError, migrate

    url: str = args.database_url or Settings().database_url.get_secret_value()

    def announce(migration: Migration) -> None:
        if not args.json:
            print(f"applying {migration.version:04d}_{migration.name}", flush=True)

    try:
        status = migrate(
            url,
            dry_run=args.check,
            use_timescaledb=not args.no_timescaledb,
            on_apply=announce,
        )
    except MigrationError as exc:
        print(f"freecar migrate: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except psycopg.OperationalError as exc:
        print(f"freecar migrate: cannot reach the database: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except psycopg.Error as exc:
        # A malformed URL, or a migration the server refused: nothing was half-applied
        # (each migration runs in its own transaction).
        print(f"freecar migrate: the database refused it: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        print(
            json.dumps(
                {
                    "version": status.version,
                    "applied": list(status.newly_applied),
                    "pending": list(status.pending),
                    "timescaledb": status.timescaledb,
                }
            )
        )
    elif status.pending:
        print(f"schema at version {status.version}; pending: {list(status.pending)}")
    else:
        flavour = "TimescaleDB hypertable" if status.timescaledb else "plain PostgreSQL"
        print(f"schema at version {status.version} ({flavour} telemetry)")
    return EXIT_PENDING if status.pending else 0
