"""The one way tests put vehicles in the inventory (the hub stores nothing for others)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

# A plausible car: every column the schema requires, with values its checks accept. A test
# overrides what it is about (category, status, features, prices...).
DEFAULTS: Final[Mapping[str, Any]] = {
    "make": "BYD",
    "model": "Qin",
    "category": "economy",
    "fuel_type": "electric",
    "price_hour_minor": 3000,
    "price_day_minor": 20000,
    "currency": "CNY",
}


def insert_vehicles(
    target: str | psycopg.Connection[Any], vehicle_ids: Iterable[str], **columns: Any
) -> list[str]:
    """Insert vehicles (a vehicle already there is left as it is); return their ids.

    `target` is a database URL (committed here) or a connection (the caller's transaction).
    Keyword arguments set columns for every vehicle; the plate defaults to `P-<id>`.
    """
    ids = list(vehicle_ids)
    plate = columns.pop("plate", None)
    values = {**DEFAULTS, **columns}
    names = ["id", "plate", *values]
    statement = sql.SQL("INSERT INTO vehicles ({}) VALUES ({}) ON CONFLICT (id) DO NOTHING").format(
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
    )
    rows = [(vid, plate or f"P-{vid}", *values.values()) for vid in ids]
    if isinstance(target, str):
        with psycopg.connect(target) as conn:
            conn.cursor().executemany(statement, rows)
    else:
        target.cursor().executemany(statement, rows)
    return ids
