"""A real gpsd for tests, reading NMEA sentences that the test writes into a pseudo-terminal.

gpsd treats the pty's slave side as a serial GPS receiver; the test plays the receiver on
the master side. gpsd is started through devstack's Service (same port across kill and
start, readiness by a real request), and a devstack watchdog kills it even if the test
process is killed with -9.

Facts about gpsd 3.22 (Debian 12) that shaped this:
- Started as root it opens its devices, then drops to the `gpsd` user and `dialout` group;
  it keeps the devices it already opened, so a root-owned pty still works. Run as anyone
  else it keeps its user. With -N it stays in the foreground and in its working directory.
- `-b` (read-only) keeps it from writing probe strings to the "receiver", which nobody
  would read. No control socket (-F) is needed: devices come from the command line.
- It listens about 10 ms after starting, but greets a client (VERSION) only when its
  main loop wakes: at once if the receiver is talking, after up to a second otherwise.
- Its first TPV comes from the first GGA, before an RMC has given the date: it has a
  position but no time, speed or track. Every later cycle ends with the RMC and carries all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import termios
import tty
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.ports import accepts_connections
from devstack.service import Service
from devstack.watchdog import Watchdog

if TYPE_CHECKING:
    from collections.abc import Iterator

# Where Debian puts gpsd; a plain user's PATH often lacks the sbin directories.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin")
# gpsd converts the knots of RMC sentences to m/s with this factor (and three decimals).
MPS_PER_KNOT = 1852 / 3600
# gpsd answers in milliseconds; a loaded CI machine is slow, but this long means broken.
WAIT_S = 15.0
# How often the fake receiver repeats its sentences: 10 Hz keeps tests quick, and gpsd
# takes it as a 10 Hz receiver because the NMEA time advances by as much each time.
FEED_INTERVAL_S = 0.1


def find_gpsd() -> str | None:
    """The gpsd binary, or None if it is not installed."""
    return shutil.which("gpsd") or shutil.which("gpsd", path=os.pathsep.join(SBIN_DIRS))


def nmea(body: str) -> bytes:
    """One NMEA 0183 sentence with its checksum (XOR of the bytes between $ and *)."""
    checksum = 0
    for byte in body.encode("ascii"):
        checksum ^= byte
    return f"${body}*{checksum:02X}\r\n".encode("ascii")


def _angle(value: float, degree_digits: int) -> str:
    """NMEA's ddmm.mmmmm (or dddmm.mmmmm) for an unsigned angle."""
    degrees = int(value)
    minutes = (value - degrees) * 60
    return f"{degrees:0{degree_digits}d}{minutes:08.5f}"


@dataclass(frozen=True, slots=True)
class TrackPoint:
    """What the fake receiver reports: a position with speed and course, or no fix at all."""

    lat: float
    lon: float
    speed_knots: float
    course: float
    has_fix: bool = True

    @property
    def speed_kmh(self) -> float:
        """The speed gpsd will report, converted to km/h (gpsd rounds m/s to 3 decimals)."""
        return round(self.speed_knots * MPS_PER_KNOT, 3) * 3.6

    def sentences(self, when: datetime) -> bytes:
        """A GGA and an RMC sentence for this point at time `when`."""
        hms = when.strftime("%H%M%S") + f".{when.microsecond // 10_000:02d}"
        date = when.strftime("%d%m%y")
        lat = f"{_angle(abs(self.lat), 2)},{'N' if self.lat >= 0 else 'S'}"
        lon = f"{_angle(abs(self.lon), 3)},{'E' if self.lon >= 0 else 'W'}"
        if not self.has_fix:
            return nmea(f"GPGGA,{hms},,,,,0,00,99.9,,M,,M,,") + nmea(
                f"GPRMC,{hms},V,,,,,,,{date},,,N"
            )
        return nmea(f"GPGGA,{hms},{lat},{lon},1,08,0.9,12.0,M,0.0,M,,") + nmea(
            f"GPRMC,{hms},A,{lat},{lon},{self.speed_knots:.2f},{self.course:.2f},{date},,,A"
        )


class FakeReceiver:
    """The master side of a pty, playing a GPS receiver that repeats its current point."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        # Raw: no echo back to the master (nobody reads it) and no line editing of NMEA.
        tty.setraw(self._slave, termios.TCSANOW)
        # A write must never block the test's event loop while gpsd is down and the pty's
        # buffer is full; what does not fit is dropped, as a real serial line would.
        os.set_blocking(self._master, False)
        self.device = os.ttyname(self._slave)
        self.point: TrackPoint | None = None
        self._clock = datetime.now(UTC)

    def send(self, point: TrackPoint) -> None:
        """Write one cycle of sentences for `point`, at the next NMEA time."""
        self._clock += timedelta(seconds=FEED_INTERVAL_S)
        with contextlib.suppress(BlockingIOError):
            os.write(self._master, point.sentences(self._clock))

    async def run(self) -> None:
        """Repeat `point` every FEED_INTERVAL_S; silent while it is None (the feed stops)."""
        while True:
            if self.point is not None:
                self.send(self.point)
            await asyncio.sleep(FEED_INTERVAL_S)

    def close(self) -> None:
        """Close both sides of the pty."""
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class GpsdServer(Service):
    """gpsd in the foreground on a loopback port, reading one device."""

    name = "gpsd"

    def __init__(self, binary: str, device: str, *, workdir: Path) -> None:
        super().__init__(
            workdir=workdir, log_path=workdir.parent / "gpsd.log", ready_timeout=WAIT_S
        )
        self.binary = binary
        self.device = device
        self.pids: set[int] = set()
        """Every gpsd process this server ran, to find the shared memory each left behind."""

    def launch(self) -> None:
        """Start gpsd and remember its pid."""
        super().launch()
        if self.pid is not None:
            self.pids.add(self.pid)

    def command(self) -> list[str]:
        """gpsd -N (foreground) -n (open the device now) -b (never write to it)."""
        return [self.binary, "-N", "-n", "-b", "-S", str(self.port), self.device]

    def is_ready(self) -> bool:
        """Whether gpsd listens: it binds its port only after opening its devices.

        Its greeting is no quicker test: gpsd accepts a client in its main loop, which
        wakes once a second when the receiver is silent, so the VERSION line can lag
        the connection by that second.
        """
        return accepts_connections(self.port)


@contextlib.contextmanager
def running_gpsd(binary: str, device: str) -> Iterator[GpsdServer]:
    """A gpsd for `device`, for the caller to start; killed, and its directory removed, after."""
    root = Path(tempfile.mkdtemp(prefix="freecar-gpsd-"))
    # Traversable: gpsd run as root keeps this as its working directory after dropping
    # to its own account.
    root.chmod(0o711)
    watchdog = Watchdog.start(root, frozenset({os.path.realpath(binary)}))
    server = GpsdServer(binary, device, workdir=root / "run")
    try:
        yield server
    finally:
        try:
            server.kill()
        finally:
            # The watchdog sweeps the directory for strays, removes it and exits.
            watchdog.close()
            remove_shared_memory_of(server.pids)


def remove_shared_memory_of(pids: set[int]) -> None:
    """Remove the SysV segments these (exited) processes created and nobody uses.

    gpsd creates its NTP and export segments at start; run as root it then drops to its own
    account and can no longer remove them, so they would outlive the test.
    """
    try:
        lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return
    for line in lines:
        fields = line.split()
        # Columns: key shmid perms size cpid lpid nattch ...
        shmid, creator, attached = int(fields[1]), int(fields[4]), int(fields[6])
        if creator in pids and attached == 0:
            subprocess.run(["ipcrm", "-m", str(shmid)], check=False, capture_output=True)
