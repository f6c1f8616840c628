"""`freecar hub` settings and command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from hub.settings import HubSettings, MqttProtocol


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FREECAR_"):
            monkeypatch.delenv(key)
    defaults = HubSettings()
    assert defaults.topic_root == "fleet"
    assert defaults.hub_client_id.startswith("hub-")
    assert (defaults.hub_batch_max_fixes, defaults.hub_batch_max_delay_ms) == (5000, 200)
    assert defaults.protocol() is MqttProtocol.V5
    assert defaults.hub_batch_max_bytes == 4 * 1024 * 1024
    # Unknown vehicles are refused unless an operator opts in (a trial).
    assert defaults.hub_register_unknown is False
    monkeypatch.setenv("FREECAR_TOPIC_ROOT", "staging/fleet")
    monkeypatch.setenv("FREECAR_HUB_BATCH_MAX_FIXES", "1000")
    monkeypatch.setenv("FREECAR_HUB_BATCH_MAX_BYTES", "1048576")
    monkeypatch.setenv("FREECAR_HUB_REGISTER_UNKNOWN", "true")
    monkeypatch.setenv("FREECAR_MQTT_SHARED_SUBSCRIPTIONS", "false")
    configured = HubSettings()
    assert configured.topic_root == "staging/fleet"
    assert configured.hub_batch_max_fixes == 1000
    assert configured.hub_batch_max_bytes == 1_048_576
    assert configured.hub_register_unknown is True
    # No shared subscriptions means amqtt, which speaks only MQTT 3.1.1.
    assert configured.protocol() is MqttProtocol.V311
    monkeypatch.setenv("FREECAR_HUB_MQTT_PROTOCOL", "5")
    assert HubSettings().protocol() is MqttProtocol.V5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FREECAR_TOPIC_ROOT", "$SYS"),
        ("FREECAR_TOPIC_ROOT", "fleet/+"),
        ("FREECAR_HUB_BATCH_MAX_FIXES", "0"),
        ("FREECAR_HUB_BATCH_MAX_BYTES", "1000"),
        ("FREECAR_HUB_RECEIVE_MAXIMUM", "70000"),
        # The broker would stop sending before a batch could fill.
        ("FREECAR_HUB_RECEIVE_MAXIMUM", "100"),
        ("FREECAR_HUB_MQTT_PROTOCOL", "4"),
    ],
)
def test_bad_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        HubSettings()


def run_hub(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FREECAR_")}
    return subprocess.run(
        [sys.executable, "-m", "freecar", "hub", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_teaches_the_configuration() -> None:
    done = run_hub("--help")
    assert done.returncode == 0
    assert "FREECAR_HUB_" in done.stdout
    assert "--client-id" in done.stdout
    assert "Exit codes" in done.stdout


def test_bad_configuration_exits_2() -> None:
    done = run_hub("--topic-root", "bad/+/root")
    assert done.returncode == 2
    assert "bad configuration" in done.stderr
