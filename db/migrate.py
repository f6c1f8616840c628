"""Forward-only, versioned SQL migrations.

Migrations are the `NNNN_name.sql` files of `db/migrations/`, applied in order, each in its
own transaction, and recorded in `schema_migrations` with a checksum. Running again applies
only what is missing. A database that has a version this code does not know, or whose
applied migration has been edited since, is refused rather than guessed at.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, LiteralString, cast

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

# Any fixed 64-bit number works; this one is "freecar" in ASCII, so it is recognisable in
# pg_locks when two processes migrate at once and one waits for the other.
MIGRATION_LOCK_KEY = 0x66726565636172


class MigrationError(Exception):
    """The database cannot be brought to this code's schema safely."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file of the schema's history."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file, to notice a migration edited after it was applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """What `migrate` found and did."""

    applied: tuple[int, ...]
    newly_applied: tuple[int, ...]
    pending: tuple[int, ...]
    timescaledb: bool

    @property
    def version(self) -> int:
        """The schema version the database is at now (0 when empty)."""
        return max(self.applied, default=0)


def load_migrations() -> list[Migration]:
    """Read every migration shipped with the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("db.migrations").iterdir():
        match = MIGRATION_FILE.match(entry.name)
        if match is None:
            continue
        found.append(
            Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8"))
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


_CREATE_HISTORY: LiteralString = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        checksum   text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    )
"""


def _applied(conn: psycopg.Connection[tuple[object, ...]]) -> dict[int, str]:
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {cast("int", version): str(checksum) for version, checksum in rows}


def _check_history(known: Sequence[Migration], applied: dict[int, str]) -> None:
    by_version = {m.version: m for m in known}
    unknown = sorted(set(applied) - set(by_version))
    if unknown:
        raise MigrationError(
            f"the database has schema versions {unknown} that this code does not know "
            f"(it knows up to {max(by_version, default=0)}); upgrade the code, do not downgrade"
        )
    for version, checksum in applied.items():
        if by_version[version].checksum != checksum:
            raise MigrationError(
                f"migration {version:04d}_{by_version[version].name} was edited after it was "
                "applied; migrations are forward-only: add a new one instead"
            )


def has_timescaledb(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Whether the TimescaleDB extension is installed in this database."""
    row = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return bool(row and row[0])


def migrate(
    database_url: str,
    *,
    dry_run: bool = False,
    use_timescaledb: bool = True,
    on_apply: Callable[[Migration], None] | None = None,
) -> MigrationStatus:
    """Apply every pending migration (or, with dry_run, only report them).

    With use_timescaledb=False the schema takes its plain-PostgreSQL shape even on a server
    that has TimescaleDB (it matters only when 0001 first runs).
    """
    known = load_migrations()
    with psycopg.connect(database_url, autocommit=True) as conn:
        # A session lock: a second `freecar migrate` waits here instead of racing.
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        if not use_timescaledb:
            conn.execute("SET freecar.timescaledb = 'off'")
        try:
            conn.execute(_CREATE_HISTORY)
            applied = _applied(conn)
            _check_history(known, applied)
            pending = [m for m in known if m.version not in applied]
            newly: list[int] = []
            if not dry_run:
                for migration in pending:
                    if on_apply is not None:
                        on_apply(migration)
                    with conn.transaction():
                        # Migration files ship inside the package: trusted code, not input.
                        # (mypy treats LiteralString as str, so no cast is needed for it.)
                        conn.execute(sql.SQL(migration.sql))
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum)"
                            " VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                    newly.append(migration.version)
            return MigrationStatus(
                applied=tuple(sorted([*applied, *newly])),
                newly_applied=tuple(newly),
                pending=tuple(m.version for m in pending if m.version not in newly),
                timescaledb=has_timescaledb(conn),
            )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
