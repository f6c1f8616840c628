"""Which CAN signals mean what to the agent, resolved against a DBC: pure code, no bus.

A car's DBC names its own signals; `CanSignals` says which of them carry the agent's
status fields, and `CanRequest` which signal value asks for an action and which status
signal confirms it. `SignalMap` checks all of that against the database once, at start-up,
so a misspelt name fails loudly instead of leaving a field forever unknown; `StatusState`
then folds received frames into the latest valid values.

A name is either a signal's own name, when only one message of the DBC has a signal of
that name, or `MESSAGE.Signal`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import cantools
from cantools.database.can import Database, Message, Signal
from cantools.database.errors import DecodeError
from cantools.database.errors import Error as CantoolsError

from protocol.commands import Action
from vehicle_agent.backends.base import VehicleStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

# The sample database shipped with the agent; the default signal names below are its own.
SAMPLE_DBC: Final = Path(__file__).resolve().parent.parent / "freecar-car.dbc"

# A (frame id, extended id) pair: 0x123 standard and 0x123 extended are different frames.
FrameKey = tuple[int, bool]


class CanConfigError(ValueError):
    """The DBC or the signal mapping cannot work: missing file, unknown or ambiguous name."""


@dataclass(frozen=True, slots=True)
class CanSignals:
    """The DBC signals behind each status field; None where the car has no such signal."""

    locked: str = "Locked"
    # Any of these non-zero means "a door (or the boot, or the bonnet) is open".
    doors_open: tuple[str, ...] = (
        "DoorFrontLeft",
        "DoorFrontRight",
        "DoorRearLeft",
        "DoorRearRight",
        "Tailgate",
        "Bonnet",
    )
    engine_on: str = "EngineOn"
    odometer_km: str = "Odometer"
    fuel_pct: str | None = "FuelLevel"
    battery_pct: str | None = "BatterySoC"
    alarm: str | None = "AlarmActive"


@dataclass(frozen=True, slots=True)
class CanRequest:
    """One action on the bus: which signal value asks for it, which status confirms it.

    The action is done once `confirm_signal` reads `confirm_value` in a frame received
    after the request went out; without a confirmation signal, once the frame is sent.
    Values are raw numbers or the names of the DBC's value descriptions (VAL_).
    """

    signal: str
    value: int | str
    confirm_signal: str | None = None
    confirm_value: int | str | None = None


DEFAULT_REQUESTS: Final[Mapping[Action, CanRequest]] = {
    Action.LOCK: CanRequest("LockRequest", "Lock", "Locked", "Locked"),
    Action.UNLOCK: CanRequest("LockRequest", "Unlock", "Locked", "Unlocked"),
}


def load_dbc(path: Path | str | None = None) -> Database:
    """Load a DBC file, or the sample database shipped with the agent when `path` is None."""
    path = SAMPLE_DBC if path is None else path
    try:
        database = cantools.database.load_file(str(path), database_format="dbc")
    except (OSError, UnicodeDecodeError, CantoolsError) as exc:
        raise CanConfigError(f"cannot load the CAN database {path}: {exc}") from exc
    if not isinstance(database, Database):  # pragma: no cover - "dbc" yields a CAN database
        raise CanConfigError(f"{path} is not a CAN database")
    return database


@dataclass(frozen=True, slots=True)
class SignalRef:
    """A signal of the DBC together with the message (frame) that carries it."""

    message: Message
    signal: Signal

    @property
    def frame(self) -> FrameKey:
        """The frame this signal arrives in."""
        return (self.message.frame_id, self.message.is_extended_frame)

    @property
    def name(self) -> str:
        """`MESSAGE.Signal`, for messages."""
        return f"{self.message.name}.{self.signal.name}"

    def raw(self, value: int | str) -> int:
        """The raw number for `value`: itself, or the number of a value description."""
        if isinstance(value, int):
            return value
        for number, choice in (self.signal.choices or {}).items():
            if str(choice) == value:
                return int(number)
        raise CanConfigError(f"{self.name} has no value description {value!r}")

    def scaled(self, raw: float) -> float:
        """The physical value of a raw one (DBC factor and offset)."""
        return raw * float(self.signal.scale) + float(self.signal.offset)


@dataclass(frozen=True, slots=True)
class ResolvedRequest:
    """A CanRequest checked against the DBC: the frame to send and how to confirm it."""

    target: SignalRef
    raw_value: int
    confirm: SignalRef | None
    confirm_raw: int | None

    def payload(self) -> bytes:
        """The request frame's data: the request signal set, every other signal raw 0."""
        values = {signal.name: 0 for signal in self.target.message.signals}
        values[self.target.signal.name] = self.raw_value
        return bytes(self.target.message.encode(values, scaling=False, strict=True))


def _find(database: Database, name: str) -> SignalRef:
    message_name, dot, signal_name = name.rpartition(".")
    if dot:
        try:
            message = database.get_message_by_name(message_name)
            return SignalRef(message, message.get_signal_by_name(signal_name))
        except KeyError:
            raise CanConfigError(f"the CAN database has no signal {name}") from None
    found = [
        SignalRef(message, signal)
        for message in database.messages
        for signal in message.signals
        if signal.name == name
    ]
    if not found:
        raise CanConfigError(f"the CAN database has no signal named {name}")
    if len(found) > 1:
        names = ", ".join(ref.name for ref in found)
        raise CanConfigError(f"several messages have a signal {name} ({names}): write one of those")
    return found[0]


class SignalMap:
    """CanSignals and CanRequests resolved against one DBC."""

    def __init__(
        self,
        database: Database,
        signals: CanSignals,
        requests: Mapping[Action, CanRequest] = DEFAULT_REQUESTS,
    ) -> None:
        if signals.fuel_pct is None and signals.battery_pct is None:
            raise CanConfigError("map fuel_pct, battery_pct or both: every fix carries one")
        if not signals.doors_open:
            raise CanConfigError("map at least one door signal for doors_open")

        def optional(name: str | None) -> SignalRef | None:
            return None if name is None else _find(database, name)

        self.locked = _find(database, signals.locked)
        self.doors_open = tuple(_find(database, name) for name in signals.doors_open)
        self.engine_on = _find(database, signals.engine_on)
        self.odometer_km = _find(database, signals.odometer_km)
        self.fuel_pct = optional(signals.fuel_pct)
        self.battery_pct = optional(signals.battery_pct)
        self.alarm = optional(signals.alarm)
        self.requests = {action: self._resolve(database, r) for action, r in requests.items()}

    @staticmethod
    def _resolve(database: Database, request: CanRequest) -> ResolvedRequest:
        target = _find(database, request.signal)
        if request.confirm_signal is None:
            return ResolvedRequest(target, target.raw(request.value), None, None)
        if request.confirm_value is None:
            raise CanConfigError(f"{request.confirm_signal}: a confirmation needs a value")
        confirm = _find(database, request.confirm_signal)
        return ResolvedRequest(
            target, target.raw(request.value), confirm, confirm.raw(request.confirm_value)
        )

    def status_signals(self) -> list[SignalRef]:
        """Every signal the status needs, required or optional."""
        optional = [ref for ref in (self.fuel_pct, self.battery_pct, self.alarm) if ref]
        return [self.locked, *self.doors_open, self.engine_on, self.odometer_km, *optional]

    def watched_signals(self) -> list[SignalRef]:
        """The status signals and the requests' confirmations: what the bus must deliver."""
        confirms = [r.confirm for r in self.requests.values() if r.confirm is not None]
        return [*self.status_signals(), *confirms]

    def watched_frames(self) -> dict[FrameKey, Message]:
        """The frames carrying watched signals, by frame key."""
        return {ref.frame: ref.message for ref in self.watched_signals()}


class StatusState:
    """The latest valid value of every watched signal, and how many frames of each arrived."""

    def __init__(self, signals: SignalMap) -> None:
        self.signals = signals
        self.raw: dict[str, float] = {}
        self.frames_seen: dict[FrameKey, int] = {}
        self._frames = signals.watched_frames()
        # Readings outside these ranges are how DBCs say "not available" (raw 0xFF on a
        # 0.5 %/bit level reads 127.5 %): the contract cannot carry them and the car does
        # not know either, so the last valid reading stays.
        self._ranges: dict[str, tuple[SignalRef, float, float]] = {
            ref.name: (ref, low, high)
            for ref, low, high in (
                (signals.fuel_pct, 0.0, 100.0),
                (signals.battery_pct, 0.0, 100.0),
                (signals.odometer_km, 0.0, math.inf),
            )
            if ref is not None
        }

    def feed(self, frame_id: int, data: bytes, *, extended: bool = False) -> bool:
        """Take one received frame into account; True if it was a watched one that decoded."""
        key = (frame_id, extended)
        message = self._frames.get(key)
        if message is None:
            return False
        try:
            decoded = message.decode(data, decode_choices=False, scaling=False)
        except (DecodeError, ValueError, KeyError):
            return False  # a frame shorter than the DBC says, or a multiplexer it lacks
        if not isinstance(decoded, dict):  # pragma: no cover - only container messages
            return False
        for signal_name, value in decoded.items():
            name = f"{message.name}.{signal_name}"
            if isinstance(value, int | float) and self._valid(name, float(value)):
                self.raw[name] = float(value)
        self.frames_seen[key] = self.frames_seen.get(key, 0) + 1
        return True

    def _valid(self, name: str, raw: float) -> bool:
        if not math.isfinite(raw):
            return False
        bounds = self._ranges.get(name)
        if bounds is None:
            return True
        ref, low, high = bounds
        return low <= ref.scaled(raw) <= high

    def missing(self) -> list[str]:
        """What the status still lacks: signals never received (validly) so far."""
        signals = self.signals
        required = [signals.locked, *signals.doors_open, signals.engine_on, signals.odometer_km]
        if signals.alarm is not None:
            required.append(signals.alarm)
        lacking = [ref.name for ref in required if ref.name not in self.raw]
        # One energy level is enough: a hybrid whose battery reads "not available" still
        # reports its fuel.
        levels = [ref for ref in (signals.fuel_pct, signals.battery_pct) if ref is not None]
        if not any(ref.name in self.raw for ref in levels):
            lacking.append(" or ".join(ref.name for ref in levels))
        return lacking

    def value(self, ref: SignalRef | None) -> float | None:
        """The physical value of a signal, or None when unmapped or not received yet."""
        raw = None if ref is None else self.raw.get(ref.name)
        return None if ref is None or raw is None else ref.scaled(raw)

    def flag(self, ref: SignalRef) -> bool:
        """A status bit: any non-zero raw value is true."""
        return self.raw.get(ref.name, 0.0) != 0

    def confirmed(self, request: ResolvedRequest, frames_before: int) -> bool:
        """Whether a frame newer than `frames_before` shows the request's confirmation."""
        confirm = request.confirm
        if confirm is None:
            return True
        return (
            self.frames_seen.get(confirm.frame, 0) > frames_before
            and self.raw.get(confirm.name) == request.confirm_raw
        )

    def frames_of(self, request: ResolvedRequest) -> int:
        """How many frames carrying the request's confirmation have arrived so far."""
        return 0 if request.confirm is None else self.frames_seen.get(request.confirm.frame, 0)

    def status(self) -> VehicleStatus | None:
        """The car's status, or None until every mapped signal has been received."""
        signals = self.signals
        odometer = self.value(signals.odometer_km)
        if self.missing() or odometer is None:
            return None
        return VehicleStatus(
            locked=self.flag(signals.locked),
            doors_open=any(self.flag(ref) for ref in signals.doors_open),
            engine_on=self.flag(signals.engine_on),
            odometer_km=odometer,
            fuel_pct=self.value(signals.fuel_pct),
            battery_pct=self.value(signals.battery_pct),
            alarm=None if signals.alarm is None else self.flag(signals.alarm),
        )
