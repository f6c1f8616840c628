"""Handle one command message: verify, drop repeats, apply safety rules, act, write the ack.

The steps follow docs/protocol.md section 5. A message that fails verification before its
signature is trusted (malformed, unknown key, forged, bad claims) is logged and dropped with
no ack: nothing in it can be believed, not even its `cmd_id`. One that fails afterwards
(wrong vehicle, expired, not yet valid) is acked `rejected` with the error's code.

Each command is recorded in the command log *before* acting, so a command redelivered after
a crash mid-action is never acted on twice: it is answered `failed` with `interrupted`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from protocol.acks import REASON_UNSUPPORTED_ACTION, Ack, AckStatus, encode_ack
from protocol.errors import CommandVerificationError, ProtocolError
from vehicle_agent.backends.base import BackendError

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

    from protocol.commands import CommandClaims
    from protocol.signing import CommandVerifier
    from vehicle_agent.backends.base import Actuator, PositionSource, StatusSource
    from vehicle_agent.queue import CommandLog
    from vehicle_agent.safety import SafetyRules

log = logging.getLogger(__name__)

# Reasons of a `failed` ack (the contract lets the unit choose these codes).
REASON_ACTUATOR_TIMEOUT: Final = "actuator_timeout"
REASON_ACTUATOR_ERROR: Final = "actuator_error"
# The agent stopped (crash, power loss) after recording the command and before its ack.
REASON_INTERRUPTED: Final = "interrupted"


class Outcome(StrEnum):
    """What became of a command: its ack status, or a repeat answered with the first ack."""

    DONE = AckStatus.DONE.value
    REJECTED = AckStatus.REJECTED.value
    FAILED = AckStatus.FAILED.value
    REPEAT = "repeat"


@dataclass(frozen=True, slots=True)
class Reply:
    """What to publish on the ack topic, and what happened."""

    cmd_id: UUID
    ack: bytes
    outcome: Outcome
    # Recorded in the command log, so the ack is marked sent once the broker has it.
    logged: bool


@dataclass(frozen=True, slots=True)
class CommandContext:
    """The car a handler acts on."""

    position: PositionSource
    status: StatusSource
    actuator: Actuator


class CommandHandler:
    """Turns a command message into at most one action and one ack."""

    def __init__(  # noqa: PLR0913 - keyword-only collaborators, wired once by the agent
        self,
        *,
        verifier: CommandVerifier | None,
        log: CommandLog,
        rules: SafetyRules,
        car: CommandContext,
        clock: Callable[[], float],
        actuator_timeout_s: float,
    ) -> None:
        self._verifier = verifier
        self._handled = log
        self._rules = rules
        self._car = car
        self._clock = clock
        self._actuator_timeout_s = actuator_timeout_s

    async def handle(self, payload: bytes) -> Reply | None:
        """Handle one message from the command topic; None means drop it without an ack."""
        claims = self._verify(payload)
        if isinstance(claims, Reply) or claims is None:
            return claims
        record = self._handled.get(claims.cmd_id)
        if record is not None and record.ack is not None:
            log.info("command %s is a repeat; sending its first ack again", claims.cmd_id)
            return Reply(claims.cmd_id, record.ack, Outcome.REPEAT, logged=True)
        self._handled.prune(self._clock())
        if record is not None:  # recorded, never answered: the agent died while acting
            return self._answer(claims, AckStatus.FAILED, REASON_INTERRUPTED)
        try:
            reason = self._rules.refusal(
                claims.action, self._car.status.status(), self._car.position.position()
            )
        except BackendError as exc:  # no status yet: safety cannot be checked, so no action
            reason = exc.reason
        if reason is not None:
            log.warning("command %s (%s) refused: %s", claims.cmd_id, claims.action, reason)
            self._handled.begin(claims.cmd_id, claims.exp.timestamp())
            return self._answer(claims, AckStatus.REJECTED, reason)
        self._handled.begin(claims.cmd_id, claims.exp.timestamp())
        status, reason = await self._act(claims)
        return self._answer(claims, status, reason)

    def _verify(self, payload: bytes) -> CommandClaims | Reply | None:
        if self._verifier is None:
            log.warning("command dropped: no trusted hub keys are configured")
            return None
        try:
            return self._verifier.verify(payload)
        except CommandVerificationError as exc:
            if exc.cmd_id is None:
                log.warning("command dropped (%s): %s", exc.code, exc.message)
                return None
            log.warning("command %s rejected (%s): %s", exc.cmd_id, exc.code, exc.message)
            ack = self._ack(exc.cmd_id, AckStatus.REJECTED, exc.code)
            return Reply(exc.cmd_id, ack, Outcome.REJECTED, logged=False)
        except ProtocolError as exc:
            log.warning("command dropped (%s): %s", exc.code, exc.message)
            return None

    async def _act(self, claims: CommandClaims) -> tuple[AckStatus, str | None]:
        try:
            async with asyncio.timeout(self._actuator_timeout_s):
                await self._car.actuator.perform(claims.action)
        except TimeoutError:
            log.error("command %s (%s): actuator timed out", claims.cmd_id, claims.action)  # noqa: TRY400 - a timeout's traceback says nothing
            return AckStatus.FAILED, REASON_ACTUATOR_TIMEOUT
        except BackendError as exc:
            log.error("command %s (%s) failed: %s", claims.cmd_id, claims.action, exc)  # noqa: TRY400 - the backend's message is the whole story
            if exc.reason == REASON_UNSUPPORTED_ACTION:
                return AckStatus.REJECTED, exc.reason
            return AckStatus.FAILED, exc.reason or REASON_ACTUATOR_ERROR
        except Exception:
            # A backend bug must cost one command, not the agent: escaping, an OSError would
            # end the connection with the ack never sent, and anything else would end `run`.
            log.exception("command %s (%s): the actuator raised", claims.cmd_id, claims.action)
            return AckStatus.FAILED, REASON_ACTUATOR_ERROR
        log.info("command %s (%s) done", claims.cmd_id, claims.action)
        return AckStatus.DONE, None

    def _answer(self, claims: CommandClaims, status: AckStatus, reason: str | None) -> Reply:
        ack = self._ack(claims.cmd_id, status, reason)
        self._handled.finish(claims.cmd_id, ack)
        return Reply(claims.cmd_id, ack, Outcome(status.value), logged=True)

    def _ack(self, cmd_id: UUID, status: AckStatus, reason: str | None) -> bytes:
        try:
            locked: bool | None = self._car.status.status().locked
        except BackendError:
            locked = None
        ts = int(self._clock() * 1000)
        return encode_ack(Ack(cmd_id=cmd_id, status=status, reason=reason, ts=ts, locked=locked))
