"""Building blocks shared by every message model: strict config, version, timestamps, extras."""

from __future__ import annotations

import math
from typing import Annotated, Any, Final, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from protocol.topics import VEHICLE_ID_PATTERN

PROTOCOL_VERSION: Final = 1

# The last millisecond a Python datetime (and a PostgreSQL timestamptz) can hold is in the year
# 9999; a larger value cannot be a real instant, so it is refused here rather than in the hub.
MAX_EPOCH_MILLIS: Final = 253_402_300_799_999

# Longest lifetime of a command token. It bounds the window in which a captured command can be
# replayed, and how long a vehicle must remember command ids to drop duplicates.
MAX_COMMAND_TTL_S: Final = 3600

# Counters are stored in PostgreSQL bigint columns.
MAX_BIGINT: Final = 2**63 - 1

# A unit's queue id (contract 1.1) is drawn at random from 1 to this: 31 bits make two
# queues of one vehicle collide once in two billion, and the id stays ten digits long.
MAX_QUEUE_ID: Final = 2**31 - 1


def _require_supported_version(version: int) -> int:
    if version != PROTOCOL_VERSION:
        raise PydanticCustomError(
            "unsupported_version",
            "protocol version {version} is not supported; this implementation speaks version 1",
            {"version": version},
        )
    return version


ProtocolVersion = Annotated[int, AfterValidator(_require_supported_version)]
"""The `v` field: absent means 1; any other value is refused so a v2 message is never misread."""

EpochMillis = Annotated[int, Field(gt=0, le=MAX_EPOCH_MILLIS)]
"""A Unix timestamp in milliseconds, UTC."""

Counter = Annotated[int, Field(ge=0, le=MAX_BIGINT)]
"""A non-negative integer that fits a bigint."""

QueueId = Annotated[int, Field(ge=1, le=MAX_QUEUE_ID)]
"""The id of a unit's fix queue: it names the counter a fix's `seq` comes from."""

VehicleId = Annotated[str, Field(pattern=VEHICLE_ID_PATTERN)]
"""A vehicle id as it appears in topics and command claims."""


def _first_non_finite(value: object, path: str) -> str | None:
    """Return the dotted path of the first NaN or infinity inside a JSON value, if any."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, list):
        for position, item in enumerate(value):
            found = _first_non_finite(item, f"{path}.{position}")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            found = _first_non_finite(item, f"{path}.{key}")
            if found is not None:
                return found
    return None


class ProtocolModel(BaseModel):
    """Base of every message: strict JSON types, finite numbers, unknown fields kept."""

    model_config = ConfigDict(
        # No "true" strings for booleans, no 1.0 for integers: a unit that sends the wrong
        # type has a bug the hub should surface rather than paper over.
        strict=True,
        allow_inf_nan=False,
        # A newer unit may add fields; the hub keeps them (see `extras`) instead of
        # dropping the whole message. They never change the meaning of v1 fields.
        extra="allow",
        frozen=True,
    )

    @property
    def extras(self) -> dict[str, Any]:
        """Fields the contract does not define, exactly as received."""
        return self.__pydantic_extra__ or {}

    @model_validator(mode="after")
    def _extras_are_finite(self) -> Self:
        # The JSON parser accepts NaN and Infinity tokens; declared floats refuse them through
        # allow_inf_nan, extras need this walk. PostgreSQL jsonb would refuse them later anyway.
        if self.__pydantic_extra__:
            for key, value in self.__pydantic_extra__.items():
                path = _first_non_finite(value, key)
                if path is not None:
                    raise PydanticCustomError(
                        "non_finite_extra",
                        "{field} holds NaN or an infinity, which JSON does not allow",
                        {"field": path},
                    )
        return self
