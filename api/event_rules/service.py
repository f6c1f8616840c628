"""Creating, changing, listing and deleting event rules. Nothing here commits.

The database keeps the rules consistent: its unique indexes allow one default rule per
kind and one rule per kind and fence (409 `rule_exists`, with the id of the rule in that
place), and its foreign key a rule only for a fence that exists (409 `unknown_geofence`).
This module adds the one policy the table does not hold: a rule never unlocks or
re-mobilizes a car (409 `command_not_allowed`).

There is no audit table for fleet configuration (geofences and vehicles have none either;
`user_audit` is an account's history). Every change is logged with its actor, and the
API's log lines carry the request id.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from psycopg.errors import ForeignKeyViolation, UniqueViolation

from api import pagination
from api.errors import ConflictError, NotFoundError
from api.event_rules import repository
from api.event_rules.schemas import EventRule, EventRulePage
from db.event_rules import Channel
from protocol.commands import Action

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from pydantic import JsonValue

    from api.event_rules.repository import EventRuleRow
    from api.event_rules.schemas import EventRuleCreate, EventRuleUpdate
    from api.identity import Principal
    from db.event_rules import EventKindName

log = logging.getLogger(__name__)

# Commands no event should issue by itself. An automatic unlock opens a car to whoever
# stands beside it; an automatic mobilize undoes the immobilize that a theft set off. Both
# are a person's decision (the rider's unlock, ops' mobilize with `freecar command`).
REFUSED_COMMANDS: Final = frozenset({Action.UNLOCK, Action.MOBILIZE})
ALLOWED_COMMANDS: Final = tuple(a for a in Action if a not in REFUSED_COMMANDS)


# Semantic refusals of schema-valid input are 409 in this API (as `invalid_geofence`,
# `vin_check_digit`): 422 means "the schema says no".
class RuleExistsError(ConflictError):
    """The kind (and fence) already has its rule: change that one."""

    code = "rule_exists"
    default_message = "a rule for this kind and geofence exists; change it instead"


class UnknownGeofenceError(ConflictError):
    """No geofence has the id the rule names."""

    code = "unknown_geofence"
    default_message = "no geofence has this id"


class CommandNotAllowedError(ConflictError):
    """A rule may not issue this command (`unlock`, `mobilize`)."""

    code = "command_not_allowed"
    default_message = "a rule may not issue this command"


class EventRuleNotFoundError(NotFoundError):
    """No rule with this id."""

    default_message = "event rule not found"


def _check_command(command: str | None) -> None:
    if command is None or Action(command) not in REFUSED_COMMANDS:
        return
    allowed: list[JsonValue] = [a.value for a in ALLOWED_COMMANDS]
    raise CommandNotAllowedError(
        f"a rule may not issue {command!r}: a person decides that, not an event",
        details={"field": "command", "command": command, "allowed": allowed},
    )


def _view(rule: EventRuleRow) -> EventRule:
    return EventRule(
        id=rule.id,
        kind=rule.kind,
        geofence_id=rule.geofence_id,
        channels=[Channel(c) for c in rule.channels],  # the table's CHECK allows only these
        command=None if rule.command is None else Action(rule.command),  # likewise
        enabled=rule.enabled,
        created_at=rule.created_at,
        updated_at=rule.updated_at,
    )


async def _write(
    conn: AsyncConnection[Any], fields: dict[str, Any], rule_id: int | None
) -> EventRuleRow | None:
    """Insert (no `rule_id`) or update; the database's refusals as the API's errors."""
    try:
        # A savepoint: after a unique violation the request still reads the rule in place.
        async with conn.transaction():
            if rule_id is None:
                return await repository.insert_rule(conn, fields)
            return await repository.update_rule(conn, rule_id, fields)
    except UniqueViolation as exc:
        existing = await repository.rule_in_place(conn, fields["kind"], fields["geofence_id"])
        raise RuleExistsError(
            details={
                "id": existing,
                "kind": fields["kind"],
                "geofence_id": fields["geofence_id"],
            }
        ) from exc
    except ForeignKeyViolation as exc:
        raise UnknownGeofenceError(
            f"no geofence has the id {fields['geofence_id']}",
            details={"field": "geofence_id", "geofence_id": fields["geofence_id"]},
        ) from exc


async def create_rule(
    conn: AsyncConnection[Any], actor: Principal, body: EventRuleCreate
) -> EventRule:
    """Store a new rule after checking its command."""
    fields = body.model_dump(mode="json")
    _check_command(fields["command"])
    created = await _write(conn, fields, None)
    assert created is not None  # an insert returns its row
    log.info("event rule %d created by %s: %s", created.id, actor.user_id, fields)
    return _view(created)


async def get_rule(conn: AsyncConnection[Any], rule_id: int) -> EventRule:
    """One rule, enabled or not."""
    rule = await repository.get_rule(conn, rule_id)
    if rule is None:
        raise EventRuleNotFoundError
    return _view(rule)


async def update_rule(
    conn: AsyncConnection[Any], actor: Principal, rule_id: int, body: EventRuleUpdate
) -> EventRule:
    """Merge the changes into the stored rule and store it (a command it sends is checked)."""
    stored = await repository.get_rule(conn, rule_id, for_update=True)
    if stored is None:
        raise EventRuleNotFoundError
    changes = body.changes()
    if "command" in changes:
        _check_command(changes["command"])
    merged = {**stored.fields(), **changes}
    if merged == stored.fields():
        return _view(stored)  # nothing changes: no write, no reload in every hub
    updated = await _write(conn, merged, rule_id)
    assert updated is not None  # locked above, so still there
    log.info("event rule %d changed by %s: %s", rule_id, actor.user_id, changes)
    return _view(updated)


async def delete_rule(conn: AsyncConnection[Any], actor: Principal, rule_id: int) -> None:
    """Delete a rule; a deleted default rule leaves its kind doing nothing."""
    stored = await repository.get_rule(conn, rule_id, for_update=True)
    if stored is None or not await repository.delete_rule(conn, rule_id):
        raise EventRuleNotFoundError
    log.info("event rule %d deleted by %s: %s", rule_id, actor.user_id, stored.fields())


async def list_rules(  # noqa: PLR0913 - one per filter
    conn: AsyncConnection[Any],
    *,
    kind: EventKindName | None,
    geofence_id: int | None,
    enabled: bool | None,
    cursor: str | None,
    limit: int,
) -> EventRulePage:
    """A page of rules in id order, filtered by kind, fence and enabled."""
    filters = pagination.fingerprint(
        {"list": "event_rules", "kind": kind, "geofence_id": geofence_id, "enabled": enabled}
    )
    after_id = 0
    if cursor is not None:
        (last_id,) = pagination.decode_cursor(cursor, (int,), filters).key
        assert isinstance(last_id, int)  # the shape says so
        after_id = last_id
    rows = await repository.list_rules(
        conn,
        kind=None if kind is None else kind.value,
        geofence_id=geofence_id,
        enabled=enabled,
        after_id=after_id,
        limit=limit + 1,  # one more tells whether a next page exists
    )
    page = pagination.next_page(rows, limit, lambda rule: (rule.id,), filters)
    return EventRulePage(items=[_view(rule) for rule in page.rows], next_cursor=page.next_cursor)
