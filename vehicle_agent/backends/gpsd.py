"""Position from gpsd, the standard GPS daemon on Linux, over its JSON socket protocol.

A background task connects to gpsd, asks for JSON reports (`?WATCH`), and keeps what the
latest TPV report said. `position()` never waits: it returns that fix while it is fresh,
and None when gpsd reported no fix, when the receiver went quiet, or while gpsd is away.
gpsd restarting or missing costs only reconnect attempts with capped, jittered backoff;
nothing here raises into the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Final

from protocol.backoff import Backoff
from vehicle_agent.backends.base import Position
from vehicle_agent.backends.gpsd_reports import GpsdFix, parse_report

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
# gpsd's registered port.
DEFAULT_PORT: Final = 2947
# A receiver reports once a second; four missed reports in a row mean it lost the sky or
# its device, and a car at city speed has moved about 70 m since the last fix.
DEFAULT_MAX_AGE_S: Final = 5.0
# gpsd runs on the same unit and systemd restarts it within seconds: retry quickly at
# first, and never wait so long that a fix is missed for long after it is back.
DEFAULT_RECONNECT_INITIAL_S: Final = 0.5
DEFAULT_RECONNECT_MAX_S: Final = 10.0
# Connecting to a local daemon takes microseconds; this only bounds a wedged remote host.
CONNECT_TIMEOUT_S: Final = 5.0
# A SKY report listing every visible satellite of four constellations runs to a few
# kilobytes; a line longer than this is not gpsd, and the connection is dropped.
MAX_LINE_BYTES: Final = 256 * 1024
# JSON reports only: no raw NMEA, no pseudo-NMEA, no PPS.
WATCH_COMMAND: Final = b'?WATCH={"enable":true,"json":true}\n'
# What a fix reports as heading until gpsd has given a track: Position needs a number.
UNKNOWN_HEADING: Final = 0.0


class GpsdPositionSource:
    """A PositionSource reading gpsd at `host:port`.

    `device` limits the source to one receiver's reports when gpsd serves several;
    `max_age_s` is how long a fix stays valid without a newer report.
    """

    def __init__(  # noqa: PLR0913 - beyond the address, keyword-only knobs with defaults
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        device: str | None = None,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        reconnect_initial_s: float = DEFAULT_RECONNECT_INITIAL_S,
        reconnect_max_s: float = DEFAULT_RECONNECT_MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        self.host = host
        self.port = port
        self.device = device
        self.max_age_s = max_age_s
        self._backoff = Backoff(initial_s=reconnect_initial_s, max_s=reconnect_max_s)
        self._clock = clock
        self._position: Position | None = None
        self._received_at = 0.0
        self._last_heading = UNKNOWN_HEADING
        self._connected = False
        self._outage_reported = False
        self._task: asyncio.Task[None] | None = None

    @property
    def _address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def connected(self) -> bool:
        """Whether a gpsd connection is open right now."""
        return self._connected

    async def start(self) -> None:
        """Begin connecting in the background; returns at once, gpsd or not."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"gpsd {self.host}:{self.port}")

    def position(self) -> Position | None:
        """The latest fix, or None without a fix or once it is older than `max_age_s`."""
        if self._position is None or self._clock() - self._received_at > self.max_age_s:
            return None
        return self._position

    async def close(self) -> None:
        """Stop reading and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def handle_line(self, line: bytes) -> None:
        """Take one line of gpsd output into account (the reader calls this)."""
        report = parse_report(line)
        if report is None or (self.device is not None and report.device != self.device):
            return
        self._position = None if report.fix is None else self._to_position(report.fix)
        self._received_at = self._clock()

    def _to_position(self, fix: GpsdFix) -> Position:
        # gpsd omits the track when the receiver does not know it (some leave it empty
        # while standing still): the car still points where it last went.
        if fix.heading is not None:
            self._last_heading = fix.heading
        return Position(
            lat=fix.lat,
            lon=fix.lon,
            speed_kmh=fix.speed_kmh,
            heading=self._last_heading,
            accuracy_m=fix.accuracy_m,
        )

    async def _run(self) -> None:
        while True:
            try:
                await self._session()
                reason = "gpsd closed the connection"
            except (OSError, TimeoutError, ValueError) as exc:
                # ValueError: a line over MAX_LINE_BYTES; OSError covers refused and reset.
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug here must not take the agent down with it
                log.exception("gpsd reader failed")
                reason = f"{type(exc).__name__}: {exc}"
            delay = self._backoff.next_delay()
            # Say it once per outage, not on every attempt while gpsd stays away.
            level = logging.DEBUG if self._outage_reported else logging.WARNING
            self._outage_reported = True
            log.log(level, "gpsd at %s:%d: %s; retrying in %.1f s", *self._address, reason, delay)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=MAX_LINE_BYTES),
            CONNECT_TIMEOUT_S,
        )
        try:
            writer.write(WATCH_COMMAND)
            await writer.drain()
            first = True
            while line := await reader.readline():
                if first:
                    # gpsd greets every client with a VERSION line: it is really there.
                    first = False
                    self._connected = True
                    self._outage_reported = False
                    self._backoff.reset()
                    log.info("gpsd at %s:%d connected", *self._address)
                self.handle_line(line)
        finally:
            self._connected = False
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
