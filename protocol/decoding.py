"""Run pydantic-core's JSON validation and turn its errors into the contract's error classes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeVar

from pydantic import TypeAdapter, ValidationError

from protocol.errors import (
    BadJsonError,
    InvalidValueError,
    MissingFieldError,
    OutOfRangeError,
    PayloadError,
    UnsupportedVersionError,
)

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

T = TypeVar("T")

# pydantic error types, grouped by what went wrong from the sender's point of view. Anything not
# listed (wrong JSON type, bad enum value, bad UUID, pattern mismatch...) is an invalid value.
_ERROR_BY_PYDANTIC_TYPE: Final[dict[str, type[PayloadError]]] = {
    "json_invalid": BadJsonError,
    "json_type": BadJsonError,
    "missing": MissingFieldError,
    "missing_energy_level": MissingFieldError,
    "greater_than": OutOfRangeError,
    "greater_than_equal": OutOfRangeError,
    "less_than": OutOfRangeError,
    "less_than_equal": OutOfRangeError,
    "too_short": OutOfRangeError,
    "too_long": OutOfRangeError,
    "string_too_short": OutOfRangeError,
    "string_too_long": OutOfRangeError,
    "lifetime_too_long": OutOfRangeError,
    "floor_above_seq": OutOfRangeError,
    "unsupported_version": UnsupportedVersionError,
}


def _describe(detail: ErrorDetails, *, in_array: bool) -> tuple[str | None, int | None]:
    """Split pydantic's error location into (dotted field path, array element index)."""
    location = list(detail["loc"])
    index: int | None = None
    if in_array and location and isinstance(location[0], int):
        index = location[0]
        del location[0]
    context = detail.get("ctx") or {}
    # Cross-field checks raise at model level (no location) and name the field in their context.
    field = context.get("field") if not location else ".".join(str(part) for part in location)
    return (str(field) if field is not None else None), index


def payload_error(exc: ValidationError, *, what: str, in_array: bool = False) -> PayloadError:
    """Map the first pydantic validation error to the contract's error class, keeping the field."""
    details = exc.errors(include_url=False)
    # A message of another version may fail on other fields too; its version is the real story.
    detail = next((d for d in details if d["type"] == "unsupported_version"), details[0])
    error_class = _ERROR_BY_PYDANTIC_TYPE.get(detail["type"], InvalidValueError)
    field, index = _describe(detail, in_array=in_array)
    where = what if index is None else f"{what}[{index}]"
    if field is not None:
        where = f"{where}.{field}"
    return error_class(f"{where}: {detail['msg']}", field=field, index=index)


def validate_json(
    adapter: TypeAdapter[T], payload: bytes | str, *, what: str, in_array: bool = False
) -> T:
    """Validate a JSON document with a prebuilt adapter, raising a PayloadError on failure."""
    try:
        return adapter.validate_json(payload)
    except ValidationError as exc:
        raise payload_error(exc, what=what, in_array=in_array) from exc
