"""Hypothesis strategies for the protocol's messages, shared by the protocol tests."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from protocol.acks import Ack, AckStatus
from protocol.schema import MAX_EPOCH_MILLIS, MAX_QUEUE_ID
from protocol.status import Status
from protocol.stored import Stored
from protocol.telemetry import MAX_ACCURACY_M, MAX_ODOMETER_KM, Telemetry
from protocol.topics import VEHICLE_ID_PATTERN

# No deadline: a slow or busy machine must not fail a test that is about correctness.
no_deadline = settings(deadline=None)

vehicle_ids = st.from_regex(VEHICLE_ID_PATTERN, fullmatch=True)
epoch_ms = st.integers(min_value=1, max_value=MAX_EPOCH_MILLIS)
counters = st.integers(min_value=0, max_value=2**63 - 1)
queue_ids = st.integers(min_value=1, max_value=MAX_QUEUE_ID)


def finite(low: float | None = None, high: float | None = None) -> st.SearchStrategy[float]:
    return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | finite() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)

extra_keys = st.text(min_size=1, max_size=12).filter(lambda key: key not in Telemetry.model_fields)


@st.composite
def fix_dicts(draw: st.DrawFn, *, with_extras: bool = True) -> dict[str, Any]:
    """A valid fix as the JSON object a unit would send (with or without a GPS fix)."""
    has_position = draw(st.booleans())
    energy = draw(st.sampled_from(["fuel_pct", "battery_pct", "both"]))
    data: dict[str, Any] = {
        "seq": draw(counters),
        "ts": draw(epoch_ms),
        "lat": draw(finite(-90, 90)) if has_position else None,
        "lon": draw(finite(-180, 180)) if has_position else None,
        "speed_kmh": draw(st.none() | finite(0, 400)),
        "heading": draw(st.none() | finite(0, 360)),
        "odometer_km": draw(finite(0, MAX_ODOMETER_KM)),
        "locked": draw(st.booleans()),
        "doors_open": draw(st.booleans()),
        "engine_on": draw(st.booleans()),
    }
    if energy in {"fuel_pct", "both"}:
        data["fuel_pct"] = draw(finite(0, 100))
    if energy in {"battery_pct", "both"}:
        data["battery_pct"] = draw(finite(0, 100))
    optional = {
        "alarm": st.booleans(),
        # Larger values are clamped to the bound (test_protocol_telemetry checks it).
        "accuracy_m": finite(0, MAX_ACCURACY_M),
        "queue_dropped": counters,
        "v": st.just(1),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            data[name] = draw(strategy)
    if draw(st.booleans()):  # a unit of contract 1.1 announces its queue
        data["queue_id"] = draw(queue_ids)
        if draw(st.booleans()):
            data["queue_floor"] = draw(st.integers(min_value=0, max_value=data["seq"]))
    if with_extras:
        data.update(draw(st.dictionaries(extra_keys, json_values, max_size=3)))
    return data


fixes = fix_dicts().map(Telemetry.model_validate)

statuses = st.builds(Status, online=st.booleans(), ts=epoch_ms)

stored_acks = st.builds(Stored, queue_id=queue_ids, next_seq=counters, ts=epoch_ms)

acks = st.builds(
    Ack,
    cmd_id=st.uuids(),
    status=st.sampled_from(AckStatus),
    reason=st.none() | st.text(max_size=40),
    ts=epoch_ms,
    locked=st.none() | st.booleans(),
)
