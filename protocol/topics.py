"""MQTT topics of the contract as frozen value objects: render, parse and subscribe."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Final

from protocol.errors import TopicError

DEFAULT_ROOT: Final = "fleet"

VEHICLE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""Vehicle ids: ASCII letters, digits, `_` and `-`, 1 to 64 characters, not starting with `_`/`-`.

This keeps MQTT wildcards (`+`, `#`), level separators (`/`) and `$` out of topics.
"""

# fullmatch, not match: with match, `$` would also accept an id followed by a newline.
_VEHICLE_ID_RE: Final = re.compile(VEHICLE_ID_PATTERN)

# Longest topic text quoted back in an error message, so a hostile topic cannot flood logs.
_QUOTE_LIMIT: Final = 120


def _quote(text: str) -> str:
    return repr(text if len(text) <= _QUOTE_LIMIT else text[:_QUOTE_LIMIT] + "...")


def is_valid_vehicle_id(vehicle_id: str) -> bool:
    """Tell whether a string may be used as a vehicle id."""
    return _VEHICLE_ID_RE.fullmatch(vehicle_id) is not None


def check_vehicle_id(vehicle_id: str) -> str:
    """Return the vehicle id unchanged, or raise TopicError if it is not a valid id."""
    if _VEHICLE_ID_RE.fullmatch(vehicle_id) is None:
        raise TopicError(f"invalid vehicle id {_quote(vehicle_id)}", field="vehicle_id")
    return vehicle_id


# A process uses one or two roots; caching makes the check free on the hub's parse path.
@lru_cache(maxsize=64)
def check_root(root: str) -> str:
    """Return the topic root unchanged, or raise TopicError if it cannot prefix our topics."""
    # A root may have several levels ("test-1a2b/fleet") so test runs can isolate themselves,
    # but no wildcard, no empty level and no leading `$` (reserved by brokers for $SYS, $share).
    levels = root.split("/")
    if (
        not root
        or root.startswith("$")
        or any(not level or "+" in level or "#" in level or "\0" in level for level in levels)
    ):
        raise TopicError(f"invalid topic root {_quote(root)}", field="root")
    return root


class TopicKind(StrEnum):
    """What a topic carries; the value is the topic's suffix after the vehicle id."""

    TELEMETRY = "telemetry"
    STATUS = "status"
    COMMAND = "cmd"
    ACK = "cmd/ack"
    # Hub to unit since contract 1.1: which fixes the hub has stored (`protocol.stored`).
    STORED = "stored"

    @property
    def qos(self) -> int:
        """QoS to publish and subscribe with: every topic of the contract uses QoS 1."""
        return 1

    @property
    def retain(self) -> bool:
        """Whether publishes are retained: status and stored.

        A new subscriber then sees who is online, and a unit that reconnects learns at once
        what the hub has stored.
        """
        return self is TopicKind.STATUS or self is TopicKind.STORED


_KIND_BY_SUFFIX: Final = {kind.value: kind for kind in TopicKind}


@dataclass(frozen=True, slots=True)
class Topic:
    """One vehicle's topic of one kind, e.g. `fleet/car-42/telemetry`."""

    vehicle_id: str
    kind: TopicKind
    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        check_vehicle_id(self.vehicle_id)
        check_root(self.root)

    def __str__(self) -> str:
        return f"{self.root}/{self.vehicle_id}/{self.kind.value}"

    @property
    def value(self) -> str:
        """The topic string to publish or subscribe to."""
        return str(self)

    @property
    def qos(self) -> int:
        """QoS for this topic."""
        return self.kind.qos

    @property
    def retain(self) -> bool:
        """Whether messages on this topic are published retained."""
        return self.kind.retain

    @classmethod
    def parse(cls, topic: str, *, root: str = DEFAULT_ROOT) -> Topic:
        """Parse a received topic string, raising TopicError if it is not one of ours."""
        # Plain string slicing: the hub parses tens of thousands of topics a second.
        prefix_length = len(root)
        if not topic.startswith(root) or topic[prefix_length : prefix_length + 1] != "/":
            raise TopicError(f"topic {_quote(topic)} is not under root {_quote(root)}")
        vehicle_id, _, suffix = topic[prefix_length + 1 :].partition("/")
        kind = _KIND_BY_SUFFIX.get(suffix)
        if kind is None:
            raise TopicError(
                f"topic {_quote(topic)} is not one of telemetry, status, cmd, cmd/ack, stored"
            )
        return cls(vehicle_id, kind, root)

    @classmethod
    def telemetry(cls, vehicle_id: str, *, root: str = DEFAULT_ROOT) -> Topic:
        """The topic a vehicle publishes its fixes to."""
        return cls(vehicle_id, TopicKind.TELEMETRY, root)

    @classmethod
    def status(cls, vehicle_id: str, *, root: str = DEFAULT_ROOT) -> Topic:
        """The retained online/offline topic of a vehicle (also its last will's topic)."""
        return cls(vehicle_id, TopicKind.STATUS, root)

    @classmethod
    def command(cls, vehicle_id: str, *, root: str = DEFAULT_ROOT) -> Topic:
        """The topic the hub sends signed commands to."""
        return cls(vehicle_id, TopicKind.COMMAND, root)

    @classmethod
    def ack(cls, vehicle_id: str, *, root: str = DEFAULT_ROOT) -> Topic:
        """The topic a vehicle acknowledges commands on."""
        return cls(vehicle_id, TopicKind.ACK, root)

    @classmethod
    def stored(cls, vehicle_id: str, *, root: str = DEFAULT_ROOT) -> Topic:
        """The retained topic the hub tells a vehicle which of its fixes are stored on."""
        return cls(vehicle_id, TopicKind.STORED, root)


def _check_share_group(group: str) -> str:
    if not group or any(char in group for char in "/+#\0"):
        raise TopicError(f"invalid shared subscription group {_quote(group)}", field="share_group")
    return group


@dataclass(frozen=True, slots=True)
class TopicFilter:
    """A subscription to one kind of topic for every vehicle, plain or shared.

    Plain: `fleet/+/telemetry`. Shared (`share_group="hub"`): `$share/hub/fleet/+/telemetry`,
    so the broker splits messages among the group's subscribers.
    """

    kind: TopicKind
    root: str = DEFAULT_ROOT
    share_group: str | None = None

    def __post_init__(self) -> None:
        check_root(self.root)
        if self.share_group is not None:
            _check_share_group(self.share_group)

    def __str__(self) -> str:
        plain = f"{self.root}/+/{self.kind.value}"
        return plain if self.share_group is None else f"$share/{self.share_group}/{plain}"

    @property
    def value(self) -> str:
        """The filter string to subscribe with."""
        return str(self)

    @property
    def qos(self) -> int:
        """QoS to subscribe with."""
        return self.kind.qos

    def matches(self, topic: Topic) -> bool:
        """Tell whether a parsed topic is one this filter delivers.

        Dispatch on the parsed topic, not on the filter string: some clients never match a
        `$share/...` filter against the received topic.
        """
        return topic.kind is self.kind and topic.root == self.root
