"""The agent's configuration: an optional TOML file overlaid by `FREECAR_AGENT_*` variables.

Precedence, highest first: keyword overrides passed to `AgentConfig.load`, environment
variables, the TOML file, the defaults below. Keys in the file are the field names
(`vehicle_id = "car-42"`); in the environment they are upper-cased with the prefix
(`FREECAR_AGENT_VEHICLE_ID=car-42`). A list such as `trusted_keys` is written in the
environment as a JSON array or as comma-separated values.
"""

from __future__ import annotations

import json
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from protocol.broker_url import BrokerUrl
from protocol.errors import ProtocolError
from protocol.keys import VerifyingKey
from protocol.telemetry import MAX_FIXES_PER_MESSAGE
from protocol.topics import DEFAULT_ROOT, check_root, check_vehicle_id

ENV_PREFIX: Final = "FREECAR_AGENT_"
CONFIG_PATH_ENV: Final = "FREECAR_AGENT_CONFIG"

# The TOML file's contents for the `load` call in progress; pydantic-settings builds its
# sources from the class, so this is how one call hands its file to them.
_FILE_VALUES: ContextVar[dict[str, Any]] = ContextVar("_FILE_VALUES", default={})  # noqa: B039 - never mutated

Seconds = Annotated[float, Field(gt=0)]


class ConfigError(Exception):
    """The configuration cannot be used: missing file, bad TOML, missing or invalid values."""


class AgentConfig(BaseSettings):
    """Everything an in-car unit needs to know; see the module docstring for where it comes from."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        # A typo in the file must fail loudly rather than leave a default silently in place.
        extra="forbid",
        frozen=True,
    )

    # --- identity and broker ------------------------------------------------------------
    vehicle_id: str
    mqtt_url: SecretStr
    topic_root: str = DEFAULT_ROOT
    client_id: str | None = None
    trusted_keys: Annotated[list[str], NoDecode] = []
    # Seconds between MQTT keepalive pings: the broker declares the unit lost (and publishes
    # its last will) after 1.5 times this. 30 s notices a dead cellular link within a minute
    # without costing much data.
    keepalive_s: int = Field(default=30, ge=5, le=3600)

    # --- backends ------------------------------------------------------------------------
    position_backend: Literal["sim", "gpsd"] = "sim"
    status_backend: Literal["sim", "can"] = "sim"
    actuator_backend: Literal["sim", "can"] = "sim"
    # Where a standalone simulated car is parked (People's Square, Shanghai, as in the demo).
    sim_lat: float = Field(default=31.2304, ge=-90, le=90)
    sim_lon: float = Field(default=121.4737, ge=-180, le=180)
    sim_fuel_pct: float | None = Field(default=80.0, ge=0, le=100)
    sim_battery_pct: float | None = Field(default=None, ge=0, le=100)
    gpsd_host: str = "127.0.0.1"
    gpsd_port: int = Field(default=2947, ge=1, le=65535)
    # python-can's interface and channel; the DBC that names the car's signals (None: the
    # sample DBC shipped with the agent); the bitrate, when the interface must set it.
    can_interface: str = "socketcan"
    can_channel: str = "can0"
    can_dbc: Path | None = None
    can_bitrate: int | None = Field(default=None, gt=0)

    # --- store and forward ---------------------------------------------------------------
    queue_path: Path | None = None
    # About 200 bytes a fix: 100k fixes are 20 MB on disk, two days of a car parked and
    # reporting every minute, or five hours of driving at one fix every 5 s.
    queue_max_fixes: int = Field(default=100_000, ge=1)
    # Fixes per backfill message after an outage: 50 is about 10 kB, small enough for a slow
    # link to finish before the next keepalive, large enough to clear a day's backlog quickly.
    backlog_batch_size: int = Field(default=50, ge=1, le=MAX_FIXES_PER_MESSAGE)
    # Backfill messages per second: a fleet reconnecting after a broker outage must not bury
    # the hub; 5 messages of 50 fixes is 250 fixes/s per car, still an hour's backlog in 3 s.
    backlog_rate: float = Field(default=5.0, gt=0)
    # Telemetry messages sent and not yet acknowledged (PUBACK) at once. Beyond a few dozen
    # a faster link gains nothing, and an unbounded window collapses the publisher.
    publish_window: int = Field(default=16, ge=1, le=1000)
    # A PUBACK missing after this long means the link is dead even if TCP has not noticed.
    publish_timeout_s: Seconds = 10.0

    # --- storage acknowledgement (contract 1.1, vehicle_agent/storage_acks.py) -----------
    # `hub`: a fix leaves the queue once the hub says it is stored, so a broker crash loses
    # nothing. `broker`: at the broker's PUBACK (contract 1.0, for hubs that predate it).
    # `auto`: hub, falling back to broker when the hub never answers.
    storage_acks: Literal["auto", "hub", "broker"] = "auto"
    # A hub of contract 1.1 answers a new queue within a batch (about a second), and a
    # known one at once with its retained `stored` message: two minutes of silence from the
    # start mean the hub predates storage acknowledgements (`auto` then falls back; the
    # hub's first word brings it back).
    hub_ack_timeout_s: Seconds = 120.0
    # Once heard, a silent hub is an outage: wait half an hour (holding at most the window
    # below; the queue keeps the rest) before assuming the hubs were rolled back.
    hub_silence_timeout_s: Seconds = 1800.0
    # Telemetry messages the broker has and the hub has not yet confirmed. The hub confirms
    # at least every 16 of a car's messages; four times that leaves room for its batching
    # and for several hubs sharing the load.
    unconfirmed_window: int = Field(default=64, ge=1, le=10_000)
    # A hub stores a fix within about a second of receiving it. One the broker took this
    # long ago that the hub still names as the next it waits for was lost on the way: send
    # everything queued again.
    resend_after_s: Seconds = 120.0

    # --- reconnecting --------------------------------------------------------------------
    # Capped exponential backoff with jitter, so a fleet does not reconnect in lockstep.
    backoff_initial_s: Seconds = 1.0
    backoff_max_s: Seconds = 60.0
    backoff_jitter: float = Field(default=0.5, ge=0, le=1)

    # --- reporting policy ----------------------------------------------------------------
    moving_interval_s: Seconds = 5.0
    parked_interval_s: Seconds = 60.0
    heading_change_deg: float = Field(default=30.0, gt=0, le=180)
    # GPS speed wanders by a km/h or two while standing; above this the car is moving.
    moving_speed_kmh: float = Field(default=3.0, ge=0)
    # How often sensors are sampled for status changes and heading turns.
    sample_interval_s: Seconds = 1.0

    # --- safety --------------------------------------------------------------------------
    # Walking speed: above it, cutting the engine endangers people in and around the car.
    max_immobilize_speed_kmh: float = Field(default=5.0, ge=0)
    allow_unlock_during_alarm: bool = False
    # An actuator that has not answered after this long has failed (reason actuator_timeout).
    actuator_timeout_s: Seconds = 10.0

    @field_validator("vehicle_id")
    @classmethod
    def _valid_vehicle_id(cls, value: str) -> str:
        try:
            return check_vehicle_id(value)
        except ProtocolError as exc:
            raise ValueError(exc.message) from exc

    @field_validator("topic_root")
    @classmethod
    def _valid_root(cls, value: str) -> str:
        try:
            return check_root(value)
        except ProtocolError as exc:
            raise ValueError(exc.message) from exc

    @field_validator("mqtt_url")
    @classmethod
    def _valid_url(cls, value: SecretStr) -> SecretStr:
        BrokerUrl.parse(value.get_secret_value())
        return value

    @field_validator("trusted_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.replace(",", " ").split() if part]
        return value

    @field_validator("trusted_keys")
    @classmethod
    def _valid_keys(cls, value: list[str]) -> list[str]:
        for paserk in value:
            try:
                VerifyingKey.from_paserk(paserk)
            except ProtocolError as exc:
                raise ValueError(exc.message) from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must not be below backoff_initial_s")
        if self.hub_silence_timeout_s < self.hub_ack_timeout_s:
            raise ValueError("hub_silence_timeout_s must not be below hub_ack_timeout_s")
        if self.moving_interval_s > self.parked_interval_s:
            raise ValueError("moving_interval_s must not exceed parked_interval_s")
        # The contract needs fuel or battery level in every fix; the simulated car has one.
        if self.sim_fuel_pct is None and self.sim_battery_pct is None:
            raise ValueError("set sim_fuel_pct or sim_battery_pct (or both)")
        return self

    @property
    def broker(self) -> BrokerUrl:
        """The broker's address and login."""
        return BrokerUrl.parse(self.mqtt_url.get_secret_value())

    @property
    def mqtt_client_id(self) -> str:
        """The MQTT client id: the vehicle id unless configured, so the session is the car's."""
        return self.client_id or self.vehicle_id

    def verifying_keys(self) -> list[VerifyingKey]:
        """The hub keys commands may be signed with."""
        return [VerifyingKey.from_paserk(paserk) for paserk in self.trusted_keys]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files: the TOML file plays that role
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - likewise
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Overrides, then the environment, then the TOML file of the current `load`."""
        return (init_settings, env_settings, InitSettingsSource(settings_cls, _FILE_VALUES.get()))

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> Self:  # noqa: ANN401 - any field's type
        """Read the TOML file (`path`, else $FREECAR_AGENT_CONFIG, else none), env and overrides.

        Raises ConfigError with a readable message naming every bad key.
        """
        if path is None and os.environ.get(CONFIG_PATH_ENV):
            path = Path(os.environ[CONFIG_PATH_ENV])
        values = read_toml(path) if path is not None else {}
        token = _FILE_VALUES.set(values)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, path)) from None
        except ValueError as exc:  # a JSON list in the environment that does not parse
            raise ConfigError(str(exc)) from None
        finally:
            _FILE_VALUES.reset(token)

    def redacted(self) -> dict[str, Any]:
        """The effective settings as JSON-ready data, with the broker password hidden."""
        data = self.model_dump(mode="json")
        data["mqtt_url"] = self.broker.redacted()
        return data


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config file, raising ConfigError if it is missing or not TOML."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:  # TOML is UTF-8; tomllib does not wrap this one
        raise ConfigError(f"config file {path} is not UTF-8 text (expected TOML)") from None


def describe_errors(exc: ValidationError, path: Path | None) -> str:
    """One line per bad key, naming both spellings (file key and environment variable)."""
    lines = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"]) or "(config)"
        where = f"{key} (env {ENV_PREFIX}{key.upper()})" if error["loc"] else key
        lines.append(f"  {where}: {error['msg']}")
    source = f" (file {path})" if path is not None else ""
    return f"invalid agent configuration{source}:\n" + "\n".join(lines)
