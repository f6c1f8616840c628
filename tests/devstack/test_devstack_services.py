"""Every service of a stack answers, for the session's stack and a forced embedded one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
import pytest
import redis

from core.settings import Settings
from devstack.redis import DATABASES
from devstack.testing import temporary_database

if TYPE_CHECKING:
    from collections.abc import Callable

    from devstack.stack import DevStack
    from devstack.testing import RedisIndexPool

    from .conftest import MqttClient

pytestmark = pytest.mark.integration

STANDARD_PORTS = {5432, 6379, 1883}


def test_postgres_answers_sql(any_stack: DevStack) -> None:
    with psycopg.connect(any_stack.info.database_url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        version = conn.execute("show server_version").fetchone()
    assert version is not None
    assert str(version[0]).startswith(any_stack.info.postgres_version)


def test_temporary_database_is_empty_and_dropped(any_stack: DevStack) -> None:
    with temporary_database(any_stack, "scratch") as url:
        assert url != any_stack.info.database_url
        with psycopg.connect(url) as conn:
            tables = conn.execute(
                "select count(*) from pg_tables where schemaname = 'public'"
            ).fetchone()
        assert tables == (0,)
        name = url.rsplit("/", 1)[1]
    with psycopg.connect(any_stack.info.admin_database_url) as conn:
        left = conn.execute("select count(*) from pg_database where datname = %s", [name])
        assert left.fetchone() == (0,)


def test_database_from_template(any_stack: DevStack) -> None:
    with temporary_database(any_stack, "template") as template_url:
        with psycopg.connect(template_url) as conn:
            conn.execute("create table seeded (id int primary key)")
            conn.execute("insert into seeded values (1), (2)")
        template = template_url.rsplit("/", 1)[1]
        with (
            temporary_database(any_stack, "copy", template=template) as url,
            psycopg.connect(url) as conn,
        ):
            assert conn.execute("select count(*) from seeded").fetchone() == (2,)


def test_timescaledb_hypertable_when_reported(any_stack: DevStack) -> None:
    with temporary_database(any_stack, "tsdb") as url, psycopg.connect(url) as conn:
        available = conn.execute(
            "select count(*) from pg_available_extensions where name = 'timescaledb'"
        ).fetchone()
        preloaded = conn.execute("show shared_preload_libraries").fetchone()
        assert preloaded is not None
        assert ("timescaledb" in str(preloaded[0])) is any_stack.info.timescaledb
        if not any_stack.info.timescaledb:
            assert available == (0,)
            return
        conn.execute("create extension timescaledb")
        conn.execute("create table fixes (vehicle_id text not null, ts timestamptz not null)")
        conn.execute("select create_hypertable('fixes', 'ts')")
        conn.execute("insert into fixes values ('car1', now())")
        hypertables = conn.execute("select count(*) from timescaledb_information.hypertables")
        assert hypertables.fetchone() == (1,)


def test_redis_ping_and_private_indexes(any_stack: DevStack) -> None:
    with (
        redis.Redis.from_url(any_stack.redis.url(DATABASES - 2)) as one,
        redis.Redis.from_url(any_stack.redis.url(DATABASES - 1)) as other,
    ):
        assert one.ping()
        assert one.config_get("databases") == {"databases": str(DATABASES)}
        one.set("key", "one")
        assert other.get("key") is None
        one.flushdb()


def test_mqtt_qos1_and_retained(
    any_stack: DevStack, mqtt_client: Callable[..., MqttClient], mqtt_topic_root: str
) -> None:
    url = any_stack.info.mqtt_url
    subscriber = mqtt_client(url, "sub").connected()
    assert subscriber.subscribe(f"{mqtt_topic_root}/fleet/+/telemetry", qos=1) == 1
    publisher = mqtt_client(url, "pub").connected()
    publisher.publish(f"{mqtt_topic_root}/fleet/car1/telemetry", b'{"lat": 1}', qos=1)
    message = subscriber.receive()
    assert (message.topic, message.payload, message.qos) == (
        f"{mqtt_topic_root}/fleet/car1/telemetry",
        b'{"lat": 1}',
        1,
    )

    status = f"{mqtt_topic_root}/fleet/car1/status"
    publisher.publish(status, b"online", qos=1, retain=True)
    late = mqtt_client(url, "late").connected()
    late.subscribe(status, qos=1)
    retained = late.receive()
    assert (retained.topic, retained.payload, retained.retain) == (status, b"online", True)
    publisher.publish(status, b"", qos=1, retain=True)  # clear it


def test_shared_subscriptions_as_reported(
    any_stack: DevStack, mqtt_client: Callable[..., MqttClient], mqtt_topic_root: str
) -> None:
    if not any_stack.info.mqtt_shared_subscriptions:
        pytest.skip(f"{any_stack.info.mqtt_broker} has no shared subscriptions")
    url = any_stack.info.mqtt_url
    hub = mqtt_client(url, "hub").connected()
    hub.subscribe(f"$share/hub/{mqtt_topic_root}/fleet/+/telemetry", qos=1)
    car = mqtt_client(url, "car").connected()
    car.publish(f"{mqtt_topic_root}/fleet/car1/telemetry", b"fix", qos=1)
    assert hub.receive().topic == f"{mqtt_topic_root}/fleet/car1/telemetry"


def test_env_points_settings_at_the_stack(
    any_stack: DevStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = any_stack.env()
    assert set(env) == {
        "FREECAR_ENV",
        "FREECAR_DATABASE_URL",
        "FREECAR_REDIS_URL",
        "FREECAR_MQTT_URL",
        "FREECAR_MQTT_SHARED_SUBSCRIPTIONS",
        "FREECAR_MQTT_ADMIN_URL",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.database_url.get_secret_value() == any_stack.info.database_url
    assert settings.redis_url.get_secret_value() == any_stack.info.redis_url
    assert settings.mqtt_shared_subscriptions is any_stack.info.mqtt_shared_subscriptions
    assert settings.broker.port == any_stack.mqtt.port
    assert settings.broker.username == "freecar"


def test_ports_are_private_and_loopback(any_stack: DevStack) -> None:
    ports = {service.port for service in any_stack.services}
    assert len(ports) == 3
    assert not ports & STANDARD_PORTS
    info = any_stack.info
    for url in (info.database_url, info.redis_url, info.mqtt_url, info.mqtt_admin_url):
        assert "@127.0.0.1:" in url or "//127.0.0.1:" in url


def test_passwords_are_generated_per_stack(devstack: DevStack, embedded_stack: DevStack) -> None:
    assert devstack.logins.service.password != embedded_stack.logins.service.password
    assert len(devstack.logins.service.password) >= 24


def test_session_fixtures_isolate(
    devstack: DevStack, database_url: str, redis_url: str, mqtt_url: str, mqtt_topic_root: str
) -> None:
    assert database_url != devstack.info.database_url
    with psycopg.connect(database_url) as conn:
        tables = conn.execute("select count(*) from pg_tables where schemaname = 'public'")
        assert tables.fetchone() == (0,)
    assert not redis_url.endswith("/0")
    assert mqtt_url == devstack.info.mqtt_url
    assert mqtt_topic_root.startswith("t")
    assert len(mqtt_topic_root) == 13
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0


def test_redis_indexes_are_flushed_before_reuse(redis_indexes: RedisIndexPool) -> None:
    with redis_indexes.lease() as first, redis.Redis.from_url(first) as client:
        client.set("left", "behind")
    with redis_indexes.lease() as again, redis.Redis.from_url(again) as client:
        assert again == first  # low indexes are reused first
        assert client.dbsize() == 0
