"""Settings shared by every server-side process, read from `FREECAR_*` environment variables.

Each process builds one settings object at start-up. Components that need more (the hub's
signing key, the API's token keys) subclass `Settings` and keep the same `FREECAR_` prefix.

The service URLs have no default address: a process never connects to a server nobody named
(an unrelated PostgreSQL on localhost:5432, say). An unset (or empty) URL reads as `Unset`,
and using it raises `MissingSettingError`, whose message names the variable to set.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
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


class MissingSettingError(ValueError):
    """A process needs a setting nobody configured; the message names the variable."""


# Where the hint of a missing URL points a newcomer: the demo writes every URL to a file.
_HINT = "(with `make demo` running, load the file its banner names to use its services)"


class Unset(SecretStr):
    """A URL nobody configured: reading it raises `MissingSettingError` naming its variable."""

    def __init__(self, variable: str, what: str) -> None:
        super().__init__("")
        self.variable = variable
        self.what = what

    def get_secret_value(self) -> str:
        """Refuse: there is no value, and guessing one would reach someone else's server."""
        message = f"{self.variable} is not set: give the URL of {self.what} {_HINT}"
        raise MissingSettingError(message)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unset) and other.variable == self.variable

    def __hash__(self) -> int:
        return hash(self.variable)


def _unset_database() -> Unset:
    return Unset("FREECAR_DATABASE_URL", "your PostgreSQL")


def _unset_redis() -> Unset:
    return Unset("FREECAR_REDIS_URL", "your Redis")


def _unset_mqtt() -> Unset:
    return Unset("FREECAR_MQTT_URL", "your MQTT broker")


_UNSET = {"database_url": _unset_database, "redis_url": _unset_redis, "mqtt_url": _unset_mqtt}


class Settings(BaseSettings):
    """Connection settings common to the hub, the API, the worker and the CLI."""

    model_config = SettingsConfigDict(env_prefix="FREECAR_", extra="ignore")

    env: Environment = Environment.DEVELOPMENT
    database_url: SecretStr = Field(default_factory=_unset_database)
    redis_url: SecretStr = Field(default_factory=_unset_redis)
    mqtt_url: SecretStr = Field(default_factory=_unset_mqtt)
    # amqtt, the embedded fallback broker, misroutes `$share/...` filters; devstack says so here.
    mqtt_shared_subscriptions: bool = True

    @field_validator("database_url", "redis_url", "mqtt_url")
    @classmethod
    def _empty_is_unset(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        # `export FREECAR_DATABASE_URL=` clears a URL; libpq would read "" as localhost.
        if isinstance(value, Unset) or value.get_secret_value().strip():
            return value
        return _UNSET[str(info.field_name)]()

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url_parses(cls, value: SecretStr) -> SecretStr:
        if not isinstance(value, Unset):
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
            if not isinstance(value, SecretStr) or isinstance(value, Unset):
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
