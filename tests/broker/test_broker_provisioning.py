"""Vehicle logins provisioned through Mosquitto's dynamic security, checked on the wire.

A denied QoS 1 publish from MQTT 3.1.1 is dropped silently (the publisher still gets its
PUBACK), so every "cannot" here is judged by what a privileged subscriber receives: the
forbidden message is sent first, an allowed one after it from the same client, and the
broker keeps one client's messages in order, so once the allowed one arrives the forbidden
one would have arrived before it.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import pytest
from mqtt_testing import MqttProbe

from broker.provisioning import (
    BrokerUnreachableError,
    DynsecClient,
    DynsecCommandError,
    hub_role,
    vehicle_role,
)

if TYPE_CHECKING:
    from devstack.stack import DevStack

# paho 2 reports a 3.1.1 CONNACK "not authorised" (5) as its MQTT 5 equivalent (135).
NOT_AUTHORISED = {5, 135}
SUBACK_FAILURE = 0x80


def _vehicle_id() -> str:
    return f"v{secrets.token_hex(5)}"


def _car(stack: DevStack, vehicle_id: str, password: str) -> MqttProbe:
    return MqttProbe(stack.info.mqtt_url, username=vehicle_id, password=password)


def test_role_templates_are_literal() -> None:
    role = vehicle_role("car-1", "fleet")
    assert role.rolename == "vehicle-car-1"
    topics = {(acl.acltype, acl.topic) for acl in role.acls}
    assert ("publishClientSend", "fleet/car-1/telemetry") in topics
    assert ("subscribeLiteral", "fleet/car-1/cmd") in topics
    assert all("%" not in acl.topic and "+" not in acl.topic for acl in role.acls)
    assert ("publishClientSend", "fleet/+/cmd") in {
        (acl.acltype, acl.topic) for acl in hub_role("fleet").acls
    }


@pytest.mark.integration
def test_vehicle_publishes_only_its_own_topics(
    dynsec_stack: DevStack, dynsec: DynsecClient, watcher: MqttProbe, mqtt_topic_root: str
) -> None:
    root = mqtt_topic_root
    mine, other = _vehicle_id(), _vehicle_id()
    password = secrets.token_urlsafe(16)
    assert dynsec.provision_vehicle(mine, password, root=root).created
    dynsec.provision_vehicle(other, secrets.token_urlsafe(16), root=root)
    car = _car(dynsec_stack, mine, password)
    assert car.connect() == 0
    try:
        car.publish(f"{root}/{mine}/telemetry", b"own-1")
        assert watcher.next_message() == (f"{root}/{mine}/telemetry", b"own-1")
        # Forbidden first, then an allowed marker: the marker proves the first was dropped.
        car.publish(f"{root}/{other}/telemetry", b"forged")
        car.publish(f"{root}/{other}/cmd", b"forged-cmd")
        car.publish(f"{root}/{mine}/cmd", b"own-cmd-by-car")  # only the hub sends commands
        car.publish(f"{root}/{mine}/cmd/ack", b"marker")
        assert watcher.next_message() == (f"{root}/{mine}/cmd/ack", b"marker")
        assert watcher.messages.empty()
    finally:
        car.close()


@pytest.mark.integration
def test_vehicle_reads_only_its_own_commands(
    dynsec_stack: DevStack, dynsec: DynsecClient, watcher: MqttProbe, mqtt_topic_root: str
) -> None:
    root = mqtt_topic_root
    mine, other = _vehicle_id(), _vehicle_id()
    password = secrets.token_urlsafe(16)
    dynsec.provision_vehicle(mine, password, root=root)
    dynsec.provision_vehicle(other, secrets.token_urlsafe(16), root=root)
    car = _car(dynsec_stack, mine, password)
    assert car.connect() == 0
    try:
        assert car.subscribe(f"{root}/{mine}/cmd") < SUBACK_FAILURE
        refused = car.subscribe(f"{root}/{other}/cmd")
        wildcard = car.subscribe(f"{root}/+/cmd")
        # The service login plays the hub: another car's command, then this car's.
        watcher.publish(f"{root}/{other}/cmd", b"not-for-you")
        watcher.publish(f"{root}/{mine}/cmd", b"for-you")
        topic, payload = car.next_message()
        assert (topic, payload) == (f"{root}/{mine}/cmd", b"for-you")
        assert car.messages.empty(), "another car's command was delivered"
        # Both refusals are what the broker does; recorded so a changed broker is noticed.
        assert refused == SUBACK_FAILURE
        assert wildcard == SUBACK_FAILURE
    finally:
        car.close()


@pytest.mark.integration
def test_disabled_vehicle_cannot_connect_and_rotation_renews(
    dynsec_stack: DevStack, dynsec: DynsecClient, mqtt_topic_root: str
) -> None:
    vehicle = _vehicle_id()
    first = secrets.token_urlsafe(16)
    dynsec.provision_vehicle(vehicle, first, root=mqtt_topic_root)
    assert dynsec.disable_vehicle(vehicle)
    car = _car(dynsec_stack, vehicle, first)
    assert car.connect() in NOT_AUTHORISED
    car.close()
    # Provisioning again (a rotation) enables the login with the new password only.
    second = secrets.token_urlsafe(16)
    assert not dynsec.provision_vehicle(vehicle, second, root=mqtt_topic_root).created
    old = _car(dynsec_stack, vehicle, first)
    assert old.connect() in NOT_AUTHORISED
    old.close()
    new = _car(dynsec_stack, vehicle, second)
    assert new.connect() == 0
    new.close()
    assert not dynsec.disable_vehicle(_vehicle_id())  # unknown: nothing to disable


@pytest.mark.integration
def test_a_service_login_is_never_taken_over(dynsec: DynsecClient, mqtt_topic_root: str) -> None:
    with pytest.raises(DynsecCommandError, match="not a vehicle"):
        dynsec.provision_vehicle("freecar", secrets.token_urlsafe(16), root=mqtt_topic_root)
    with pytest.raises(DynsecCommandError, match="not a vehicle"):
        dynsec.disable_vehicle("admin")


@pytest.mark.integration
def test_wrong_admin_login_is_reported(dynsec_stack: DevStack) -> None:
    url = dynsec_stack.info.mqtt_admin_url
    scheme, rest = url.split("://", 1)
    user_part, host_part = rest.rsplit("@", 1)
    bad = f"{scheme}://{user_part.split(':')[0]}:wrong@{host_part}"
    with pytest.raises(BrokerUnreachableError, match="refused the admin login"):
        DynsecClient(bad, timeout_s=2).open()


@pytest.mark.integration
def test_hub_login_gets_the_hub_role(
    dynsec_stack: DevStack, dynsec: DynsecClient, watcher: MqttProbe, mqtt_topic_root: str
) -> None:
    root = mqtt_topic_root
    username, password = f"hub-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    assert dynsec.ensure_service_login(username, password, hub_role(root), client_id=username)
    # Running the setup again (new password) is harmless and takes effect.
    password = secrets.token_urlsafe(16)
    assert not dynsec.ensure_service_login(username, password, hub_role(root), client_id=username)
    hub = MqttProbe(dynsec_stack.info.mqtt_url, username=username, password=password)
    assert hub.connect() == 0
    try:
        assert hub.subscribe(f"{root}/+/telemetry") < SUBACK_FAILURE
        assert hub.subscribe(f"$share/hub/{root}/+/status") < SUBACK_FAILURE
        assert hub.subscribe(f"{root}/#") == SUBACK_FAILURE
        watcher.publish(f"{root}/car-9/telemetry", b"fix")
        assert hub.next_message() == (f"{root}/car-9/telemetry", b"fix")
        hub.publish(f"{root}/car-9/telemetry", b"forged-by-hub")  # hubs do not fake cars
        hub.publish(f"{root}/car-9/cmd", b"command")
        assert watcher.next_message() == (f"{root}/car-9/telemetry", b"fix")  # its own echo
        assert watcher.next_message() == (f"{root}/car-9/cmd", b"command")
        assert watcher.messages.empty()
    finally:
        hub.close()
