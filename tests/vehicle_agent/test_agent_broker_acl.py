"""The agent with a provisioned vehicle login (Mosquitto's dynamic security): its `stored`.

A car's role lets it read its own `stored` topic, so the hub's word reaches it; a role
made before contract 1.1 refuses that subscription, and the agent then stops waiting for
the hub at once instead of after `hub_ack_timeout_s`.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING

import pytest
from agent_testing import eventually, fast_config, make_agent, running

from broker.provisioning import DynsecClient, vehicle_role
from protocol.broker_url import BrokerUrl
from protocol.stored import Stored, encode_stored
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from agent_testing import Subscriber

    from devstack.stack import DevStack


@pytest.fixture
def dynsec(devstack: DevStack) -> Iterator[DynsecClient]:
    if not devstack.info.mqtt_dynamic_security:
        pytest.skip(f"the session's broker is {devstack.info.mqtt_broker}: no dynamic security")
    with DynsecClient(devstack.info.mqtt_admin_url) as client:
        yield client


def car_login(devstack: DevStack, dynsec: DynsecClient, vehicle_id: str, root: str) -> str:
    """Provision a vehicle as `freecar vehicle` does; return the MQTT URL of its login."""
    password = secrets.token_urlsafe(16)
    dynsec.provision_vehicle(vehicle_id, password, root=root)
    broker = BrokerUrl.parse(devstack.info.mqtt_url)
    return f"mqtt://{vehicle_id}:{password}@{broker.host}:{broker.port}"


def test_a_provisioned_car_hears_the_hub(
    devstack: DevStack,
    dynsec: DynsecClient,
    subscriber: Callable[..., Subscriber],
    mqtt_topic_root: str,
) -> None:
    vehicle = f"v{secrets.token_hex(5)}"
    url = car_login(devstack, dynsec, vehicle, mqtt_topic_root)
    hub = subscriber(devstack.info.mqtt_url, "hub").start(f"{mqtt_topic_root}/#")
    config = fast_config(url, mqtt_topic_root, vehicle_id=vehicle, client_id=vehicle)
    agent, _ = make_agent(config)
    stored = Topic.stored(vehicle, root=mqtt_topic_root).value

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: agent.stats.fixes_acked >= 3, "fixes")
            word = Stored(queue_id=agent.queue.queue_id, next_seq=2, ts=1)
            await asyncio.to_thread(hub.publish, stored, encode_stored(word), retain=True)
            await eventually(lambda: agent.queue.confirmed_next == 2, "the hub's word")

    asyncio.run(scenario())
    assert agent.stats.storage_acks == "hub"


def test_a_role_from_before_contract_1_1_means_broker_acks_at_once(
    devstack: DevStack, dynsec: DynsecClient, mqtt_topic_root: str
) -> None:
    vehicle = f"v{secrets.token_hex(5)}"
    url = car_login(devstack, dynsec, vehicle, mqtt_topic_root)
    role = vehicle_role(vehicle, mqtt_topic_root)
    for acl in role.acls:
        if acl.topic.endswith("/stored"):
            dynsec.run(
                {
                    "command": "removeRoleACL",
                    "rolename": role.rolename,
                    "acltype": acl.acltype,
                    "topic": acl.topic,
                }
            )
    # The default timeout: the fallback must come from the refusal, not from waiting.
    config = fast_config(url, mqtt_topic_root, vehicle_id=vehicle, client_id=vehicle)
    agent, _ = make_agent(config)

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: agent.stats.storage_acks == "broker", "broker acks")
            await eventually(lambda: agent.stats.fixes_acked >= 3, "fixes")
            await eventually(lambda: agent.stats.awaiting_hub == 0, "nothing held")

    asyncio.run(scenario())
    assert config.hub_ack_timeout_s >= 60
