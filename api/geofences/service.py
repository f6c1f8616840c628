"""Creating, changing, listing and deleting geofences. Nothing here commits.

Every definition that reaches the database went through `GeofenceSpec`, whether it came
whole (create) or as a PATCH merged with the stored spec: the merge is validated as a whole,
so a change that only makes sense with another (a circle turned polygon) must come with it.
What the spec refuses answers 409 `invalid_geofence`, its details listing every problem
with a stable code (`ring_not_closed`, `too_large`, `radius_required`...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import JsonValue, ValidationError

from api import pagination
from api.errors import ConflictError, NotFoundError
from api.geofences import repository
from api.geofences.schemas import Geofence, GeofencePage
from db.geofences.model import GeofenceKind, GeofenceSpec

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from api.geofences.repository import GeofenceRow
    from api.geofences.schemas import GeofenceCreate, GeofenceUpdate


# Semantic refusals of schema-valid input are 409 in this API (as `invalid_window`,
# `vin_check_digit`): 422 means "the schema says no", and no schema can say that a ring is
# not closed or crosses itself.
class GeofenceInvalidError(ConflictError):
    """The definition is not a usable geofence; each detail's `type` is a stable code."""

    code = "invalid_geofence"
    default_message = "the geofence is not valid"


class GeofenceNotFoundError(NotFoundError):
    """No geofence with this id."""

    default_message = "geofence not found"


def _spec(fields: dict[str, Any]) -> GeofenceSpec:
    try:
        return GeofenceSpec.model_validate(fields)
    except ValidationError as error:
        problems: list[JsonValue] = [
            {
                "loc": ["body", *(str(part) for part in detail["loc"])],
                "message": str(detail["msg"]),
                "type": str(detail["type"]),
            }
            for detail in error.errors()
        ]
        raise GeofenceInvalidError(details=problems) from None


def _view(fence: GeofenceRow) -> Geofence:
    return Geofence(
        id=fence.id,
        name=fence.name,
        kind=GeofenceKind(fence.kind),  # the table's CHECK allows only these
        geometry=fence.geometry,
        radius_m=fence.radius_m,
        width_m=fence.width_m,
        speed_limit_kmh=fence.speed_limit_kmh,
        schedule=fence.schedule,
        enter_margin_m=fence.enter_margin_m,
        exit_margin_m=fence.exit_margin_m,
        dwell_s=fence.dwell_s,
        active=fence.active,
        created_at=fence.created_at,
        updated_at=fence.updated_at,
    )


async def create_geofence(conn: AsyncConnection[Any], body: GeofenceCreate) -> Geofence:
    """Validate and store a new geofence."""
    return _view(await repository.insert_geofence(conn, _spec(body.fields())))


async def get_geofence(conn: AsyncConnection[Any], geofence_id: int) -> Geofence:
    """One geofence, active or not."""
    fence = await repository.get_geofence(conn, geofence_id)
    if fence is None:
        raise GeofenceNotFoundError
    return _view(fence)


async def update_geofence(
    conn: AsyncConnection[Any], geofence_id: int, body: GeofenceUpdate
) -> Geofence:
    """Merge the changes into the stored spec, validate the whole, store it."""
    stored = await repository.get_geofence(conn, geofence_id, for_update=True)
    if stored is None:
        raise GeofenceNotFoundError
    merged = {**stored.fields(), **body.changes()}
    updated = await repository.update_geofence(conn, geofence_id, _spec(merged))
    assert updated is not None  # locked above, so still there
    return _view(updated)


async def delete_geofence(conn: AsyncConnection[Any], geofence_id: int) -> None:
    """Delete a geofence; its events stay, with no fence."""
    if not await repository.delete_geofence(conn, geofence_id):
        raise GeofenceNotFoundError


async def list_geofences(
    conn: AsyncConnection[Any],
    *,
    kind: GeofenceKind | None,
    active: bool | None,
    cursor: str | None,
    limit: int,
) -> GeofencePage:
    """A page of geofences in id order, filtered by kind and activity."""
    filters = pagination.fingerprint({"list": "geofences", "kind": kind, "active": active})
    after_id = 0
    if cursor is not None:
        (last_id,) = pagination.decode_cursor(cursor, (int,), filters).key
        assert isinstance(last_id, int)  # the shape says so
        after_id = last_id
    rows = await repository.list_geofences(
        conn,
        kind=kind,
        active=active,
        after_id=after_id,
        limit=limit + 1,  # one more tells whether a next page exists
    )
    page = pagination.next_page(rows, limit, lambda fence: (fence.id,), filters)
    return GeofencePage(items=[_view(fence) for fence in page.rows], next_cursor=page.next_cursor)
