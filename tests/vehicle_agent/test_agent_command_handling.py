"""Command handling without a broker: verification outcomes, repeats, safety, actuator faults."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from protocol.acks import decode_ack
from protocol.commands import Action
from protocol.keys import SigningKey
from protocol.signing import CommandSigner, CommandVerifier
from vehicle_agent.backends.base import BackendError, VehicleStatus
from vehicle_agent.backends.sim import SimCar
from vehicle_agent.commands import (
    REASON_ACTUATOR_ERROR,
    REASON_ACTUATOR_TIMEOUT,
    REASON_INTERRUPTED,
    CommandContext,
    CommandHandler,
    Outcome,
)
from vehicle_agent.queue import MemoryCommandLog
from vehicle_agent.safety import SafetyRules

if TYPE_CHECKING:
    from vehicle_agent.commands import Reply

KEY = SigningKey.generate()
SIGNER = CommandSigner(KEY)


class StuckCar(SimCar):
    """A car whose actuator never answers, or raises the error it was given."""

    def __init__(self, failure: Exception | None = None) -> None:
        super().__init__(lat=1.0, lon=2.0)
        self.failure = failure

    async def perform(self, action: Action) -> None:
        self.performed.append(action)
        if self.failure is not None:
            raise self.failure
        await asyncio.sleep(3600)


def handler(car: SimCar, log: MemoryCommandLog | None = None, **rules: Any) -> CommandHandler:
    return CommandHandler(
        verifier=CommandVerifier([KEY.verifying_key], "car-1"),
        log=log or MemoryCommandLog(),
        rules=SafetyRules(**rules),
        car=CommandContext(car, car, car),
        clock=time.time,
        actuator_timeout_s=0.05,
    )


def handle(commands: CommandHandler, payload: bytes) -> Reply | None:
    return asyncio.run(commands.handle(payload))


def test_a_valid_unlock_is_done_and_acked_with_the_new_lock_state() -> None:
    car = SimCar(lat=1.0, lon=2.0)
    signed = SIGNER.sign("car-1", Action.UNLOCK, ttl_s=30)
    reply = handle(handler(car), signed.payload)
    assert reply is not None
    assert reply.outcome is Outcome.DONE
    ack = decode_ack(reply.ack)
    assert (ack.cmd_id, ack.status, ack.reason, ack.locked) == (signed.cmd_id, "done", None, False)
    assert car.performed == [Action.UNLOCK]


def test_a_repeat_gets_the_first_ack_and_nothing_is_done_again() -> None:
    car = SimCar(lat=1.0, lon=2.0)
    commands = handler(car)
    signed = SIGNER.sign("car-1", Action.UNLOCK, ttl_s=30)
    first = handle(commands, signed.payload)
    again = handle(commands, signed.payload)
    assert first is not None
    assert again is not None
    assert again.outcome is Outcome.REPEAT
    assert again.ack == first.ack
    assert car.performed == [Action.UNLOCK]


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"token": 5}',
        b'{"token": "v4.public.abc"}',
        CommandSigner(SigningKey.generate()).sign("car-1", Action.UNLOCK, ttl_s=30).payload,
    ],
    ids=["bad-json", "token-not-a-string", "malformed-token", "unknown-key"],
)
def test_untrustworthy_messages_are_dropped_without_ack(payload: bytes) -> None:
    car = SimCar(lat=1.0, lon=2.0)
    assert handle(handler(car), payload) is None
    assert car.performed == []


def test_a_forged_signature_is_dropped_without_ack() -> None:
    car = SimCar(lat=1.0, lon=2.0)
    token = json.loads(SIGNER.sign("car-1", Action.UNLOCK, ttl_s=30).payload)["token"]
    header, body, footer = token.rsplit(".", 2)
    tampered = body[:-4] + ("AAAA" if body[-4:] != "AAAA" else "BBBB")
    payload = json.dumps({"token": f"{header}.{tampered}.{footer}"}).encode()
    assert handle(handler(car), payload) is None
    assert car.performed == []


@pytest.mark.parametrize(
    ("signed", "code"),
    [
        (SIGNER.sign("car-2", Action.UNLOCK, ttl_s=30), "wrong_vehicle"),
        (
            CommandSigner(KEY, clock=lambda: time.time() - 120).sign(
                "car-1", Action.UNLOCK, ttl_s=60
            ),
            "expired",
        ),
        (
            CommandSigner(KEY, clock=lambda: time.time() + 600).sign(
                "car-1", Action.UNLOCK, ttl_s=60
            ),
            "not_yet_valid",
        ),
    ],
    ids=["wrong-vehicle", "expired", "not-yet-valid"],
)
def test_signed_but_invalid_commands_are_rejected_with_the_code(signed: Any, code: str) -> None:
    car = SimCar(lat=1.0, lon=2.0)
    reply = handle(handler(car), signed.payload)
    assert reply is not None
    ack = decode_ack(reply.ack)
    assert (ack.cmd_id, ack.status, ack.reason) == (signed.cmd_id, "rejected", code)
    assert car.performed == []


def test_immobilize_while_driving_is_rejected() -> None:
    car = SimCar(lat=1.0, lon=2.0)
    car.move_to(1.0, 2.001, 40.0, 90.0)
    car.update(engine_on=True)
    reply = handle(handler(car), SIGNER.sign("car-1", Action.IMMOBILIZE, ttl_s=30).payload)
    assert reply is not None
    assert decode_ack(reply.ack).reason == "unsafe_while_moving"
    assert not car.immobilized


def test_unlock_during_an_alarm_is_rejected_unless_allowed() -> None:
    car = SimCar(lat=1.0, lon=2.0, alarm=True)
    reply = handle(handler(car), SIGNER.sign("car-1", Action.UNLOCK, ttl_s=30).payload)
    assert reply is not None
    assert decode_ack(reply.ack).reason == "alarm_active"
    lenient = handler(car, allow_unlock_during_alarm=True)
    reply = handle(lenient, SIGNER.sign("car-1", Action.UNLOCK, ttl_s=30).payload)
    assert reply is not None
    assert reply.outcome is Outcome.DONE


def test_an_actuator_that_never_answers_fails_with_a_timeout() -> None:
    reply = handle(handler(StuckCar()), SIGNER.sign("car-1", Action.LOCK, ttl_s=30).payload)
    assert reply is not None
    ack = decode_ack(reply.ack)
    assert (ack.status, ack.reason, ack.locked) == ("failed", REASON_ACTUATOR_TIMEOUT, True)


@pytest.mark.parametrize(
    ("reason", "status"), [("bus_off", "failed"), ("unsupported_action", "rejected")]
)
def test_backend_errors_become_failed_or_rejected(reason: str, status: str) -> None:
    car = StuckCar(BackendError(reason, "no"))
    reply = handle(handler(car), SIGNER.sign("car-1", Action.HONK, ttl_s=30).payload)
    assert reply is not None
    ack = decode_ack(reply.ack)
    assert (ack.status, ack.reason) == (status, reason)


@pytest.mark.parametrize("error", [RuntimeError("driver bug"), OSError(5, "I/O error")])
def test_an_actuator_that_raises_unexpectedly_fails_the_command_only(error: Exception) -> None:
    reply = handle(handler(StuckCar(error)), SIGNER.sign("car-1", Action.UNLOCK, ttl_s=30).payload)
    assert reply is not None
    ack = decode_ack(reply.ack)
    assert (ack.status, ack.reason, ack.locked) == ("failed", REASON_ACTUATOR_ERROR, True)


def test_a_command_interrupted_by_a_crash_is_not_acted_on_again() -> None:
    car = SimCar(lat=1.0, lon=2.0)
    log = MemoryCommandLog()
    signed = SIGNER.sign("car-1", Action.UNLOCK, ttl_s=30)
    log.begin(signed.cmd_id, signed.claims.exp.timestamp())  # recorded, then the agent died
    reply = handle(handler(car, log), signed.payload)
    assert reply is not None
    ack = decode_ack(reply.ack)
    assert (ack.status, ack.reason) == ("failed", REASON_INTERRUPTED)
    assert car.performed == []


def test_expired_commands_are_forgotten() -> None:
    log = MemoryCommandLog()
    old = uuid.uuid4()
    log.begin(old, time.time() - 1)
    log.finish(old, b"{}")
    handle(
        handler(SimCar(lat=1.0, lon=2.0), log), SIGNER.sign("car-1", Action.HONK, ttl_s=30).payload
    )
    assert log.get(old) is None


def test_without_trusted_keys_every_command_is_dropped() -> None:
    car = SimCar(lat=1.0, lon=2.0)
    commands = CommandHandler(
        verifier=None,
        log=MemoryCommandLog(),
        rules=SafetyRules(),
        car=CommandContext(car, car, car),
        clock=time.time,
        actuator_timeout_s=1.0,
    )
    assert handle(commands, SIGNER.sign("car-1", Action.UNLOCK, ttl_s=30).payload) is None
    assert car.performed == []


def test_no_action_while_the_cars_status_is_unknown() -> None:
    class Quiet(SimCar):
        def status(self) -> VehicleStatus:
            raise BackendError("no_status", "nothing on the bus yet")

    car = Quiet(lat=1.0, lon=2.0)
    reply = handle(handler(car), SIGNER.sign("car-1", Action.UNLOCK, ttl_s=30).payload)
    assert reply is not None
    ack = decode_ack(reply.ack)
    assert (ack.status, ack.reason, ack.locked) == ("rejected", "no_status", None)
    assert car.performed == []
