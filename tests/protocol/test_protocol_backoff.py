"""Reconnect backoff: exponential, capped, jittered, reset after success."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.backoff import Backoff


@given(
    initial=st.floats(0.01, 10),
    factor=st.floats(1, 100),
    jitter=st.floats(0, 1),
    attempts=st.integers(1, 80),
    seed=st.integers(0, 2**32),
)
def test_every_delay_lies_in_its_jitter_band_and_under_the_cap(
    initial: float, factor: float, jitter: float, attempts: int, seed: int
) -> None:
    backoff = Backoff(initial, initial * factor, jitter, random.Random(seed))  # noqa: S311 - jitter, not secrets
    for attempt in range(attempts):
        ceiling = min(initial * factor, initial * 2**attempt)
        delay = backoff.next_delay()
        assert ceiling * (1 - jitter) - 1e-9 <= delay <= ceiling + 1e-9
        assert delay <= backoff.max_s + 1e-9


def test_delays_double_until_the_cap() -> None:
    backoff = Backoff(1.0, 10.0, 0.0)
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_jitter_spreads_a_fleet_out() -> None:
    # Cars that lost the broker together must not come back in the same instant.
    seeded = [random.Random(seed) for seed in range(50)]  # noqa: S311 - jitter, not secrets
    delays = {Backoff(1.0, 60.0, 0.5, rng).next_delay() for rng in seeded}
    assert len(delays) == 50
    assert min(delays) >= 0.5
    assert max(delays) <= 1.0


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(1.0, 60.0, 0.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_a_huge_attempt_count_stays_at_the_cap() -> None:
    backoff = Backoff(1.0, 30.0, 0.0, attempt=10_000)
    assert backoff.next_delay() == 30.0


@pytest.mark.parametrize(
    ("initial", "maximum", "jitter"), [(0.0, 1.0, 0.5), (2.0, 1.0, 0.5), (1.0, 2.0, 1.5)]
)
def test_nonsense_settings_are_refused(initial: float, maximum: float, jitter: float) -> None:
    with pytest.raises(ValueError, match=r"need|fraction"):
        Backoff(initial, maximum, jitter)
