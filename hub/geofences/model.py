"""What the geofence engine reads and reports: fixes in, transitions out, and its counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from datetime import datetime

    from db.geofences.model import GeofenceKind


class Fix(Protocol):
    """What the engine reads of a fix; `db.telemetry.TelemetryRow` is one."""

    @property
    def vehicle_id(self) -> str: ...  # noqa: D102 - a field
    @property
    def ts(self) -> datetime: ...  # noqa: D102
    @property
    def lat(self) -> float | None: ...  # noqa: D102
    @property
    def lon(self) -> float | None: ...  # noqa: D102
    @property
    def accuracy_m(self) -> float | None: ...  # noqa: D102


class SpeedLimit(NamedTuple):
    """A speed limit in force, and the fence that sets it (None: not a fence's)."""

    kmh: float
    geofence_id: int | None = None


class TransitionKind(StrEnum):
    """Which way a vehicle crossed a fence."""

    ENTER = "enter"
    EXIT = "exit"


class Cause(StrEnum):
    """Which rule decided a transition."""

    MARGIN = "margin"  # a fix deep enough inside, or far enough outside
    DWELL = "dwell"  # inside for dwell_s
    CROSSING = "crossing"  # the straight step between two fixes passed through


# A NamedTuple, not a frozen dataclass: hundreds are built per batch, and a tuple is several
# times cheaper to build.
class GeofenceTransition(NamedTuple):
    """A vehicle entered or left a fence: what the hub turns into an event."""

    vehicle_id: str
    geofence_id: int
    kind: TransitionKind
    # The deciding fix's time and position, or the interpolated ones for a crossing.
    ts: datetime
    lat: float
    lon: float
    fence_kind: GeofenceKind
    cause: Cause


@dataclass(slots=True)
class EngineStats:
    """Counters since the engine was made, and where its time went (seconds per phase)."""

    batches: int = 0
    fixes: int = 0
    without_position: int = 0
    vague: int = 0  # fixes vaguer than the engine's max_accuracy_m: skipped
    replayed: int = 0
    pairs: int = 0
    walked: int = 0
    crossing_checks: int = 0
    transitions: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def add_time(self, phase: str, seconds: float) -> None:
        """Charge `seconds` to a phase."""
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
