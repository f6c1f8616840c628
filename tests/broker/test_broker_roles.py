"""roles.json is the one place that says which topics a car publishes and which it reads."""

from __future__ import annotations

import pytest

from broker import provisioning
from broker.provisioning import (
    InvalidClientIdError,
    TopicPolicy,
    check_client_id,
    hub_role,
    topic_policy,
    vehicle_role,
)
from protocol.errors import TopicError
from protocol.topics import TopicKind


def _pairs(role: provisioning.Role) -> set[tuple[str, str]]:
    return {(acl.acltype, acl.topic) for acl in role.acls}


def test_every_topic_of_the_protocol_has_exactly_one_direction() -> None:
    # A topic kind added to the protocol without an ACL would be refused by the broker in
    # production only: say so here, where roles.json is one line away.
    policy = topic_policy()
    directions = [*policy.vehicle_publishes, *policy.vehicle_reads]
    assert sorted(directions) == sorted(kind.value for kind in TopicKind)
    assert TopicKind.COMMAND.value in policy.vehicle_reads
    for kind in (TopicKind.TELEMETRY, TopicKind.STATUS, TopicKind.ACK):
        assert kind.value in policy.vehicle_publishes


def test_a_car_publishes_and_reads_only_its_own_topics_literally() -> None:
    role = vehicle_role("car-1", "fleet")
    assert role.rolename == "vehicle-car-1"
    assert _pairs(role) == {
        ("publishClientSend", "fleet/car-1/telemetry"),
        ("publishClientSend", "fleet/car-1/status"),
        ("publishClientSend", "fleet/car-1/cmd/ack"),
        ("subscribeLiteral", "fleet/car-1/cmd"),
        ("unsubscribeLiteral", "fleet/car-1/cmd"),
        ("publishClientReceive", "fleet/car-1/cmd"),
        ("subscribeLiteral", "fleet/car-1/stored"),
        ("unsubscribeLiteral", "fleet/car-1/stored"),
        ("publishClientReceive", "fleet/car-1/stored"),
    }
    assert all(acl.allow for acl in role.acls)


def test_the_hub_reads_every_car_and_sends_what_cars_read() -> None:
    assert _pairs(hub_role("fleet")) == {
        ("subscribePattern", "fleet/+/telemetry"),
        ("subscribePattern", "$share/+/fleet/+/telemetry"),
        ("publishClientReceive", "fleet/+/telemetry"),
        ("subscribePattern", "fleet/+/status"),
        ("subscribePattern", "$share/+/fleet/+/status"),
        ("publishClientReceive", "fleet/+/status"),
        ("subscribePattern", "fleet/+/cmd/ack"),
        ("subscribePattern", "$share/+/fleet/+/cmd/ack"),
        ("publishClientReceive", "fleet/+/cmd/ack"),
        ("publishClientSend", "fleet/+/cmd"),
        ("publishClientSend", "fleet/+/stored"),
    }


def test_one_more_hub_to_car_topic_is_one_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    extended = TopicPolicy(
        vehicle_publishes=topic_policy().vehicle_publishes,
        vehicle_reads=(*topic_policy().vehicle_reads, "lights"),
    )
    monkeypatch.setattr(provisioning, "topic_policy", lambda: extended)
    car, hub = _pairs(vehicle_role("car-1", "fleet")), _pairs(hub_role("fleet"))
    assert ("subscribeLiteral", "fleet/car-1/lights") in car
    assert ("publishClientReceive", "fleet/car-1/lights") in car
    assert ("publishClientSend", "fleet/+/lights") in hub


@pytest.mark.parametrize("root", ["fleet/+", "#", "$SYS", ""])
def test_roles_refuse_a_root_with_wildcards(root: str) -> None:
    with pytest.raises(TopicError, match="root"):
        vehicle_role("car-1", root)
    with pytest.raises(TopicError, match="root"):
        hub_role(root)


@pytest.mark.parametrize("vehicle_id", ["+", "car/1", "#", "", "-car"])
def test_roles_refuse_a_vehicle_id_that_is_not_one(vehicle_id: str) -> None:
    with pytest.raises(TopicError, match="vehicle id"):
        vehicle_role(vehicle_id, "fleet")


@pytest.mark.parametrize("client_id", ["hub-1", "hub-ip-10-0-0-7.eu-west-1.compute.internal"])
def test_a_hubs_client_id_may_be_a_hostname(client_id: str) -> None:
    assert check_client_id(client_id) == client_id


@pytest.mark.parametrize(
    "client_id", ["", "hub 1", "hub/1", "hub+", "#", "$hub", "-hub", "h" * 129]
)
def test_a_client_id_that_cannot_be_a_login_is_refused(client_id: str) -> None:
    with pytest.raises(InvalidClientIdError):
        check_client_id(client_id)
