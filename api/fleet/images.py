"""Vehicle photos in the API: an upload is checked by content (`core.images`), refusals mapped."""

from __future__ import annotations

from typing import TYPE_CHECKING

from api.errors import ConflictError, PayloadTooLargeError
from core.images import REASON_DIMENSIONS, REASON_TOO_LARGE, ImageRejectedError, check_image

if TYPE_CHECKING:
    from core.images import CheckedImage


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
