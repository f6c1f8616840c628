"""Process settings from FREECAR_* variables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import Environment, Settings


def test_reads_freecar_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREECAR_ENV", "test")
    monkeypatch.setenv("FREECAR_MQTT_URL", "mqtts://hub:s3cr3t-v4lue@broker.example:8883")
    monkeypatch.setenv("FREECAR_MQTT_SHARED_SUBSCRIPTIONS", "false")
    settings = Settings()
    assert settings.env is Environment.TEST
    assert settings.broker.tls
    assert settings.broker.port == 8883
    assert settings.broker.redacted() == "mqtts://hub:***@broker.example:8883"
    assert not settings.mqtt_shared_subscriptions
    assert "s3cr3t" not in repr(settings)


def test_rejects_a_url_that_is_not_mqtt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREECAR_MQTT_URL", "http://broker:1883")
    with pytest.raises(ValidationError, match="mqtt://"):
        Settings()


@pytest.mark.parametrize("password", ["changeme", "freecar", ""])
def test_production_refuses_placeholder_passwords(
    monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.setenv("FREECAR_ENV", "production")
    monkeypatch.setenv("FREECAR_DATABASE_URL", f"postgresql://app:{password}@db/freecar")
    with pytest.raises(ValidationError, match="FREECAR_DATABASE_URL holds a placeholder"):
        Settings()


def test_production_accepts_real_secrets_and_development_accepts_placeholders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FREECAR_DATABASE_URL", "postgresql://app:changeme@db/freecar")
    assert Settings().env is Environment.DEVELOPMENT
    monkeypatch.setenv("FREECAR_ENV", "production")
    monkeypatch.setenv("FREECAR_DATABASE_URL", "postgresql://app:Zq8-long-random@db/freecar")
    monkeypatch.setenv("FREECAR_MQTT_URL", "mqtt://hub:Xk2-long-random@broker:1883")
    assert Settings().env is Environment.PRODUCTION
