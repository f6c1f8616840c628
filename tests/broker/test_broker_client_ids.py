"""Every login is bound to its client id: a car cannot take another client's id or session.

Before the binding, a car's login connected as `hub-1` 18 times in 20 s, wiped the hub's
persistent session each time and lost 182 fixes for good; a car could also kick another car
off by taking its id, which fired that car's `offline` will. Mosquitto's dynamic security
binds a login to one client id (`clientid` in createClient and modifyClient): these tests
check the binding on the wire, against the devstack's real Mosquitto.

A denied will, like a denied QoS 1 publish, is dropped silently, so "cannot" is judged by
what a privileged subscriber receives before a marker that is allowed.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from mqtt_testing import MqttProbe

from broker.provisioning import hub_role

if TYPE_CHECKING:
    from broker.provisioning import DynsecClient
    from devstack.stack import DevStack

# paho 2 reports a 3.1.1 CONNACK "not authorised" (5) as its MQTT 5 equivalent (135).
NOT_AUTHORISED = {5, 135}
SUBACK_FAILURE = 0x80
# The measured attack retried 18 times in 20 s; a few tries show each one is refused alike.
TAKEOVER_ATTEMPTS = 5


def _secret() -> str:
    return secrets.token_urlsafe(16)


def test_a_car_cannot_connect_under_any_other_id(
    dynsec_stack: DevStack, dynsec: DynsecClient, mqtt_topic_root: str
) -> None:
    root, url = mqtt_topic_root, dynsec_stack.info.mqtt_url
    car, other, password = f"{root}-car", f"{root}-other", _secret()
    dynsec.provision_vehicle(car, password, root=root)
    dynsec.provision_vehicle(other, _secret(), root=root)
    hub_id = f"{root}-hub-1"
    dynsec.ensure_service_login(hub_id, _secret(), hub_role(root), client_id=hub_id)
    for client_id in (other, hub_id, f"{root}-{secrets.token_hex(4)}", car.upper(), ""):
        thief = MqttProbe(url, username=car, password=password, client_id=client_id)
        assert thief.connect() in NOT_AUTHORISED, f"the car's login connected as {client_id!r}"
        thief.close()
    own = MqttProbe(url, username=car, password=password, client_id=car)
    assert own.connect() == 0
    own.close()


def test_the_hubs_session_survives_a_car_taking_its_id(
    dynsec_stack: DevStack, dynsec: DynsecClient, mqtt_topic_root: str
) -> None:
    root, url = mqtt_topic_root, dynsec_stack.info.mqtt_url
    hub_id, hub_password = f"{root}-hub-1", _secret()
    assert dynsec.ensure_service_login(hub_id, hub_password, hub_role(root), client_id=hub_id)
    car, car_password = f"{root}-car", _secret()
    dynsec.provision_vehicle(car, car_password, root=root)
    telemetry = f"{root}/{car}/telemetry"

    def take_the_hubs_id() -> None:
        # A clean session under the hub's id would disconnect the hub and wipe its session.
        for _ in range(TAKEOVER_ATTEMPTS):
            thief = MqttProbe(url, username=car, password=car_password, client_id=hub_id)
            assert thief.connect() in NOT_AUTHORISED
            thief.close()

    hub = MqttProbe(url, username=hub_id, password=hub_password, clean_session=False)
    assert hub.connect() == 0
    assert hub.subscribe(f"{root}/+/telemetry") < SUBACK_FAILURE
    take_the_hubs_id()
    assert hub.disconnects == 0, "the car's attempts disconnected the hub"

    # While the hub is away its session keeps what the car sends, however often the car tries.
    hub.close()
    sender = MqttProbe(url, username=car, password=car_password)
    assert sender.connect() == 0
    sender.publish(telemetry, b"fix-1")
    take_the_hubs_id()
    sender.publish(telemetry, b"fix-2")
    sender.close()
    back = MqttProbe(url, username=hub_id, password=hub_password, clean_session=False)
    assert back.connect() == 0
    assert back.session_present
    assert [back.next_message(), back.next_message()] == [
        (telemetry, b"fix-1"),
        (telemetry, b"fix-2"),
    ]
    back.close()
    MqttProbe(url, username=hub_id, password=hub_password).connect()  # a clean session ends it


def test_a_car_cannot_mark_another_car_offline(
    dynsec_stack: DevStack, dynsec: DynsecClient, watcher: MqttProbe, mqtt_topic_root: str
) -> None:
    root, url = mqtt_topic_root, dynsec_stack.info.mqtt_url
    victim, victim_password = f"{root}-victim", _secret()
    attacker, attacker_password = f"{root}-attacker", _secret()
    dynsec.provision_vehicle(victim, victim_password, root=root)
    dynsec.provision_vehicle(attacker, attacker_password, root=root)
    victim_status, attacker_status = f"{root}/{victim}/status", f"{root}/{attacker}/status"
    live = MqttProbe(
        url, username=victim, password=victim_password, will=(victim_status, b"offline")
    )
    assert live.connect() == 0
    assert live.subscribe(f"{root}/{victim}/cmd") < SUBACK_FAILURE

    # Taking the victim's id would disconnect it, and its own will would say it is offline.
    for _ in range(TAKEOVER_ATTEMPTS):
        thief = MqttProbe(
            url,
            username=attacker,
            password=attacker_password,
            client_id=victim,
            will=(victim_status, b"offline"),
        )
        assert thief.connect() in NOT_AUTHORISED
        thief.close()

    # Under its own id, a will on the victim's status topic is dropped when it fires.
    forger = MqttProbe(
        url, username=attacker, password=attacker_password, will=(victim_status, b"forged")
    )
    assert forger.connect() == 0
    forger.drop()
    # The marker: the same login and id again, its will on its own topic. The broker is done
    # with the dropped connection (or takes it over) before it accepts this one, so a forged
    # will would reach the watcher before the marker does.
    marker = MqttProbe(
        url, username=attacker, password=attacker_password, will=(attacker_status, b"marker")
    )
    assert marker.connect() == 0
    marker.drop()
    assert watcher.next_message() == (attacker_status, b"marker")
    assert watcher.messages.empty(), "a will marked the victim offline"

    # The victim never noticed: still connected, still receiving its commands.
    assert live.disconnects == 0
    watcher.publish(f"{root}/{victim}/cmd", b"still there")
    assert live.next_message() == (f"{root}/{victim}/cmd", b"still there")
    live.close()
    watcher.publish(attacker_status, b"", retain=True)  # no retained will left behind
