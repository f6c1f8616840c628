"""A stand-in body and energy controller on a python-can virtual channel, for tests.

It speaks the sample DBC: it broadcasts BODY_STATUS and ENERGY_STATUS periodically, and
answers a BODY_REQUEST lock or unlock by changing its lock state and broadcasting the new
status at once, as a real body controller does. `deaf` makes it ignore requests.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import TYPE_CHECKING

import can

from vehicle_agent.backends.can_signals import load_dbc

if TYPE_CHECKING:
    from collections.abc import Iterator

# Ten times a second, like a body controller's status broadcast.
PERIOD_S = 0.1
# LockRequest's raw values in the sample DBC.
LOCK, UNLOCK = 1, 2

DEFAULT_SIGNALS: dict[str, float] = {
    "Locked": 1,
    "DoorFrontLeft": 0,
    "DoorFrontRight": 0,
    "DoorRearLeft": 0,
    "DoorRearRight": 0,
    "Tailgate": 0,
    "Bonnet": 0,
    "EngineOn": 0,
    "AlarmActive": 0,
    "FuelLevel": 50.0,
    "BatterySoC": 75.0,
    "Odometer": 1000.0,
}


def virtual_channel() -> str:
    """A virtual channel name no other test uses."""
    return f"freecar-test-{uuid.uuid4().hex[:12]}"


class EcuStub:
    """The car's side of the bus, running in its own thread."""

    def __init__(self, channel: str, *, deaf: bool = False, **signals: float) -> None:
        self.database = load_dbc()
        self.channel = channel
        self.deaf = deaf
        self.requests: list[int] = []
        self._signals = DEFAULT_SIGNALS | signals
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bus = can.Bus(channel=channel, interface="virtual")
        self._thread = threading.Thread(target=self._run, name=f"ecu {channel}", daemon=True)

    def set(self, **signals: float) -> None:
        """Change signal values; they go out with the next broadcast."""
        with self._lock:
            self._signals.update(signals)

    def signal(self, name: str) -> float:
        """A signal's current value."""
        with self._lock:
            return self._signals[name]

    def frame(self, message_name: str) -> can.Message:
        """A status frame with the current values (strict off: "not available" values too)."""
        message = self.database.get_message_by_name(message_name)
        with self._lock:
            values = {signal.name: self._signals[signal.name] for signal in message.signals}
        return can.Message(
            arbitration_id=message.frame_id,
            is_extended_id=False,
            data=message.encode(values, strict=False),
        )

    def broadcast(self) -> None:
        """Send both status frames now."""
        for name in ("BODY_STATUS", "ENERGY_STATUS"):
            self._bus.send(self.frame(name))

    def _run(self) -> None:
        request_id = self.database.get_message_by_name("BODY_REQUEST").frame_id
        next_broadcast = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_broadcast:
                self.broadcast()
                next_broadcast = time.monotonic() + PERIOD_S
            msg = self._bus.recv(timeout=max(0.0, next_broadcast - time.monotonic()))
            if msg is None or msg.arbitration_id != request_id:
                continue
            raw = msg.data[0] & 0b11
            self.requests.append(raw)
            if not self.deaf and raw in {LOCK, UNLOCK}:
                self.set(Locked=1 if raw == LOCK else 0)
                self._bus.send(self.frame("BODY_STATUS"))

    def start(self) -> None:
        """Start broadcasting and answering."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and leave the bus."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._bus.shutdown()


@contextlib.contextmanager
def running_ecu(channel: str, *, deaf: bool = False, **signals: float) -> Iterator[EcuStub]:
    """An ECU stub broadcasting on `channel` for the duration of the block."""
    ecu = EcuStub(channel, deaf=deaf, **signals)
    ecu.start()
    try:
        yield ecu
    finally:
        ecu.stop()
