"""Vehicle photos: uploads checked by content (`core.images`), stored, listed with signed links.

The original is stored before its row commits, so the worker always finds the file a row
names; the variants task is queued, and deleted files removed, only after the commit (the
endpoints hand those to background tasks, which run after the response, itself sent after
the commit).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from api.errors import ConflictError, NotFoundError, PayloadTooLargeError
from api.fleet import service
from api.fleet.schemas import VehicleImage, VehicleImageList
from core.images import (
    REASON_DIMENSIONS,
    REASON_TOO_LARGE,
    ImageRejectedError,
    check_image,
    image_key,
)
from db import vehicle_images
from jobs.names import VEHICLE_IMAGE_VARIANTS_TASK

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from api.fleet.settings import FleetSettings
    from core.filestore import FileStore
    from core.images import CheckedImage

log = logging.getLogger(__name__)


# Refusals of a well-formed upload are 409, as elsewhere in this API: the request matches
# its schema (a file), and the schema cannot say "a real JPEG"; 422 is kept for requests that
# break the schema itself.
class InvalidImageError(ConflictError):
    """The upload is not an image we accept (by its content)."""

    code = "invalid_image"
    default_message = "the file is not a JPEG, PNG or WebP image"


class ImageDimensionsError(ConflictError):
    """The image is too small or too large in pixels."""

    code = "image_dimensions"
    default_message = "the image's dimensions are outside the accepted range"


def check_upload(data: bytes, *, max_bytes: int, min_side: int, max_side: int) -> CheckedImage:
    """The upload as a checked image, or the API error that says why it is refused."""
    try:
        return check_image(data, max_bytes=max_bytes, min_side=min_side, max_side=max_side)
    except ImageRejectedError as exc:
        if exc.reason == REASON_TOO_LARGE:
            raise PayloadTooLargeError(exc.message, details=exc.details) from None
        if exc.reason == REASON_DIMENSIONS:
            raise ImageDimensionsError(exc.message, details=exc.details) from None
        raise InvalidImageError(exc.message) from None


def image_view(row: vehicle_images.ImageRow, store: FileStore, ttl_s: int) -> VehicleImage:
    """A stored image as the API shows it, with links signed for `ttl_s` seconds."""
    variants = {
        name: store.signed_url(str(variant["key"]), ttl_s)
        for name, variant in sorted(row.variants.items())
        if isinstance(variant, dict) and "key" in variant
    }
    return VehicleImage(
        id=row.id,
        vehicle_id=row.vehicle_id,
        content_type=row.content_type,
        width=row.width,
        height=row.height,
        size_bytes=row.size_bytes,
        status=row.status,
        url=store.signed_url(row.key, ttl_s),
        variants=variants,
        urls_expire_at=datetime.fromtimestamp(time.time() + ttl_s, tz=UTC),
        created_at=row.created_at,
    )


async def upload(
    conn: AsyncConnection[Any],
    store: FileStore,
    settings: FleetSettings,
    vehicle_id: str,
    data: bytes,
) -> VehicleImage:
    """Check, store and record a photo of the vehicle (`pending` until its variants exist)."""
    await service.get_vehicle(conn, vehicle_id)
    checked = await asyncio.to_thread(
        check_upload,
        data,
        max_bytes=settings.fleet_image_max_bytes,
        min_side=settings.fleet_image_min_side_px,
        max_side=settings.fleet_image_max_side_px,
    )
    image_id = uuid.uuid4()
    key = image_key(vehicle_id, image_id, f"original.{checked.extension}")
    # Stored before the row commits, so the worker always finds the file the row names.
    await asyncio.to_thread(store.put, key, checked.data, content_type=checked.content_type)
    row = await vehicle_images.insert_image(
        conn,
        {
            "id": image_id,
            "vehicle_id": vehicle_id,
            "key": key,
            "content_type": checked.content_type,
            "width": checked.width,
            "height": checked.height,
            "size_bytes": len(checked.data),
        },
    )
    return image_view(row, store, settings.fleet_image_url_ttl_s)


async def list_images(
    conn: AsyncConnection[Any], store: FileStore, settings: FleetSettings, vehicle_id: str
) -> VehicleImageList:
    """The vehicle's photos, oldest first, with fresh signed links."""
    await service.get_vehicle(conn, vehicle_id)
    rows = await vehicle_images.list_images(conn, vehicle_id)
    return VehicleImageList(
        items=[image_view(row, store, settings.fleet_image_url_ttl_s) for row in rows]
    )


async def delete_image(
    conn: AsyncConnection[Any], vehicle_id: str, image_id: uuid.UUID
) -> list[str]:
    """Delete a photo's record; the keys of its files, to remove after the commit."""
    row = await vehicle_images.delete_image(conn, vehicle_id, image_id)
    if row is None:
        raise NotFoundError("image not found")
    return [row.key] + [
        str(variant["key"])
        for variant in row.variants.values()
        if isinstance(variant, dict) and "key" in variant
    ]


def queue_variants(celery: Any, image_id: uuid.UUID) -> None:  # noqa: ANN401 - celery is untyped
    """Queue the variants task (a background task: after the response, so after the commit)."""
    try:
        celery.send_task(VEHICLE_IMAGE_VARIANTS_TASK, args=[str(image_id)])
    except Exception:
        # The image stays `pending`; uploading again or running the task by hand fixes it.
        log.exception("could not queue %s for image %s", VEHICLE_IMAGE_VARIANTS_TASK, image_id)


def delete_files(store: FileStore, keys: list[str]) -> None:
    """Remove a deleted photo's files (a background task, after the commit)."""
    for key in keys:
        try:
            store.delete(key)
        except Exception:  # a file left behind costs storage, not correctness
            log.exception("could not delete %s", key)
