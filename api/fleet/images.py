"""Vehicle photos: judged by content, never by name or declared type; resized by the worker."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from PIL import Image, ImageOps, UnidentifiedImageError

from api.errors import ConflictError, PayloadTooLargeError
from api.fleet import repository

if TYPE_CHECKING:
    import uuid

    from psycopg import AsyncConnection

    from freecar.filestore import FileStore

# What Pillow detects -> the content type we store. Only formats browsers show.
FORMATS: Final = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_EXTENSIONS: Final = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
# Variants the worker makes: a list thumbnail and a detail-page size. Longest side in px.
VARIANTS: Final = {"thumb": 320, "large": 1600}
# JPEG quality of the variants: 85 is visually lossless for photos at a third of the size.
VARIANT_QUALITY: Final = 85


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


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """An upload that is really an image of an accepted format and size."""

    data: bytes
    format: str
    content_type: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        """The file extension matching the content."""
        return _EXTENSIONS[self.format]


def check_image(data: bytes, *, max_bytes: int, min_side: int, max_side: int) -> CheckedImage:
    """Identify and verify the image from its bytes; refuse anything else."""
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"images may be at most {max_bytes} bytes", details={"max_bytes": max_bytes}
        )
    if not data:
        raise InvalidImageError("the file is empty")
    # Pillow warns (and past twice the limit raises) on decompression bombs; make both errors.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                detected = image.format
                width, height = image.size
                # verify() checks the file's structure (CRCs, truncation) without decoding.
                image.verify()
        except (
            UnidentifiedImageError,
            OSError,
            SyntaxError,
            ValueError,
            Image.DecompressionBombWarning,
            Image.DecompressionBombError,
        ) as exc:
            raise InvalidImageError from exc
    if detected not in FORMATS:
        raise InvalidImageError(f"{detected} images are not accepted; send JPEG, PNG or WebP")
    if min(width, height) < min_side or max(width, height) > max_side:
        raise ImageDimensionsError(
            f"images must be {min_side} to {max_side} pixels a side; this one is {width}x{height}",
            details={"width": width, "height": height, "min": min_side, "max": max_side},
        )
    return CheckedImage(
        data=data, format=detected, content_type=FORMATS[detected], width=width, height=height
    )


def image_key(vehicle_id: str, image_id: uuid.UUID, name: str) -> str:
    """Where an image (or one of its variants) lives in the file store."""
    return f"vehicles/{vehicle_id}/images/{image_id}/{name}"


def make_variant(data: bytes, longest_side: int) -> tuple[bytes, int, int]:
    """A JPEG no larger than `longest_side` a side, upright (EXIF orientation applied)."""
    with Image.open(io.BytesIO(data)) as image:
        upright = ImageOps.exif_transpose(image)
        upright.thumbnail((longest_side, longest_side))
        rgb = upright.convert("RGB")  # JPEG has no alpha; photos of cars need none
        out = io.BytesIO()
        # Metadata (EXIF with GPS position) is not copied: variants are shown to riders.
        rgb.save(out, format="JPEG", quality=VARIANT_QUALITY, optimize=True)
        return out.getvalue(), rgb.width, rgb.height


async def process_image(
    conn: AsyncConnection[Any], store: FileStore, image_id: uuid.UUID
) -> str | None:
    """Make an image's variants and record them; the new status, None if the image is gone.

    Idempotent: run twice, it writes the same variants under the same keys.
    """
    row = await repository.get_image(conn, image_id)
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
        await repository.set_variants(conn, image_id, {}, "failed")
        return "failed"
    await repository.set_variants(conn, image_id, variants, "ready")
    return "ready"
