"""The hub's counters: logged periodically, read by tests and the benchmark.

Each counter has a single writer: the MQTT thread counts what arrives and what it
acknowledges, the writer thread what is stored and fanned out. A plain int written by one
thread needs no lock under the GIL; a reader may see a value a moment old, which is all a
counter promises.
The per-reason counters hold every reason from the start, so a reader copying them never
sees the dict change size.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from hub.filters import Reason


def _by_reason() -> dict[Reason, int]:
    return dict.fromkeys(Reason, 0)


@dataclass(slots=True)
class HubStats:
    """What one hub process has done since it started."""

    # Written by the MQTT thread.
    messages_received: int = 0
    fixes_received: int = 0
    status_messages: int = 0
    command_acks: int = 0
    dead_lettered: int = 0
    handler_errors: int = 0
    unknown_vehicle: int = 0
    """Messages of vehicles not in the inventory, or retired: dead-lettered, nothing stored."""
    status_future: int = 0
    """Status messages dated further ahead than the future filter allows: dated on arrival."""
    filtered: dict[Reason, int] = field(default_factory=_by_reason)
    """Fixes dropped, by the filter that dropped them."""
    kept_for_status: dict[Reason, int] = field(default_factory=_by_reason)
    """Fixes a filter refused but kept as status-only, because they change lock/doors/..."""
    mqtt_connections: int = 0
    messages_acked: int = 0
    messages_qos0: int = 0
    """QoS 0 messages: nothing to acknowledge (amqtt sends retained messages this way)."""
    acks_skipped: int = 0
    """Messages of a connection lost before their batch committed: the broker redelivers."""
    watermark_publish_failures: int = 0
    """`stored` messages the broker did not take (the unit learns at the next one, or asks)."""

    # Written by the writer thread.
    batches: int = 0
    fixes_stored: int = 0
    duplicates_in_database: int = 0
    """Kept fixes the database already had (ON CONFLICT DO NOTHING): redeliveries, replays."""
    refused_by_database: int = 0
    """Messages whose values the database refused: dead-lettered, the rest committed."""
    hub_errors: int = 0
    """Messages a batch step failed on for a bug of the hub: dead-lettered (`hub_error`)."""
    database_errors: int = 0
    flush_seconds_total: float = 0.0
    flush_seconds_max: float = 0.0
    flush_seconds_last: float = 0.0
    marked_offline: int = 0
    live_published: int = 0
    live_errors: int = 0
    commands_confirmed: int = 0
    events_raised: int = 0
    detection_errors: int = 0
    """Failures of event detection (loading, a batch, a vehicle): logged, ingest went on."""
    vehicles_registered: int = 0
    """Unknown vehicles inserted into the inventory (FREECAR_HUB_REGISTER_UNKNOWN)."""
    state_reloads: int = 0
    """Vehicles whose event state another hub had moved on, reloaded before a batch."""
    watermarks_published: int = 0
    """`stored` messages sent after a commit (contract 1.1), by batches and the sweep."""
    watermarks_swept: int = 0
    """Of those, the ones the periodic sweep sent (due between batches)."""
    watermark_errors: int = 0
    """Vehicles whose watermark a batch could not move: logged, nothing claimed for them."""

    # Written by the command dispatcher thread.
    commands_sent: int = 0
    commands_send_failed: int = 0
    """Publishes the broker did not acknowledge in time: put back in the queue."""
    commands_expired: int = 0
    command_errors: int = 0

    @property
    def duplicates(self) -> int:
        """Duplicates dropped in memory plus those the database refused."""
        return self.filtered[Reason.DUPLICATE] + self.duplicates_in_database

    def record_flush(self, seconds: float) -> None:
        """Account one committed batch's flush time (from taking it to commit)."""
        self.batches += 1
        self.flush_seconds_last = seconds
        self.flush_seconds_total += seconds
        self.flush_seconds_max = max(self.flush_seconds_max, seconds)

    def snapshot(self) -> dict[str, Any]:
        """Every counter as plain JSON-ready data."""
        data: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            data[item.name] = (
                {str(k): v for k, v in value.items()} if isinstance(value, dict) else value
            )
        data["duplicates"] = self.duplicates
        return data

    def summary(self) -> str:
        """One log line."""
        filtered = ", ".join(f"{k}={v}" for k, v in self.filtered.items() if v) or "none"
        mean_ms = 1000 * self.flush_seconds_total / self.batches if self.batches else 0.0
        return (
            f"received {self.messages_received} msgs / {self.fixes_received} fixes; "
            f"stored {self.fixes_stored}; duplicates {self.duplicates}; "
            f"filtered {filtered}; dead-lettered {self.dead_lettered} "
            f"(unknown vehicle {self.unknown_vehicle}, refused by the database "
            f"{self.refused_by_database}, hub errors {self.hub_errors}); "
            f"batches {self.batches} (flush mean {mean_ms:.1f} ms, "
            f"max {1000 * self.flush_seconds_max:.1f} ms); acked {self.messages_acked}; "
            f"database errors {self.database_errors}; "
            f"detection errors {self.detection_errors}; live {self.live_published}; "
            f"storage acks {self.watermarks_published} "
            f"(failed {self.watermark_publish_failures}); "
            f"commands sent {self.commands_sent}, confirmed {self.commands_confirmed}, "
            f"expired {self.commands_expired}"
        )
