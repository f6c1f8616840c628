"""Command messages on `fleet/{vid}/cmd`: the envelope, the signed claims and the actions."""

from datetime import timedelta
from enum import StrEnum
from typing import Final, Self
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from protocol.schema import (
    MAX_COMMAND_TTL_S,
    PROTOCOL_VERSION,
    ProtocolModel,
    ProtocolVersion,
    VehicleId,
)


class Action(StrEnum):
    """What a command asks the vehicle to do."""

    LOCK = "lock"
    UNLOCK = "unlock"
    LOCATE = "locate"
    HONK = "honk"
    IMMOBILIZE = "immobilize"
    MOBILIZE = "mobilize"


ACTIONS_REFUSED_WHILE_MOVING: Final = frozenset({Action.IMMOBILIZE})
"""Actions a vehicle must reject (reason `unsafe_while_moving`) unless it is standing still:
cutting the engine at speed endangers the people in and around the car."""


class CommandClaims(ProtocolModel):
    """The signed content of a command token."""

    v: ProtocolVersion = PROTOCOL_VERSION
    cmd_id: UUID
    vid: VehicleId
    action: Action
    # PASETO registered claims: RFC 3339 date-times with an explicit offset.
    iat: AwareDatetime
    exp: AwareDatetime

    @model_validator(mode="after")
    def _exp_after_iat(self) -> Self:
        if self.exp <= self.iat:
            raise PydanticCustomError(
                "exp_not_after_iat", "exp must be later than iat", {"field": "exp"}
            )
        if self.exp - self.iat > timedelta(seconds=MAX_COMMAND_TTL_S):
            raise PydanticCustomError(
                "lifetime_too_long",
                "exp may be at most {limit} seconds after iat",
                {"field": "exp", "limit": MAX_COMMAND_TTL_S},
            )
        return self


class CommandFooter(BaseModel):
    """The token's footer: which key signed it (PASERK `k4.pid` id of the public key)."""

    model_config = ConfigDict(strict=True, frozen=True)

    kid: str


class CommandMessage(ProtocolModel):
    """The MQTT body of a command: `{"token": "v4.public...."}`."""

    token: str
