"""The example requests of docs/*.md, run against the real API: each must answer as documented.

Every doc with examples gets a database of its own (a copy of the migrated template), its
setup SQL, and the app as the tests run it (development mode, real PostgreSQL and Redis,
the fake WeChat). Its examples then run in the order they are written, each using what
the earlier ones answered. The convention is in `api_doc_examples`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from api_doc_examples import (
    ExampleError,
    Names,
    check_answer,
    given_names,
    parse_block,
    read_examples,
    read_setup,
    request_of,
    time_value,
)
from api_testing import SignedIn, make_settings, running_api

from devstack.testing import temporary_database

if TYPE_CHECKING:
    from api_wechat_fake import FakeWeChatServer

    from devstack.stack import DevStack

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
WITH_EXAMPLES = [doc for doc in DOCS if read_examples(doc, ROOT)]
ROLES = ("customer", "fleet_manager", "admin")


def test_the_api_docs_are_examples() -> None:
    """The API's own pages are converted; any other page may join by writing examples."""
    names = {doc.name for doc in WITH_EXAMPLES}
    assert {"api.md", "search.md", "fleet.md"} <= names
    for doc in ("api.md", "search.md", "fleet.md"):
        examples = read_examples(ROOT / "docs" / doc, ROOT)
        # Requests to our API are examples, not plain code blocks the tests never run.
        text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
        assert "```http\n" not in text, doc
        assert len(examples) >= 5, doc


async def _signed_in(client: httpx.AsyncClient) -> dict[str, tuple[str, str]]:
    signed_in = {}
    for role in ROLES:
        response = await client.post(
            "/v1/auth/dev-login", json={"username": f"doc-{role.replace('_', '-')}", "role": role}
        )
        account = SignedIn.from_response(response)
        signed_in[role] = (account.access_token, account.user_id)
    return signed_in


@pytest.mark.parametrize("doc", WITH_EXAMPLES, ids=[doc.name for doc in WITH_EXAMPLES])
async def test_the_docs_examples_answer_as_documented(
    *,
    doc: Path,
    devstack: DevStack,
    migrated_template: str,
    redis_url: str,
    wechat: FakeWeChatServer,
) -> None:
    examples = read_examples(doc, ROOT)
    needs_broker = any("broker" in example.flags for example in examples)
    if needs_broker and not devstack.info.mqtt_dynamic_security:
        pytest.skip(
            f"its examples need a broker with dynamic security, not {devstack.info.mqtt_broker}"
        )
    now = datetime.now(UTC)
    # The docs show the default topic root: the vehicles they add are theirs alone on this
    # session's private broker.
    extra: dict[str, Any] = {}
    if devstack.info.mqtt_dynamic_security:
        extra["mqtt_admin_url"] = devstack.info.mqtt_admin_url
    with temporary_database(devstack, f"doc_{doc.stem}", template=migrated_template) as url:
        setup_names = Names(now=now)
        with psycopg.connect(url, autocommit=True) as conn:
            for sql in read_setup(doc):
                conn.execute(setup_names.fill(sql, f"{doc.name} setup").encode())
        async with running_api(make_settings(url, redis_url, wechat.url, **extra)) as api:
            names = given_names(now, await _signed_in(api.client))
            for example in examples:
                response = await api.client.request(**request_of(example, names))
                check_answer(example, response, names)


# The convention itself


BLOCK = """POST /v1/things?x=<thing_id> HTTP/1.1
Authorization: Bearer <admin>

{"name": "<thing_name>",
 "when": "<tomorrow 08:30>"}

HTTP/1.1 201 Created
Location: /v1/things/...

{"id": "<thing_id>", "token": "v4.local...", "items": [{"n": 1}], "ok": true}
"""


def test_a_block_is_a_request_and_its_documented_answer() -> None:
    example = parse_block("docs/x.md", 7, " broker", BLOCK)
    assert (example.method, example.target, example.status) == (
        "POST",
        "/v1/things?x=<thing_id>",
        201,
    )
    assert example.flags == {"broker"}
    assert example.headers == {"Authorization": "Bearer <admin>"}
    assert example.answer_headers == {"Location": "/v1/things/..."}
    assert example.body.startswith('{"name"')
    assert example.answer.endswith("true}")


def test_names_times_and_wildcards() -> None:
    now = datetime(2030, 5, 1, 23, 59, tzinfo=UTC)
    assert time_value("tomorrow 08:30", now) == "2030-05-02T08:30:00Z"
    assert time_value("in 3 days 00:00", now) == "2030-05-04T00:00:00Z"
    assert time_value("today 12:00", now) == "2030-05-01T12:00:00Z"
    names = given_names(now, {"admin": ("tok", "uid")})
    names.values["thing_name"] = "car"
    example = parse_block("docs/x.md", 1, "", BLOCK.replace("?x=<thing_id>", ""))
    request = request_of(example, names)
    assert request["headers"]["Authorization"] == "Bearer tok"
    assert request["content"] == b'{"name": "car",\n "when": "2030-05-02T08:30:00Z"}'

    def answer(body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(201, headers={"Location": "/v1/things/9"}, json=body)

    good = {"id": 9, "token": "v4.local.a", "items": [{"n": 1, "extra": 2}], "ok": True, "x": 0}
    check_answer(example, answer(good), names)
    assert names.values["thing_id"] == 9  # taken down for later examples
    for wrong in (
        {**good, "id": 10},  # no longer the value taken down
        {**good, "token": "v2.local.abc"},
        {**good, "items": [{"n": 1}, {"n": 2}]},
        {**good, "ok": 1},
        {key: value for key, value in good.items() if key != "ok"},
    ):
        with pytest.raises(ExampleError):
            check_answer(example, answer(wrong), names)
    with pytest.raises(ExampleError, match="used before"):
        request_of(parse_block("docs/x.md", 1, "", "GET /v1/<nobody>\n\nHTTP/1.1 200 OK\n"), names)
