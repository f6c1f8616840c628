"""Bounded waits: poll a condition until it holds or a timeout passes, never sleep and hope."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

# Generous: a loaded CI machine is slow, but anything that takes this long is broken.
WAIT_S: Final = 30.0
# Often enough that a wait adds little to a test, rarely enough to cost no CPU worth having.
POLL_S: Final = 0.02


def poll(
    condition: Callable[[], object], *, timeout: float = WAIT_S, interval: float = POLL_S
) -> bool:
    """Whether `condition` became true within `timeout` seconds (checked once more at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def wait_until(
    condition: Callable[[], object],
    *,
    what: str,
    timeout: float = WAIT_S,
    interval: float = POLL_S,
) -> None:
    """Poll `condition` until it is true; fail, naming `what`, after `timeout` seconds."""
    if not poll(condition, timeout=timeout, interval=interval):
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


async def eventually(
    condition: Callable[[], object],
    *,
    what: str,
    timeout: float = WAIT_S,  # noqa: ASYNC109 - a polling deadline, as in `wait_until`
    interval: float = POLL_S,
) -> None:
    """`wait_until` inside an event loop: the loop runs while the condition is polled."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
