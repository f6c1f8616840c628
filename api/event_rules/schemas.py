"""Request and response bodies of /v1/admin/event-rules.

The bodies check types and ranges, and that no channel is named twice; what only the stored
rules can tell (is there already a rule for this kind and fence, does the fence exist) and
which commands a rule may issue are checked by the service, and answer 409.
"""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 - pydantic reads the annotations at runtime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.schemas import Keep, PatchBody
from db.event_rules import Channel, EventKindName
from protocol.commands import Action


def _no_duplicates(channels: list[Channel]) -> list[Channel]:
    twice = sorted({c.value for c in channels if channels.count(c) > 1})
    if twice:
        raise ValueError(f"channels named more than once: {', '.join(twice)}")
    return channels


Channels = Annotated[
    list[Channel],
    # Each channel at most once, so never more than there are.
    Field(
        max_length=len(Channel),
        json_schema_extra={"uniqueItems": True},
        description="Who is told; each channel at most once. Empty: nobody.",
        examples=[["ops_email", "ops_webhook"]],
    ),
    AfterValidator(_no_duplicates),
]
GeofenceRef = Annotated[
    int,
    Field(ge=1, le=2**63 - 1, description="The geofence whose events this rule decides."),
]
Command = Annotated[
    Action,
    Field(description="What the hub commands the car to do; `unlock` and `mobilize` refused."),
]


class EventRuleCreate(BaseModel):
    """A new rule: the kind's default (no `geofence_id`) or the kind's rule at one fence."""

    model_config = ConfigDict(extra="forbid")

    kind: EventKindName
    geofence_id: GeofenceRef | None = Field(
        default=None,
        description="null: the kind's default rule, for events at fences without their own.",
    )
    channels: Channels = []
    command: Command | None = None
    enabled: bool = Field(default=True, description="A disabled rule decides too: nothing.")


class EventRuleUpdate(PatchBody):
    """A PATCH: the fields sent replace the stored ones.

    `"geofence_id": null` makes the rule its kind's default; `"command": null` removes it.
    """

    model_config = ConfigDict(extra="forbid")

    kind: EventKindName | Keep = None
    geofence_id: GeofenceRef | None = None
    channels: Channels | Keep = None
    command: Command | None = None
    enabled: bool | Keep = None

    def changes(self) -> dict[str, Any]:
        """Only the fields the client sent, as stored (enums as their names)."""
        return self.model_dump(mode="json", exclude_unset=True)


class EventRule(BaseModel):
    """A stored rule."""

    id: int
    kind: str = Field(
        description="One of the kinds in docs/events.md (a rule written with SQL may name "
        "another, which no event matches)."
    )
    geofence_id: int | None = Field(description="null: the kind's default rule.")
    channels: list[Channel]
    command: Action | None
    enabled: bool
    created_at: datetime
    updated_at: datetime


class EventRulePage(BaseModel):
    """A page of rules in id order."""

    items: list[EventRule]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )
