"""Telemetry fixes published on `fleet/{vid}/telemetry`: one JSON object or an array (backfill)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Final, Self

from pydantic import (
    AfterValidator,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from protocol.decoding import validate_json
from protocol.errors import BadJsonError
from protocol.schema import (
    PROTOCOL_VERSION,
    Counter,
    EpochMillis,
    ProtocolModel,
    ProtocolVersion,
    QueueId,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

# One message carries at most this many fixes: it bounds what the hub holds for one message and
# keeps a message (about 200 bytes per fix) well under broker size limits.
MAX_FIXES_PER_MESSAGE: Final = 1000

Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
Percent = Annotated[float, Field(ge=0, le=100)]

# Largest horizontal accuracy kept as sent, in metres: no two places on Earth are farther apart
# than half a great circle (pi x 6,371,008.8 m, the mean radius the hub measures with, is
# 20,015,115 m), so a larger value says no more than "anywhere on Earth", which this value
# says too. Clamping to it loses nothing a reader could use, keeps the fix (its lock and door
# status count whatever its position is worth), and keeps the hub's float4 column, which
# holds at most 3.4e38, from storing 1e300 as Infinity.
MAX_ACCURACY_M: Final = 20_016_000.0


def _at_most_the_earth(accuracy_m: float) -> float:
    return min(accuracy_m, MAX_ACCURACY_M)


# The highest odometer reading a fix may carry, in km. The longest-lived cars on record have
# covered about 5 million km; a reading past twice that is a broken unit, and refusing it keeps
# trip distances (differences of readings) from being computed from nonsense such as 1e300.
MAX_ODOMETER_KM: Final = 10_000_000.0

# Metres, >= 0; beyond MAX_ACCURACY_M clamped to it.
Accuracy = Annotated[float, Field(ge=0), AfterValidator(_at_most_the_earth)]

# Optional fields left out of the encoded JSON when unset, to keep messages small.
_OMITTED_WHEN_NONE: Final = (
    "fuel_pct",
    "battery_pct",
    "alarm",
    "accuracy_m",
    "queue_dropped",
    "queue_id",
    "queue_floor",
)


class Telemetry(ProtocolModel):
    """One fix: position (or none, for a status-only message) and vehicle status at `ts`."""

    v: ProtocolVersion = PROTOCOL_VERSION
    seq: Counter
    ts: EpochMillis
    # Required keys that may be null: a lock or door change is reported at once, fix or not.
    lat: Latitude | None
    lon: Longitude | None
    speed_kmh: Annotated[float, Field(ge=0, le=400)] | None
    heading: Annotated[float, Field(ge=0, le=360)] | None
    odometer_km: Annotated[float, Field(ge=0, le=MAX_ODOMETER_KM)]
    fuel_pct: Percent | None = None
    battery_pct: Percent | None = None
    locked: bool
    doors_open: bool
    engine_on: bool
    alarm: bool | None = None
    accuracy_m: Accuracy | None = None
    queue_dropped: Counter | None = None
    # Contract 1.1, storage acknowledgement (docs/protocol.md section 6.2): the queue whose
    # counter `seq` comes from, and the lowest seq the unit still holds.
    queue_id: QueueId | None = None
    queue_floor: Counter | None = None

    @property
    def has_position(self) -> bool:
        """Whether this fix carries a position (lat and lon are null together otherwise)."""
        return self.lat is not None

    @model_validator(mode="after")
    def _check_cross_field_rules(self) -> Self:
        if (self.lat is None) != (self.lon is None):
            raise PydanticCustomError(
                "lat_lon_pair",
                "lat and lon must both be numbers or both be null",
                {"field": "lon" if self.lon is None else "lat"},
            )
        if self.fuel_pct is None and self.battery_pct is None:
            raise PydanticCustomError(
                "missing_energy_level",
                "at least one of fuel_pct and battery_pct is required",
                {"field": "fuel_pct|battery_pct"},
            )
        if self.queue_floor is not None and self.queue_floor > self.seq:
            # The unit holds this very fix, so it cannot have let go of its seq.
            raise PydanticCustomError(
                "floor_above_seq",
                "queue_floor must not exceed seq",
                {"field": "queue_floor"},
            )
        return self

    @model_serializer(mode="wrap")
    def _drop_unset_optionals(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        # Only on the wire: `model_dump()` in Python keeps every field, so readers need no .get().
        if info.mode_is_json():
            for name in _OMITTED_WHEN_NONE:
                if data.get(name, 0) is None:
                    del data[name]
        return data


# Built once at import: pydantic-core then parses and validates bytes in one pass.
_FIX: Final = TypeAdapter(Telemetry)
_FIXES: Final = TypeAdapter(
    Annotated[list[Telemetry], Field(min_length=1, max_length=MAX_FIXES_PER_MESSAGE)]
)

_JSON_WHITESPACE: Final = b" \t\r\n"


def encode_telemetry(fix: Telemetry) -> bytes:
    """Encode one fix as compact JSON."""
    return _FIX.dump_json(fix)


def encode_telemetry_batch(fixes: Sequence[Telemetry]) -> bytes:
    """Encode fixes as a compact JSON array (backfill after an offline period)."""
    return _FIXES.dump_json(list(fixes))


def decode_telemetry(payload: bytes) -> list[Telemetry]:
    """Decode a telemetry message (an object or an array of objects) into its fixes.

    Raises a PayloadError subclass; for an array, its `index` names the failing element.
    """
    # Choose the schema from the first byte instead of validating a union: cheaper, and the
    # error then describes the failing element rather than every union branch.
    first = payload[:1]
    if first in _JSON_WHITESPACE and first:
        first = payload.lstrip(_JSON_WHITESPACE)[:1]
    if first == b"[":
        return validate_json(_FIXES, payload, what="telemetry", in_array=True)
    if first == b"{":
        return [validate_json(_FIX, payload, what="telemetry")]
    if not first:
        raise BadJsonError("telemetry: empty message")
    # Not an object or array: let the parser say whether it is bad JSON or a wrong JSON type.
    return [validate_json(_FIX, payload, what="telemetry")]
