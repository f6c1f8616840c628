"""The fix queue and command log of a real unit: one SQLite file that survives `kill -9`.

Durability: the file is in WAL mode with `synchronous=NORMAL`. A commit then returns once
its pages are written to the WAL file, without waiting for an fsync. That is enough against
what the queue must survive, a crash or kill of the agent process: the written pages sit in
the kernel's page cache, which outlives the process and reaches the disk on its own. Only a
power cut or kernel crash can lose the last commits before a checkpoint (never corrupt the
file), and paying an fsync per fix on an SD card to cover that is not worth it.

Every call runs on the agent's event loop thread: a commit without fsync takes tens of
microseconds, far below what would be worth a thread hop.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Final
from uuid import UUID

from vehicle_agent.records import HandledCommand, QueueCounters, QueuedFix

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS fixes (
    -- AUTOINCREMENT: ids are never reused, even once the queue is empty, so senders may
    -- keep a cursor on them.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    cmd_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    ack BLOB,
    ack_sent INTEGER NOT NULL DEFAULT 0
);
"""

# Another process (an operator's sqlite3 shell, a test) may hold the lock for a moment.
BUSY_TIMEOUT_MS: Final = 5000

_SET_COUNTER: Final = (
    "INSERT INTO counters (name, value) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)


class SqliteCommandLog:
    """CommandLog in the queue's SQLite file."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def get(self, cmd_id: UUID) -> HandledCommand | None:
        """See CommandLog."""
        row = self._db.execute(
            "SELECT expires_at, ack, ack_sent FROM commands WHERE cmd_id = ?", (str(cmd_id),)
        ).fetchone()
        if row is None:
            return None
        return HandledCommand(cmd_id, row[0], row[1], bool(row[2]))

    def begin(self, cmd_id: UUID, expires_at: float) -> None:
        """See CommandLog."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO commands (cmd_id, expires_at) VALUES (?, ?)",
                (str(cmd_id), expires_at),
            )

    def finish(self, cmd_id: UUID, ack: bytes) -> None:
        """See CommandLog."""
        with self._db:
            self._db.execute(
                "UPDATE commands SET ack = ?, ack_sent = 0 WHERE cmd_id = ?", (ack, str(cmd_id))
            )

    def mark_sent(self, cmd_id: UUID) -> None:
        """See CommandLog."""
        with self._db:
            self._db.execute("UPDATE commands SET ack_sent = 1 WHERE cmd_id = ?", (str(cmd_id),))

    def unsent(self) -> list[HandledCommand]:
        """See CommandLog."""
        rows = self._db.execute(
            "SELECT cmd_id, expires_at, ack FROM commands "
            "WHERE ack IS NOT NULL AND ack_sent = 0 ORDER BY rowid"
        ).fetchall()
        return [HandledCommand(UUID(row[0]), row[1], row[2]) for row in rows]

    def prune(self, now: float) -> int:
        """See CommandLog."""
        with self._db:
            return self._db.execute("DELETE FROM commands WHERE expires_at < ?", (now,)).rowcount


class SqliteFixQueue(QueueCounters):
    """FixQueue in a SQLite file; fixes, counters and command log commit atomically."""

    def __init__(self, path: Path, max_fixes: int) -> None:
        super().__init__(max_fixes)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Set up in autocommit mode (journal_mode cannot change inside a transaction); then
        # each write opens a transaction implicitly and `with self._db` commits or rolls back.
        self._db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # why it is enough: module docstring
        self._db.executescript(SCHEMA)
        self._db.isolation_level = "DEFERRED"
        self.commands = SqliteCommandLog(self._db)
        counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        self._last_seq = counters.get("last_seq")
        self._last_ts = counters.get("last_ts")
        self._dropped = counters.get("dropped", 0)
        self._confirmed_next = counters.get("confirmed_next")
        if "queue_id" in counters:
            self._queue_id = counters["queue_id"]
        else:
            # A new file, or one written before queues had ids: its counter goes on under
            # the id drawn now, which the hub learns as a new queue.
            with self._db:
                self._db.execute(_SET_COUNTER, ("queue_id", self._queue_id))
        self._count: int = self._db.execute("SELECT count(*) FROM fixes").fetchone()[0]
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'fixes'").fetchone()
        self._last_id = row[0] if row else 0

    def __len__(self) -> int:
        return self._count

    def put(self, seq: int, ts: int, payload: bytes) -> int:
        """See FixQueue."""
        excess = max(0, self._count + 1 - self.max_fixes)
        with self._db:
            dropped = 0
            if excess:
                dropped = self._db.execute(
                    "DELETE FROM fixes WHERE id IN (SELECT id FROM fixes ORDER BY id LIMIT ?)",
                    (excess,),
                ).rowcount
            cursor = self._db.execute(
                "INSERT INTO fixes (seq, ts, payload) VALUES (?, ?, ?)", (seq, ts, payload)
            )
            self._db.executemany(
                _SET_COUNTER,
                [("last_seq", seq), ("last_ts", ts), ("dropped", self._dropped + dropped)],
            )
        # Only after the commit: a failed transaction leaves the cached counters untouched.
        self._count += 1 - dropped
        self._dropped += dropped
        self._last_seq, self._last_ts = seq, ts
        self._last_id = cursor.lastrowid or self._last_id
        if dropped and self._delivered:
            self._forget_delivered_below(self._first_id())
        return dropped

    def floor_after_put(self) -> int | None:
        """See FixQueue."""
        # A full queue drops its oldest to make room: the floor is the first one kept.
        skip = max(0, self._count + 1 - self.max_fixes)
        row = self._db.execute(
            "SELECT seq FROM fixes ORDER BY id LIMIT 1 OFFSET ?", (skip,)
        ).fetchone()
        return None if row is None else int(row[0])

    def read(self, *, after: int = 0, limit: int) -> list[QueuedFix]:
        """See FixQueue."""
        rows = self._db.execute(
            "SELECT id, seq, payload FROM fixes WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()
        return [QueuedFix(row[0], row[1], row[2]) for row in rows]

    def remove(self, ids: Sequence[int]) -> int:
        """See FixQueue."""
        removed = 0
        with self._db:
            for fix_id in ids:
                removed += self._db.execute("DELETE FROM fixes WHERE id = ?", (fix_id,)).rowcount
        self._count -= removed
        self._delivered.difference_update(ids)
        return removed

    def mark_delivered(self, ids: Sequence[int]) -> int:
        """See FixQueue."""
        if not ids:
            return 0
        # Only fixes still queued: one may have been dropped or confirmed while in flight.
        rows = self._db.execute(
            "SELECT id FROM fixes WHERE id BETWEEN ? AND ?", (min(ids), max(ids))
        ).fetchall()
        new = {row[0] for row in rows}.intersection(ids) - self._delivered
        self._delivered |= new
        return len(new)

    def remove_delivered(self) -> int:
        """See FixQueue."""
        return self.remove(sorted(self._delivered))

    def confirm(self, next_seq: int) -> int:
        """See FixQueue."""
        with self._db:
            # Seqs grow with ids: the first fix the hub still lacks bounds what goes. No
            # index on seq (one more write per fix on an SD card); this scan stops there.
            row = self._db.execute(
                "SELECT id FROM fixes WHERE seq >= ? ORDER BY id LIMIT 1", (next_seq,)
            ).fetchone()
            boundary = self._last_id + 1 if row is None else row[0]
            removed = self._db.execute("DELETE FROM fixes WHERE id < ?", (boundary,)).rowcount
            confirmed = max(next_seq, -1 if self._confirmed_next is None else self._confirmed_next)
            self._db.execute(_SET_COUNTER, ("confirmed_next", confirmed))
        self._count -= removed
        self._confirmed_next = confirmed
        self._forget_delivered_below(boundary)
        return removed

    def _first_id(self) -> int:
        row = self._db.execute("SELECT min(id) FROM fixes").fetchone()
        return self._last_id + 1 if row is None or row[0] is None else int(row[0])

    def _forget_delivered_below(self, first_id: int) -> None:
        self._delivered = {fix_id for fix_id in self._delivered if fix_id >= first_id}

    def close(self) -> None:
        """Close the file; a later SqliteFixQueue on the same path continues where this stopped."""
        self._db.close()
