"""A private Redis server: no persistence, many databases, on one loopback port."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from devstack.ports import LOOPBACK
from devstack.service import Service

if TYPE_CHECKING:
    from pathlib import Path

    from devstack.binaries import RedisBinary

# Tests take a private database index each (the default is 16); Redis keeps an empty
# database nearly free, so 1024 costs nothing and outlasts a whole test session.
DATABASES = 1024


class RedisServer(Service):
    """redis-server on 127.0.0.1, a cache that forgets everything when stopped."""

    name = "redis"

    def __init__(
        self, binary: RedisBinary, *, workdir: Path, log_path: Path, ready_timeout: float
    ) -> None:
        super().__init__(workdir=workdir, log_path=log_path, ready_timeout=ready_timeout)
        self.binary = binary

    def prepare(self) -> None:
        """Create the working directory Redis changes into."""
        self.workdir.mkdir(exist_ok=True)

    def command(self) -> list[str]:
        """Run redis-server in the foreground without snapshots or an append-only file."""
        return [
            str(self.binary.path),
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            # No RDB snapshots and no AOF: nothing is written, and a restart starts empty.
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--databases",
            str(DATABASES),
        ]

    def is_ready(self) -> bool:
        """Whether PING answers PONG (a loading server answers -LOADING instead)."""
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1.0) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def url(self, database: int = 0) -> str:
        """A redis:// URL for database index `database`."""
        return f"redis://{LOOPBACK}:{self.port}/{database}"
