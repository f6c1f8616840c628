"""Only vehicles in the inventory: unknown and retired ones are dead-lettered, changes learnt live.

Like Traccar's default, telemetry of a vehicle that is not in `vehicles`, or is retired,
stores nothing; the hub learns of added and retired vehicles without a restart; and an
operator may opt in to registering unknown vehicles for a trial.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
from hub_testing import (
    hub_settings,
    make_fix,
    now_ms,
    query_rows,
    running_hub,
    seed_vehicles,
    telemetry_count,
    wait_until,
)

from hub.inventory import Inventory
from hub.repository.vehicles import REGISTERED_NOTE, VEHICLES_CHANNEL
from hub.stats import HubStats
from protocol.status import online_payload
from protocol.telemetry import encode_telemetry
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable

    from hub_testing import Publisher

    from devstack.stack import DevStack
    from hub.service import Hub


def retire(url: str, vehicle_id: str) -> None:
    query_rows(url, "UPDATE vehicles SET status = 'retired' WHERE id = %s RETURNING id", vehicle_id)


def unknown_letters(url: str, root: str) -> list[tuple[str, str]]:
    rows = query_rows(
        url,
        "SELECT topic, detail FROM dead_letters WHERE reason = 'unknown_vehicle' AND topic LIKE %s"
        " ORDER BY topic",
        f"{root}/%",
    )
    return [(str(topic), str(detail)) for topic, detail in rows]


def states_of(url: str, root: str) -> list[str]:
    rows = query_rows(
        url, "SELECT vehicle_id FROM vehicle_state WHERE vehicle_id LIKE %s ORDER BY 1", f"{root}%"
    )
    return [str(vid) for (vid,) in rows]


def handled(hub: Hub, messages: int) -> Callable[[], bool]:
    def done() -> bool:
        stats = hub.stats
        acked = stats.messages_acked + stats.acks_skipped + stats.messages_qos0
        return stats.messages_received >= messages and acked >= stats.messages_received

    return done


def test_unknown_and_retired_vehicles_are_dead_lettered_and_nothing_is_stored(
    any_stack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    known, retired, ghost = f"{root}-known", f"{root}-retired", f"{root}-ghost"
    seed_vehicles(url, [known, retired])
    retire(url, retired)
    settings = hub_settings(any_stack, database_url=url, redis_url=redis_url, root=root)
    start = now_ms() - 10_000
    with running_hub(settings) as hub:
        pub = publisher(any_stack.info.mqtt_url)
        for car in (known, retired, ghost):
            pub.publish(Topic.telemetry(car, root=root).value, encode_telemetry(make_fix(1, start)))
        pub.publish(Topic.status(ghost, root=root).value, online_payload(start))
        pub.flush()
        wait_until(handled(hub, 4), what="every message handled")
        assert telemetry_count(url, root) == (1, 1)
        assert telemetry_count(url, known) == (1, 1)
        assert states_of(url, root) == [known]
        assert hub.stats.unknown_vehicle == 3
        assert hub.stats.fixes_stored == 1
    assert unknown_letters(url, root) == [
        (f"{root}/{ghost}/status", f"vehicle {ghost!r}: not in the inventory"),
        (f"{root}/{ghost}/telemetry", f"vehicle {ghost!r}: not in the inventory"),
        (f"{root}/{retired}/telemetry", f"vehicle {retired!r}: retired"),
    ]


def test_vehicles_added_and_retired_while_the_hub_runs_are_learnt(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    first, later, other = f"{root}-first", f"{root}-later", f"{root}-other"
    seed_vehicles(url, [first, other])
    # No periodic reload during the test: what the hub learns, it learns from notifications.
    settings = hub_settings(
        devstack, database_url=url, redis_url=redis_url, root=root, hub_inventory_reload_s=3600
    )
    start = now_ms() - 60_000

    def fix(car: str, seq: int) -> tuple[str, bytes]:
        return Topic.telemetry(car, root=root).value, encode_telemetry(make_fix(seq, start + seq))

    with running_hub(settings) as hub:
        assert first in hub.inventory
        assert later not in hub.inventory
        pub = publisher(devstack.info.mqtt_url)
        # Added while the hub runs: its very first fix is stored.
        seed_vehicles(url, [later])
        pub.publish(*fix(later, 1))
        pub.flush()
        wait_until(lambda: telemetry_count(url, later) == (1, 1), what="the new car's fix")
        assert later in hub.inventory
        # Retired while the hub runs: the hub hears it (at its next batch or sweep)...
        retire(url, first)
        pub.publish(*fix(other, 1))
        pub.flush()
        wait_until(lambda: first not in hub.inventory, what="the retirement heard")
        # ...and takes nothing more from it.
        pub.publish(*fix(first, 2))
        pub.flush()
        wait_until(lambda: hub.stats.unknown_vehicle == 1, what="the retired car refused")
    assert telemetry_count(url, first) == (0, 0)
    assert unknown_letters(url, root) == [
        (f"{root}/{first}/telemetry", f"vehicle {first!r}: retired"),
    ]


def test_unknown_vehicles_are_registered_when_the_operator_opts_in(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    electric, petrol, retired = f"{root}-ev", f"{root}-gas", f"{root}-retired"
    seed_vehicles(url, [retired])
    retire(url, retired)
    settings = hub_settings(
        devstack, database_url=url, redis_url=redis_url, root=root, hub_register_unknown=True
    )
    start = now_ms() - 10_000
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        pub.publish(
            Topic.telemetry(electric, root=root).value,
            encode_telemetry(make_fix(1, start, fuel_pct=None, battery_pct=80.0)),
        )
        for car in (petrol, retired):
            pub.publish(Topic.telemetry(car, root=root).value, encode_telemetry(make_fix(1, start)))
        pub.flush()
        wait_until(handled(hub, 3), what="every message handled")
        assert hub.stats.vehicles_registered == 2
        assert electric in hub.inventory
        assert petrol in hub.inventory
    assert telemetry_count(url, electric) == (1, 1)
    assert telemetry_count(url, petrol) == (1, 1)
    assert telemetry_count(url, retired) == (0, 0)
    assert states_of(url, root) == sorted([electric, petrol])
    registered = query_rows(
        url,
        "SELECT id, plate, make, model, category, fuel_type, price_hour_minor, price_day_minor,"
        " currency, status, notes FROM vehicles WHERE id IN (%s, %s, %s) ORDER BY id",
        electric,
        petrol,
        retired,
    )
    assert registered[:2] == [
        (electric, electric, "", "", "electric", "electric", 0, 0, "XXX", "maintenance",
         REGISTERED_NOTE),
        (petrol, petrol, "", "", "standard", "petrol", 0, 0, "XXX", "maintenance",
         REGISTERED_NOTE),
    ]  # fmt: skip
    # A retired car is never brought back by registration.
    assert registered[2][0] == retired
    assert registered[2][9] == "retired"
    assert unknown_letters(url, root) == [
        (f"{root}/{retired}/telemetry", f"vehicle {retired!r}: retired"),
    ]


class FakeConnection:
    """Just enough of a connection for `Inventory.load`: a query that hears notifications."""

    def __init__(self, ids: list[str], heard: list[str]) -> None:
        self.ids, self.heard = ids, heard
        self.handler: Callable[[psycopg.Notify], None] | None = None

    def execute(self, _query: str, *_args: object) -> FakeConnection:
        # Notifications arrive while the query runs (psycopg calls handlers then).
        assert self.handler is not None
        for payload in self.heard:
            self.handler(psycopg.Notify(VEHICLES_CHANNEL, payload, 1))
        return self

    def fetchall(self) -> list[tuple[str]]:
        return [(vid,) for vid in self.ids]

    def add_notify_handler(self, handler: Callable[[psycopg.Notify], None]) -> None:
        self.handler = handler


def test_notifications_heard_during_a_reload_are_not_lost() -> None:
    inventory = Inventory(stats=HubStats(), reload_s=60)
    # The reload's snapshot still has b and not c; b was retired, c added meanwhile.
    conn = FakeConnection(["a", "b"], ["retired b", "active c", "gone x"])
    inventory.listen(conn)  # type: ignore[arg-type]
    inventory.load(conn)  # type: ignore[arg-type]
    assert [vid for vid in ("a", "b", "c") if vid in inventory] == ["a", "c"]
    # Not due yet: a refresh reads nothing...
    again = FakeConnection(["a"], [])
    again.handler = conn.handler
    inventory.refresh(again)  # type: ignore[arg-type]
    assert "c" in inventory
    # ...until a notification it cannot apply (a TRUNCATE) makes it due at once.
    assert conn.handler is not None
    conn.handler(psycopg.Notify(VEHICLES_CHANNEL, "reload", 1))
    inventory.refresh(again)  # type: ignore[arg-type]
    assert [vid for vid in ("a", "b", "c") if vid in inventory] == ["a"]
