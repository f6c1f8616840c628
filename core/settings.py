"""Settings shared by every server-side process, read from `FREECAR_*` environment variables.

Each process builds one settings object at start-up. Components that need more (the hub's
signing key, the API's token keys) subclass `Settings` and keep the same `FREECAR_` prefix.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self
from urllib.parse import urlsplit

from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol.broker_url import BrokerUrl

# Values that ship in examples and the devstack; a production process must not run on them.
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "password", "freecar"})


class Environment(StrEnum):
    """Where the process runs; production refuses placeholder secrets."""

    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class PlaceholderSecretError(ValueError):
    """A secret still holds an example value while running in production."""


class Settings(BaseSettings):
    """Connection settings common to the hub, the API, the worker and the CLI."""

    model_config = SettingsConfigDict(env_prefix="FREECAR_", extra="ignore")

    env: Environment = Environment.DEVELOPMENT
    database_url: SecretStr = SecretStr("postgresql://localhost:5432/freecar")
    redis_url: SecretStr = SecretStr("redis://localhost:6379/0")
    mqtt_url: SecretStr = SecretStr("mqtt://localhost:1883")
    # amqtt, the embedded fallback broker, misroutes `$share/...` filters; devstack says so here.
    mqtt_shared_subscriptions: bool = True

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url_parses(cls, value: SecretStr) -> SecretStr:
        BrokerUrl.parse(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _refuse_placeholders_in_production(self) -> Self:
        if self.env is not Environment.PRODUCTION:
            return self
        for name, secret in self.secrets().items():
            if secret.strip().lower() in PLACEHOLDER_SECRETS:
                raise PlaceholderSecretError(
                    f"FREECAR_{name.upper()} holds a placeholder secret; set a real one for "
                    "production"
                )
        return self

    def secrets(self) -> dict[str, str]:
        """Every secret this process holds, by field name, including subclasses' fields.

        For a URL the secret is its password, and a URL without a login holds none.
        """
        found: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if not isinstance(value, SecretStr):
                continue
            raw = value.get_secret_value()
            if name.endswith("_url"):
                parts = urlsplit(raw)
                if parts.username is None and parts.password is None:
                    continue
                raw = parts.password or ""
            found[name] = raw
        return found

    @property
    def broker(self) -> BrokerUrl:
        """The MQTT broker address and login."""
        return BrokerUrl.parse(self.mqtt_url.get_secret_value())
