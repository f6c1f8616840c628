"""FREECAR_API_* settings: parsing, and what production refuses."""

from __future__ import annotations

import logging
from ipaddress import ip_network

import pytest
from api_testing import TEST_TOKEN_KEY
from pydantic import ValidationError

from api.auth.keys import generate_token_key, parse_token_key
from api.resources import token_codec
from api.settings import DEFAULT_ENDPOINT_BUDGETS, ApiSettings
from core.settings import Environment

REAL_URLS = {
    "FREECAR_DATABASE_URL": "postgresql://api:Zq8-long-random@db/freecar",
    "FREECAR_REDIS_URL": "redis://:Xk2-long-random@redis:6379/0",
    "FREECAR_MQTT_URL": "mqtt://api:Yp3-long-random@broker:1883",
}


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("FREECAR_ENV", "production")
    for name, value in REAL_URLS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FREECAR_API_WECHAT_APPID", "wx0123456789abcdef")
    monkeypatch.setenv("FREECAR_API_WECHAT_SECRET", "a-real-looking-app-secret")
    return monkeypatch


def test_reads_api_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREECAR_API_PORT", "8123")
    monkeypatch.setenv("FREECAR_API_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("FREECAR_API_ADMIN_NETWORKS", '["10.0.0.0/8", "2001:db8::/32"]')
    monkeypatch.setenv("FREECAR_API_RATE_LIMIT_ENDPOINTS", '{"refresh": "5/minute"}')
    monkeypatch.setenv("FREECAR_API_TOKEN_KEYS", f"{generate_token_key()},{TEST_TOKEN_KEY}")
    settings = ApiSettings()
    assert settings.api_port == 8123
    assert settings.api_cors_origins == ["https://a.example", "https://b.example"]
    assert settings.api_admin_networks == [ip_network("10.0.0.0/8"), ip_network("2001:db8::/32")]
    assert settings.api_rate_limit_endpoints == {"refresh": "5/minute"}
    keys = settings.token_keys()
    assert len(keys) == 2
    assert keys[1].key_id == parse_token_key(TEST_TOKEN_KEY).key_id
    assert TEST_TOKEN_KEY not in repr(settings)
    assert settings.public_url == "http://127.0.0.1:8123"


def test_defaults_budget_the_sign_in_endpoints() -> None:
    settings = ApiSettings()
    assert settings.api_rate_limit_endpoints == DEFAULT_ENDPOINT_BUDGETS
    assert set(DEFAULT_ENDPOINT_BUDGETS) == {
        "wechat_sign_in",
        "staff_sign_in",
        "dev_login",
        "refresh",
    }


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FREECAR_API_RATE_LIMIT_IP", "lots", "rate limit string"),
        ("FREECAR_API_RATE_LIMIT_ENDPOINTS", '{"POST /x": "1/minute"}', "endpoint name"),
        ("FREECAR_API_TOKEN_KEYS", "k4.local.tooshort", "32 bytes"),
        ("FREECAR_API_ADMIN_NETWORKS", "10.0.0.300/8", "does not appear to be"),
        ("FREECAR_API_ACCESS_TTL_S", "5", "greater than or equal"),
    ],
)
def test_bad_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises((ValidationError, ValueError), match=message):
        ApiSettings()


def test_production_refuses_to_run_without_token_keys(production: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="FREECAR_API_TOKEN_KEYS holds a placeholder"):
        ApiSettings()
    production.setenv("FREECAR_API_TOKEN_KEYS", generate_token_key())
    assert ApiSettings().env is Environment.PRODUCTION


def test_production_refuses_a_missing_wechat_secret(production: pytest.MonkeyPatch) -> None:
    production.setenv("FREECAR_API_TOKEN_KEYS", generate_token_key())
    production.setenv("FREECAR_API_WECHAT_SECRET", "changeme")
    with pytest.raises(ValidationError, match="FREECAR_API_WECHAT_SECRET holds a placeholder"):
        ApiSettings()


def test_development_without_keys_gets_an_ephemeral_one_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="api.resources"):
        first = token_codec(ApiSettings(env=Environment.DEVELOPMENT))
        second = token_codec(ApiSettings(env=Environment.TEST))
    assert first.key_ids != second.key_ids
    assert "dies with it" in caplog.text
