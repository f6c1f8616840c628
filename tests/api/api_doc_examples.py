"""The example requests in docs/*.md, read and checked: the docs' API examples are tests.

An example is a fenced block whose info string is `http example`: a request, then the
documented answer. Everything else in the docs is prose to this module.

    ```http example
    POST /v1/admin/users?role=admin            method and target (`HTTP/1.1` may follow)
    Authorization: Bearer <admin>              headers, then a blank line

    {"email": "ops@example.com", ...}          the body, if any (JSON unless a Content-Type says)

    HTTP/1.1 201 Created                       the documented status
    Location: ...                              documented headers, if any, then a blank line

    {"role": "admin", "id": "<ops_id>"}        the documented fields of the answer
    ```

What the answer must hold:

- every field the example shows, with the value shown; fields it leaves out may be there
  too. Lists hold exactly the items shown, each checked the same way;
- `"..."` is any value; `"v4.local..."` any text that starts with `v4.local`;
- `"<name>"` is a value the docs name: the first time, whatever the API answered (taken
  down for later examples); afterwards, that same value. Requests use names the same way
  (`GET /v1/admin/users/<ops_id>`);
- names given before any example: `<customer>`, `<fleet_manager>` and `<admin>` are access
  tokens of signed-in accounts of those roles (`<customer_id>`... their user ids), and
  `<today 08:00>`, `<tomorrow 08:00>`, `<in 3 days 08:00>` are those times in UTC.

Words after `http example` in the info string are flags: `broker` marks an example that
needs a broker with dynamic security (Mosquitto). An HTML comment `<!-- example setup` ...
`-->` holds SQL run on the doc's own database before its examples: what the hub or a
booking would have written, which the API cannot be asked to write.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    import httpx

_FENCE: Final = re.compile(
    r"^```http example(?P<flags>[^\n]*)\n(?P<block>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL
)
_SETUP: Final = re.compile(r"<!-- example setup\n(?P<sql>.*?)-->", re.DOTALL)
# The target may hold names with blanks (`?from=<tomorrow 08:00>`), filled in before sending.
_REQUEST_LINE: Final = re.compile(r"^(?P<method>[A-Z]+) (?P<target>/.*?)(?: HTTP/1\.1)?$")
_STATUS_LINE: Final = re.compile(r"^HTTP/1\.1 (?P<status>[1-5][0-9]{2})(?: .*)?$")
_DAY: Final = r"(?P<day>today|tomorrow|in (?P<days>[0-9]+) days)"
_TIME: Final = re.compile(rf"^{_DAY} (?P<h>[0-9]{{2}}):(?P<m>[0-9]{{2}})$")
_NAME: Final = re.compile(
    r"<(?P<name>[a-z][a-z0-9_]*|(?:today|tomorrow|in [0-9]+ days) [0-9]{2}:[0-9]{2})>"
)
ANY: Final = "..."


class ExampleError(AssertionError):
    """An example that is malformed, or whose answer is not the documented one."""


@dataclass(frozen=True, slots=True)
class Example:
    """One documented request and the answer the docs promise."""

    doc: str
    line: int
    flags: frozenset[str]
    method: str
    target: str
    headers: dict[str, str]
    body: str
    status: int
    answer_headers: dict[str, str]
    answer: str

    @property
    def where(self) -> str:
        """`docs/x.md:12`, for failure messages."""
        return f"{self.doc}:{self.line}"


def _headers(lines: list[str], where: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ExampleError(f"{where}: {line!r} is not a header line")
        headers[name.strip()] = value.strip()
    return headers


def _split(lines: list[str]) -> tuple[list[str], list[str]]:
    """Lines up to the first blank one, and the lines after it."""
    for index, line in enumerate(lines):
        if not line.strip():
            return lines[:index], lines[index + 1 :]
    return lines, []


def parse_block(doc: str, line: int, flags: str, block: str) -> Example:
    """One fenced example: its request and its documented answer."""
    where = f"{doc}:{line}"
    lines = block.splitlines()
    statuses = [i for i, text in enumerate(lines) if _STATUS_LINE.match(text)]
    if not lines or not statuses:
        raise ExampleError(f"{where}: an example is a request, then `HTTP/1.1 <status>`")
    request_line = _REQUEST_LINE.match(lines[0])
    if request_line is None:
        raise ExampleError(f"{where}: {lines[0]!r} is not `METHOD /path`")
    request, answer = lines[1 : statuses[0]], lines[statuses[0] :]
    head, body = _split(request)
    answer_head, answer_body = _split(answer[1:])
    status = _STATUS_LINE.match(answer[0])
    assert status is not None
    return Example(
        doc=doc,
        line=line,
        flags=frozenset(flags.split()),
        method=request_line["method"],
        target=request_line["target"],
        headers=_headers(head, where),
        body="\n".join(body).strip(),
        status=int(status["status"]),
        answer_headers=_headers(answer_head, where),
        answer="\n".join(answer_body).strip(),
    )


def read_examples(path: Path, root: Path) -> list[Example]:
    """Every example of one Markdown file, in order."""
    text = path.read_text(encoding="utf-8")
    doc = str(path.relative_to(root))
    return [
        parse_block(doc, text.count("\n", 0, found.start()) + 1, found["flags"], found["block"])
        for found in _FENCE.finditer(text)
    ]


def read_setup(path: Path) -> list[str]:
    """The SQL of the file's `<!-- example setup ... -->` comments, in order."""
    return [found["sql"] for found in _SETUP.finditer(path.read_text(encoding="utf-8"))]


def time_value(spec: str, now: datetime) -> str | None:
    """`tomorrow 08:00` as `2030-05-02T08:00:00Z` (UTC), or None if `spec` is no time."""
    found = _TIME.match(spec)
    if found is None:
        return None
    days = {"today": 0, "tomorrow": 1}.get(found["day"])
    if days is None:
        days = int(found["days"])
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    moment = day + timedelta(days=days, hours=int(found["h"]), minutes=int(found["m"]))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Names:
    """The values examples name: given at the start, taken down from answers."""

    now: datetime
    values: dict[str, Any] = field(default_factory=dict)

    def lookup(self, name: str, where: str) -> Any:
        """The value of `<name>`; an error if no example has set it yet."""
        moment = time_value(name, self.now)
        if moment is not None:
            return moment
        if name not in self.values:
            raise ExampleError(f"{where}: <{name}> is used before any example set it")
        return self.values[name]

    def fill(self, text: str, where: str) -> str:
        """`text` with every `<name>` replaced by its value."""

        def value(found: re.Match[str]) -> str:
            got = self.lookup(found["name"], where)
            return got if isinstance(got, str) else json.dumps(got)

        return _NAME.sub(value, text)


def _check(expected: Any, actual: Any, names: Names, path: str, where: str) -> None:  # noqa: C901, PLR0912 - one case per JSON type
    """Raise ExampleError unless `actual` holds what `expected` documents."""
    if isinstance(expected, str):
        whole = _NAME.fullmatch(expected)
        if whole is not None and time_value(whole["name"], names.now) is None:
            name = whole["name"]
            if name not in names.values:
                names.values[name] = actual  # taken down: later examples use it
                return
            expected = names.values[name]
        elif expected == ANY:
            return
        elif expected.endswith(ANY):
            if not (isinstance(actual, str) and actual.startswith(expected[: -len(ANY)])):
                raise ExampleError(f"{where}: {path} is {actual!r}, documented {expected!r}")
            return
        else:
            expected = names.fill(expected, where)
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            raise ExampleError(f"{where}: {path} is {actual!r}, documented an object")
        for key, value in expected.items():
            if key not in actual:
                raise ExampleError(f"{where}: {path}.{key} is missing from the answer")
            _check(value, actual[key], names, f"{path}.{key}", where)
        return
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            raise ExampleError(f"{where}: {path} is {actual!r}, documented {expected!r}")
        for index, (item, got) in enumerate(zip(expected, actual, strict=True)):
            _check(item, got, names, f"{path}[{index}]", where)
        return
    # JSON true is not 1, and 1 is 1.0.
    if type(expected) is bool or type(actual) is bool:
        same = type(expected) is type(actual) and expected == actual
    else:
        same = expected == actual
    if not same:
        raise ExampleError(f"{where}: {path} is {actual!r}, documented {expected!r}")


def check_answer(example: Example, response: httpx.Response, names: Names) -> None:
    """Raise ExampleError unless the response is the documented answer."""
    where = example.where
    if response.status_code != example.status:
        raise ExampleError(
            f"{where}: {example.method} {example.target} answered {response.status_code}, "
            f"documented {example.status}: {response.text[:2000]}"
        )
    for name, value in example.answer_headers.items():
        if name not in response.headers:
            raise ExampleError(f"{where}: the answer has no {name} header")
        _check(value, response.headers[name], names, name, where)
    if not example.answer:
        return
    try:
        documented = json.loads(example.answer)
    except json.JSONDecodeError as exc:
        raise ExampleError(f"{where}: the documented answer is not JSON: {exc}") from exc
    try:
        _check(documented, response.json(), names, "answer", where)
    except ExampleError as exc:
        raise ExampleError(f"{exc}\nthe whole answer: {response.text[:2000]}") from None


def request_of(example: Example, names: Names) -> dict[str, Any]:
    """httpx.request keyword arguments for the example, every name filled in."""
    where = example.where
    headers = {name: names.fill(value, where) for name, value in example.headers.items()}
    content = names.fill(example.body, where).encode() if example.body else None
    if content is not None and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return {
        "method": example.method,
        "url": names.fill(example.target, where),
        "headers": headers,
        "content": content,
    }


def given_names(now: datetime, signed_in: Mapping[str, tuple[str, str]]) -> Names:
    """The names every doc starts with: a token and a user id per role."""
    names = Names(now=now)
    for role, (token, user_id) in signed_in.items():
        names.values[role] = token
        names.values[f"{role}_id"] = user_id
    return names
