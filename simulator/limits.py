"""Open-files limit: thousands of simulated cars need thousands of sockets and queue files."""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Final

# Descriptors per vehicle: its MQTT socket, plus the SQLite file, its write-ahead log and
# shared-memory index when the queue is on disk.
FDS_PER_VEHICLE_MEMORY: Final = 1
FDS_PER_VEHICLE_DISK: Final = 4
# The interpreter, its libraries, the event loop's self-pipe and epoll, logs: measured
# about 30 at start; doubled for room.
FDS_BASE: Final = 64


@dataclass(frozen=True, slots=True)
class OpenFilesLimit:
    """The process's open-files limit after raising it, and what the run needs."""

    soft: int
    hard: int
    needed: int

    @property
    def enough(self) -> bool:
        """Whether the soft limit covers the estimate."""
        return self.soft == resource.RLIM_INFINITY or self.soft >= self.needed


def needed_descriptors(vehicles: int, *, disk_queue: bool) -> int:
    """About how many file descriptors a run with this many vehicles keeps open."""
    per_vehicle = FDS_PER_VEHICLE_DISK if disk_queue else FDS_PER_VEHICLE_MEMORY
    return FDS_BASE + vehicles * per_vehicle


def raise_open_files_limit(vehicles: int, *, disk_queue: bool) -> OpenFilesLimit:
    """Raise the soft RLIMIT_NOFILE to the hard limit (no privilege needed for that)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # some sandboxes refuse; the estimate below says whether that matters
    return OpenFilesLimit(soft, hard, needed_descriptors(vehicles, disk_queue=disk_queue))
