"""The hub's settings: the shared `FREECAR_*` connection settings plus `FREECAR_HUB_*` tuning."""

from __future__ import annotations

import logging
import socket
from datetime import timedelta
from enum import StrEnum
from pathlib import Path  # noqa: TC003 - pydantic reads the annotation at runtime
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator

from core.settings import Environment, Settings
from hub.watermarks import WatermarkPolicy
from protocol.errors import KeyFormatError, TopicError
from protocol.keys import SigningKey
from protocol.topics import DEFAULT_ROOT, check_root

log = logging.getLogger(__name__)

# The storage acknowledgement's defaults, with their reasons, are hub/watermarks.py's.
_POLICY = WatermarkPolicy()
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
    # ...or when its messages' payloads add up to this many bytes. A full batch of ordinary
    # fixes (5,000 of 250 to 400 bytes: 1.2 to 2 MB) stays below it, so normal traffic is
    # never split, and a flood of large messages (up to the broker's 1 MiB each) is cut into
    # batches a few messages long. The hub holds at most two batches of twice this (16 MiB
    # of payload); decoded JSON takes up to 25 times its size in Python objects at worst
    # (arrays of empty objects, measured), so memory stays within a few hundred MB whatever
    # the units send, and within tens of MB for junk (dead letters keep 256 KiB each).
    hub_batch_max_bytes: int = Field(default=4 * 1024 * 1024, ge=65_536, le=256 * 1024 * 1024)
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

    # Telemetry of vehicles not in `vehicles` (or retired) is dead-lettered, nothing stored
    # (hub/inventory.py). For trials, a hub may instead register an unknown vehicle on its
    # first message, like Traccar's `database.registerUnknown`; never in a real fleet, where
    # anyone able to publish could then add cars.
    hub_register_unknown: bool = False
    """FREECAR_HUB_REGISTER_UNKNOWN: insert unknown vehicles into `vehicles` (off by default)."""
    # The inventory follows NOTIFYs; a full reload this often catches one that went unheard
    # (only possible while the writer's connection was down, and then it reloads anyway).
    hub_inventory_reload_s: float = Field(default=300.0, gt=0)

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

    # Command dispatch (hub/dispatcher.py). The key signs every command: PASERK `k4.secret.`
    # or PEM text in the variable, or a file holding either. Outside production a hub
    # without one makes up a key for its lifetime and logs the public half for the cars.
    hub_signing_key: SecretStr | None = None
    """FREECAR_HUB_SIGNING_KEY: the Ed25519 signing key itself (PASERK or PEM)."""
    hub_signing_key_file: Path | None = None
    """FREECAR_HUB_SIGNING_KEY_FILE: a file holding the signing key (PASERK or PEM)."""
    # Pending commands are looked for this often even without a NOTIFY (one lost while the
    # database connection was down), and TTLs are enforced at this precision.
    hub_command_sweep_s: float = Field(default=1.0, gt=0, le=60)
    # The broker takes a QoS 1 publish within milliseconds; one not acknowledged in this is
    # put back in the queue and sent again (the car drops repeats by command id).
    hub_command_publish_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # A command is not sent with less than this left to live: signing, the broker and the
    # car's actuator together need about a second, and a car refuses an expired token.
    hub_command_min_remaining_s: int = Field(default=2, ge=1, le=60)
    # A sent command whose vehicle has not answered this long after its TTL is expired.
    # The car never acts after the TTL, but its ack may still be on the way.
    hub_command_answer_grace_s: float = Field(default=10.0, ge=0, le=600)

    # Storage acknowledgement, contract 1.1 (docs/protocol.md section 6.2, hub/watermarks.py):
    # the hub tells each unit that announces its queue which fixes it has stored, so the
    # unit keeps them until then and a broker crash loses nothing. Off only to compare
    # (the benchmark) or to get a unit's behaviour of revision 1.0 back: units then fall
    # back to letting fixes go at the broker's PUBACK once they hear nothing (120 s).
    hub_storage_acks: bool = True
    """FREECAR_HUB_STORAGE_ACKS: publish `stored` messages to units that ask (on by default)."""
    # One word per 16 of a car's messages keeps the acknowledgements near 6% of the
    # telemetry's messages (the budget is 10%) and a unit's window of 64 unconfirmed messages
    # four times clear of stalling.
    hub_storage_ack_every: int = Field(default=_POLICY.ack_every, ge=1, le=10_000)
    # A car parked and reporting once a minute is told every ten minutes: 10% of its
    # messages, and ten fixes held on the unit at most.
    hub_storage_ack_max_delay_s: float = Field(
        default=_POLICY.max_delay.total_seconds(), gt=0, le=86_400
    )
    # A backlog arrives at several messages a second; this long without one means it is
    # over, and the unit may let all of it go.
    hub_storage_ack_backlog_quiet_s: float = Field(
        default=_POLICY.backlog_quiet.total_seconds(), gt=0, le=3_600
    )
    # A unit sends a gap again when the broker took it this long ago (the agent's
    # `resend_after_s`, 120 s); a reminder as often prompts exactly that check.
    hub_storage_ack_gap_remind_s: float = Field(
        default=_POLICY.gap_remind.total_seconds(), gt=0, le=86_400
    )
    # Answers to a new queue or to fixes sent again, at most this often per vehicle: no
    # unit (or impostor) can make the hub publish once per message.
    hub_storage_ack_min_interval_s: float = Field(
        default=_POLICY.min_interval.total_seconds(), ge=0, le=3_600
    )
    # Ranges of handled seqs remembered above a vehicle's watermark: a backlog drain needs
    # one or two, several hubs and some losses a handful; 32 are 512 bytes per vehicle.
    # The table allows 128 (telemetry_watermarks.handled).
    hub_storage_ack_max_ranges: int = Field(default=_POLICY.max_ranges, ge=1, le=128)
    # Earlier queue ids remembered per vehicle, whose late fixes then change nothing; a
    # unit replaced more often than this within a backlog's life is not a real case. The
    # table allows 16.
    hub_storage_ack_max_retired: int = Field(default=_POLICY.max_retired, ge=0, le=16)
    # How often the writer publishes the words that fell due between batches (a backlog's
    # end, a parked car's ten minutes): a second or two late is nothing against the unit's
    # 120 s patience, and each sweep reads the whole watermark table (a few ms per 10,000
    # vehicles).
    hub_storage_ack_sweep_s: float = Field(default=2.0, gt=0, le=600)
    # Words published per sweep transaction, so one sweep never holds the writer long; a
    # full sweep is followed by another at once.
    hub_storage_ack_sweep_limit: int = Field(default=2_000, ge=1, le=100_000)

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

    @model_validator(mode="after")
    def _production_has_a_signing_key(self) -> Self:
        if (
            self.env is Environment.PRODUCTION
            and self.hub_signing_key is None
            and (self.hub_signing_key_file is None)
        ):
            raise ValueError(
                "production needs FREECAR_HUB_SIGNING_KEY or FREECAR_HUB_SIGNING_KEY_FILE: "
                "the cars trust only the key they were provisioned with"
            )
        return self

    def signing_key(self) -> SigningKey:
        """The key commands are signed with; a made-up one outside production if none is set.

        Raises KeyFormatError if the configured key cannot be read.
        """
        if self.hub_signing_key is not None:
            text = self.hub_signing_key.get_secret_value().strip()
            if text.startswith("-----BEGIN"):
                return SigningKey.from_pem(text.encode("ascii"))
            return SigningKey.from_paserk(text)
        if self.hub_signing_key_file is not None:
            try:
                return SigningKey.load(self.hub_signing_key_file)
            except OSError as exc:
                raise KeyFormatError(f"cannot read the signing key file: {exc}") from exc
        key = SigningKey.generate()
        log.warning(
            "no FREECAR_HUB_SIGNING_KEY: signing with a key made up for this process; cars "
            "must trust %s (it dies with the process)",
            key.verifying_key.to_paserk(),
        )
        return key

    def watermark_policy(self) -> WatermarkPolicy | None:
        """How storage watermarks are published; None when storage acknowledgements are off."""
        if not self.hub_storage_acks:
            return None
        return WatermarkPolicy(
            ack_every=self.hub_storage_ack_every,
            max_delay=timedelta(seconds=self.hub_storage_ack_max_delay_s),
            backlog_quiet=timedelta(seconds=self.hub_storage_ack_backlog_quiet_s),
            gap_remind=timedelta(seconds=self.hub_storage_ack_gap_remind_s),
            min_interval=timedelta(seconds=self.hub_storage_ack_min_interval_s),
            max_ranges=self.hub_storage_ack_max_ranges,
            max_retired=self.hub_storage_ack_max_retired,
        )

    def protocol(self) -> MqttProtocol:
        """The MQTT version to speak, with `auto` resolved."""
        if self.hub_mqtt_protocol is not MqttProtocol.AUTO:
            return self.hub_mqtt_protocol
        return MqttProtocol.V5 if self.mqtt_shared_subscriptions else MqttProtocol.V311
