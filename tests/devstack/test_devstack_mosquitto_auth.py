"""The devstack's Mosquitto: no anonymous clients, no wrong passwords, a working admin, and
sessions saved promptly enough that a killed broker loses no more than a production one."""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any

import pytest

from devstack.credentials import BrokerLogins, Login
from devstack.mosquitto import AUTOSAVE_INTERVAL_S, MosquittoBroker
from devstack.mqtt_probe import CONNACK_ACCEPTED, connack_code

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from devstack.stack import DevStack

    from .conftest import MqttClient

pytestmark = pytest.mark.integration

# MQTT 3.1.1 CONNACK return code 5: not authorised; SUBACK 0x80: failure.
NOT_AUTHORISED = 5
SUBACK_FAILURE = 0x80
CONTROL = "$CONTROL/dynamic-security/v1"


@pytest.fixture
def mosquitto(devstack: DevStack) -> DevStack:
    if not devstack.info.mqtt_dynamic_security:
        pytest.skip("the session's broker is not Mosquitto with dynamic security")
    return devstack


def test_anonymous_and_wrong_passwords_are_refused(mosquitto: DevStack) -> None:
    port = mosquitto.mqtt.port
    assert connack_code(port) == NOT_AUTHORISED
    assert connack_code(port, "freecar", "wrong") == NOT_AUTHORISED
    assert connack_code(port, "freecar", mosquitto.logins.admin.password) == NOT_AUTHORISED
    assert connack_code(port, "stranger", "freecar") == NOT_AUTHORISED
    assert connack_code(port, "freecar", mosquitto.logins.service.password) == CONNACK_ACCEPTED


def test_paho_without_login_is_refused(
    mosquitto: DevStack, mqtt_client: Callable[..., MqttClient]
) -> None:
    code = mqtt_client(f"mqtt://127.0.0.1:{mosquitto.mqtt.port}", "anon").connect()
    assert code.is_failure


def test_denied_publish_never_reaches_a_privileged_subscriber(
    mosquitto: DevStack, mqtt_client: Callable[..., MqttClient], mqtt_topic_root: str
) -> None:
    # The admin may use the control API but not publish fleet topics. An MQTT 3.1.1
    # publisher still gets its PUBACK, so look at what the subscriber receives: the
    # denied message would arrive before the marker sent after its PUBACK.
    service = mqtt_client(mosquitto.info.mqtt_url, "service").connected()
    service.subscribe(f"{mqtt_topic_root}/#")
    admin = mqtt_client(mosquitto.info.mqtt_admin_url, "admin").connected()
    admin.publish(f"{mqtt_topic_root}/fleet/car1/cmd", b"denied")
    service.publish(f"{mqtt_topic_root}/marker", b"marker")
    assert service.receive().payload == b"marker"


def test_service_login_cannot_use_the_control_api(
    mosquitto: DevStack, mqtt_client: Callable[..., MqttClient]
) -> None:
    service = mqtt_client(mosquitto.info.mqtt_url, "service").connected()
    assert service.subscribe(f"{CONTROL}/response") == SUBACK_FAILURE


def _control(admin: MqttClient, *commands: dict[str, Any]) -> list[dict[str, Any]]:
    admin.publish(CONTROL, json.dumps({"commands": list(commands)}).encode())
    responses: list[dict[str, Any]] = json.loads(admin.receive().payload)["responses"]
    assert [r.get("error") for r in responses] == [None] * len(commands), responses
    return responses


def test_admin_provisions_a_vehicle_with_literal_acls(
    mosquitto: DevStack, mqtt_client: Callable[..., MqttClient], mqtt_topic_root: str
) -> None:
    admin = mqtt_client(mosquitto.info.mqtt_admin_url, "admin").connected()
    admin.subscribe(f"{CONTROL}/response")
    listed = _control(admin, {"command": "listClients"})
    assert {"admin", "freecar"} <= set(listed[0]["data"]["clients"])

    car = Login(f"{mqtt_topic_root}-car1", secrets.token_urlsafe(16))
    own_topic = f"{mqtt_topic_root}/fleet/car1/telemetry"
    _control(
        admin,
        {
            "command": "createRole",
            "rolename": car.username,
            "acls": [{"acltype": "publishClientSend", "topic": own_topic, "allow": True}],
        },
        {
            "command": "createClient",
            "username": car.username,
            "password": car.password,
            "roles": [{"rolename": car.username}],
        },
    )
    hub = mqtt_client(mosquitto.info.mqtt_url, "hub").connected()
    hub.subscribe(f"{mqtt_topic_root}/fleet/+/telemetry")
    vehicle = mqtt_client(car.url(mosquitto.mqtt.port), "car1").connected()
    vehicle.publish(f"{mqtt_topic_root}/fleet/car2/telemetry", b"spoofed")
    vehicle.publish(own_topic, b"mine")
    message = hub.receive()
    assert (message.topic, message.payload) == (own_topic, b"mine")
    _control(
        admin,
        {"command": "deleteClient", "username": car.username},
        {"command": "deleteRole", "rolename": car.username},
    )


def test_a_killed_broker_keeps_what_it_saved_a_moment_before(
    mosquitto: DevStack,
    mqtt_client: Callable[..., MqttClient],
    mqtt_topic_root: str,
    tmp_path: Path,
) -> None:
    # A broker of its own: killing the session's broker would break the tests after this.
    assert isinstance(mosquitto.mqtt, MosquittoBroker)
    broker = MosquittoBroker(
        mosquitto.mqtt.binaries,
        BrokerLogins.generate(),
        workdir=tmp_path / "mosquitto",
        log_path=tmp_path / "mosquitto.log",
        ready_timeout=30,
    )
    broker.start()
    try:
        url = broker.logins.service.url(broker.port)
        topic = f"{mqtt_topic_root}/car-1/telemetry"
        hub = mqtt_client(url, "hub", clean_session=False).connected()
        hub.subscribe(topic)
        hub.close()
        mqtt_client(url, "car").connected().publish(topic, b"fix")
        published = time.time()
        saved = broker.workdir / "mosquitto.db"
        # Bounded wait for the next autosave: with Mosquitto's default (30 minutes) it never
        # comes, and a kill would lose the hub's session and the fix queued in it.
        deadline = time.monotonic() + 10 * AUTOSAVE_INTERVAL_S + 5
        while not (saved.exists() and saved.stat().st_mtime > published + 0.1):
            assert time.monotonic() < deadline, "the broker did not save its sessions"
            time.sleep(0.05)
        broker.kill()
        broker.start()
        back = mqtt_client(url, "hub", clean_session=False).connected()
        assert back.receive().payload == b"fix"
    finally:
        broker.stop()
