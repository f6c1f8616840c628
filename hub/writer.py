"""The unit of work: one transaction per batch, then acks, then live fan-out.

The writer thread takes batches from the `Batcher` in order. First it settles the batch's
held messages (vehicles the hub did not know: `hub.inventory`), then it runs the batch's
steps (`hub.steps.BATCH_STEPS`) in one transaction. Only after the commit does it
acknowledge the batch's messages to the broker and fan the new states out.

No message can stop ingest, and nothing is retried forever for the wrong reason:

- The database is unreachable (an outage, `hub.database.is_outage`): the batch is kept and
  retried with a capped, jittered backoff; nothing is acknowledged meanwhile, so the broker
  stops sending once its window of unacknowledged messages is full (see `hub.batch`).
- The database refuses a batch's data: the batch is written again isolating (message by
  message where a step fails); refused messages become dead letters and the rest commits.
- Anything else (a bug of the hub): the batch is tried `BUG_ATTEMPTS` times as it is, then
  isolating, where the messages a step fails on become `hub_error` dead letters; if even
  that fails `BUG_ATTEMPTS` times, every message of the batch is dead-lettered
  (`hub_error`) in a transaction of its own. Each failure is logged and counted.

Status events (hub/events) are found and stored in the same transaction and fanned out
after the commit, and so are the units' storage acknowledgements (contract 1.1,
`hub.storage_acks`): published after the acks. The writer also runs the silence sweep and
the storage acknowledgements' sweep, since it owns the database connection.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

from hub import steps
from hub.batch import DeadLetter
from hub.database import CONNECT_TIMEOUT_S, DATA_ERRORS, connect, is_outage
from hub.intake import REASON_HUB_ERROR
from hub.repository import telemetry
from hub.steps import BATCH_STEPS, SWEEP_STEPS, Work
from protocol.backoff import Backoff

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import psycopg

    from hub.batch import Batch, Batcher
    from hub.consumer import Delivery
    from hub.events.pipeline import EventPipeline
    from hub.fanout import LiveFanout
    from hub.inventory import Inventory
    from hub.stats import HubStats
    from hub.storage_acks import StoredPublisher

log = logging.getLogger(__name__)

# Database retry delays: quick at first (a restart takes a second or two), capped so a long
# outage is probed every 10 s rather than hammered.
RETRY_FIRST_S: Final = 0.2
RETRY_CAP_S: Final = 10.0
# How long the writer waits for a batch before doing its periodic work (sweep, fan-out).
TICK_S: Final = 0.1
# Tries of a batch that fails on a bug before the next way of writing it: a second and a
# third try see past a fault of the moment (a connection in a bad state, memory running
# short); a bug that fails three times in a row fails every time.
BUG_ATTEMPTS: Final = 3


class _Mode(Enum):
    """How the writer writes a batch: as a whole, then isolating, then only dead letters."""

    WHOLE = "whole"
    ISOLATING = "isolating"
    DEAD_LETTERS = "dead letters"


class Writer:
    """Commits batches, acks them, fans them out; retries while the database is away."""

    def __init__(  # noqa: PLR0913 - keyword-only wiring, done once by the Hub
        self,
        *,
        database_url: str,
        batcher: Batcher,
        ack: Callable[[Sequence[Delivery]], None],
        fanout: LiveFanout,
        stats: HubStats,
        silence_timeout_s: float,
        sweep_interval_s: float,
        events: EventPipeline,
        inventory: Inventory,
        admit: Callable[[Batch, Mapping[str, str]], None],
        max_future_s: float,
        stored: StoredPublisher | None = None,
        on_commit: Callable[[Batch, float], None] | None = None,
    ) -> None:
        self._database_url = database_url
        self._stored = stored
        self._watermarks = None if stored is None else stored.policy
        self._events = events
        self._inventory = inventory
        self._admit = admit
        self._allowance = timedelta(seconds=max_future_s)
        self._batcher = batcher
        self._ack = ack
        self._fanout = fanout
        self._stats = stats
        self._silence_timeout_s = silence_timeout_s
        self._sweep_interval_s = sweep_interval_s
        self._on_commit = on_commit
        self._conn: psycopg.Connection[Any] | None = None
        self._next_sweep = time.monotonic() + sweep_interval_s
        self._give_up_at: float | None = None
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-writer", daemon=True)
        self.failed = False
        """True when the writer gave up on a batch at shutdown (it stays unacknowledged)."""

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def finish(self, grace_s: float) -> bool:
        """After `Batcher.close()`: commit what is left within `grace_s`; True if all committed."""
        self._give_up_at = time.monotonic() + grace_s
        self._wake.set()
        self._thread.join(grace_s + CONNECT_TIMEOUT_S)
        if self._conn is not None:
            self._conn.close()
        return not self._thread.is_alive() and not self.failed

    # --- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._batcher.take(TICK_S)
            if batch is not None and not self._commit(batch):
                self.failed = True
                return
            try:
                self._fanout.publish_due()
                if not self._batcher.closed and time.monotonic() >= self._next_sweep:
                    self._sweep()
                stored = self._stored
                if stored is not None and not self._batcher.closed and stored.sweep_due():
                    self._sweep_watermarks(stored)
            except Exception:
                # Periodic, best-effort work must never stop the commits.
                log.exception("periodic writer work failed")
            if self._batcher.closed and batch is None:
                return

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = connect(self._database_url, "writer")
            try:
                self._events.listen(conn)
                self._inventory.listen(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _commit(self, batch: Batch) -> bool:
        """Write the batch until it commits (or the shutdown grace runs out); then ack it."""
        started = time.monotonic()
        work = self._write_until_committed(batch)
        if work is None:
            return False
        stats = self._stats
        stats.fixes_stored += work.inserted
        stats.duplicates_in_database += len(work.rows) - work.inserted
        stats.commands_confirmed += work.confirmed
        stats.refused_by_database += work.refused
        stats.hub_errors += work.failed
        stats.watermark_errors += work.watermark_errors
        stats.record_flush(time.monotonic() - started)
        self._ack(batch.deliveries)
        try:
            if self._stored is not None:
                self._stored.committed(work.publications)
            self._events.published()
            self._fanout.offer(work.states)
            if self._on_commit is not None:
                self._on_commit(batch, time.time())
        except Exception:
            # Committed and acknowledged: what follows is best effort.
            log.exception("after-commit work failed")
        return True

    def _write_until_committed(self, batch: Batch) -> Work | None:
        """What the batch's transaction did, once committed; None if the grace ran out."""
        backoff = Backoff(initial_s=RETRY_FIRST_S, max_s=RETRY_CAP_S)
        mode = _Mode.WHOLE
        failures = 0  # in this mode, for anything but an outage
        while True:
            try:
                return self._write(batch, mode)
            except Exception as exc:  # noqa: BLE001 - every failure is sorted out below
                error = exc
            self._events.rolled_back()
            if is_outage(error):
                self._stats.database_errors += 1
                self._drop_connection()
            elif mode is _Mode.WHOLE and isinstance(error, DATA_ERRORS):
                # The data, not the server: write message by message to find the culprit.
                log.warning("database refused a batch (%s); isolating the messages", error)
                mode = _Mode.ISOLATING
                continue
            else:
                failures += 1
                log.error("writing a batch (%s) failed", mode.value, exc_info=error)
                if failures >= BUG_ATTEMPTS and mode is not _Mode.DEAD_LETTERS:
                    mode = _Mode.ISOLATING if mode is _Mode.WHOLE else _Mode.DEAD_LETTERS
                    failures = 0
                    backoff.reset()
                    log.error("writing the batch %s from now on", mode.value)
                    continue
            if not self._pause_after(error, batch, backoff):
                return None

    def _write(self, batch: Batch, mode: _Mode) -> Work:
        conn = self._connection()
        if mode is _Mode.DEAD_LETTERS:
            return self._dead_letter_all(conn, batch)
        self._inventory.refresh(conn)
        if batch.held:
            refusals = self._inventory.settle(conn, batch.held)
            self._admit(batch, refusals)  # empties batch.held: done once per batch
        work = Work.of_batch(batch, self._events, self._allowance, self._watermarks)
        return steps.run(conn, BATCH_STEPS, work, isolate=mode is _Mode.ISOLATING)

    def _dead_letter_all(self, conn: psycopg.Connection[Any], batch: Batch) -> Work:
        """The last resort for a batch the hub cannot write: every message a dead letter."""
        work = Work(self._events, self._allowance, batch=batch, watermarks=self._watermarks)
        detail = "the hub could not write this message's batch; see the hub's log"
        letters = [
            *batch.dead_letters,
            *(DeadLetter.of(m.topic, m.payload, REASON_HUB_ERROR, detail, m.received_at)
              for m in batch.telemetry_messages),
            *(DeadLetter.of(m.topic, m.payload, REASON_HUB_ERROR, detail, m.received_at)
              for m in batch.status_messages),
            *(DeadLetter.of(a.topic, a.payload, REASON_HUB_ERROR, detail, a.received_at)
              for a in batch.command_acks),
            *(DeadLetter.of(h.raw_topic, h.payload, REASON_HUB_ERROR, detail, h.received_at)
              for h in batch.held),
        ]  # fmt: skip
        with conn.transaction():
            telemetry.store_dead_letters(conn, letters)
            steps.claim_dead_lettered(conn, work)
        work.failed = len(letters) - len(batch.dead_letters)
        return work

    def _pause_after(self, error: Exception, batch: Batch, backoff: Backoff) -> bool:
        """Wait before the next attempt; False when the shutdown grace would run out first."""
        delay = backoff.next_delay()
        if self._give_up_at is not None and time.monotonic() + delay > self._give_up_at:
            log.error(
                "stopping with %d messages uncommitted (%s); the broker redelivers them",
                batch.messages,
                error,
            )
            return False
        log.warning(
            "writing a batch failed (%s); batch of %d messages kept, retry in %.1fs",
            error,
            batch.messages,
            delay,
        )
        self._wake.wait(delay)
        self._wake.clear()
        return True

    def _sweep(self) -> None:
        """Mark silent vehicles offline; skipped (and retried next time) if the database is away."""
        self._next_sweep = time.monotonic() + self._sweep_interval_s
        work = Work(self._events, self._allowance, silence_timeout_s=self._silence_timeout_s)
        try:
            conn = self._connection()
            self._inventory.refresh(conn)
            steps.run(conn, SWEEP_STEPS, work)
        except Exception as exc:
            self._events.rolled_back()
            if not is_outage(exc):
                raise  # logged by the caller; the next sweep tries again
            self._stats.database_errors += 1
            self._drop_connection()
            log.warning("silence sweep skipped: %s", exc)
            return
        self._events.published()
        if work.states:
            log.info("marked %d silent vehicles offline", len(work.states))
            self._stats.marked_offline += len(work.states)
            self._fanout.offer(work.states)

    def _sweep_watermarks(self, stored: StoredPublisher) -> None:
        """Publish the storage acknowledgements that fell due; skipped if the database is away."""
        try:
            swept = stored.sweep(self._connection())
        except Exception as exc:
            if not is_outage(exc):
                raise  # logged by the caller; the next sweep tries again
            self._stats.database_errors += 1
            self._drop_connection()
            log.warning("storage acknowledgement sweep skipped: %s", exc)
            return
        if swept:
            log.debug("published %d storage acknowledgements that fell due", swept)
