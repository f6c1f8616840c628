"""Fixtures of the hub tests; the helpers themselves live in hub_testing.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from hub_testing import HubProcess, Publisher, worker_testing

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from hub.settings import HubSettings


@pytest.fixture
def publisher(mqtt_topic_root: str) -> Iterator[Callable[..., Publisher]]:
    """Make publishers named `<topic root>-<name>`; all are closed after the test."""
    made: list[Publisher] = []

    def make(url: str, name: str = "pub", *, window: int = 500) -> Publisher:
        made.append(Publisher(url, f"{mqtt_topic_root}-{name}", window=window))
        return made[-1]

    yield make
    for item in made:
        item.close()


@pytest.fixture
def hub_process(tmp_path: Path) -> Iterator[Callable[[HubSettings], HubProcess]]:
    """Make `freecar hub` processes; any still running after the test are killed."""
    made: list[HubProcess] = []

    def make(settings: HubSettings) -> HubProcess:
        made.append(HubProcess(settings, tmp_path / f"{settings.hub_client_id}.log"))
        return made[-1]

    yield make
    for process in made:
        process.kill()


@pytest.fixture
def smtp() -> Iterator[Any]:
    """A local SMTP server that keeps what it receives."""
    sink = worker_testing().SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def webhook() -> Iterator[Any]:
    """A local webhook receiver that checks the signature."""
    receiver = worker_testing().WebhookReceiver().start()
    yield receiver
    receiver.stop()
