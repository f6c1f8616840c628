"""The hub's side of contract 1.1's storage acknowledgement: the batch's step and the sweep.

`advance_watermarks` is a step of the batch's transaction: it runs after the batch's
fixes are stored (or refused) and its vehicles locked, folds what the batch handled into
each vehicle's watermark (`hub.watermarks`), saves them, and returns what to publish. The
sweep, `publish_due_watermarks`, runs in a transaction of its own every few seconds for
vehicles whose publication fell due between batches. Both hand their `Publication`s to
the caller, who sends them only after the commit (`send_publications`): a unit must never
hear of a fix that a rolled-back transaction did not keep.

`StoredPublisher` is the writer's side of it: it sends a batch's publications after the
commit and runs the sweep every `sweep_s`. Sending is fire and forget (QoS 1, retained):
a word the broker does not take is counted and repaired by a later one, since the unit
keeps its fixes meanwhile, and sends them again after a reconnect, which the hub answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hub.watermark_repository import due_watermarks, load_watermarks, save_watermarks
from hub.watermarks import advance, published, stored_message
from protocol.stored import encode_stored
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    import psycopg

    from hub.stats import HubStats
    from hub.watermarks import HandledFixes, WatermarkPolicy, WatermarkState
    from protocol.stored import Stored


@dataclass(frozen=True, slots=True)
class Publication:
    """A `stored` message for one vehicle, to publish (retained) after the commit."""

    vehicle_id: str
    message: Stored

    def topic(self, root: str) -> str:
        """The vehicle's `stored` topic under `root`."""
        return Topic.stored(self.vehicle_id, root=root).value

    def payload(self) -> bytes:
        """The message as sent."""
        return encode_stored(self.message)


def advance_watermarks(
    conn: psycopg.Connection[Any],
    handled: HandledFixes,
    now: datetime,
    policy: WatermarkPolicy,
) -> list[Publication]:
    """The batch's step: move the watermarks of the vehicles it handled fixes of.

    Runs inside the batch's transaction, after its vehicles are locked (so hubs sharing a
    subscription take turns on a vehicle) and after its fixes are stored. Returns what to
    publish once the transaction commits; vehicles outside the inventory get nothing.
    """
    if not handled.by_vehicle:
        return []
    stored = load_watermarks(conn, handled.by_vehicle.keys())
    moved: dict[str, WatermarkState] = {}
    to_publish: list[str] = []
    for vehicle_id, of_vehicle in handled.by_vehicle.items():
        result = advance(stored.get(vehicle_id), of_vehicle, now, policy)
        if result is None:
            continue
        moved[vehicle_id] = result.state
        if result.publish:
            to_publish.append(vehicle_id)
    written = save_watermarks(conn, moved)
    return [
        Publication(vehicle_id, stored_message(moved[vehicle_id], now))
        for vehicle_id in to_publish
        if vehicle_id in written
    ]


def publish_due_watermarks(
    conn: psycopg.Connection[Any], now: datetime, limit: int
) -> list[Publication]:
    """The sweep's step: mark up to `limit` due watermarks published; return them.

    Runs in its own transaction; rows a batch holds are skipped (that batch publishes them
    if they are due). Publish the result only after the commit.
    """
    due = due_watermarks(conn, now, limit)
    for state in due.values():
        published(state, now)
    save_watermarks(conn, due)
    return [
        Publication(vehicle_id, stored_message(state, now)) for vehicle_id, state in due.items()
    ]


def send_publications(
    publications: Iterable[Publication], root: str, send: Callable[[str, bytes], object]
) -> int:
    """Hand committed publications to `send(topic, payload)` (QoS 1, retained); return how many."""
    count = 0
    for publication in publications:
        send(publication.topic(root), publication.payload())
        count += 1
    return count


class StoredPublisher:
    """The writer's storage acknowledgements: publications after commits, and the sweep."""

    def __init__(  # noqa: PLR0913 - keyword-only wiring, done once by the Hub
        self,
        *,
        policy: WatermarkPolicy,
        root: str,
        send: Callable[[str, bytes], object],
        stats: HubStats,
        sweep_s: float,
        sweep_limit: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.root = root
        self._send = send
        self._stats = stats
        self._sweep_s = sweep_s
        self._sweep_limit = sweep_limit
        self._clock = clock
        self._next_sweep = clock() + sweep_s

    def committed(self, publications: Sequence[Publication]) -> None:
        """Send a committed transaction's publications (QoS 1, retained), counting them."""
        if publications:
            self._stats.watermarks_published += send_publications(
                publications, self.root, self._send
            )

    def sweep_due(self) -> bool:
        """Whether the periodic sweep should run now."""
        return self._clock() >= self._next_sweep

    def sweep(self, conn: psycopg.Connection[Any]) -> int:
        """Publish what fell due between batches, in a transaction of its own; return how many.

        A full sweep (`sweep_limit` words) leaves more due: the next one runs at once.
        """
        self._next_sweep = self._clock() + self._sweep_s
        with conn.transaction():
            due = publish_due_watermarks(conn, datetime.now(UTC), self._sweep_limit)
        self.committed(due)
        self._stats.watermarks_swept += len(due)
        if len(due) >= self._sweep_limit:
            self._next_sweep = self._clock()
        return len(due)
