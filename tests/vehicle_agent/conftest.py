"""Fixtures for the agent tests; the helpers themselves live in `agent_testing`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from agent_testing import Subscriber

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture
def subscriber(mqtt_topic_root: str) -> Iterator[Callable[..., Subscriber]]:
    """Make subscribers named `<topic root>-<name>`; all are closed after the test."""
    made: list[Subscriber] = []

    def make(url: str, name: str, *, clean_session: bool = True) -> Subscriber:
        client = Subscriber(url, f"{mqtt_topic_root}-{name}", clean_session=clean_session)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
