"""The unit of work: one transaction per batch, then acks, then live fan-out.

The writer thread takes batches from the `Batcher` in order and, for each, runs one
transaction (fixes, dead letters, vehicle states, command acks and confirmations). Only
after the commit does it acknowledge the batch's messages to the broker and fan the new
states out.

When the database is unreachable the batch is kept and retried with a capped, jittered
backoff; nothing is acknowledged meanwhile, so the broker stops sending once its window of
unacknowledged messages is full (see `hub.batch`). If the database refuses a batch's data
(say, a string jsonb cannot hold), the batch is written again message by message, the
refused messages become dead letters, and ingest goes on.

Status events (hub/events) are found and stored in the same transaction and fanned out
after the commit. The writer also runs the silence sweep, since it owns the database
connection.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import psycopg

from hub import repository
from hub.batch import DeadLetter
from protocol.backoff import Backoff

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from db.telemetry import TelemetryRow
    from hub.batch import Batch, Batcher
    from hub.consumer import Delivery
    from hub.events.pipeline import EventPipeline
    from hub.fanout import LiveFanout
    from hub.repository import CommandOutcome, LiveState
    from hub.stats import HubStats

log = logging.getLogger(__name__)

# Database retry delays: quick at first (a restart takes a second or two), capped so a long
# outage is probed every 10 s rather than hammered.
RETRY_FIRST_S: Final = 0.2
RETRY_CAP_S: Final = 10.0
# How long the writer waits for a batch before doing its periodic work (sweep, fan-out).
TICK_S: Final = 0.1
# Fail fast on a dead server instead of hanging a batch: connect within 5 s, and TCP
# keepalives notice a vanished server after about 10 + 3 x 5 = 25 s of silence.
CONNECT_TIMEOUT_S: Final = 5
KEEPALIVE_IDLE_S: Final = 10
KEEPALIVE_INTERVAL_S: Final = 5
KEEPALIVE_COUNT: Final = 3
# Dead-letter reason for a message whose rows the database refused.
REASON_REFUSED_BY_DATABASE: Final = "refused_by_database"

# Errors caused by a batch's data, not by the server's state: retrying cannot help.
DATA_ERRORS: Final = (psycopg.errors.DataError, psycopg.errors.IntegrityError)


class Written(NamedTuple):
    """What one batch's transaction did."""

    inserted: int
    """Fixes that were new to the database."""
    states: list[LiveState]
    """The vehicle states it touched, to fan out."""
    confirmed: int
    """Commands it confirmed."""


def batch_vehicles(batch: Batch) -> set[str]:
    """The vehicles whose state a batch moves: those it has fixes or presence news of."""
    return {*(row.vehicle_id for row in batch.rows), *batch.presence}


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
        on_commit: Callable[[Batch, float], None] | None = None,
    ) -> None:
        self._database_url = database_url
        self._events = events
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
            except Exception:
                # Periodic, best-effort work must never stop the commits.
                log.exception("periodic writer work failed")
            if self._batcher.closed and batch is None:
                return

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(
                self._database_url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name="freecar-hub",
                keepalives=1,
                keepalives_idle=KEEPALIVE_IDLE_S,
                keepalives_interval=KEEPALIVE_INTERVAL_S,
                keepalives_count=KEEPALIVE_COUNT,
            )
            try:
                self._events.listen(conn)
            except psycopg.Error:
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
        written = self._write_until_committed(batch)
        if written is None:
            return False
        inserted, states, confirmed = written
        stats = self._stats
        stats.fixes_stored += inserted
        stats.duplicates_in_database += len(batch.rows) - inserted
        stats.commands_confirmed += confirmed
        stats.record_flush(time.monotonic() - started)
        self._ack(batch.deliveries)
        try:
            self._events.published()
            self._fanout.offer(states)
            if self._on_commit is not None:
                self._on_commit(batch, time.time())
        except Exception:
            # Committed and acknowledged: what follows is best effort.
            log.exception("after-commit work failed")
        return True

    def _write_until_committed(self, batch: Batch) -> Written | None:
        """What the batch's transaction did, once committed; None if the grace ran out."""
        backoff = Backoff(initial_s=RETRY_FIRST_S, max_s=RETRY_CAP_S)
        isolate = False
        while True:
            try:
                conn = self._connection()
                if isolate:
                    return self._write_isolated(conn, batch)
                return self._write(conn, batch)
            except DATA_ERRORS as exc:
                if not isolate:
                    # The data, not the server: write message by message to find the culprit.
                    log.warning("database refused a batch (%s); isolating the message", exc)
                    isolate = True
                    self._events.rolled_back()
                    continue
                # Refused outside the telemetry rows: nothing to single out. Keep the batch,
                # say so loudly, and retry like any other failure.
                log.exception("database refused a batch even message by message")
                error: Exception = exc
            except psycopg.Error as exc:
                error = exc
            except Exception as exc:
                # A bug, not the database. Keeping the batch (unacknowledged) and retrying
                # is the only way not to lose it; the log says what is wrong.
                log.exception("writing a batch failed")
                error = exc
            if not self._pause_after(error, batch, backoff):
                return None

    def _pause_after(self, error: Exception, batch: Batch, backoff: Backoff) -> bool:
        """Wait before the next attempt; False when the shutdown grace would run out first."""
        self._stats.database_errors += 1
        self._events.rolled_back()
        self._drop_connection()
        delay = backoff.next_delay()
        if self._give_up_at is not None and time.monotonic() + delay > self._give_up_at:
            log.error(
                "stopping with %d messages uncommitted (%s); the broker redelivers them",
                batch.messages,
                error,
            )
            return False
        log.warning(
            "database write failed (%s); batch of %d messages kept, retry in %.1fs",
            error,
            batch.messages,
            delay,
        )
        self._wake.wait(delay)
        self._wake.clear()
        return True

    def _write(self, conn: psycopg.Connection[Any], batch: Batch) -> Written:
        with conn.transaction():
            self._events.prepare(conn, batch_vehicles(batch))
            self._events.hold_parked(batch.rows, batch.latest)
            inserted = repository.store_telemetry(conn, batch.rows) if batch.rows else 0
            repository.store_dead_letters(conn, batch.dead_letters)
            states = repository.advance_states(conn, batch.latest, batch.presence)
            confirmed, outcomes = self._settle_commands(conn, batch, batch.latest)
            self._events.detect(conn, rows=batch.rows, states=states, outcomes=outcomes)
        return Written(inserted, states, confirmed)

    def _write_isolated(self, conn: psycopg.Connection[Any], batch: Batch) -> Written:
        """Write message by message (a savepoint each); refused messages become dead letters."""
        inserted = 0
        refused: list[DeadLetter] = []
        latest: dict[str, TelemetryRow] = {}
        accepted: list[TelemetryRow] = []
        with conn.transaction():
            self._events.prepare(conn, batch_vehicles(batch))
            self._events.hold_parked(batch.rows, batch.latest)
            for message in batch.telemetry_messages:
                rows = batch.rows[message.first_row : message.end_row]
                try:
                    with conn.transaction():
                        inserted += repository.store_telemetry(conn, rows)
                except DATA_ERRORS as exc:
                    detail = str(exc).replace("\x00", "\\x00")
                    refused.append(
                        DeadLetter(
                            message.topic,
                            message.payload,
                            REASON_REFUSED_BY_DATABASE,
                            detail,
                            message.received_at,
                        )
                    )
                    continue
                accepted += rows
                for row in rows:
                    newest = latest.get(row.vehicle_id)
                    if newest is None or row.ts > newest.ts:
                        latest[row.vehicle_id] = row
            repository.store_dead_letters(conn, [*batch.dead_letters, *refused])
            states = repository.advance_states(conn, latest, batch.presence)
            confirmed, outcomes = self._settle_commands(conn, batch, latest)
            self._events.detect(conn, rows=accepted, states=states, outcomes=outcomes)
        self._stats.refused_by_database += len(refused)
        return Written(inserted, states, confirmed)

    def _settle_commands(
        self, conn: psycopg.Connection[Any], batch: Batch, latest: Mapping[str, TelemetryRow]
    ) -> tuple[int, list[CommandOutcome]]:
        """Record the batch's command acks, then confirm what the new states bear out.

        Returns how many commands were confirmed, and the outcomes the acks recorded.
        """
        outcomes = repository.record_command_acks(conn, batch.command_acks)
        # Only vehicles this batch heard from can have a newly acked command or a new state.
        vehicles = {*latest, *(ack.vehicle_id for ack in batch.command_acks)}
        return repository.confirm_commands(conn, vehicles), outcomes

    def _sweep(self) -> None:
        """Mark silent vehicles offline; skipped (and retried next time) if the database is away."""
        self._next_sweep = time.monotonic() + self._sweep_interval_s
        try:
            conn = self._connection()
            with conn.transaction():
                silent = repository.silent_vehicles(conn, self._silence_timeout_s)
                self._events.prepare(conn, silent)
                offline = repository.mark_offline(conn, silent, self._silence_timeout_s)
                self._events.detect(conn, rows=(), states=offline)
                self._events.refresh(conn)
        except psycopg.Error as exc:
            self._stats.database_errors += 1
            self._events.rolled_back()
            self._drop_connection()
            log.warning("silence sweep skipped: %s", exc)
            return
        self._events.published()
        if offline:
            log.info("marked %d silent vehicles offline", len(offline))
            self._stats.marked_offline += len(offline)
            self._fanout.offer(offline)
