"""What happens when an event is raised: the rules of `event_rules`, shared by hub and worker.

A rule names an event kind and optionally a geofence; the most specific one decides (the
event's fence's rule, else the kind's default rule). It lists the channels the worker tells
(`ops_email`, `ops_webhook`, `ops_sms`, `ops_push`, `rider`) and the command, if any, the hub
issues to the car in the transaction that stores the event. A disabled rule decides too:
nothing happens.

Every change to `event_rules` NOTIFYs `freecar_event_rules` when it commits (trigger of
migration 0055), so hubs reload the rules before their next batch.

    rules = RuleBook(load_rules(conn))
    rule = rules.match("moving_while_locked", geofence_id=None)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, LiteralString

from psycopg.rows import class_row

if TYPE_CHECKING:
    from collections.abc import Iterable

    import psycopg

# The channel the 0055 trigger notifies on; the payload is the statement (INSERT, UPDATE,
# DELETE or TRUNCATE) and carries nothing a hub needs: it reloads every rule.
EVENT_RULES_CHANNEL: Final = "freecar_event_rules"
LISTEN_EVENT_RULES: Final[LiteralString] = "LISTEN freecar_event_rules"


class EventKindName(StrEnum):
    """Every event kind the hub raises, by name.

    Defined here, with the rules that name them, because the API and the worker read events
    too and must not import the hub; the hub's `hub.events.model.EventKind` is this enum.
    """

    GEOFENCE_ENTER = "geofence_enter"
    GEOFENCE_EXIT = "geofence_exit"
    LEFT_SERVICE_AREA = "left_service_area"
    ENTERED_RESTRICTED = "entered_restricted"
    OVERSPEED = "overspeed"
    LOW_FUEL = "low_fuel"
    LOW_BATTERY = "low_battery"
    DOOR_OPEN_WHILE_LOCKED = "door_open_while_locked"
    MOVING_WHILE_LOCKED = "moving_while_locked"
    ENGINE_ON_WITHOUT_TRIP = "engine_on_without_trip"
    IDLE = "idle"
    OFFLINE = "offline"
    ONLINE = "online"
    COMMAND_FAILED = "command_failed"


class Channel(StrEnum):
    """Who is told about an event."""

    OPS_EMAIL = "ops_email"
    OPS_WEBHOOK = "ops_webhook"
    OPS_SMS = "ops_sms"
    OPS_PUSH = "ops_push"
    RIDER = "rider"


@dataclass(frozen=True, slots=True)
class EventRule:
    """One row of `event_rules`."""

    id: int
    kind: str
    geofence_id: int | None
    channels: list[str]
    command: str | None
    enabled: bool

    @property
    def active_channels(self) -> tuple[Channel, ...]:
        """The channels to notify: none when the rule is disabled; unknown names skipped."""
        if not self.enabled:
            return ()
        known = {c.value for c in Channel}
        return tuple(Channel(c) for c in self.channels if c in known)

    @property
    def active_command(self) -> str | None:
        """The command to issue: none when the rule is disabled."""
        return self.command if self.enabled else None


_LOAD_RULES: LiteralString = """
    SELECT id, kind, geofence_id, channels, command, enabled FROM event_rules ORDER BY id
"""

_RULE_FOR: LiteralString = """
    SELECT id, kind, geofence_id, channels, command, enabled FROM event_rules
    WHERE kind = %(kind)s AND (geofence_id IS NULL OR geofence_id = %(geofence_id)s)
    ORDER BY geofence_id IS NULL
    LIMIT 1
"""


def load_rules(conn: psycopg.Connection[Any]) -> list[EventRule]:
    """Every rule, enabled or not."""
    with conn.cursor(row_factory=class_row(EventRule)) as cur:
        return cur.execute(_LOAD_RULES).fetchall()


def rule_for(conn: psycopg.Connection[Any], kind: str, geofence_id: int | None) -> EventRule | None:
    """The rule that decides for an event of `kind` at `geofence_id`, or None."""
    with conn.cursor(row_factory=class_row(EventRule)) as cur:
        return cur.execute(_RULE_FOR, {"kind": kind, "geofence_id": geofence_id}).fetchone()


class RuleBook:
    """Rules in memory, matched by dictionary lookup (the hub holds one per process)."""

    def __init__(self, rules: Iterable[EventRule] = ()) -> None:
        self._by_kind: dict[str, EventRule] = {}
        self._by_fence: dict[tuple[str, int], EventRule] = {}
        for rule in rules:
            if rule.geofence_id is None:
                self._by_kind[rule.kind] = rule
            else:
                self._by_fence[rule.kind, rule.geofence_id] = rule

    def __len__(self) -> int:
        return len(self._by_kind) + len(self._by_fence)

    def match(self, kind: str, geofence_id: int | None) -> EventRule | None:
        """The most specific rule for this kind and fence, or None."""
        if geofence_id is not None:
            found = self._by_fence.get((kind, geofence_id))
            if found is not None:
                return found
        return self._by_kind.get(kind)
