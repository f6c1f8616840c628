"""Every SQL statement about vehicle photos: the API records uploads, the worker their variants."""

from __future__ import annotations

import uuid  # noqa: TC003 - class_row builds these dataclasses at runtime
from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 - idem
from typing import TYPE_CHECKING, Any, LiteralString

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    from collections.abc import Mapping

    from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class ImageRow:
    """A vehicle photo."""

    id: uuid.UUID
    vehicle_id: str
    key: str
    content_type: str
    width: int
    height: int
    size_bytes: int
    status: str
    variants: dict[str, Any]
    created_at: datetime


_IMAGE_COLUMNS: LiteralString = """
    id, vehicle_id, key, content_type, width, height, size_bytes, status, variants, created_at
"""
_INSERT_IMAGE: LiteralString = (
    """
    INSERT INTO vehicle_images (id, vehicle_id, key, content_type, width, height, size_bytes)
    VALUES (%(id)s, %(vehicle_id)s, %(key)s, %(content_type)s, %(width)s, %(height)s,
            %(size_bytes)s)
    RETURNING"""  # noqa: S608 - LiteralString constants only
    + _IMAGE_COLUMNS
)
_LIST_IMAGES: LiteralString = (
    "SELECT"
    + _IMAGE_COLUMNS
    + "FROM vehicle_images WHERE vehicle_id = %(vehicle_id)s ORDER BY created_at, id"
)
_GET_IMAGE: LiteralString = "SELECT" + _IMAGE_COLUMNS + "FROM vehicle_images WHERE id = %(id)s"
_DELETE_IMAGE: LiteralString = (
    "DELETE FROM vehicle_images WHERE id = %(id)s AND vehicle_id = %(vehicle_id)s RETURNING"  # noqa: S608 - LiteralString constants only
    + _IMAGE_COLUMNS
)
_SET_VARIANTS: LiteralString = """
    UPDATE vehicle_images SET variants = %(variants)s, status = %(status)s WHERE id = %(id)s
"""


async def insert_image(conn: AsyncConnection[Any], values: Mapping[str, Any]) -> ImageRow:
    """Record an uploaded image."""
    async with conn.cursor(row_factory=class_row(ImageRow)) as cur:
        await cur.execute(_INSERT_IMAGE, dict(values))
        row = await cur.fetchone()
    assert row is not None
    return row


async def list_images(conn: AsyncConnection[Any], vehicle_id: str) -> list[ImageRow]:
    """A vehicle's images, oldest first."""
    async with conn.cursor(row_factory=class_row(ImageRow)) as cur:
        await cur.execute(_LIST_IMAGES, {"vehicle_id": vehicle_id})
        return await cur.fetchall()


async def get_image(conn: AsyncConnection[Any], image_id: uuid.UUID) -> ImageRow | None:
    """One image."""
    async with conn.cursor(row_factory=class_row(ImageRow)) as cur:
        await cur.execute(_GET_IMAGE, {"id": image_id})
        return await cur.fetchone()


async def delete_image(
    conn: AsyncConnection[Any], vehicle_id: str, image_id: uuid.UUID
) -> ImageRow | None:
    """Delete an image record; the deleted row, or None if there was none."""
    async with conn.cursor(row_factory=class_row(ImageRow)) as cur:
        await cur.execute(_DELETE_IMAGE, {"id": image_id, "vehicle_id": vehicle_id})
        return await cur.fetchone()


async def set_variants(
    conn: AsyncConnection[Any], image_id: uuid.UUID, variants: Mapping[str, Any], status: str
) -> None:
    """Record the image's variants and its new status."""
    await conn.execute(
        _SET_VARIANTS, {"id": image_id, "variants": Jsonb(dict(variants)), "status": status}
    )
