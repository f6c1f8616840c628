"""`freecar vehicle`: a login for an existing vehicle, its agent config, the broker's setup."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from support.vehicles import insert_vehicles

from freecar.cli import main
from protocol.keys import SigningKey
from vehicle_agent.config import AgentConfig

# The broker tests' MQTT probe (tests/broker has no package to import it from).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "broker"))
from mqtt_testing import MqttProbe

if TYPE_CHECKING:
    from devstack.stack import DevStack


def _insert_vehicle(database_url: str, *, status: str = "available") -> str:
    (vehicle_id,) = insert_vehicles(
        database_url,
        [f"cli-{secrets.token_hex(4)}"],
        model="Han",
        category="luxury",
        price_hour_minor=6000,
        price_day_minor=40000,
        status=status,
    )
    return vehicle_id


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch,
    migrated_database_url: str,
    devstack: DevStack,
    mqtt_topic_root: str,
) -> SigningKey:
    key = SigningKey.generate()
    monkeypatch.setenv("FREECAR_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("FREECAR_MQTT_URL", devstack.info.mqtt_url)
    monkeypatch.setenv("FREECAR_MQTT_ADMIN_URL", devstack.info.mqtt_admin_url)
    monkeypatch.setenv("FREECAR_TOPIC_ROOT", mqtt_topic_root)
    monkeypatch.setenv("FREECAR_HUB_SIGNING_KEY", key.to_paserk())
    monkeypatch.delenv("FREECAR_HUB_SIGNING_KEY_FILE", raising=False)
    monkeypatch.delenv("FREECAR_FLEET_AGENT_MQTT_URL", raising=False)
    return key


def test_provision_writes_a_working_agent_config(
    env: SigningKey,
    migrated_database_url: str,
    devstack: DevStack,
    mqtt_topic_root: str,
    tmp_path: Path,
) -> None:
    vehicle_id = _insert_vehicle(migrated_database_url)
    out = tmp_path / "agent.toml"
    code = main(["vehicle", "provision", vehicle_id, "--out", str(out)])
    assert out.stat().st_mode & 0o077 == 0
    config = AgentConfig.load(out)  # the agent itself accepts the file
    assert config.vehicle_id == vehicle_id
    assert config.topic_root == mqtt_topic_root
    assert config.trusted_keys == [env.verifying_key.to_paserk()]
    with psycopg.connect(migrated_database_url) as conn:
        row = conn.execute(
            "SELECT password_hash, broker_provisioned, broker_error FROM vehicle_credentials"
            " WHERE vehicle_id = %s",
            (vehicle_id,),
        ).fetchone()
    assert row is not None
    assert row[0].startswith("$argon2id$")
    assert config.broker.password is not None
    assert config.broker.password not in row[0]
    if not devstack.info.mqtt_dynamic_security:
        assert code == 3
        assert row[1] is False
        assert row[2]
        return
    assert code == 0
    assert (row[1], row[2]) == (True, None)
    car = MqttProbe(devstack.info.mqtt_url, username=vehicle_id, password=config.broker.password)
    assert car.connect() == 0
    car.close()


def test_provision_refuses_unknown_and_retired_vehicles(
    env: SigningKey, migrated_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    del env
    assert main(["vehicle", "provision", "no-such-car"]) == 1
    assert "vehicle not found" in capsys.readouterr().err
    retired = _insert_vehicle(migrated_database_url, status="retired")
    assert main(["vehicle", "provision", retired]) == 1
    assert main(["vehicle", "provision", "not/an/id"]) == 2


def test_without_a_hub_key_the_config_says_where_it_goes(
    env: SigningKey,
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    del env
    monkeypatch.delenv("FREECAR_HUB_SIGNING_KEY")
    monkeypatch.delenv("FREECAR_MQTT_ADMIN_URL")  # and no broker provisioning either
    monkeypatch.setenv("FREECAR_FLEET_AGENT_MQTT_URL", "mqtts://mqtt.example.com:8883")
    vehicle_id = _insert_vehicle(migrated_database_url)
    assert main(["vehicle", "provision", vehicle_id]) == 3
    captured = capsys.readouterr()
    assert "# trusted_keys" in captured.out
    assert "FREECAR_HUB_SIGNING_KEY" in captured.out
    assert f'mqtt_url = "mqtts://{vehicle_id}:' in captured.out
    assert "@mqtt.example.com:8883" in captured.out
    assert "FREECAR_MQTT_ADMIN_URL" in captured.err


def test_broker_setup_creates_the_hub_login(
    env: SigningKey, devstack: DevStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    del env
    if not devstack.info.mqtt_dynamic_security:
        pytest.skip(f"the session's broker is {devstack.info.mqtt_broker}: no dynamic security")
    port = devstack.info.mqtt_url.rsplit(":", 1)[1]
    username, password = f"hub-{secrets.token_hex(4)}", secrets.token_hex(16)
    monkeypatch.setenv("FREECAR_MQTT_URL", f"mqtt://{username}:{password}@127.0.0.1:{port}")
    assert main(["vehicle", "broker-setup"]) == 0
    assert main(["vehicle", "broker-setup"]) == 0  # safe to repeat
    hub = MqttProbe(devstack.info.mqtt_url, username=username, password=password)
    assert hub.connect() == 0
    hub.close()
    monkeypatch.delenv("FREECAR_MQTT_ADMIN_URL")
    assert main(["vehicle", "broker-setup"]) == 2
