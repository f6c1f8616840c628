"""What a running stack offers: URLs, which binaries it runs, and what they can do."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

BrokerName = Literal["mosquitto", "amqtt"]
SourceName = Literal["system", "embedded"]


@dataclass(frozen=True, slots=True)
class StackInfo:
    """Everything a client of the stack needs; constant for the stack's life (restarts too)."""

    mode: str
    """The mode the stack was started in: auto, system or embedded."""
    stack_dir: str
    """The temporary directory holding every file of the stack, logs included."""

    database_url: str
    """Superuser URL of the `freecar` database (trust authentication, no password)."""
    admin_database_url: str
    """Superuser URL of the `postgres` maintenance database, for CREATE/DROP DATABASE."""
    postgres_version: str
    postgres_source: SourceName
    postgres_bindir: str
    timescaledb: bool
    """True when TimescaleDB is installed for this PostgreSQL and preloaded."""

    redis_url: str
    """Database 0; tests take other indexes (the server has 1024)."""
    redis_version: str
    redis_source: SourceName
    redis_binary: str

    mqtt_url: str
    """`mqtt://freecar:<generated>@127.0.0.1:<port>`: the service login, every topic."""
    mqtt_admin_url: str
    """`mqtt://admin:<generated>@...`: may use `$CONTROL/dynamic-security/#` on Mosquitto."""
    mqtt_broker: BrokerName
    mqtt_version: str
    broker_source: SourceName
    broker_binary: str
    mqtt_shared_subscriptions: bool
    """Whether `$share/group/filter` subscriptions work (Mosquitto yes, amqtt no)."""
    mqtt_dynamic_security: bool
    """Whether the dynamic security API and per-client ACLs exist (Mosquitto only)."""

    def env(self) -> dict[str, str]:
        """The `FREECAR_*` variables that point FreeCar's processes at this stack."""
        return {
            "FREECAR_ENV": "development",
            "FREECAR_DATABASE_URL": self.database_url,
            "FREECAR_REDIS_URL": self.redis_url,
            "FREECAR_MQTT_URL": self.mqtt_url,
            "FREECAR_MQTT_SHARED_SUBSCRIPTIONS": "true"
            if self.mqtt_shared_subscriptions
            else "false",
            "FREECAR_MQTT_ADMIN_URL": self.mqtt_admin_url,
        }

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)
