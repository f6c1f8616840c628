"""Time windows that requests name (`from`, `to`): the refusal every domain gives them.

Semantic refusals of schema-valid input are 409 in this API (as `cannot_suspend_self`): 400
and 422 mean "the schema says no", which a schema cannot say about relative time or about
`from` coming before `to`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from api.errors import ConflictError

if TYPE_CHECKING:
    from datetime import datetime, timedelta


class InvalidWindowError(ConflictError):
    """`from`/`to` are missing one half, reversed, too short, too long, or out of range."""

    code = "invalid_window"
    default_message = "invalid time window"


def check_length(starts: datetime, ends: datetime, shortest: timedelta, longest: timedelta) -> None:
    """Raise InvalidWindowError unless `starts` < `ends` and the window lasts within bounds."""
    if starts >= ends:
        raise InvalidWindowError("`from` must be before `to`")
    if ends - starts < shortest:
        raise InvalidWindowError(f"the window is shorter than {shortest}")
    if ends - starts > longest:
        raise InvalidWindowError(f"the window is longer than {longest.days} days")
