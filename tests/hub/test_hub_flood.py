"""A flood of large junk: the hub keeps working, its memory stays bounded, nothing is lost.

Hundreds of 1 MB messages of random bytes (under the production broker's 1 MiB packet
limit), for a vehicle in the inventory and one that is not, go through a real broker to a
`freecar hub` process. Every one becomes a dead letter with its payload cut, its whole size
and its SHA-256; fixes published afterwards are stored; and the process's peak memory grows
by far less than the flood. Memory is measured, not time: the assertion holds on any machine.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from hub_testing import (
    hub_settings,
    make_fix,
    now_ms,
    query_rows,
    seed_vehicles,
    telemetry_count,
    wait_until,
)

from hub.batch import DEAD_LETTER_PAYLOAD_LIMIT
from protocol.telemetry import encode_telemetry
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable

    from hub_testing import HubProcess, Publisher

    from devstack.stack import DevStack
    from hub.settings import HubSettings

JUNK_SIZE = 1_000_000  # with its topic, under Mosquitto's max_packet_size of 1 MiB
# 400 MB in all; every third message for a vehicle not in the inventory.
JUNK_MESSAGES = 400
FLOOD_BYTES = JUNK_MESSAGES * JUNK_SIZE
# Far below the flood (measured: about 30 MB). Held whole, junk took a hub to eight times
# the flood's size.
MAX_GROWTH_BYTES = FLOOD_BYTES // 4
# The publisher holds at most this many messages of 1 MB in flight.
WINDOW = 8


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


def test_a_flood_of_large_junk_is_dead_lettered_in_bounded_memory(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    hub_process: Callable[[HubSettings], HubProcess],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car, stranger = f"{root}-car", f"{root}-stranger"
    seed_vehicles(url, [car])
    settings = hub_settings(devstack, database_url=url, redis_url=redis_url, root=root)
    hub = hub_process(settings).start()
    assert hub.popen is not None
    pub = publisher(devstack.info.mqtt_url, window=WINDOW)
    topic = Topic.telemetry(car, root=root).value
    start = now_ms() - 60_000
    # Warm up (a batch, a commit), then take the peak so far as the baseline.
    pub.publish(topic, encode_telemetry(make_fix(0, start)))
    pub.flush()
    wait_until(lambda: telemetry_count(url, car) == (1, 1), what="the first fix")
    before = peak_rss(hub.popen.pid)

    digests: dict[str, list[bytes]] = {car: [], stranger: []}
    for i in range(JUNK_MESSAGES):
        vehicle = stranger if i % 3 == 2 else car
        junk = os.urandom(JUNK_SIZE)
        digests[vehicle].append(hashlib.sha256(junk).digest())
        pub.publish(Topic.telemetry(vehicle, root=root).value, junk)
    pub.flush()
    # Then real fixes again: stored as ever.
    for seq in range(1, 11):
        pub.publish(topic, encode_telemetry(make_fix(seq, start + seq * 1000)))
    pub.flush()
    wait_until(lambda: telemetry_count(url, car) == (11, 11), what="the fixes after the flood")
    growth = peak_rss(hub.popen.pid) - before
    assert not hub.exited()
    assert growth < MAX_GROWTH_BYTES, f"peak memory grew {growth / 1e6:.0f} MB"

    letters = query_rows(
        url,
        "SELECT topic, reason, octet_length(payload), payload_size, payload_sha256"
        " FROM dead_letters WHERE topic LIKE %s",
        f"{root}/%",
    )
    # The car's junk is refused as what it is (not JSON); the stranger's for being unknown.
    refused_as = {car: {"bad_json", "invalid_value"}, stranger: {"unknown_vehicle"}}
    for vehicle, reasons in refused_as.items():
        mine = [row for row in letters if row[0] == Topic.telemetry(vehicle, root=root).value]
        assert {row[1] for row in mine} <= reasons
        assert {(row[2], row[3]) for row in mine} == {(DEAD_LETTER_PAYLOAD_LIMIT, JUNK_SIZE)}
        assert sorted(bytes(row[4]) for row in mine) == sorted(digests[vehicle])
