"""Photos judged by content, never by name or declared type, and their resized variants.

Pure image work (Pillow, no I/O): the API checks an upload with `check_image`, the worker
makes the variants with `make_variant`. Refusals are `ImageRejectedError` with a stable
code; each caller maps it to its own errors.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    import uuid

# What Pillow detects -> the content type we store. Only formats browsers show.
FORMATS: Final = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_EXTENSIONS: Final = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
# Variants the worker makes: a list thumbnail and a detail-page size. Longest side in px.
VARIANTS: Final = {"thumb": 320, "large": 1600}
# JPEG quality of the variants: 85 is visually lossless for photos at a third of the size.
VARIANT_QUALITY: Final = 85

REASON_TOO_LARGE: Final = "too_large"
REASON_NOT_AN_IMAGE: Final = "invalid_image"
REASON_DIMENSIONS: Final = "image_dimensions"


@dataclass(frozen=True)
class ImageRejectedError(Exception):
    """An upload we do not accept: `reason` is one of the REASON_* codes."""

    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


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
        raise ImageRejectedError(
            REASON_TOO_LARGE, f"images may be at most {max_bytes} bytes", {"max_bytes": max_bytes}
        )
    if not data:
        raise ImageRejectedError(REASON_NOT_AN_IMAGE, "the file is empty")
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
            raise ImageRejectedError(
                REASON_NOT_AN_IMAGE, "the file is not a JPEG, PNG or WebP image"
            ) from exc
    if detected not in FORMATS:
        raise ImageRejectedError(
            REASON_NOT_AN_IMAGE, f"{detected} images are not accepted; send JPEG, PNG or WebP"
        )
    if min(width, height) < min_side or max(width, height) > max_side:
        raise ImageRejectedError(
            REASON_DIMENSIONS,
            f"images must be {min_side} to {max_side} pixels a side; this one is {width}x{height}",
            {"width": width, "height": height, "min": min_side, "max": max_side},
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
