"""Agent configuration: TOML file, FREECAR_AGENT_* environment, overrides, and refusals."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from protocol.keys import SigningKey
from vehicle_agent.config import AgentConfig, ConfigError

if TYPE_CHECKING:
    from pathlib import Path

URL = "mqtt://car-1:pw@broker.example:1883"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FREECAR_AGENT_* variable of the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("FREECAR_AGENT_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_defaults_follow_the_brief_of_a_real_tracker() -> None:
    config = AgentConfig.load(vehicle_id="car-1", mqtt_url=URL)
    assert (config.moving_interval_s, config.parked_interval_s, config.heading_change_deg) == (
        5.0,
        60.0,
        30.0,
    )
    assert (config.topic_root, config.mqtt_client_id, config.queue_path) == ("fleet", "car-1", None)
    assert (config.position_backend, config.status_backend, config.actuator_backend) == ("sim",) * 3
    assert config.backlog_batch_size == 50
    assert config.max_immobilize_speed_kmh == 5.0


def test_environment_wins_over_the_file_and_overrides_win_over_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = f'vehicle_id = "car-1"\nmqtt_url = "{URL}"\nparked_interval_s = 90\n'
    path = write(tmp_path, text + "moving_interval_s = 4\n")
    monkeypatch.setenv("FREECAR_AGENT_PARKED_INTERVAL_S", "120")
    config = AgentConfig.load(path)
    assert (config.parked_interval_s, config.moving_interval_s) == (120.0, 4.0)
    assert AgentConfig.load(path, parked_interval_s=30).parked_interval_s == 30.0


def test_the_file_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, f'vehicle_id = "car-9"\nmqtt_url = "{URL}"\n')
    monkeypatch.setenv("FREECAR_AGENT_CONFIG", str(path))
    assert AgentConfig.load().vehicle_id == "car-9"


def test_trusted_keys_as_toml_list_json_or_comma_separated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = SigningKey.generate().verifying_key.to_paserk()
    second = SigningKey.generate().verifying_key.to_paserk()
    path = write(tmp_path, f'vehicle_id = "c"\nmqtt_url = "{URL}"\ntrusted_keys = ["{first}"]\n')
    assert AgentConfig.load(path).trusted_keys == [first]
    monkeypatch.setenv("FREECAR_AGENT_TRUSTED_KEYS", f"{first}, {second}")
    assert AgentConfig.load(path).trusted_keys == [first, second]
    monkeypatch.setenv("FREECAR_AGENT_TRUSTED_KEYS", f'["{second}"]')
    config = AgentConfig.load(path)
    assert [key.to_paserk() for key in config.verifying_keys()] == [second]


def test_the_password_never_shows(tmp_path: Path) -> None:
    config = AgentConfig.load(vehicle_id="car-1", mqtt_url=URL)
    assert "pw" not in repr(config)
    assert config.redacted()["mqtt_url"] == "mqtt://car-1:***@broker.example:1883"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('mqtt_url = "mqtt://h"\n', "vehicle_id"),
        ('vehicle_id = "car/1"\nmqtt_url = "mqtt://h"\n', "invalid vehicle id"),
        ('vehicle_id = "c"\nmqtt_url = "http://h"\n', "mqtt://"),
        ('vehicle_id = "c"\nmqtt_url = "mqtt://h"\nparked_interval_s = 0\n', "parked_interval_s"),
        ('vehicle_id = "c"\nmqtt_url = "mqtt://h"\nposition_backend = "gps"\n', "position_backend"),
        ('vehicle_id = "c"\nmqtt_url = "mqtt://h"\nparked_interval = 5\n', "parked_interval"),
        ('vehicle_id = "c"\nmqtt_url = "mqtt://h"\ntrusted_keys = ["k4.local.x"]\n', "k4.public"),
        ('vehicle_id = "c"\nmqtt_url = "mqtt://h"\nbacklog_batch_size = 1001\n', "batch"),
        ('vehicle_id = "c"\nmqtt_url = "mqtt://h"\ntopic_root = "a/+/b"\n', "root"),
        ('vehicle_id = "c"\nmqtt_url = "mqtt://h"\nsim_fuel_pct = -1\n', "sim_fuel_pct"),
        ('vehicle_id = "c"\nmqtt_url = "mqtt://h"\nmoving_interval_s = 99\n', "moving_interval"),
        ('vehicle_id = "c"\nmqtt_url = "mqtt://h"\nbackoff_max_s = 0.1\n', "backoff_max_s"),
        ("vehicle_id = \n", "not valid TOML"),
    ],
)
def test_bad_configurations_are_refused_with_the_key_named(
    tmp_path: Path, text: str, complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint):
        AgentConfig.load(write(tmp_path, text))


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        AgentConfig.load(tmp_path / "nope.toml")


def test_errors_name_the_environment_variable_too() -> None:
    with pytest.raises(ConfigError, match="FREECAR_AGENT_MQTT_URL"):
        AgentConfig.load(vehicle_id="car-1")
