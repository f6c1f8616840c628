"""A private PostgreSQL server: initdb once, then start and stop on one port and data dir.

The system installation and pgserver's bundled binaries go through this same code; only
the `bin/` directory differs. When the stack's owner is root, initdb and postgres run as
an unprivileged account (see `devstack.accounts`), which owns the server's directory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from devstack.binaries import PostgresBinaries
from devstack.errors import DevStackError, ServiceStartError
from devstack.modes import Source
from devstack.ports import LOOPBACK
from devstack.procs import (
    kill_processes_under,
    processes_under,
    remove_postgres_shared_memory,
)
from devstack.service import Service

if TYPE_CHECKING:
    from devstack.accounts import Account

SUPERUSER = "freecar"
"""The superuser role initdb creates; trust authentication, so no password."""
DEFAULT_DATABASE = "freecar"
"""Created on the first start; what `database_url` points at."""
MAINTENANCE_DATABASE = "postgres"
"""Where CREATE DATABASE and DROP DATABASE are issued from."""

# Settings for a server whose data dies with the stack. Passed with -c on every start, so
# this dict is the only place they live.
THROWAWAY_SETTINGS: dict[str, str] = {
    # Surviving a power cut buys nothing here: no fsync, no full-page images. A commit
    # still write()s its WAL before returning, and the page cache survives a killed
    # process, so kill() followed by start() keeps every acknowledged commit.
    "fsync": "off",
    "full_page_writes": "off",
    # Deliberately left on: synchronous_commit=off acknowledges commits whose WAL is still
    # in shared memory, and a kill -9 then loses up to ~0.6 s of them (three
    # wal_writer_delay periods), which would fail "nothing is lost" tests for the wrong
    # reason. With fsync off it costs only a write() per commit.
    "synchronous_commit": "on",
    # The default "posix" puts dynamic shared memory in /dev/shm, where a kill -9 would
    # leave it behind; "mmap" keeps it in the data directory, which the stack removes.
    "dynamic_shared_memory_type": "mmap",
    # The schema stores timestamptz in UTC; a UTC session makes test output deterministic.
    "timezone": "UTC",
    "log_timezone": "UTC",
    # Hub, API and worker pools plus the tests' own connections share one server; the
    # default of 100 runs out when a test starts several processes with pools.
    "max_connections": "200",
}
TIMESCALEDB_SETTINGS: dict[str, str] = {
    "shared_preload_libraries": "timescaledb",
    # A throwaway server must not phone home.
    "timescaledb.telemetry_level": "off",
}
# Longest path a Unix socket can have on Linux (sun_path is 108 bytes, NUL included).
MAX_SOCKET_PATH = 107
# Database names we create: simple identifiers, so URLs need no quoting.
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# initdb takes about 0.3 s here; a minute means something is wrong.
INITDB_TIMEOUT = 120.0


def _pg_config(binaries: PostgresBinaries, option: str) -> Path | None:
    pg_config = binaries.tool("pg_config")
    if not os.access(pg_config, os.X_OK):
        return None
    try:
        done = subprocess.run(
            [str(pg_config), option], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(done.stdout.strip())


def timescaledb_installed(binaries: PostgresBinaries) -> bool:
    """Whether TimescaleDB is installed for this PostgreSQL (control file and library)."""
    prefix = binaries.bindir.parent
    sharedirs = [_pg_config(binaries, "--sharedir"), prefix / "share" / "postgresql"]
    sharedirs += [prefix / "share", Path("/usr/share/postgresql") / str(binaries.major)]
    libdirs = [_pg_config(binaries, "--pkglibdir"), prefix / "lib" / "postgresql", prefix / "lib"]
    control = any(
        (share / "extension" / "timescaledb.control").is_file() for share in sharedirs if share
    )
    library = any((lib / "timescaledb.so").is_file() for lib in libdirs if lib)
    return control and library


def reachable_binaries(
    binaries: PostgresBinaries, account: Account | None, scratch: Path
) -> PostgresBinaries:
    """Binaries `account` can run: these, or a copy in `scratch` when it cannot reach them.

    As root, PostgreSQL runs as another account, which cannot enter a virtualenv under a
    private home directory such as root's. pgserver's installation is relocatable (it
    finds lib/ and share/ relative to bin/), so a copy next to the data works, provided
    the copy keeps the layout its RPATH expects: `$ORIGIN/../../../pgserver.libs`, the
    libpq that auditwheel vendored beside the package.
    """
    if account is None or account.can_reach(binaries.tool("postgres"), execute=True):
        return binaries
    if binaries.source is not Source.EMBEDDED:
        raise DevStackError(
            f"PostgreSQL must run as {account.name!r} (it refuses root), but that account "
            f"cannot reach {binaries.bindir}; make it readable or use another installation"
        )
    prefix = binaries.bindir.parent  # .../site-packages/pgserver/pginstall
    package = prefix.parent
    copy = scratch / "embedded-postgres"
    shutil.copytree(prefix, copy / package.name / prefix.name, symlinks=True)
    vendored = package.parent / f"{package.name}.libs"
    if vendored.is_dir():
        shutil.copytree(vendored, copy / vendored.name, symlinks=True)
    bindir = copy / package.name / prefix.name / binaries.bindir.name
    return PostgresBinaries(bindir=bindir, version=binaries.version, source=binaries.source)


class PostgresServer(Service):
    """PostgreSQL on 127.0.0.1, its data and socket in the stack directory."""

    name = "postgres"
    # "Fast" shutdown: roll back and disconnect clients. SIGTERM ("smart") would wait for
    # every client, such as an idle connection pool, to leave of its own accord.
    stop_signal = signal.SIGINT

    def __init__(
        self,
        binaries: PostgresBinaries,
        *,
        workdir: Path,
        log_path: Path,
        account: Account | None,
        ready_timeout: float,
    ) -> None:
        super().__init__(
            workdir=workdir, log_path=log_path, account=account, ready_timeout=ready_timeout
        )
        self.binaries = binaries
        self.data_dir = workdir / "data"
        self.timescaledb = timescaledb_installed(binaries)

    # -- first start --------------------------------------------------------------------

    def initialise(self) -> None:
        """Create the server directory and run initdb (as the service account if root)."""
        self.workdir.mkdir(mode=0o700)
        if self.account is not None:
            self.account.owns(self.workdir)
            if not self.account.can_reach(self.workdir):
                raise DevStackError(
                    f"PostgreSQL runs as {self.account.name!r} (it refuses root), which cannot "
                    f"reach {self.workdir}; point TMPDIR at a directory every user may "
                    "traverse, such as /tmp"
                )
        argv = [
            str(self.binaries.tool("initdb")),
            "--pgdata",
            str(self.data_dir),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            # Byte-order collation: identical results on every machine, no locale needed.
            "--locale",
            "C",
            # The data dies with the stack; skip initdb's fsync of every file.
            "--no-sync",
        ]
        account = self.account
        with self.log_path.open("ab") as log:
            offset = log.tell()
            try:
                done = subprocess.run(
                    argv,
                    cwd=self.workdir,
                    env=self.environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=INITDB_TIMEOUT,
                    check=False,
                    user=account.uid if account else None,
                    group=account.gid if account else None,
                    extra_groups=[] if account else None,
                )
            except subprocess.TimeoutExpired:
                done = None
        if done is None or done.returncode != 0:
            self._log_offset = offset
            raise ServiceStartError(f"initdb failed.\n{self.describe_log()}")

    def create_default_database(self) -> None:
        """Create the `freecar` database the stack's URLs point at."""
        self.create_database(DEFAULT_DATABASE)

    # -- Service ------------------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        """Every -c setting the server starts with."""
        settings = {"listen_addresses": LOOPBACK, "port": str(self.port)}
        socket_path = self.workdir / f".s.PGSQL.{self.port}"
        # An overlong socket path would stop the server; TCP alone is enough then.
        fits = len(os.fsencode(socket_path)) <= MAX_SOCKET_PATH
        settings["unix_socket_directories"] = str(self.workdir) if fits else ""
        settings |= THROWAWAY_SETTINGS
        if self.timescaledb:
            settings |= TIMESCALEDB_SETTINGS
        return settings

    def command(self) -> list[str]:
        """Run postgres in the foreground with the throwaway settings."""
        argv = [str(self.binaries.tool("postgres")), "-D", str(self.data_dir)]
        for name, value in self.settings().items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def environment(self) -> dict[str, str]:
        """Our environment without PG* variables, which could point tools elsewhere."""
        return {key: value for key, value in os.environ.items() if not key.startswith("PG")}

    def is_ready(self) -> bool:
        """Whether a real connection can run a query."""
        try:
            with psycopg.connect(self.url(MAINTENANCE_DATABASE), connect_timeout=2) as conn:
                conn.execute("select 1")
        except psycopg.OperationalError:
            return False
        return True

    def _kill_tree(self, process: subprocess.Popen[bytes]) -> None:
        # Backends lead their own sessions, so the postmaster's group does not hold them:
        # kill the postmaster first (it cannot fork any more), then whatever runs in the
        # data directory.
        super()._kill_tree(process)
        kill_processes_under(self.data_dir, {self.executable})

    def after_exit(self) -> None:
        """Make sure no backend outlives the postmaster, then clear what a crash leaves.

        A killed postmaster leaves its SysV interlock segment and postmaster.pid. With
        every process of this server gone, both are stale: removing the pid file spares
        the next start from mistaking a recycled pid for a running server.
        """
        super().after_exit()
        if processes_under(self.data_dir, {self.executable}):
            return
        remove_postgres_shared_memory(self.data_dir)
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    # -- databases ----------------------------------------------------------------------

    def url(self, database: str = DEFAULT_DATABASE) -> str:
        """A superuser URL for `database` over TCP."""
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/{database}"

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """CREATE DATABASE `name` (optionally copying `template`) and return its URL."""
        _check_database_name(name)
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            _check_database_name(template)
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        with psycopg.connect(self.url(MAINTENANCE_DATABASE), autocommit=True) as conn:
            conn.execute(query)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE `name` if it exists, disconnecting whoever is still connected."""
        _check_database_name(name)
        query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        with psycopg.connect(self.url(MAINTENANCE_DATABASE), autocommit=True) as conn:
            conn.execute(query)


def _check_database_name(name: str) -> None:
    if not _DATABASE_NAME.fullmatch(name):
        raise DevStackError(
            f"database name {name!r} must be a lowercase identifier of at most 63 characters "
            "([a-z_][a-z0-9_]*)"
        )
