"""api.pagination: one cursor format for every list, and what it refuses."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.app import create_app
from api.pagination import (
    CURSOR_MAX_LENGTH,
    CURSOR_PATTERN,
    InvalidCursorError,
    decode_cursor,
    encode_cursor,
    fingerprint,
    next_page,
)
from api.settings import ApiSettings
from core.settings import Environment

FILTERS = fingerprint({"list": "test", "q": None})
times = st.datetimes(timezones=st.just(UTC))
bigints = st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
ids = st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=64)
SHAPES: dict[type, st.SearchStrategy[Any]] = {
    datetime: times,
    uuid.UUID: st.uuids(),
    int: bigints,
    float: finite,
    str: ids,
}


def raw_cursor(document: Any) -> str:
    raw = json.dumps(document).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@given(
    st.lists(st.sampled_from(sorted(SHAPES, key=str)), min_size=1, max_size=4).flatmap(
        lambda shape: st.tuples(st.just(tuple(shape)), st.tuples(*(SHAPES[kind] for kind in shape)))
    )
)
def test_every_key_comes_back_exactly(case: tuple[tuple[type, ...], tuple[Any, ...]]) -> None:
    shape, key = case
    cursor = encode_cursor(key, FILTERS)
    assert re.fullmatch(CURSOR_PATTERN, cursor)
    assert len(cursor) <= CURSOR_MAX_LENGTH
    assert decode_cursor(cursor, shape, FILTERS).key == key


def decoded_or_refused(cursor: str, shape: tuple[type, ...]) -> tuple[Any, ...] | None:
    """The key a cursor decodes to, or None when refused; any other exception escapes."""
    try:
        return decode_cursor(cursor, shape, FILTERS).key
    except InvalidCursorError:
        return None


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
def test_made_up_cursors_are_refused_with_the_one_error(text: str) -> None:
    key = decoded_or_refused(text, (datetime, str))
    assert key is None or [type(part) for part in key] == [datetime, str]


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_well_formed_json_that_is_no_cursor_is_refused(document: Any) -> None:
    for shape in ((datetime, int), (float, float, str), (uuid.UUID,), (int,)):
        assert decoded_or_refused(raw_cursor(document), shape) is None
        key = decoded_or_refused(raw_cursor({"v": 1, "f": FILTERS, "k": document}), shape)
        assert key is None or [type(part) for part in key] == list(shape)


@pytest.mark.parametrize(
    ("key", "shape"),
    [
        ([True], (int,)),  # JSON true is no id
        ([2**63], (int,)),  # past bigint
        ([1e308 * 10], (float,)),
        (["a\x00b"], (str,)),  # PostgreSQL refuses NUL in text
        (["x" * 300], (str,)),
        ([10**20], (datetime,)),  # past year 9999
        (["not-a-uuid"], (uuid.UUID,)),
        ([1, 2], (int,)),
        ("1", (int,)),
    ],
)
def test_keys_the_database_would_refuse_are_refused_first(
    key: Any, shape: tuple[type, ...]
) -> None:
    with pytest.raises(InvalidCursorError):
        decode_cursor(raw_cursor({"v": 1, "f": FILTERS, "k": key}), shape, FILTERS)


def test_a_cursor_belongs_to_its_filters_and_version() -> None:
    cursor = encode_cursor((5,), FILTERS)
    assert decode_cursor(cursor, (int,), FILTERS).key == (5,)
    with pytest.raises(InvalidCursorError, match="other filters"):
        decode_cursor(cursor, (int,), fingerprint({"list": "test", "q": "x"}))
    with pytest.raises(InvalidCursorError):
        decode_cursor(raw_cursor({"v": 2, "f": FILTERS, "k": [5]}), (int,), FILTERS)
    # The fingerprint ignores the order filters are written in, not their values.
    assert fingerprint({"a": 1, "b": [2]}) == fingerprint({"b": [2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": "1"})


def test_state_travels_with_the_cursor() -> None:
    cursor = encode_cursor((1.5, 2.0, "sh-1"), FILTERS, state={"w": ["a", "b"]})
    decoded = decode_cursor(cursor, (float, float, str), FILTERS)
    assert decoded.key == (1.5, 2.0, "sh-1")
    assert decoded.state == {"w": ["a", "b"]}


@pytest.mark.parametrize(("rows", "limit", "more"), [(3, 2, True), (2, 2, False), (0, 5, False)])
def test_next_page_reads_one_more_than_it_shows(rows: int, limit: int, more: bool) -> None:
    page = next_page(list(range(rows)), limit, lambda row: (row,), FILTERS)
    assert page.rows == list(range(min(rows, limit)))
    assert (page.next_cursor is not None) == more
    if page.next_cursor is not None:
        assert decode_cursor(page.next_cursor, (int,), FILTERS).key == (limit - 1,)


def test_every_list_takes_the_same_cursor_and_documents_its_refusal() -> None:
    schema = create_app(ApiSettings(env=Environment.DEVELOPMENT)).openapi()
    paged = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            names = {p["name"]: p for p in operation.get("parameters", [])}
            if "cursor" not in names:
                continue
            paged.append(f"{method} {path}")
            cursor = names["cursor"]["schema"]["anyOf"][0]
            assert cursor == {
                "type": "string",
                "maxLength": CURSOR_MAX_LENGTH,
                "pattern": CURSOR_PATTERN,
            }, path
            assert "409" in operation["responses"], path
            assert {"offset", "before"}.isdisjoint(names), path
            body = operation["responses"]["200"]["content"]["application/json"]["schema"]
            page = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
            assert {"items", "next_cursor"} <= set(page["properties"]), path
    assert sorted(paged) == [
        "get /v1/admin/event-rules",
        "get /v1/admin/events",
        "get /v1/admin/geofences",
        "get /v1/admin/users",
        "get /v1/admin/users/{user_id}/history",
        "get /v1/admin/vehicles",
        "get /v1/vehicles",
    ]
