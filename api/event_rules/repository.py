"""Every SQL statement of the event rules API.

Rows come back as they are stored, not re-validated: a rule someone wrote with plain SQL
(the table checks the kind's spelling, not that the hub raises it) can still be listed,
read, fixed with a PATCH or deleted. Every statement that changes `event_rules` makes its
trigger NOTIFY the hubs when the request's transaction commits (migration 0055).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 - class_row builds these dataclasses at runtime
from typing import TYPE_CHECKING, Any, LiteralString

from psycopg.rows import class_row

if TYPE_CHECKING:
    from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class EventRuleRow:
    """One row of `event_rules`."""

    id: int
    kind: str
    geofence_id: int | None
    channels: list[str]
    command: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime

    def fields(self) -> dict[str, Any]:
        """The client-editable fields, as stored (to merge a PATCH into)."""
        return {
            "kind": self.kind,
            "geofence_id": self.geofence_id,
            "channels": list(self.channels),
            "command": self.command,
            "enabled": self.enabled,
        }


_INSERT_RULE: LiteralString = """
    INSERT INTO event_rules (kind, geofence_id, channels, command, enabled)
    VALUES (%(kind)s, %(geofence_id)s, %(channels)s, %(command)s, %(enabled)s)
    RETURNING id, kind, geofence_id, channels, command, enabled, created_at, updated_at
"""

_UPDATE_RULE: LiteralString = """
    UPDATE event_rules SET
        kind = %(kind)s, geofence_id = %(geofence_id)s, channels = %(channels)s,
        command = %(command)s, enabled = %(enabled)s, updated_at = now()
    WHERE id = %(id)s
    RETURNING id, kind, geofence_id, channels, command, enabled, created_at, updated_at
"""

_GET_RULE: LiteralString = """
    SELECT id, kind, geofence_id, channels, command, enabled, created_at, updated_at
    FROM event_rules WHERE id = %s
"""

# Two PATCHes merging into the same stored rule must not both start from it.
_GET_RULE_FOR_UPDATE: LiteralString = """
    SELECT id, kind, geofence_id, channels, command, enabled, created_at, updated_at
    FROM event_rules WHERE id = %s
    FOR UPDATE
"""

_DELETE_RULE: LiteralString = "DELETE FROM event_rules WHERE id = %s"

# The rule that holds a kind's (and fence's) place: one per kind without a fence, one per
# kind and fence (the two unique indexes of migration 0040).
_RULE_IN_PLACE: LiteralString = """
    SELECT id FROM event_rules
    WHERE kind = %(kind)s AND geofence_id IS NOT DISTINCT FROM %(geofence_id)s::bigint
"""

# A null filter matches all. Keyset pagination on id: stable while rules change.
_LIST_RULES: LiteralString = """
    SELECT id, kind, geofence_id, channels, command, enabled, created_at, updated_at
    FROM event_rules
    WHERE (%(kind)s::text IS NULL OR kind = %(kind)s::text)
      AND (%(geofence_id)s::bigint IS NULL OR geofence_id = %(geofence_id)s::bigint)
      AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s::boolean)
      AND id > %(after_id)s
    ORDER BY id
    LIMIT %(limit)s
"""


async def insert_rule(conn: AsyncConnection[Any], fields: dict[str, Any]) -> EventRuleRow:
    """Store a new rule; psycopg's UniqueViolation or ForeignKeyViolation says what refused it."""
    async with conn.cursor(row_factory=class_row(EventRuleRow)) as cur:
        await cur.execute(_INSERT_RULE, fields)
        row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return row


async def update_rule(
    conn: AsyncConnection[Any], rule_id: int, fields: dict[str, Any]
) -> EventRuleRow | None:
    """Replace a rule's fields; None if there is no such rule."""
    async with conn.cursor(row_factory=class_row(EventRuleRow)) as cur:
        await cur.execute(_UPDATE_RULE, {**fields, "id": rule_id})
        return await cur.fetchone()


async def get_rule(
    conn: AsyncConnection[Any], rule_id: int, *, for_update: bool = False
) -> EventRuleRow | None:
    """One rule by id; `for_update` locks it until the request commits."""
    async with conn.cursor(row_factory=class_row(EventRuleRow)) as cur:
        await cur.execute(_GET_RULE_FOR_UPDATE if for_update else _GET_RULE, (rule_id,))
        return await cur.fetchone()


async def rule_in_place(
    conn: AsyncConnection[Any], kind: str, geofence_id: int | None
) -> int | None:
    """The id of the rule for this kind and fence (null: the default rule), if any."""
    cur = await conn.execute(_RULE_IN_PLACE, {"kind": kind, "geofence_id": geofence_id})
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def delete_rule(conn: AsyncConnection[Any], rule_id: int) -> bool:
    """Delete a rule; False if there is no such rule."""
    async with conn.cursor() as cur:
        await cur.execute(_DELETE_RULE, (rule_id,))
        return cur.rowcount == 1


async def list_rules(  # noqa: PLR0913 - one per filter
    conn: AsyncConnection[Any],
    *,
    kind: str | None,
    geofence_id: int | None,
    enabled: bool | None,
    after_id: int,
    limit: int,
) -> list[EventRuleRow]:
    """A page of rules in id order after `after_id`, filtered by kind, fence and enabled."""
    params = {
        "kind": kind,
        "geofence_id": geofence_id,
        "enabled": enabled,
        "after_id": after_id,
        "limit": limit,
    }
    async with conn.cursor(row_factory=class_row(EventRuleRow)) as cur:
        await cur.execute(_LIST_RULES, params)
        return await cur.fetchall()
