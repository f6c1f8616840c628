"""Fixtures of the broker tests: Mosquitto with dynamic security, its admin, a watcher."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from mqtt_testing import MqttProbe

from broker.provisioning import DynsecClient

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devstack.stack import DevStack

SUBACK_FAILURE = 0x80


@pytest.fixture
def dynsec_stack(devstack: DevStack) -> DevStack:
    """The session's stack, if its broker is Mosquitto with dynamic security."""
    if not devstack.info.mqtt_dynamic_security:
        pytest.skip(
            f"the session's broker is {devstack.info.mqtt_broker}: no dynamic security, so no "
            "per-car logins, ACLs or client-id binding (docs/devstack.md)"
        )
    return devstack


@pytest.fixture
def dynsec(dynsec_stack: DevStack) -> Iterator[DynsecClient]:
    """An admin connection to the dynamic-security plugin."""
    with DynsecClient(dynsec_stack.info.mqtt_admin_url) as client:
        yield client


@pytest.fixture
def watcher(mqtt_url: str, mqtt_topic_root: str) -> Iterator[MqttProbe]:
    """The `freecar` service login, subscribed to everything under the test's root."""
    client = MqttProbe(mqtt_url)
    assert client.connect() == 0
    assert client.subscribe(f"{mqtt_topic_root}/#") < SUBACK_FAILURE
    yield client
    client.close()
