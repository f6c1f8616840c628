"""Keyset pagination, the one way every list pages: `limit`, an opaque `cursor`, `next_cursor`.

A list is read in a total order that ends in a unique column (newest first by creation time
and id, by id alone, by a search's sort keys and id). A page asks the repository for the
rows strictly after the cursor's position, one more than `limit`: that extra row only says
whether another page exists. So a page costs the same however deep it is, and a row added
meanwhile neither repeats nor hides another.

The cursor is base64url (no padding) of a small JSON document: a version, the last row's
sort key, a fingerprint of the filters it was made for, and whatever state a list needs to
carry (the search's window). Clients treat it as opaque and pass it back with the same
other parameters. One that does not decode, was altered, or comes back with other filters
is refused with 409 `invalid_cursor`: paging on from it would list something else.

    filters = fingerprint({"q": q, "status": status})
    after = None if cursor is None else decode_cursor(cursor, (datetime, str), filters).key
    rows = await repository.list_things(conn, ..., after=after, limit=limit + 1)
    page = next_page(rows, limit, lambda row: (row.created_at, row.id), filters)
    return ThingPage(items=[view(row) for row in page.rows], next_cursor=page.next_cursor)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Final, Generic, TypeVar

from fastapi import Query

from api.errors import ConflictError, error_responses

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from pydantic import JsonValue

CURSOR_VERSION: Final = 1
# The longest cursor any list makes is about 200 characters (the search's, with its window);
# anything much longer is not ours and is refused by the schema before any decoding.
CURSOR_MAX_LENGTH: Final = 1_000
CURSOR_PATTERN: Final = r"^[A-Za-z0-9_-]+$"
# A fingerprint needs only to tell searches apart, not to resist forgery: 12 bytes of
# SHA-256 make an accidental match between two searches' cursors impossible in practice.
_FINGERPRINT_BYTES: Final = 12
# Key parts the lists sort by. Text keys are ids (64 characters at most) and bigint ids;
# the bounds refuse a made-up cursor the database itself would refuse.
_MAX_TEXT: Final = 256
_MAX_BIGINT: Final = 2**63 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)

KeyPart = datetime | uuid.UUID | int | float | str
"""One column of a sort key: a time, a uuid, an integer id, a float sort key, a text id."""

CursorQuery = Annotated[
    str | None,
    Query(
        max_length=CURSOR_MAX_LENGTH,
        pattern=CURSOR_PATTERN,
        description="`next_cursor` of the previous page, with the same other parameters "
        "(opaque: pass it back as it came).",
    ),
]
"""The `cursor` query parameter of every paged list."""

CURSOR_RESPONSES: Final = error_responses(409)
"""What a paged list adds to its documented errors: 409 `invalid_cursor`."""


class InvalidCursorError(ConflictError):
    """The cursor is malformed, altered, or belongs to a different list or filters."""

    code = "invalid_cursor"
    default_message = "invalid cursor; start again without one"


@dataclass(frozen=True, slots=True)
class Cursor:
    """A decoded cursor: the position to resume after, and the list's own state."""

    key: tuple[KeyPart, ...]
    state: dict[str, JsonValue] = field(default_factory=dict)


RowT = TypeVar("RowT")


@dataclass(frozen=True, slots=True)
class Page(Generic[RowT]):
    """One page of rows and the cursor of the next (None on the last page)."""

    rows: list[RowT]
    next_cursor: str | None


def fingerprint(filters: Mapping[str, object]) -> str:
    """A short digest of everything that shapes a list besides its position and page size."""
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical.encode()).digest()[:_FINGERPRINT_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _encode_part(part: KeyPart) -> JsonValue:
    if isinstance(part, datetime):
        return (part - _EPOCH) // _ONE_US  # exact: PostgreSQL keeps microseconds too
    if isinstance(part, uuid.UUID):
        return str(part)
    if isinstance(part, float) and not math.isfinite(part):
        raise ValueError("a sort key must be finite")
    return part


def encode_cursor(
    key: Sequence[KeyPart], filters: str, state: dict[str, JsonValue] | None = None
) -> str:
    """The cursor of the position after `key`, for the list whose filters gave `filters`."""
    document: dict[str, JsonValue] = {
        "v": CURSOR_VERSION,
        "f": filters,
        "k": [_encode_part(part) for part in key],
    }
    if state:
        document["s"] = state
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _as_time(value: object) -> KeyPart:
    if not isinstance(value, int):
        raise InvalidCursorError
    try:
        return _EPOCH + value * _ONE_US
    except OverflowError as exc:
        raise InvalidCursorError from exc


def _as_uuid(value: object) -> KeyPart:
    if not isinstance(value, str):
        raise InvalidCursorError
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise InvalidCursorError from exc


def _as_int(value: object) -> KeyPart:
    if not isinstance(value, int) or abs(value) > _MAX_BIGINT:
        raise InvalidCursorError
    return value


def _as_float(value: object) -> KeyPart:
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidCursorError
    return float(value)


def _as_text(value: object) -> KeyPart:
    # PostgreSQL refuses NUL in text: such a key could only fail the query.
    if not isinstance(value, str) or len(value) > _MAX_TEXT or "\x00" in value:
        raise InvalidCursorError
    return value


_DECODERS: Final[dict[type, Callable[[object], KeyPart]]] = {
    datetime: _as_time,
    uuid.UUID: _as_uuid,
    int: _as_int,
    float: _as_float,
    str: _as_text,
}


def _decode_part(value: object, kind: type) -> KeyPart:
    if isinstance(value, bool):
        raise InvalidCursorError  # JSON true is an int to Python; never a key of ours
    return _DECODERS[kind](value)


def decode_cursor(cursor: str, shape: tuple[type, ...], filters: str) -> Cursor:
    """The position in `cursor`, whose key must have `shape`; InvalidCursorError otherwise.

    `filters` is the fingerprint of this request's filters: a cursor made for others is
    refused.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(raw)
    except (ValueError, binascii.Error) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidCursorError from exc
    if not isinstance(document, dict) or document.get("v") != CURSOR_VERSION:
        raise InvalidCursorError
    if document.get("f") != filters:
        raise InvalidCursorError("this cursor belongs to another list or other filters")
    key, state = document.get("k"), document.get("s", {})
    if not isinstance(key, list) or len(key) != len(shape) or not isinstance(state, dict):
        raise InvalidCursorError
    return Cursor(
        key=tuple(_decode_part(value, kind) for value, kind in zip(key, shape, strict=True)),
        state=state,
    )


def next_page(
    rows: Sequence[RowT],
    limit: int,
    key: Callable[[RowT], Sequence[KeyPart]],
    filters: str,
    state: dict[str, JsonValue] | None = None,
) -> Page[RowT]:
    """The first `limit` of `rows` (read as `limit + 1`), and the next page's cursor."""
    page = list(rows[:limit])
    if len(rows) <= limit or not page:
        return Page(rows=page, next_cursor=None)
    return Page(rows=page, next_cursor=encode_cursor(key(page[-1]), filters, state))
