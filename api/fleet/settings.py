"""Settings of fleet management: broker provisioning, VIN checks and vehicle images."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, SecretStr, field_validator

from core.settings import Settings
from protocol.broker_url import BrokerUrl
from protocol.errors import TopicError
from protocol.topics import DEFAULT_ROOT, check_root


class VinCheck(StrEnum):
    """When the VIN's check digit (position 9, ISO 3779 / 49 CFR 565) is verified."""

    # Only VINs from regions whose rules require the check digit: North America (WMI
    # starting 1-5) and China (L, GB 16735). European and most other VINs carry no check
    # digit, and a digit that happens to sit at position 9 would be refused wrongly.
    AUTO = "auto"
    STRICT = "strict"
    """Every VIN must carry a valid check digit."""
    OFF = "off"
    """Never verify (the format is still checked)."""


class FleetSettings(Settings):
    """`FREECAR_TOPIC_ROOT`, `FREECAR_MQTT_ADMIN_URL` and `FREECAR_FLEET_*`."""

    topic_root: str = DEFAULT_ROOT
    """FREECAR_TOPIC_ROOT: the fleet's topic root; vehicle ACLs are made under it."""
    mqtt_admin_url: SecretStr = SecretStr("")
    """FREECAR_MQTT_ADMIN_URL: a login allowed `$CONTROL/dynamic-security/#` (Mosquitto).

    Empty: vehicle credentials are stored but not pushed to the broker (reported as such).
    """
    fleet_agent_mqtt_url: str = ""
    """FREECAR_FLEET_AGENT_MQTT_URL: the broker as cars reach it (no login), for agent configs.

    Empty: FREECAR_MQTT_URL's host and port.
    """
    # The plugin answers in milliseconds; a broker without it never does, and a vehicle
    # create should not hang on that for long.
    fleet_dynsec_timeout_s: float = Field(default=3.0, gt=0, le=60)
    """FREECAR_FLEET_DYNSEC_TIMEOUT_S: wait this long for the dynamic-security plugin."""
    fleet_vin_check: VinCheck = VinCheck.AUTO
    """FREECAR_FLEET_VIN_CHECK: `auto`, `strict` or `off` (a request may override it)."""
    # A phone photo is 2-6 MB; 8 MiB refuses raw camera files. The API's body limit
    # (FREECAR_API_MAX_BODY_BYTES, 1 MiB by default) applies first: raise it to match.
    fleet_image_max_bytes: int = Field(default=8 << 20, ge=1_024, le=64 << 20)
    """FREECAR_FLEET_IMAGE_MAX_BYTES: larger uploads get 413."""
    # Smaller than a thumbnail is not a useful photo; larger than 50 megapixels (8000 px a
    # side) is a decompression bomb rather than a car.
    fleet_image_min_side_px: int = Field(default=64, ge=1)
    """FREECAR_FLEET_IMAGE_MIN_SIDE_PX: images narrower or lower than this are refused."""
    fleet_image_max_side_px: int = Field(default=8_000, ge=64, le=20_000)
    """FREECAR_FLEET_IMAGE_MAX_SIDE_PX: images wider or taller than this are refused."""
    # Long enough to load a page of photos and look at them, short enough that a copied
    # link stops working the same day.
    fleet_image_url_ttl_s: int = Field(default=900, ge=10, le=7 * 86_400)
    """FREECAR_FLEET_IMAGE_URL_TTL_S: lifetime of the signed image URLs the API hands out."""

    @field_validator("topic_root")
    @classmethod
    def _root_is_valid(cls, value: str) -> str:
        try:
            return check_root(value)
        except TopicError as exc:
            raise ValueError(exc.message) from exc

    @field_validator("fleet_agent_mqtt_url")
    @classmethod
    def _agent_url_parses(cls, value: str) -> str:
        if value:
            BrokerUrl.parse(value)
        return value

    @field_validator("mqtt_admin_url")
    @classmethod
    def _admin_url_parses(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value():
            BrokerUrl.parse(value.get_secret_value())
        return value
