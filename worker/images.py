"""The worker's side of vehicle photos: make the variants of an upload once it committed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.images import VARIANTS, image_key, make_variant
from db import vehicle_images

if TYPE_CHECKING:
    import uuid

    from psycopg import AsyncConnection

    from core.filestore import FileStore


async def process_image(
    conn: AsyncConnection[Any], store: FileStore, image_id: uuid.UUID
) -> str | None:
    """Make an image's variants and record them; the new status, None if the image is gone.

    Idempotent: run twice, it writes the same variants under the same keys.
    """
    row = await vehicle_images.get_image(conn, image_id)
    if row is None:
        return None  # deleted before the worker got to it
    variants: dict[str, Any] = {}
    try:
        original = store.get(row.key).data
        for name, side in VARIANTS.items():
            data, width, height = make_variant(original, side)
            key = image_key(row.vehicle_id, row.id, f"{name}.jpg")
            store.put(key, data, content_type="image/jpeg")
            variants[name] = {
                "key": key,
                "width": width,
                "height": height,
                "content_type": "image/jpeg",
            }
    except (OSError, KeyError, ValueError):
        await vehicle_images.set_variants(conn, image_id, {}, "failed")
        return "failed"
    await vehicle_images.set_variants(conn, image_id, variants, "ready")
    return "ready"
