"""Fixtures of the worker tests: a real SMTP server and a webhook receiver per test."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from worker_testing import SmtpSink, WebhookReceiver

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """An SMTP server on a free port that keeps what it receives."""
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """An HTTP receiver that checks each delivery's signature."""
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()
