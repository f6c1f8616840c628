"""/v1/admin/event-rules: what the hub does when it raises an event (fleet managers, admins).

Hubs reload the rules by themselves: a trigger NOTIFYs them when the request commits, and
the next event a hub stores follows the new rules.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from api.deps import Conn, admin_network_guard
from api.errors import error_responses
from api.event_rules import service
from api.event_rules.auth import EventRuleManager
from api.event_rules.schemas import EventRule, EventRuleCreate, EventRulePage, EventRuleUpdate
from api.pagination import CURSOR_RESPONSES, CursorQuery
from db.event_rules import EventKindName

admin_router = APIRouter(
    prefix="/admin/event-rules",
    tags=["events"],
    dependencies=[Depends(admin_network_guard)],
    responses=error_responses(401, 403),
)

# The table holds one default rule per kind and at most one rule per kind and fence: a
# few dozen rows in practice, so the default page usually holds them all. 500 bounds one
# query all the same, since a fleet with many fences could give each of them rules.
DEFAULT_PAGE = 100
MAX_PAGE = 500

RuleId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The rule's id.")]


@admin_router.post(
    "",
    summary="Create an event rule",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409),
)
async def create_event_rule(
    staff: EventRuleManager, conn: Conn, body: EventRuleCreate
) -> EventRule:
    """Store a rule; hubs follow it from their next event on. Staff only.

    Without `geofence_id` the rule is its kind's default; with one, it decides for events
    at that fence instead of the default (only fence crossings carry a fence today; see
    docs/events.md). Refusals, all 409: `rule_exists` (the kind, or the kind and fence,
    already has a rule: `details.id` names it, change that one), `unknown_geofence`,
    `command_not_allowed` (a rule never issues `unlock` or `mobilize`).
    """
    return await service.create_rule(conn, staff, body)


@admin_router.get("", summary="List event rules", responses=CURSOR_RESPONSES)
async def list_event_rules(  # noqa: PLR0913 - one per filter
    *,
    _staff: EventRuleManager,
    conn: Conn,
    kind: EventKindName | None = None,
    geofence_id: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="Only the rules of this fence.")
    ] = None,
    enabled: bool | None = None,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> EventRulePage:
    """In id order, optionally of one kind, one fence, or only (not) enabled. Staff only.

    Keep the same filters while following `next_cursor` (409 `invalid_cursor` otherwise).
    """
    return await service.list_rules(
        conn, kind=kind, geofence_id=geofence_id, enabled=enabled, cursor=cursor, limit=limit
    )


@admin_router.get("/{rule_id}", summary="Get an event rule", responses=error_responses(404))
async def get_event_rule(_staff: EventRuleManager, conn: Conn, rule_id: RuleId) -> EventRule:
    """One rule, enabled or not. Staff only."""
    return await service.get_rule(conn, rule_id)


@admin_router.patch(
    "/{rule_id}", summary="Change an event rule", responses=error_responses(404, 409)
)
async def update_event_rule(
    staff: EventRuleManager, conn: Conn, rule_id: RuleId, body: EventRuleUpdate
) -> EventRule:
    """Change some fields; hubs follow the change from their next event on. Staff only.

    `"enabled": false` keeps the rule deciding, for nothing: a disabled fence rule silences
    its kind at that fence. The refusals are those of a new rule (409 `rule_exists`,
    `unknown_geofence`, `command_not_allowed`).
    """
    return await service.update_rule(conn, staff, rule_id, body)


@admin_router.delete(
    "/{rule_id}",
    summary="Delete an event rule",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(404),
)
async def delete_event_rule(staff: EventRuleManager, conn: Conn, rule_id: RuleId) -> None:
    """Delete a rule. Staff only.

    A fence rule's kind falls back to its default rule at that fence. Deleting a kind's
    default rule is allowed: events of that kind then notify nobody and command nothing
    (wherever no fence rule decides), until a new default rule is created. Deleting a
    geofence deletes its rules.
    """
    await service.delete_rule(conn, staff, rule_id)
