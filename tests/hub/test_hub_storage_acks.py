"""A real hub's storage acknowledgements (contract 1.1): what it claims, when, and for whom.

The hub publishes, after the commit, on each unit's retained `stored` topic which of its
fixes are handled: stored, dropped by a filter, or kept as a dead letter. Units of
revision 1.0 (no `queue_id`) and vehicles outside the inventory hear nothing; a fix the hub
could not keep in any form is never claimed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from hub_testing import (
    StoredWords,
    hub_settings,
    make_fix,
    now_ms,
    query_rows,
    running_hub,
    seed_vehicles,
    telemetry_count,
    wait_until,
)

from hub import steps, storage_acks
from hub.repository import telemetry
from protocol.telemetry import encode_telemetry, encode_telemetry_batch
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from hub_testing import Publisher

    from devstack.stack import DevStack
    from hub.batch import DeadLetter
    from hub.settings import HubSettings
    from protocol.stored import Stored

QUEUE = 4242
# Long enough that the messages published together share a batch.
ONE_BATCH_MS = 1000


@pytest.fixture
def listen(mqtt_url: str, mqtt_topic_root: str) -> Iterator[Callable[..., StoredWords]]:
    """Make a listener of the test's `stored` topics; closed after the test."""
    made: list[StoredWords] = []

    def make(**kwargs: Any) -> StoredWords:
        made.append(StoredWords(mqtt_url, mqtt_topic_root, **kwargs))
        return made[-1]

    yield make
    for words in made:
        words.close()


def settings_for(
    devstack: DevStack, url: str, redis_url: str, root: str, **overrides: Any
) -> HubSettings:
    return hub_settings(devstack, database_url=url, redis_url=redis_url, root=root, **overrides)


def watermark(url: str, vehicle_id: str) -> tuple[int, int] | None:
    """(queue_id, next_seq) of the vehicle's stored watermark, if it has one."""
    rows = query_rows(
        url,
        "SELECT queue_id, next_seq FROM telemetry_watermarks WHERE vehicle_id = %s",
        vehicle_id,
    )
    return (int(rows[0][0]), int(rows[0][1])) if rows else None


def fixes(seqs: Sequence[int], start: int, **fields: Any) -> list[Any]:
    return [make_fix(seq, start + seq * 1000, queue_id=QUEUE, **fields) for seq in seqs]


def test_a_unit_hears_what_is_stored_only_after_the_commit(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    listen: Callable[..., StoredWords],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(url, [car])
    stored_when_heard: list[int] = []

    def look(_vehicle_id: str, _word: Stored) -> None:
        stored_when_heard.append(telemetry_count(url, root)[0])

    words = listen(on_word=look)
    settings = settings_for(devstack, url, redis_url, root)
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        # A backlog of three: one batch, and a queue the hub has not answered yet.
        batch = encode_telemetry_batch(fixes([0, 1, 2], now_ms() - 60_000))
        pub.publish(Topic.telemetry(car, root=root).value, batch)
        pub.flush()
        wait_until(lambda: words.next_seq(car) == 3, what="the word for seqs 0 to 2")
        assert hub.stats.watermarks_published == 1
    (word,) = words.of(car)
    assert word.queue_id == QUEUE
    assert stored_when_heard == [3], "a unit heard of fixes before they were committed"
    assert watermark(url, car) == (QUEUE, 3)
    # Retained: a unit (re)subscribing hears the latest word at once.
    late = listen()
    wait_until(lambda: late.of(car), what="the retained word")
    assert late.words[0][2] is True
    assert late.next_seq(car) == 3


def test_units_of_revision_1_0_and_unknown_vehicles_hear_nothing(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    listen: Callable[..., StoredWords],
) -> None:
    """Older agents never send `queue_id`: the hub keeps no watermark and publishes nothing."""
    url, root = migrated_database_url, mqtt_topic_root
    old, new, stranger = f"{root}-old", f"{root}-new", f"{root}-stranger"
    seed_vehicles(url, [old, new])
    words = listen()
    settings = settings_for(
        devstack,
        url,
        redis_url,
        root,
        hub_batch_max_delay_ms=ONE_BATCH_MS,
        # Everything due is due at once, and swept often: a word owed to anyone goes out.
        hub_storage_ack_every=1,
        hub_storage_ack_max_delay_s=0.1,
        hub_storage_ack_sweep_s=0.1,
    )
    start = now_ms() - 60_000
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        for seq in range(3):
            plain = make_fix(seq, start + seq * 1000)  # revision 1.0: no queue_id
            pub.publish(Topic.telemetry(old, root=root).value, encode_telemetry(plain))
            for car in (new, stranger):
                (fix,) = fixes([seq], start)
                pub.publish(Topic.telemetry(car, root=root).value, encode_telemetry(fix))
        pub.flush()
        wait_until(lambda: hub.stats.messages_acked >= 9, what="every message committed")
        assert hub.stats.unknown_vehicle == 3
        # One more fix of the 1.1 unit: its word comes after any word owed for the others
        # (words go out at once here, in order, on one connection).
        (last,) = fixes([3], start)
        pub.publish(Topic.telemetry(new, root=root).value, encode_telemetry(last))
        pub.flush()
        wait_until(lambda: words.next_seq(new) == 4, what="the 1.1 unit's last word")
    assert telemetry_count(url, f"{root}-old") == (3, 3)
    assert words.of(old) == []
    assert words.of(stranger) == []
    assert watermark(url, old) is None
    assert watermark(url, stranger) is None


def test_dropped_duplicate_and_dead_lettered_fixes_are_handled_too(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    listen: Callable[..., StoredWords],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(url, [car])
    words = listen()
    settings = settings_for(devstack, url, redis_url, root, hub_storage_ack_every=1)
    topic = Topic.telemetry(car, root=root).value
    start = now_ms() - 60_000
    zero, one, two, three, four = fixes(range(5), start)
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        pub.publish(topic, encode_telemetry(zero))
        # Refused by the protocol (latitude 999): a dead letter, its fixes read anyway.
        bad = {**one.model_dump(mode="json"), "lat": 999}
        pub.publish(topic, json.dumps([bad, two.model_dump(mode="json")]).encode())
        pub.publish(topic, encode_telemetry(three.model_copy(update={"lat": 0.0, "lon": 0.0})))
        pub.publish(topic, encode_telemetry(zero))  # a repeat
        # Refused by the database (jsonb holds no NUL): a dead letter, written in isolation.
        pub.publish(topic, encode_telemetry(four).replace(b"{", b'{"note":"a\\u0000b",', 1))
        pub.flush()
        wait_until(lambda: words.next_seq(car) == 5, what="a word past every handled fix")
        assert hub.stats.refused_by_database == 1
    stored = query_rows(url, "SELECT seq FROM telemetry WHERE vehicle_id = %s", car)
    assert stored == [(0,)]
    letters = query_rows(url, "SELECT reason FROM dead_letters WHERE topic = %s", topic)
    assert sorted(reason for (reason,) in letters) == ["out_of_range", "refused_by_database"]


def test_a_backlog_is_answered_by_the_sweep_once_it_goes_quiet(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    listen: Callable[..., StoredWords],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(url, [car])
    words = listen()
    settings = settings_for(
        devstack,
        url,
        redis_url,
        root,
        hub_storage_ack_backlog_quiet_s=0.3,
        hub_storage_ack_sweep_s=0.1,
    )
    topic = Topic.telemetry(car, root=root).value
    start = now_ms() - 60_000
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        pub.publish(topic, encode_telemetry(fixes([0], start)[0]))
        pub.flush()
        wait_until(lambda: words.next_seq(car) == 1, what="the answer to a new queue")
        # Two backlog messages, a batch or two after: no word until the backlog goes quiet.
        pub.publish(topic, encode_telemetry_batch(fixes(range(1, 11), start)))
        pub.publish(topic, encode_telemetry_batch(fixes(range(11, 21), start)))
        pub.flush()
        wait_until(lambda: words.next_seq(car) == 21, what="the swept word")
        assert hub.stats.watermarks_swept >= 1
    assert [word.next_seq for word in words.of(car)] == [1, 21]


def test_storage_acknowledgements_can_be_turned_off(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    listen: Callable[..., StoredWords],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(url, [car])
    words = listen()
    settings = settings_for(devstack, url, redis_url, root, hub_storage_acks=False)
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        pub.publish(
            Topic.telemetry(car, root=root).value,
            encode_telemetry_batch(fixes([0, 1], now_ms() - 60_000)),
        )
        pub.flush()
        wait_until(lambda: hub.stats.messages_acked >= 1, what="the batch committed")
        assert hub.stats.watermarks_published == 0
    assert telemetry_count(url, root) == (2, 2)
    assert watermark(url, car) is None
    assert words.of(car) == []


def test_a_vehicle_whose_dead_letter_is_lost_claims_nothing_in_that_batch(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    listen: Callable[..., StoredWords],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fix neither stored nor kept as a dead letter is not handled: its unit keeps it."""
    url, root = migrated_database_url, mqtt_topic_root
    culprit, other = f"{root}-culprit", f"{root}-other"
    seed_vehicles(url, [culprit, other])
    culprit_topic = Topic.telemetry(culprit, root=root).value
    store = telemetry.store_dead_letters

    def refuse_the_culprits(conn: psycopg.Connection[Any], letters: Sequence[DeadLetter]) -> None:
        if any(letter.topic == culprit_topic for letter in letters):
            raise psycopg.errors.DataError("a dead letter the database refuses")
        store(conn, letters)

    monkeypatch.setattr(telemetry, "store_dead_letters", refuse_the_culprits)
    words = listen()
    settings = settings_for(
        devstack,
        url,
        redis_url,
        root,
        hub_batch_max_delay_ms=ONE_BATCH_MS,
        hub_storage_ack_every=1,
        hub_storage_ack_min_interval_s=0,
    )
    start = now_ms() - 60_000
    zero, one = fixes([0, 1], start)
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        pub.publish(culprit_topic, encode_telemetry(zero))
        pub.publish(culprit_topic, b"[" + encode_telemetry(one) + b",{}]")  # a dead letter
        for fix in (zero, one):
            pub.publish(Topic.telemetry(other, root=root).value, encode_telemetry(fix))
        pub.flush()
        wait_until(lambda: words.next_seq(other) == 2, what="the other car's word")
        assert words.of(culprit) == []
        assert watermark(url, culprit) is None
        # Its seq 0 is stored all the same; the unit sends both again, and now both count.
        assert query_rows(url, "SELECT seq FROM telemetry WHERE vehicle_id = %s", culprit) == [(0,)]
        monkeypatch.setattr(telemetry, "store_dead_letters", store)
        pub.publish(culprit_topic, encode_telemetry_batch([zero, one]))
        pub.flush()
        wait_until(lambda: words.next_seq(culprit) == 2, what="the culprit's word")
        assert hub.stats.refused_by_database >= 1


def test_a_bug_in_the_watermark_step_costs_only_its_vehicles_word(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    listen: Callable[..., StoredWords],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    culprit, other = f"{root}-culprit", f"{root}-other"
    seed_vehicles(url, [culprit, other])
    advance = storage_acks.advance_watermarks

    def fail_for_the_culprit(conn: psycopg.Connection[Any], handled: Any, *args: Any) -> list[Any]:
        if culprit in handled.by_vehicle:
            raise RuntimeError("a bug in the watermark step")
        return advance(conn, handled, *args)

    monkeypatch.setattr(steps, "advance_watermarks", fail_for_the_culprit)
    words = listen()
    settings = settings_for(devstack, url, redis_url, root, hub_batch_max_delay_ms=ONE_BATCH_MS)
    start = now_ms() - 60_000
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        for car in (culprit, other):
            pub.publish(
                Topic.telemetry(car, root=root).value, encode_telemetry_batch(fixes([0, 1], start))
            )
        pub.flush()
        wait_until(lambda: words.next_seq(other) == 2, what="the other car's word")
        assert hub.stats.watermark_errors >= 1
        assert hub.stats.hub_errors == 0  # no message was lost for it
    assert telemetry_count(url, root) == (4, 4)
    assert words.of(culprit) == []
    assert watermark(url, culprit) is None


def test_the_last_resort_claims_the_dead_letters_it_keeps(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    listen: Callable[..., StoredWords],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch no step can write is dead-lettered whole, and its fixes are handled."""
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(url, [car])

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug in the first step, whatever the batch")

    words = listen()
    settings = settings_for(devstack, url, redis_url, root)
    with running_hub(settings) as hub:
        monkeypatch.setattr(hub.events, "prepare", broken)
        pub = publisher(devstack.info.mqtt_url)
        pub.publish(
            Topic.telemetry(car, root=root).value,
            encode_telemetry_batch(fixes([0, 1, 2], now_ms() - 60_000)),
        )
        pub.flush()
        wait_until(lambda: words.next_seq(car) == 3, what="the word for the dead letters")
        assert hub.stats.hub_errors >= 1
    assert telemetry_count(url, root) == (0, 0)
    letters = query_rows(url, "SELECT reason FROM dead_letters WHERE topic LIKE %s", f"{root}/%")
    assert letters == [("hub_error",)]


def test_two_hubs_sharing_the_fleet_agree_on_each_watermark(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    listen: Callable[..., StoredWords],
) -> None:
    """Each hub gets some of a car's fixes; they take turns on its watermark, none is lost."""
    if not devstack.info.mqtt_shared_subscriptions:
        pytest.skip("amqtt has no shared subscriptions: two hubs would each get everything")
    url, root = migrated_database_url, mqtt_topic_root
    cars = [f"{root}-c{n}" for n in range(20)]
    seed_vehicles(url, cars)
    words = listen()
    seqs = 30

    def settings(name: str) -> HubSettings:
        return settings_for(
            devstack,
            url,
            redis_url,
            root,
            name=name,
            hub_storage_ack_every=1,
            hub_batch_max_delay_ms=5,
        )

    start = now_ms() - 60_000
    with running_hub(settings("hub-a")) as hub_a, running_hub(settings("hub-b")) as hub_b:
        pub = publisher(devstack.info.mqtt_url)
        for fix in fixes(range(seqs), start):
            for car in cars:
                pub.publish(Topic.telemetry(car, root=root).value, encode_telemetry(fix))
        pub.flush()
        wait_until(
            lambda: all(
                max((w.next_seq for w in words.of(car)), default=0) == seqs for car in cars
            ),
            what="every car's word for all its fixes",
        )
        assert hub_a.stats.watermarks_published > 0
        assert hub_b.stats.watermarks_published > 0
    assert all(watermark(url, car) == (QUEUE, seqs) for car in cars)
    assert telemetry_count(url, root) == (seqs * len(cars), seqs * len(cars))
