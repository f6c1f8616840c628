"""Status and lock actuation over the car's CAN bus, through python-can and a DBC.

A python-can Notifier reads the bus in its own thread and hands every frame to the event
loop, where the frames the signal map watches update the latest status. `perform` sends
the action's request frame and waits, bounded, for a status frame that shows the result:
the car, not the send, says when a door is locked. If the bus fails (an adapter unplugged,
an interface taken down) it is reopened with capped, jittered backoff while the last known
status stays available.

Importing this module imports python-can and cantools (the `can` extra): the agent imports
it only when a CAN backend is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Final

import can

from protocol.acks import REASON_UNSUPPORTED_ACTION
from protocol.backoff import Backoff
from vehicle_agent.backends.base import BackendError, VehicleStatus
from vehicle_agent.backends.can_signals import (
    DEFAULT_REQUESTS,
    CanRequest,
    CanSignals,
    SignalMap,
    StatusState,
    load_dbc,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from can.typechecking import CanFilter

    from protocol.commands import Action
    from vehicle_agent.backends.can_signals import ResolvedRequest
    from vehicle_agent.config import AgentConfig

log = logging.getLogger(__name__)

# Reasons of failed acks (snake_case codes chosen by the unit, see docs/protocol.md).
REASON_ACTUATOR_TIMEOUT: Final = "actuator_timeout"
REASON_CAN_UNAVAILABLE: Final = "can_unavailable"
REASON_NO_STATUS: Final = "no_status"

# Body controllers confirm a lock within a few hundred milliseconds (motors included);
# three seconds covers a slow one and stays well inside the agent's own actuator timeout.
DEFAULT_CONFIRM_TIMEOUT_S: Final = 3.0
# Status frames repeat every 100 ms to 1 s on a running bus: five seconds without a full
# set means the bus is asleep, miswired or the DBC does not match the car.
DEFAULT_FIRST_STATUS_TIMEOUT_S: Final = 5.0
# Reopening a vanished adapter: quickly at first (a glitch), then every 30 s at most.
DEFAULT_REOPEN_INITIAL_S: Final = 0.5
DEFAULT_REOPEN_MAX_S: Final = 30.0
# How long a send may wait for room in the adapter's transmit queue; a full queue for this
# long means nobody acknowledges frames (bus off, or no other node awake).
SEND_TIMEOUT_S: Final = 0.5
# How often the Notifier's reader thread wakes to see whether it should stop: bounds
# close() for buses without a file descriptor (the virtual one, USB adapters).
READER_POLL_S: Final = 0.1
# Pause of the reader thread after a bus error, so a dead adapter does not spin it until
# the backend has reopened the bus.
ERROR_PAUSE_S: Final = 0.2
# Mask that makes a receive filter match one identifier exactly.
STANDARD_ID_MASK: Final = 0x7FF
EXTENDED_ID_MASK: Final = 0x1FFFFFFF


class _Relay(can.Listener):
    """Runs in the Notifier's thread: hands frames and errors to the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_frame: Callable[[can.Message], None],
        on_error: Callable[[Exception], None],
    ) -> None:
        self._loop = loop
        self._on_frame = on_frame
        self._on_error = on_error

    def on_message_received(self, msg: can.Message) -> None:
        """Hand one frame to the event loop."""
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody listens
            self._loop.call_soon_threadsafe(self._on_frame, msg)

    def on_error(self, exc: Exception) -> None:
        """Report a bus error to the event loop, then slow the failing reader down."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._on_error, exc)
        time.sleep(ERROR_PAUSE_S)


class CanBackend:
    """A StatusSource and Actuator on one CAN channel, decoding with a DBC.

    `interface` and `channel` are python-can's (`socketcan`/`can0`, `virtual`/any name...);
    `dbc_path` None uses the sample database shipped with the agent. `signals` and
    `requests` map the DBC's names to status fields and actions; an action without a
    request is rejected as unsupported.
    """

    def __init__(  # noqa: PLR0913 - beyond the bus and DBC, keyword-only knobs with defaults
        self,
        channel: str,
        interface: str = "socketcan",
        dbc_path: Path | str | None = None,
        *,
        signals: CanSignals | None = None,
        requests: Mapping[Action, CanRequest] = DEFAULT_REQUESTS,
        bitrate: int | None = None,
        confirm_timeout_s: float = DEFAULT_CONFIRM_TIMEOUT_S,
        first_status_timeout_s: float = DEFAULT_FIRST_STATUS_TIMEOUT_S,
        reopen_initial_s: float = DEFAULT_REOPEN_INITIAL_S,
        reopen_max_s: float = DEFAULT_REOPEN_MAX_S,
    ) -> None:
        self.channel = channel
        self.interface = interface
        self.bitrate = bitrate
        self.confirm_timeout_s = confirm_timeout_s
        self.first_status_timeout_s = first_status_timeout_s
        self._map = SignalMap(load_dbc(dbc_path), signals or CanSignals(), requests)
        self._state = StatusState(self._map)
        self._status: VehicleStatus | None = None
        self._backoff = Backoff(initial_s=reopen_initial_s, max_s=reopen_max_s)
        self._bus: can.BusABC | None = None
        self._notifier: can.Notifier | None = None
        self._news = asyncio.Event()
        self._failed = asyncio.Event()
        self._sending = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: AgentConfig) -> CanBackend:
        """The backend an agent configuration names (its `can_*` keys)."""
        return cls(
            config.can_channel, config.can_interface, config.can_dbc, bitrate=config.can_bitrate
        )

    @property
    def supported_actions(self) -> frozenset[Action]:
        """The actions this car's DBC and mapping can carry out."""
        return frozenset(self._map.requests)

    async def start(self) -> None:
        """Open the bus and wait until every status signal has arrived once.

        Raises BackendError (`can_unavailable`, `no_status`) if the bus cannot be opened or
        stays silent for `first_status_timeout_s`.
        """
        if self._supervisor is not None:
            return
        try:
            self._open()
        except (can.CanError, OSError, ValueError, ImportError) as exc:
            raise BackendError(
                REASON_CAN_UNAVAILABLE, f"cannot open CAN {self.interface}:{self.channel}: {exc}"
            ) from exc
        self._supervisor = asyncio.create_task(self._supervise(), name=f"can {self.channel}")
        try:
            async with asyncio.timeout(self.first_status_timeout_s):
                await self._until(lambda: self._status is not None)
        except TimeoutError:
            missing = ", ".join(self._state.missing())
            await self.close()
            raise BackendError(
                REASON_NO_STATUS,
                f"no status from the car on {self.interface}:{self.channel} within "
                f"{self.first_status_timeout_s:g} s; never received: {missing}",
            ) from None

    def status(self) -> VehicleStatus:
        """The latest status the car sent."""
        if self._status is None:
            raise BackendError(REASON_NO_STATUS, "the CAN backend has not received a status")
        return self._status

    async def perform(self, action: Action) -> None:
        """Send the action's request and wait until the car's status confirms it."""
        request = self._map.requests.get(action)
        if request is None:
            raise BackendError(
                REASON_UNSUPPORTED_ACTION, f"the car's CAN database has no request for {action}"
            )
        # One request at a time: two in flight could confirm each other's opposite.
        async with self._sending:
            before = self._state.frames_of(request)
            await self._send(request)
            try:
                async with asyncio.timeout(self.confirm_timeout_s):
                    await self._until(lambda: self._state.confirmed(request, before))
            except TimeoutError:
                raise BackendError(
                    REASON_ACTUATOR_TIMEOUT,
                    f"the car did not confirm {action} within {self.confirm_timeout_s:g} s",
                ) from None

    async def close(self) -> None:
        """Stop reading and release the bus."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        await asyncio.to_thread(self._shut)

    # --- the bus ------------------------------------------------------------------------

    def _open(self) -> None:
        options: dict[str, Any] = {}
        if self.bitrate is not None:
            options["bitrate"] = self.bitrate
        filters: list[CanFilter] = [
            {
                "can_id": frame_id,
                "can_mask": EXTENDED_ID_MASK if extended else STANDARD_ID_MASK,
                "extended": extended,
            }
            for frame_id, extended in self._map.watched_frames()
        ]
        # The kernel (socketcan) drops every other frame of a busy car bus before Python.
        bus = can.Bus(
            channel=self.channel, interface=self.interface, can_filters=filters, **options
        )
        loop = asyncio.get_running_loop()
        relay = _Relay(loop, self._on_frame, self._on_bus_error)
        self._bus = bus
        # No `loop` given to the Notifier: its thread calls the relay, and the relay alone
        # crosses into the event loop, the same way for every interface.
        self._notifier = can.Notifier(bus, [relay], timeout=READER_POLL_S)
        self._failed.clear()

    def _shut(self) -> None:
        notifier, self._notifier = self._notifier, None
        bus, self._bus = self._bus, None
        if notifier is not None:
            notifier.stop(timeout=READER_POLL_S + ERROR_PAUSE_S + 1.0)
        if bus is not None:
            with contextlib.suppress(can.CanError, OSError):
                bus.shutdown()

    async def _supervise(self) -> None:
        while True:
            await self._failed.wait()
            await asyncio.to_thread(self._shut)
            while True:
                delay = self._backoff.next_delay()
                log.warning("CAN %s: reopening in %.1f s", self.channel, delay)
                await asyncio.sleep(delay)
                try:
                    self._open()
                except (can.CanError, OSError, ValueError) as exc:
                    log.warning("CAN %s: cannot reopen: %s", self.channel, exc)
                    continue
                self._backoff.reset()
                log.info("CAN %s: reopened", self.channel)
                break

    def _on_bus_error(self, exc: Exception) -> None:
        if not self._failed.is_set():
            log.warning("CAN %s: bus error: %s", self.channel, exc)
            self._failed.set()

    async def _send(self, request: ResolvedRequest) -> None:
        bus = self._bus
        if bus is None:
            raise BackendError(REASON_CAN_UNAVAILABLE, f"CAN {self.channel} is not open")
        message = request.target.message
        frame = can.Message(
            arbitration_id=message.frame_id,
            is_extended_id=message.is_extended_frame,
            data=request.payload(),
        )
        try:
            await asyncio.to_thread(bus.send, frame, SEND_TIMEOUT_S)
        except (can.CanError, OSError) as exc:
            raise BackendError(
                REASON_CAN_UNAVAILABLE, f"cannot send on CAN {self.channel}: {exc}"
            ) from exc

    # --- frames -------------------------------------------------------------------------

    def _on_frame(self, msg: can.Message) -> None:
        if msg.is_error_frame or msg.is_remote_frame:
            return
        if not self._state.feed(msg.arbitration_id, bytes(msg.data), extended=msg.is_extended_id):
            return
        self._status = self._state.status() or self._status
        # Wake everyone waiting for news (start, confirmations), then arm a fresh event.
        news, self._news = self._news, asyncio.Event()
        news.set()

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._news.wait()
