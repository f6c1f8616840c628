"""A vehicle's presence as the hub last recorded it: online or not, since when, last seen.

For messages to people (`freecar command` saying why a car did not answer); the hub owns
these columns of `vehicle_state` and nothing here writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 - class_row builds the dataclass at runtime
from typing import TYPE_CHECKING, Any, LiteralString

from psycopg.rows import class_row

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True, slots=True)
class Presence:
    """Whether the car is online, since when, and when the hub last heard from it."""

    online: bool
    online_changed_at: datetime | None
    last_seen_at: datetime


_PRESENCE: LiteralString = """
    SELECT online, online_changed_at, last_seen_at FROM vehicle_state
    WHERE vehicle_id = %(vehicle_id)s
"""


def presence(conn: psycopg.Connection[Any], vehicle_id: str) -> Presence | None:
    """The vehicle's presence, or None if it never reported."""
    with conn.cursor(row_factory=class_row(Presence)) as cur:
        return cur.execute(_PRESENCE, {"vehicle_id": vehicle_id}).fetchone()
