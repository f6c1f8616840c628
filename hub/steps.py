"""A batch's transaction as one ordered list of steps, written once.

Like Traccar's pipeline of handlers, a batch goes through `BATCH_STEPS`, in order, inside
one transaction the writer opens (`run`):

1. `prepare_events`: lock the batch's vehicles for event detection, load what changed;
2. `hold_parked`: a parked car's fixes at its parked point, until it really moves
   (`hub.parking`), before anything stores or evaluates them;
3. `store_telemetry`: fixes, exactly once;
4. `advance_states`: `vehicle_state`, forward only;
5. `settle_commands`: command acks, then the lock/unlock confirmations the states bear out;
6. `detect_events`: events, rules, and what to fan out after the commit (guarded on its
   own: a bug in detection costs events, never the batch; see `hub.events.pipeline`);
7. `store_dead_letters`: after every step that may refuse a message, so it keeps them all;
8. `advance_watermarks`: last, once every fix of the batch is settled (stored, dropped by a
   filter or a duplicate, or kept as a dead letter): each vehicle's storage watermark, and
   the `stored` messages to publish after the commit (contract 1.1, `hub.storage_acks`).
   A fix whose dead letter the database refused too is lost to the hub, so its vehicle's
   watermark does not move in this batch: the unit, which still holds the fix, sends it
   again.

The silence sweep is a smaller list (`SWEEP_STEPS`) of the same kind of steps.

Every step also knows how to go message by message. When the database refuses a batch, or
a step fails on a bug, the writer runs the batch again isolating (`run(isolate=True)`):
each step first tries its whole share under a savepoint, and only a step that fails goes
item by item, each under its own savepoint. An item that still fails becomes a dead letter
with its reason (`refused_by_database` for a value the database refuses, `hub_error` for a
bug of the hub) and the rest of the batch commits. An outage (`hub.database.is_outage`) is
never isolated: it ends the attempt, and the writer retries the batch once the database is
back.

To extend the batch, write a `Step` and add it to `BATCH_STEPS` where it belongs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

from hub.batch import DeadLetter
from hub.database import DATA_ERRORS, is_outage
from hub.intake import REASON_HUB_ERROR
from hub.ordering import is_newer
from hub.repository import commands, event_state, telemetry, vehicle_state
from hub.storage_acks import advance_watermarks
from hub.watermarks import HandledFixes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import psycopg

    from db.telemetry import TelemetryRow
    from hub.batch import Batch, Presence
    from hub.events.pipeline import EventPipeline
    from hub.repository.commands import CommandOutcome
    from hub.repository.vehicle_state import LiveState
    from hub.storage_acks import Publication
    from hub.watermarks import WatermarkPolicy

log = logging.getLogger(__name__)

# Dead-letter reason for a message whose values the database refused.
REASON_REFUSED_BY_DATABASE: Final = "refused_by_database"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_R = TypeVar("_R")


def batch_vehicles(batch: Batch) -> set[str]:
    """The vehicles a batch takes a turn on: fixes, presence news or handled fixes of.

    The turn lock (`prepare_events`) also keeps hubs sharing a subscription from both
    writing a vehicle's first watermark: a vehicle with handled fixes is locked even when
    none of them is stored (all dropped, or a dead letter).
    """
    return {*(row.vehicle_id for row in batch.rows), *batch.presence, *batch.handled.by_vehicle}


@dataclass(slots=True)
class Work:
    """What one transaction works on, and what its steps did: the steps' shared state."""

    events: EventPipeline
    allowance: timedelta
    """The hub's future bound: how fixes are ordered (`hub.ordering`)."""
    rows: list[TelemetryRow] = field(default_factory=list)
    latest: dict[str, TelemetryRow] = field(default_factory=dict)
    presence: dict[str, Presence] = field(default_factory=dict)
    batch: Batch | None = None
    vehicles: set[str] = field(default_factory=set)
    """The vehicles whose event state the transaction takes a turn on."""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    silence_timeout_s: float = 0.0
    inserted: int = 0
    states: list[LiveState] = field(default_factory=list)
    outcomes: list[CommandOutcome] = field(default_factory=list)
    confirmed: int = 0
    refused: int = 0
    """Messages the database refused (dead-lettered)."""
    failed: int = 0
    """Messages a step failed on for a bug (dead-lettered)."""
    watermarks: WatermarkPolicy | None = None
    """How storage watermarks are published; None when storage acknowledgements are off."""
    unclaimed: set[str] = field(default_factory=set)
    """Vehicles whose watermark must not move: a dead letter of theirs was not kept."""
    publications: list[Publication] = field(default_factory=list)
    """`stored` messages to publish once the transaction commits."""
    watermark_errors: int = 0
    """Vehicles whose watermark a step failed to move (nothing claimed for them)."""

    @classmethod
    def of_batch(
        cls,
        batch: Batch,
        events: EventPipeline,
        allowance: timedelta,
        watermarks: WatermarkPolicy | None = None,
    ) -> Work:
        """The work of one batch, as the MQTT thread left it."""
        return cls(
            events,
            allowance,
            rows=batch.rows,
            latest=batch.latest,
            presence=batch.presence,
            batch=batch,
            vehicles=batch_vehicles(batch),
            dead_letters=list(batch.dead_letters),
            watermarks=watermarks,
        )

    def reject(self, topic: str, payload: bytes, received_at: datetime, exc: Exception) -> None:
        """Dead-letter a message a step could not write, saying why."""
        if isinstance(exc, DATA_ERRORS):
            reason, detail = REASON_REFUSED_BY_DATABASE, str(exc)
            self.refused += 1
            log.warning("database refused a message on %s; dead-lettered: %s", topic, exc)
        else:
            reason, detail = REASON_HUB_ERROR, repr(exc)
            self.failed += 1
            log.error("writing a message on %s failed; dead-lettered", topic, exc_info=exc)
        self.dead_letters.append(DeadLetter.of(topic, payload, reason, detail, received_at))


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a transaction: its whole share at once, or item by item."""

    name: str
    run: Callable[[psycopg.Connection[Any], Work], None]
    isolate: Callable[[psycopg.Connection[Any], Work], None]
    """Item by item, each under a savepoint; a failing item is dead-lettered or logged."""


def run(
    conn: psycopg.Connection[Any], steps: Iterable[Step], work: Work, *, isolate: bool = False
) -> Work:
    """Run the steps in order, in one transaction; with `isolate`, as the module says."""
    with conn.transaction():
        for step in steps:
            if not isolate:
                step.run(conn, work)
                continue
            try:
                with conn.transaction():
                    step.run(conn, work)
            except Exception as exc:
                if is_outage(exc):
                    raise
                log.warning("%s failed for the whole batch (%r); item by item", step.name, exc)
                step.isolate(conn, work)
    return work


@dataclass(frozen=True, slots=True)
class _Failure:
    """What an item failed with."""

    error: Exception


def _attempt(conn: psycopg.Connection[Any], write: Callable[[], _R]) -> _R | _Failure:
    """Run `write` under a savepoint: its result, or what it failed with (an outage raises)."""
    try:
        with conn.transaction():
            return write()
    except Exception as exc:
        if is_outage(exc):
            raise
        return _Failure(exc)


# --- the steps -------------------------------------------------------------------------------


def _prepare_events(conn: psycopg.Connection[Any], work: Work) -> None:
    work.events.prepare(conn, work.vehicles)


def _hold_parked(_conn: psycopg.Connection[Any], work: Work) -> None:
    # In place: the batch's messages index their rows by position (`TelemetryMessage`).
    if work.rows:
        work.rows[:] = work.events.hold_parked(work.rows)
        work.latest = newest_rows(work.rows, work.allowance)


def _store_telemetry(conn: psycopg.Connection[Any], work: Work) -> None:
    if work.rows:
        work.inserted = telemetry.store_telemetry(conn, work.rows)


def _store_telemetry_isolated(conn: psycopg.Connection[Any], work: Work) -> None:
    """Message by message: a refused message's fixes are neither stored nor state."""
    assert work.batch is not None
    accepted: list[TelemetryRow] = []
    inserted = 0
    for message in work.batch.telemetry_messages:
        rows = work.rows[message.first_row : message.end_row]
        stored = _attempt(conn, partial(telemetry.store_telemetry, conn, rows))
        if isinstance(stored, _Failure):
            work.reject(message.topic, message.payload, message.received_at, stored.error)
            continue
        inserted += stored
        accepted += rows
    work.rows, work.inserted = accepted, inserted
    work.latest = newest_rows(accepted, work.allowance)


def newest_rows(rows: Iterable[TelemetryRow], allowance: timedelta) -> dict[str, TelemetryRow]:
    """Each vehicle's newest row by `hub.ordering` (what its state may move forward to)."""
    allowance_ms = allowance // _ONE_MS
    newest: dict[str, TelemetryRow] = {}
    for row in rows:
        known = newest.get(row.vehicle_id)
        if known is None or is_newer(
            row.seq,
            (row.ts - _EPOCH) // _ONE_MS,
            than_seq=known.seq,
            than_ts=(known.ts - _EPOCH) // _ONE_MS,
            allowance=allowance_ms,
        ):
            newest[row.vehicle_id] = row
    return newest


def _advance_states(conn: psycopg.Connection[Any], work: Work) -> None:
    work.states = vehicle_state.advance_states(
        conn, work.latest, work.presence, allowance=work.allowance
    )


def _advance_states_isolated(conn: psycopg.Connection[Any], work: Work) -> None:
    """Vehicle by vehicle: a refused state is skipped, and its status messages dead-lettered."""
    statuses = work.batch.status_messages if work.batch is not None else []
    touched: list[LiveState] = []
    for vehicle_id in sorted({*work.latest, *work.presence}):
        latest = {vehicle_id: work.latest[vehicle_id]} if vehicle_id in work.latest else {}
        heard = {vehicle_id: work.presence[vehicle_id]} if vehicle_id in work.presence else {}
        moved = _attempt(
            conn,
            partial(vehicle_state.advance_states, conn, latest, heard, allowance=work.allowance),
        )
        if not isinstance(moved, _Failure):
            touched += moved
            continue
        log.error("state of %s not moved (%r); its fixes are stored", vehicle_id, moved.error)
        for message in statuses:
            if message.vehicle_id == vehicle_id:
                work.reject(message.topic, message.payload, message.received_at, moved.error)
    work.states = touched


def _settle_commands(conn: psycopg.Connection[Any], work: Work) -> None:
    """Record the acks, then confirm what the new states bear out."""
    acks = work.batch.command_acks if work.batch is not None else []
    outcomes = commands.record_command_acks(conn, acks)
    work.confirmed = commands.confirm_commands(conn, _commanded(work))
    work.outcomes = outcomes


def _settle_commands_isolated(conn: psycopg.Connection[Any], work: Work) -> None:
    """Ack by ack: a refused ack is dead-lettered; the confirmations then run as usual."""
    acks = work.batch.command_acks if work.batch is not None else []
    outcomes: list[CommandOutcome] = []
    for ack in acks:
        recorded = _attempt(conn, partial(commands.record_command_acks, conn, [ack]))
        if isinstance(recorded, _Failure):
            work.reject(ack.topic, ack.payload, ack.received_at, recorded.error)
        else:
            outcomes += recorded
    confirmed = _attempt(conn, partial(commands.confirm_commands, conn, _commanded(work)))
    if isinstance(confirmed, _Failure):
        # Nothing a message said: the next batch of these vehicles confirms them.
        log.error("confirming commands failed (%r); left for the next batch", confirmed.error)
        confirmed = 0
    work.outcomes, work.confirmed = outcomes, confirmed


def _commanded(work: Work) -> set[str]:
    # Only vehicles this batch heard from can have a newly acked command or a new state.
    acks = work.batch.command_acks if work.batch is not None else []
    return {*work.latest, *(ack.vehicle_id for ack in acks)}


def _detect_events(conn: psycopg.Connection[Any], work: Work) -> None:
    work.events.detect(conn, rows=work.rows, states=work.states, outcomes=work.outcomes)


def _store_dead_letters(conn: psycopg.Connection[Any], work: Work) -> None:
    telemetry.store_dead_letters(conn, work.dead_letters)


def _store_dead_letters_isolated(conn: psycopg.Connection[Any], work: Work) -> None:
    """Letter by letter: one the database refuses is logged, the others are kept.

    (A dead letter of a dead letter would fail the same way.)
    """
    for letter in work.dead_letters:
        failure = _attempt(conn, partial(telemetry.store_dead_letters, conn, [letter]))
        if isinstance(failure, _Failure):
            work.refused += 1
            log.error(
                "dead letter (%s, %s, %d bytes) refused, not kept: %r",
                letter.topic,
                letter.reason,
                letter.payload_size,
                failure.error,
            )
            vehicle_id = telemetry_vehicle(letter.topic)
            if vehicle_id is not None:
                # Its fixes are neither stored nor kept: the unit must send them again.
                work.unclaimed.add(vehicle_id)


def telemetry_vehicle(topic: str) -> str | None:
    """The vehicle of a `{root}/{vid}/telemetry` topic, else None.

    Only for topics intake already parsed: a message with fixes to claim has a valid one.
    """
    parts = topic.rsplit("/", 2)
    if len(parts) == 3 and parts[2] == "telemetry":
        return parts[1]
    return None


def _claimable(work: Work) -> HandledFixes:
    """What the batch handled, less the vehicles whose watermark must not move."""
    assert work.batch is not None
    handled = work.batch.handled
    if not work.unclaimed:
        return handled
    claimable = HandledFixes()
    claimable.by_vehicle = {
        vehicle_id: of_vehicle
        for vehicle_id, of_vehicle in handled.by_vehicle.items()
        if vehicle_id not in work.unclaimed
    }
    return claimable


def _advance_watermarks(conn: psycopg.Connection[Any], work: Work) -> None:
    if work.watermarks is None or work.batch is None or not work.batch.handled.by_vehicle:
        return
    work.publications = advance_watermarks(
        conn, _claimable(work), datetime.now(UTC), work.watermarks
    )


def _advance_watermarks_isolated(conn: psycopg.Connection[Any], work: Work) -> None:
    """Vehicle by vehicle: one whose watermark fails is logged, and claims nothing."""
    if work.watermarks is None or work.batch is None:
        return
    now = datetime.now(UTC)
    publications: list[Publication] = []
    for vehicle_id, of_vehicle in sorted(_claimable(work).by_vehicle.items()):
        alone = HandledFixes()
        alone.by_vehicle[vehicle_id] = of_vehicle
        moved = _attempt(conn, partial(advance_watermarks, conn, alone, now, work.watermarks))
        if isinstance(moved, _Failure):
            work.watermark_errors += 1
            log.error(
                "storage watermark of %s not moved (%r); its unit sends the fixes again",
                vehicle_id,
                moved.error,
            )
            continue
        publications += moved
    work.publications = publications


def claim_dead_lettered(conn: psycopg.Connection[Any], work: Work) -> None:
    """The watermark step of the writer's last resort, which dead-letters a whole batch.

    Dead letters are handled fixes like any other: claiming them spares the units sending
    the batch again. Takes the vehicles' turn lock itself (no `prepare_events` ran), and
    never fails for a bug: a vehicle whose watermark cannot move claims nothing.
    """
    if work.watermarks is None or work.batch is None or not work.batch.handled.by_vehicle:
        return
    vehicles = work.batch.handled.by_vehicle
    locked = _attempt(conn, partial(event_state.lock_vehicles, conn, vehicles))
    if isinstance(locked, _Failure):
        # The dead letters are what matters here; their units send the fixes again.
        work.watermark_errors += len(vehicles)
        log.error("no turn lock for the last resort's watermarks (%r)", locked.error)
        return
    if isinstance(_attempt(conn, partial(_advance_watermarks, conn, work)), _Failure):
        _advance_watermarks_isolated(conn, work)


def _find_silent(conn: psycopg.Connection[Any], work: Work) -> None:
    work.vehicles = set(vehicle_state.silent_vehicles(conn, work.silence_timeout_s))


def _mark_offline(conn: psycopg.Connection[Any], work: Work) -> None:
    work.states = vehicle_state.mark_offline(conn, work.vehicles, work.silence_timeout_s)


def _refresh_events(conn: psycopg.Connection[Any], work: Work) -> None:
    work.events.refresh(conn)


def _same(step: Callable[[psycopg.Connection[Any], Work], None], name: str) -> Step:
    """A step with no items of its own: isolating runs it as it is."""
    return Step(name, step, step)


BATCH_STEPS: Final = (
    _same(_prepare_events, "prepare_events"),
    _same(_hold_parked, "hold_parked"),
    Step("store_telemetry", _store_telemetry, _store_telemetry_isolated),
    Step("advance_states", _advance_states, _advance_states_isolated),
    Step("settle_commands", _settle_commands, _settle_commands_isolated),
    _same(_detect_events, "detect_events"),
    Step("store_dead_letters", _store_dead_letters, _store_dead_letters_isolated),
    Step("advance_watermarks", _advance_watermarks, _advance_watermarks_isolated),
)
"""A batch's transaction, in order."""

SWEEP_STEPS: Final = (
    _same(_find_silent, "find_silent"),
    _same(_prepare_events, "prepare_events"),
    _same(_mark_offline, "mark_offline"),
    _same(_detect_events, "detect_events"),
    _same(_refresh_events, "refresh_events"),
)
"""The silence sweep's transaction, in order: vehicles not heard from are marked offline."""
