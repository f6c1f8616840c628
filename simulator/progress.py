"""What `freecar sim` shows while it runs: a live table on a terminal, plain lines otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO

from simulator.fleet import Snapshot

if TYPE_CHECKING:
    from rich.live import Live


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-second rates between two snapshots."""

    fixes_enqueued: float
    fixes_acked: float


def rates(previous: Snapshot | None, current: Snapshot) -> Rates:
    """Rates from `previous` to `current`; over the whole run when there is no `previous`."""
    start = previous if previous is not None else Snapshot()
    span = current.elapsed_s - start.elapsed_s
    if span <= 0:
        return Rates(0.0, 0.0)
    return Rates(
        (current.fixes_enqueued - start.fixes_enqueued) / span,
        (current.unique_acked - start.unique_acked) / span,
    )


def status_line(snap: Snapshot, rate: Rates) -> str:
    """One line describing the fleet, for logs and pipes."""
    return (
        f"sim {snap.elapsed_s:6.0f}s  connected {snap.connected}/{snap.vehicles}"
        f"  fixes/s {rate.fixes_acked:,.1f} acked ({rate.fixes_enqueued:,.1f} taken)"
        f"  acked {snap.unique_acked:,}  backlog {snap.backlog:,}"
        f"  dropped {snap.queue_dropped:,}  links down {snap.links_down}"
        f"  commands {snap.commands_executed} done {snap.commands_rejected} rejected"
        f"  reconnects {snap.reconnects}  errors {snap.vehicles_with_errors}"
    )


class Display(Protocol):
    """Shows snapshots as they come."""

    def show(self, snap: Snapshot, *, final: bool = False) -> None:
        """Render one snapshot; the final one shows rates over the whole run."""

    def close(self) -> None:
        """Leave the terminal tidy."""


class PlainDisplay:
    """A status line per snapshot, for pipes, files and supervisors."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._previous: Snapshot | None = None

    def show(self, snap: Snapshot, *, final: bool = False) -> None:
        """Print one line."""
        rate = rates(None if final else self._previous, snap)
        print(status_line(snap, rate), file=self.stream, flush=True)
        self._previous = snap

    def close(self) -> None:
        """Nothing to tidy."""


class LiveDisplay:
    """A table redrawn in place on a terminal."""

    def __init__(self, stream: TextIO, title: str) -> None:
        from rich.console import Console  # noqa: PLC0415 - only terminals need rich
        from rich.live import Live  # noqa: PLC0415 - likewise

        self.title = title
        self._previous: Snapshot | None = None
        self._live: Live = Live(console=Console(file=stream), auto_refresh=False, transient=False)
        self._live.start()

    def show(self, snap: Snapshot, *, final: bool = False) -> None:
        """Redraw the table."""
        from rich.table import Table  # noqa: PLC0415 - only terminals need rich

        rate = rates(None if final else self._previous, snap)
        self._previous = snap
        table = Table(title=self.title, show_header=False, min_width=52)
        table.add_column("what", style="bold")
        table.add_column("value", justify="right")
        rows = [
            ("elapsed", f"{snap.elapsed_s:,.0f} s"),
            ("connected", f"{snap.connected:,} / {snap.vehicles:,} ({snap.started:,} started)"),
            ("fixes/s acked", f"{rate.fixes_acked:,.1f}"),
            ("fixes/s taken", f"{rate.fixes_enqueued:,.1f}"),
            ("fixes acked", f"{snap.unique_acked:,}"),
            ("backlog (queued, unacked)", f"{snap.backlog:,}"),
            ("dropped (queue full)", f"{snap.queue_dropped:,}"),
            ("links down (scenario)", f"{snap.links_down:,}"),
            (
                "commands done / rejected",
                f"{snap.commands_executed:,} / {snap.commands_rejected:,}",
            ),
            ("reconnects", f"{snap.reconnects:,}"),
            ("vehicles with errors", f"{snap.vehicles_with_errors:,}"),
        ]
        for name, value in rows:
            table.add_row(name, value)
        self._live.update(table, refresh=True)

    def close(self) -> None:
        """Stop redrawing; the last table stays on screen."""
        self._live.stop()


def make_display(stream: TextIO, title: str) -> Display:
    """A live table when `stream` is a terminal, plain lines otherwise."""
    if stream.isatty():
        return LiveDisplay(stream, title)
    return PlainDisplay(stream)
