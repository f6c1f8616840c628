"""The hub's settings: the shared `FREECAR_*` connection settings plus `FREECAR_HUB_*` tuning."""

from __future__ import annotations

import socket
from enum import StrEnum
from typing import Self

from pydantic import Field, field_validator, model_validator

from freecar.settings import Settings
from protocol.errors import TopicError
from protocol.topics import DEFAULT_ROOT, check_root

# MQTT 5 caps Receive Maximum at 65535 (a two-byte integer).
MAX_RECEIVE_MAXIMUM = 65_535


def default_client_id() -> str:
    """`hub-<hostname>`: stable across restarts, so a restarted hub resumes its session."""
    return f"hub-{socket.gethostname()}"


class MqttProtocol(StrEnum):
    """Which MQTT version the hub speaks."""

    # MQTT 5 where the broker has shared subscriptions (Mosquitto, EMQX), 3.1.1 otherwise:
    # amqtt, the only broker we know without them, speaks 3.1.1 only and never answers an
    # MQTT 5 CONNECT.
    AUTO = "auto"
    V5 = "5"
    V311 = "3.1.1"


class HubSettings(Settings):
    """Everything `freecar hub` reads from the environment (prefix `FREECAR_`)."""

    topic_root: str = DEFAULT_ROOT
    """FREECAR_TOPIC_ROOT: the root of the fleet's topics (`fleet`)."""

    hub_client_id: str = Field(default_factory=default_client_id)
    """FREECAR_HUB_CLIENT_ID: MQTT client id; unique per hub process and stable over restarts."""
    hub_share_group: str = "hub"
    """FREECAR_HUB_SHARE_GROUP: the shared-subscription group the hub processes form."""
    hub_mqtt_protocol: MqttProtocol = MqttProtocol.AUTO
    """FREECAR_HUB_MQTT_PROTOCOL: `auto`, `5` or `3.1.1`."""
    # A hub that is away keeps its broker session (and the messages queued for it) this long.
    # A day covers a weekend's worth of hub restarts; a hub id that never comes back stops
    # holding messages after that.
    hub_session_expiry_s: int = Field(default=86_400, ge=1)
    # Keepalive: the broker notices a dead hub within 1.5x this.
    hub_keepalive_s: int = Field(default=30, ge=5, le=600)

    # A batch is written when it holds this many fixes: 5,000 is where COPY's per-batch cost
    # stops mattering (bench/bench_storage.py) and a batch still commits in tens of ms.
    hub_batch_max_fixes: int = Field(default=5_000, ge=1, le=100_000)
    # ...or when its first message is this old: bounds publish-to-commit latency under light
    # load, and 5 commits a second cost nothing.
    hub_batch_max_delay_ms: int = Field(default=200, ge=1, le=60_000)
    # Unacknowledged messages the broker may send ahead: MQTT 5 Receive Maximum, and with
    # MQTT 3.1.1 it must equal the broker's max_inflight_messages. Two batches' worth, so one
    # batch fills while the previous one commits. The broker stops sending at this limit,
    # which is what bounds the hub's memory while the database is down.
    hub_receive_maximum: int = Field(default=10_000, ge=2, le=MAX_RECEIVE_MAXIMUM)

    # Filters (hub/filters.py). A unit's clock may run a little fast; five minutes ahead is
    # a broken clock, and a fix stored there would hold the vehicle's state hostage.
    hub_max_future_s: float = Field(default=300.0, gt=0)
    # Older fixes are refused: telemetry is compressed after 7 days and a month-old backfill
    # is more likely a unit with a reset clock than a car that was offline for a month.
    hub_max_age_s: float = Field(default=30 * 86_400.0, gt=0)
    # Faster than this between two fixes is a GPS glitch, not a car (motorway speeds plus
    # a wide margin).
    hub_max_speed_kmh: float = Field(default=250.0, gt=0)

    # A vehicle silent this long is marked offline; units report at least every minute
    # while parked, so five minutes is several missed reports, not a slow network.
    hub_silence_timeout_s: float = Field(default=300.0, gt=0)
    # How often the silence sweep runs: a tenth of a typical timeout is precise enough.
    hub_sweep_interval_s: float = Field(default=10.0, gt=0)
    # Live fan-out: at most one state change per vehicle per this many seconds, which is
    # what a map refreshes at.
    hub_live_interval_s: float = Field(default=1.0, gt=0)
    # Counters are logged this often.
    hub_stats_interval_s: float = Field(default=60.0, gt=0)
    # On SIGTERM the last batch gets this long to commit. The demo's supervisor waits 10 s
    # before SIGKILL; what is not committed by then is simply redelivered next time.
    hub_stop_grace_s: float = Field(default=8.0, gt=0)

    @field_validator("topic_root")
    @classmethod
    def _root_is_valid(cls, value: str) -> str:
        try:
            return check_root(value)
        except TopicError as exc:
            # pydantic reports ValueErrors as validation errors; TopicError is not one.
            raise ValueError(exc.message) from exc

    @model_validator(mode="after")
    def _window_fits_a_batch(self) -> Self:
        if self.protocol() is MqttProtocol.V5 and self.hub_receive_maximum < min(
            self.hub_batch_max_fixes, MAX_RECEIVE_MAXIMUM
        ):
            # The broker would stop sending before a batch of single-fix messages could fill:
            # every batch would wait out hub_batch_max_delay_ms and throughput would collapse.
            raise ValueError(
                "FREECAR_HUB_RECEIVE_MAXIMUM must be at least FREECAR_HUB_BATCH_MAX_FIXES"
            )
        return self

    def protocol(self) -> MqttProtocol:
        """The MQTT version to speak, with `auto` resolved."""
        if self.hub_mqtt_protocol is not MqttProtocol.AUTO:
            return self.hub_mqtt_protocol
        return MqttProtocol.V5 if self.mqtt_shared_subscriptions else MqttProtocol.V311
