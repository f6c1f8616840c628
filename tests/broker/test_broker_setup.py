"""`freecar vehicle broker-setup`: a bound login per hub, and logins made before binding fixed.

Logins made by earlier versions have no client id (they may connect under any) and roles
made from an older roles.json; the setup is what an operator runs after upgrading, so it
must bring both up to date, and say which other logins are still unbound.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import pytest
from mqtt_testing import MqttProbe

from broker.provisioning import VEHICLE_ROLE_PREFIX, DynsecClient, vehicle_role
from freecar.cli import main
from protocol.broker_url import BrokerUrl

if TYPE_CHECKING:
    from devstack.stack import DevStack

NOT_AUTHORISED = {5, 135}
SUBACK_FAILURE = 0x80


@pytest.fixture
def hub_password(
    dynsec_stack: DevStack, monkeypatch: pytest.MonkeyPatch, mqtt_topic_root: str
) -> str:
    """The environment of `broker-setup`; FREECAR_MQTT_URL carries the hubs' password."""
    broker = BrokerUrl.parse(dynsec_stack.info.mqtt_url)
    password = secrets.token_hex(16)
    url = f"mqtt://{mqtt_topic_root}-hub:{password}@{broker.host}:{broker.port}"
    monkeypatch.setenv("FREECAR_MQTT_URL", url)
    monkeypatch.setenv("FREECAR_MQTT_ADMIN_URL", dynsec_stack.info.mqtt_admin_url)
    monkeypatch.setenv("FREECAR_TOPIC_ROOT", mqtt_topic_root)
    return password


def _connack(stack: DevStack, username: str, password: str, client_id: str) -> int:
    probe = MqttProbe(
        stack.info.mqtt_url, username=username, password=password, client_id=client_id
    )
    try:
        return probe.connect()
    finally:
        probe.close()


def test_each_hub_gets_a_login_bound_to_its_client_id(
    dynsec_stack: DevStack,
    hub_password: str,
    mqtt_topic_root: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub_1, hub_2 = f"{mqtt_topic_root}-hub-1", f"{mqtt_topic_root}-hub-2"
    assert main(["vehicle", "broker-setup", "--hub", hub_1, "--hub", hub_2]) == 0
    out = capsys.readouterr().out
    assert f"created the hub login '{hub_1}'" in out
    assert f"created the hub login '{hub_2}'" in out
    assert _connack(dynsec_stack, hub_1, hub_password, hub_1) == 0
    assert _connack(dynsec_stack, hub_2, hub_password, hub_2) == 0
    # Each hub only under its own id: a misconfigured hub cannot kick the other one off.
    assert _connack(dynsec_stack, hub_1, hub_password, hub_2) in NOT_AUTHORISED
    assert _connack(dynsec_stack, hub_2, hub_password, f"{mqtt_topic_root}-x") in NOT_AUTHORISED
    assert main(["vehicle", "broker-setup", "--hub", hub_1, "--hub", hub_2]) == 0  # repeatable
    assert f"updated the hub login '{hub_1}'" in capsys.readouterr().out
    assert _connack(dynsec_stack, hub_1, hub_password, hub_1) == 0


def test_without_hubs_the_urls_login_is_bound_to_its_own_name(
    dynsec_stack: DevStack, hub_password: str, mqtt_topic_root: str
) -> None:
    assert main(["vehicle", "broker-setup"]) == 0
    username = f"{mqtt_topic_root}-hub"
    assert _connack(dynsec_stack, username, hub_password, username) == 0
    assert _connack(dynsec_stack, username, hub_password, "hub-1") in NOT_AUTHORISED


@pytest.mark.parametrize("client_id", ["hub 1", "hub/+", "$hub"])
def test_a_hub_id_that_cannot_be_a_login_is_a_usage_error(
    client_id: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before any broker is contacted: nothing listens on port 1.
    monkeypatch.setenv("FREECAR_MQTT_URL", "mqtt://hub:secret@127.0.0.1:1")
    monkeypatch.setenv("FREECAR_MQTT_ADMIN_URL", "mqtt://admin:secret@127.0.0.1:1")
    assert main(["vehicle", "broker-setup", "--hub", client_id]) == 2
    assert "cannot be a client id" in capsys.readouterr().err


def test_logins_made_before_the_binding_are_bound_and_their_roles_renewed(  # noqa: PLR0917 - fixtures
    dynsec_stack: DevStack,
    dynsec: DynsecClient,
    watcher: MqttProbe,
    hub_password: str,
    mqtt_topic_root: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    del hub_password
    root = mqtt_topic_root
    car, password = f"{root}-old-car", secrets.token_urlsafe(16)
    legacy_hub = f"{root}-shared-hub"
    # What an earlier version made: no client id, and a role that cannot read commands.
    current = vehicle_role(car, root)
    old_acls = [acl.as_json() for acl in current.acls if acl.acltype == "publishClientSend"]
    dynsec.execute_changes(
        [
            {"command": "createRole", "rolename": current.rolename, "acls": old_acls},
            {
                "command": "createClient",
                "username": car,
                "password": password,
                "roles": [{"rolename": current.rolename}],
            },
            {"command": "createClient", "username": legacy_hub, "password": password},
        ],
        logins=1,
    )
    assert _connack(dynsec_stack, car, password, f"{root}-hub-1") == 0  # the hole

    assert main(["vehicle", "broker-setup", "--hub", f"{root}-hub-1"]) == 0
    captured = capsys.readouterr()
    assert _connack(dynsec_stack, car, password, f"{root}-hub-1") in NOT_AUTHORISED
    assert legacy_hub in captured.err  # still unbound, and the operator is told
    assert "may still connect under any client id" in captured.err
    role = dynsec.run({"command": "getRole", "rolename": VEHICLE_ROLE_PREFIX + car})
    assert current.held_by(role["data"]["role"]["acls"])
    # The renewed role works: the car reads its commands now.
    probe = MqttProbe(dynsec_stack.info.mqtt_url, username=car, password=password)
    assert probe.connect() == 0
    assert probe.subscribe(f"{root}/{car}/cmd") < SUBACK_FAILURE
    watcher.publish(f"{root}/{car}/cmd", b"command")
    assert probe.next_message() == (f"{root}/{car}/cmd", b"command")
    probe.close()

    # Nothing left to do the second time.
    assert main(["vehicle", "broker-setup", "--hub", f"{root}-hub-1"]) == 0
    assert (
        " 0 newly bound to their vehicle id, 0 roles brought up to date" in capsys.readouterr().out
    )
    dynsec.execute_changes(
        [
            {"command": "deleteClient", "username": legacy_hub},
            {"command": "deleteClient", "username": car},
            {"command": "deleteRole", "rolename": current.rolename},
        ],
        logins=1,
    )
