"""Capped exponential backoff with jitter, for every reconnect loop: agent, backends, hub."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays between reconnect attempts: doubling from `initial_s` up to `max_s`, jittered.

    Each delay is drawn from `[d * (1 - jitter), d]` where `d` is the capped exponential
    delay: a fleet that lost the broker together then spreads its reconnects out instead of
    hammering the broker in lockstep, and no delay exceeds the cap.
    """

    initial_s: float = 1.0
    max_s: float = 60.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError("need 0 < initial_s <= max_s")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter is a fraction between 0 and 1")

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay before attempt number `attempt` (0 is the first retry)."""
        # Doubling stops mattering once past the cap; bounding the exponent avoids huge floats.
        return min(self.max_s, self.initial_s * 2.0 ** min(attempt, 64))

    def next_delay(self) -> float:
        """The delay to wait before the next attempt; each call moves one attempt further."""
        ceiling = self.ceiling(self.attempt)
        self.attempt += 1
        return ceiling * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        """Start again from `initial_s`, after a connection succeeded."""
        self.attempt = 0
