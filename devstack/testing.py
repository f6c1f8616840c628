"""Isolation helpers for test fixtures: a private database, Redis index or topic root each.

One stack serves a whole test session; these carve it up so tests never see each other's
state. `tests/conftest.py` builds its fixtures from them; a fixture such as
`migrated_database_url` can sit next to `database_url` by migrating a database made by
`temporary_database` (or by migrating one template per session and passing `template=`).
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections import deque
from typing import TYPE_CHECKING

import redis

from devstack.redis import DATABASES

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devstack.stack import DevStack

# PostgreSQL truncates identifiers at 63 bytes; keep the label short enough for the suffix.
MAX_LABEL = 40


def unique_suffix() -> str:
    """Eight random hex digits."""
    return secrets.token_hex(4)


def database_name(label: str) -> str:
    """A fresh database name derived from `label` (e.g. a test module's name)."""
    cleaned = re.sub(r"[^a-z0-9_]+", "_", label.lower()).strip("_")[-MAX_LABEL:] or "db"
    return f"t_{cleaned}_{unique_suffix()}"


@contextlib.contextmanager
def temporary_database(
    stack: DevStack, label: str, *, template: str | None = None
) -> Iterator[str]:
    """Create an empty database (or a copy of `template`), yield its URL, drop it after."""
    name = database_name(label)
    url = stack.create_database(name, template=template)
    try:
        yield url
    finally:
        stack.drop_database(name)


def topic_root() -> str:
    """A unique MQTT topic root, also usable as a client-id prefix: `t` and 12 hex digits."""
    return f"t{secrets.token_hex(6)}"


class RedisIndexPool:
    """Hands out the stack's Redis database indexes (1 and up) one test at a time.

    Index 0 is left to whatever runs against the stack's `redis_url`. A released index
    is flushed before anyone else gets it; if the flush fails (Redis was stopped and not
    started again), the index is retired rather than handed out dirty.
    """

    def __init__(self, stack: DevStack) -> None:
        self._stack = stack
        self._free = deque(range(1, DATABASES))

    @contextlib.contextmanager
    def lease(self) -> Iterator[str]:
        """Yield the URL of a database index nobody else is using."""
        if not self._free:
            raise RuntimeError(f"all {DATABASES - 1} Redis database indexes are in use")
        index = self._free.popleft()
        url = self._stack.redis.url(index)
        try:
            yield url
        finally:
            try:
                with redis.Redis.from_url(url) as client:
                    client.flushdb()
            except redis.RedisError:
                pass
            else:
                self._free.appendleft(index)  # reuse low indexes first
