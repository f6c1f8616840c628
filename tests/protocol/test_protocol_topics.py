"""Topics: render and parse back, vehicle id rules, roots and subscription filters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from protocol_strategies import no_deadline, vehicle_ids

from protocol.errors import TopicError
from protocol.topics import (
    DEFAULT_ROOT,
    Topic,
    TopicFilter,
    TopicKind,
    check_vehicle_id,
    is_valid_vehicle_id,
)

roots = st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True), min_size=1, max_size=3).map(
    "/".join
)


@no_deadline
@given(vehicle_ids, st.sampled_from(TopicKind), roots)
def test_topic_renders_and_parses_back(vehicle_id: str, kind: TopicKind, root: str) -> None:
    topic = Topic(vehicle_id, kind, root)
    assert str(topic) == f"{root}/{vehicle_id}/{kind.value}"
    assert Topic.parse(str(topic), root=root) == topic


@no_deadline
@given(st.text(max_size=40))
def test_any_string_either_parses_exactly_or_raises_topic_error(text: str) -> None:
    try:
        topic = Topic.parse(text)
    except TopicError:
        return
    assert topic.value == text


def test_constructors_name_the_four_topics() -> None:
    assert Topic.telemetry("car-42").value == "fleet/car-42/telemetry"
    assert Topic.status("car-42").value == "fleet/car-42/status"
    assert Topic.command("car-42").value == "fleet/car-42/cmd"
    assert Topic.ack("car-42").value == "fleet/car-42/cmd/ack"
    assert Topic.ack("car-42", root="run-1/fleet").value == "run-1/fleet/car-42/cmd/ack"


def test_parse_finds_the_ack_topic_under_cmd() -> None:
    topic = Topic.parse("fleet/car_7/cmd/ack")
    assert (topic.vehicle_id, topic.kind) == ("car_7", TopicKind.ACK)


def test_qos_and_retain_follow_the_kind() -> None:
    assert Topic.status("a").retain
    assert not Topic.telemetry("a").retain
    assert all(Topic("a", kind).qos == 1 for kind in TopicKind)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "fleet",
        "fleet/",
        "fleet//telemetry",
        "fleet/car/",
        "fleet/car/telemetry/extra",
        "fleet/car/cmd/ack/x",
        "fleet/car/Telemetry",
        "fleet/car/position",
        "fleet/+/telemetry",
        "fleet/#",
        "fleet/a/b/telemetry",
        "fleetx/car/telemetry",
        "other/car/telemetry",
        "/fleet/car/telemetry",
        "$share/hub/fleet/car/telemetry",
        "fleet/-car/telemetry",
        "fleet/car 1/telemetry",
        "fleet/" + "a" * 65 + "/telemetry",
    ],
)
def test_foreign_topics_are_refused(text: str) -> None:
    with pytest.raises(TopicError):
        Topic.parse(text)


def test_parse_respects_the_root() -> None:
    with pytest.raises(TopicError):
        Topic.parse("fleet/car/telemetry", root="test-run/fleet")
    assert Topic.parse("test-run/fleet/car/telemetry", root="test-run/fleet").vehicle_id == "car"


@pytest.mark.parametrize(
    "vehicle_id",
    ["", "a/b", "a+b", "a#", "$sys", "-lead", "_lead", "a b", "é", "car\n", "a" * 65, "a.b"],
)
def test_invalid_vehicle_ids_are_refused(vehicle_id: str) -> None:
    assert not is_valid_vehicle_id(vehicle_id)
    with pytest.raises(TopicError):
        check_vehicle_id(vehicle_id)
    with pytest.raises(TopicError):
        Topic.telemetry(vehicle_id)


@no_deadline
@given(vehicle_ids)
def test_valid_vehicle_ids_are_accepted(vehicle_id: str) -> None:
    assert check_vehicle_id(vehicle_id) == vehicle_id


@pytest.mark.parametrize("root", ["", "/", "fleet/", "/fleet", "a//b", "fl+eet", "fleet/#", "$SYS"])
def test_invalid_roots_are_refused(root: str) -> None:
    with pytest.raises(TopicError):
        Topic.telemetry("car", root=root)
    with pytest.raises(TopicError):
        TopicFilter(TopicKind.TELEMETRY, root=root)


def test_plain_filters() -> None:
    assert TopicFilter(TopicKind.TELEMETRY).value == "fleet/+/telemetry"
    assert str(TopicFilter(TopicKind.STATUS)) == "fleet/+/status"
    assert str(TopicFilter(TopicKind.ACK, root="t1/fleet")) == "t1/fleet/+/cmd/ack"


def test_shared_filters() -> None:
    shared = TopicFilter(TopicKind.TELEMETRY, share_group="hub")
    assert shared.value == "$share/hub/fleet/+/telemetry"
    assert shared.qos == 1


@pytest.mark.parametrize("group", ["", "a/b", "h+", "#"])
def test_invalid_share_groups_are_refused(group: str) -> None:
    with pytest.raises(TopicError):
        TopicFilter(TopicKind.TELEMETRY, share_group=group)


def test_filter_matches_parsed_topics_of_its_kind_and_root() -> None:
    shared = TopicFilter(TopicKind.TELEMETRY, share_group="hub")
    assert shared.matches(Topic.parse("fleet/car/telemetry"))
    assert not shared.matches(Topic.parse("fleet/car/status"))
    assert not shared.matches(Topic.telemetry("car", root="other"))


def test_topics_are_frozen_and_hashable() -> None:
    topic = Topic.telemetry("car")
    with pytest.raises(AttributeError):
        topic.vehicle_id = "other"  # type: ignore[misc]
    assert {topic, Topic.parse("fleet/car/telemetry")} == {topic}
    assert DEFAULT_ROOT == "fleet"
