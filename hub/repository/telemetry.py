"""What ingest stores as it came: fixes (exactly once) and dead letters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, LiteralString

from db.telemetry import insert_telemetry

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import psycopg

    from db.telemetry import TelemetryRow
    from hub.batch import DeadLetter

_INSERT_DEAD_LETTERS: LiteralString = """
    INSERT INTO dead_letters (topic, payload, reason, detail, received_at, payload_size,
                              payload_sha256)
    SELECT * FROM unnest(
        %(topic)s::text[], %(payload)s::bytea[], %(reason)s::text[], %(detail)s::text[],
        %(received_at)s::timestamptz[], %(payload_size)s::int8[], %(payload_sha256)s::bytea[]
    )
"""


def store_telemetry(conn: psycopg.Connection[Any], rows: Iterable[TelemetryRow]) -> int:
    """Store fixes exactly once; return how many were new."""
    return insert_telemetry(conn, rows)


def store_dead_letters(conn: psycopg.Connection[Any], letters: Sequence[DeadLetter]) -> None:
    """Keep refused messages (the payload cut to a bound, its size and hash), with the reason."""
    if not letters:
        return
    conn.execute(
        _INSERT_DEAD_LETTERS,
        {
            "topic": [d.topic for d in letters],
            "payload": [d.payload for d in letters],
            "reason": [d.reason for d in letters],
            "detail": [d.detail for d in letters],
            "received_at": [d.received_at for d in letters],
            "payload_size": [d.payload_size for d in letters],
            "payload_sha256": [d.payload_sha256 for d in letters],
        },
    )
