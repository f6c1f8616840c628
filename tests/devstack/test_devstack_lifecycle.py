"""Stop, start, restart and kill each service: same port, same data, nothing left behind."""

from __future__ import annotations

import ctypes
import socket
import subprocess
from typing import TYPE_CHECKING

import psycopg
import pytest
import redis

from devstack.binaries import find_redis
from devstack.errors import PortInUseError
from devstack.modes import Mode
from devstack.ports import LOOPBACK, free_port
from devstack.procs import is_alive, processes_under
from devstack.redis import RedisServer
from devstack.stack import DevStack, start_stack

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from .conftest import MqttClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["auto", "embedded"])
def own_stack(request: pytest.FixtureRequest) -> Iterator[DevStack]:
    """A stack these tests may break: the session's stack is left alone."""
    with start_stack(request.param) as stack:
        yield stack


def _count_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select count(*) from kept").fetchone()
    assert row is not None
    return int(row[0])


def test_postgres_restart_keeps_port_and_data(own_stack: DevStack) -> None:
    url = own_stack.info.database_url
    with psycopg.connect(url) as conn:
        conn.execute("create table if not exists kept (id serial primary key)")
        conn.execute("insert into kept default values")
    before = _count_rows(url)
    port, pid = own_stack.postgres.port, own_stack.postgres.pid
    own_stack.postgres.restart()
    assert own_stack.postgres.port == port
    assert own_stack.postgres.pid != pid
    assert _count_rows(url) == before


def test_postgres_stop_disconnects_open_clients(own_stack: DevStack) -> None:
    conn = psycopg.connect(own_stack.info.database_url)
    try:
        own_stack.postgres.stop()  # fast shutdown: does not wait for this idle client
        assert not own_stack.postgres.running
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    finally:
        conn.close()
        own_stack.postgres.start()
    with psycopg.connect(own_stack.info.database_url) as again:
        assert again.execute("select 1").fetchone() == (1,)


def test_postgres_kill_keeps_committed_rows(own_stack: DevStack) -> None:
    url = own_stack.info.database_url
    with psycopg.connect(url) as conn:
        conn.execute("create table if not exists kept (id serial primary key)")
        conn.execute("insert into kept default values")
    committed = _count_rows(url)
    idle = psycopg.connect(url)  # a backend that must die with the postmaster
    try:
        own_stack.postgres.kill()
        assert processes_under(own_stack.postgres.data_dir) == []
    finally:
        idle.close()
    own_stack.postgres.start()
    assert _count_rows(url) == committed


@pytest.mark.parametrize("hard", [False, True], ids=["restart", "kill"])
def test_redis_comes_back_on_its_port_empty(own_stack: DevStack, *, hard: bool) -> None:
    url = own_stack.redis.url(7)
    with redis.Redis.from_url(url) as client:
        client.set("key", "value")
    port = own_stack.redis.port
    if hard:
        own_stack.redis.kill()
        own_stack.redis.start()
    else:
        own_stack.redis.restart()
    assert own_stack.redis.port == port
    with redis.Redis.from_url(url) as client:
        assert client.ping()
        assert client.dbsize() == 0  # no persistence, by design


def test_broker_restart_keeps_port_and_retained_messages(
    own_stack: DevStack, mqtt_client: Callable[..., MqttClient], mqtt_topic_root: str
) -> None:
    url = own_stack.info.mqtt_url
    status = f"{mqtt_topic_root}/fleet/car1/status"
    publisher = mqtt_client(url, "pub").connected()
    publisher.publish(status, b"online", qos=1, retain=True)
    publisher.close()
    port = own_stack.mqtt.port
    own_stack.mqtt.restart()
    assert own_stack.mqtt.port == port
    late = mqtt_client(url, "late").connected()
    late.subscribe(status)
    if own_stack.info.mqtt_broker == "amqtt":
        return  # amqtt keeps nothing across a restart
    assert late.receive().payload == b"online"


def test_mosquitto_queues_for_a_persistent_session_across_restart(
    own_stack: DevStack, mqtt_client: Callable[..., MqttClient], mqtt_topic_root: str
) -> None:
    if own_stack.info.mqtt_broker != "mosquitto":
        pytest.skip("amqtt does not persist sessions across a restart")
    url = own_stack.info.mqtt_url
    topic = f"{mqtt_topic_root}/fleet/car1/telemetry"
    hub = mqtt_client(url, "hub", clean_session=False).connected()
    hub.subscribe(topic, qos=1)
    hub.close()
    car = mqtt_client(url, "car").connected()
    for n in range(3):
        car.publish(topic, str(n).encode(), qos=1)
    car.close()
    own_stack.mqtt.restart()
    back = mqtt_client(url, "hub", clean_session=False).connected()
    assert [back.receive().payload for _ in range(3)] == [b"0", b"1", b"2"]


def test_broker_kill_then_start_on_the_same_port(
    own_stack: DevStack, mqtt_client: Callable[..., MqttClient], mqtt_topic_root: str
) -> None:
    port = own_stack.mqtt.port
    own_stack.mqtt.kill()
    assert not own_stack.mqtt.running
    own_stack.mqtt.start()
    assert own_stack.mqtt.port == port
    client = mqtt_client(own_stack.info.mqtt_url, "again").connected()
    client.subscribe(f"{mqtt_topic_root}/x")
    client.publish(f"{mqtt_topic_root}/x", b"hi")
    assert client.receive().payload == b"hi"


def test_start_and_stop_are_idempotent(own_stack: DevStack) -> None:
    pid = own_stack.redis.pid
    own_stack.redis.start()
    assert own_stack.redis.pid == pid
    own_stack.redis.stop()
    own_stack.redis.stop()
    assert own_stack.redis.pid is None
    own_stack.redis.start()


def _listening_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    sock.listen()
    return sock


def test_first_start_moves_off_a_taken_port_and_restart_does_not(tmp_path: Path) -> None:
    taken = free_port()
    with _listening_socket(taken):
        server = RedisServer(
            find_redis(Mode.AUTO), workdir=tmp_path, log_path=tmp_path / "log", ready_timeout=30
        )
        server._port = taken  # as if another process grabbed the port after we chose it
        server.start()
        try:
            assert server.port != taken
        finally:
            server.stop()
    with _listening_socket(server.port), pytest.raises(PortInUseError, match="Last lines of"):
        server.start()
    assert not server.running


def _shared_memory_exists(key: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.shmget(ctypes.c_int(key), ctypes.c_size_t(0), ctypes.c_int(0))) != -1


def _shm_key(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[6].split()[0])


@pytest.mark.parametrize("mode", ["auto", "embedded"])
def test_teardown_leaves_no_process_and_no_file(mode: str) -> None:
    stack = start_stack(mode)
    with psycopg.connect(stack.info.database_url) as conn:
        conn.execute("select 1")
        pids = processes_under(stack.root)  # services, postgres backends included
        key = _shm_key(stack.postgres.data_dir)
    watchdog = stack._watchdog.pid
    assert len(pids) >= 5
    stack.close()
    assert not stack.root.exists()
    assert [pid for pid in [*pids, watchdog] if is_alive(pid)] == []
    assert not _shared_memory_exists(key)
    stack.close()  # a second close is harmless


def test_teardown_spares_a_shell_reading_the_logs() -> None:
    stack = start_stack()
    # Someone `cd`-ed into the stack directory: not part of the stack, must not be killed.
    bystander = subprocess.Popen(["sleep", "600"], cwd=stack.root)
    try:
        stack.close()
        assert bystander.poll() is None
        assert not stack.root.exists()
    finally:
        bystander.kill()
        bystander.wait()
