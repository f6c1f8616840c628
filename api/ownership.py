"""Ownership checks for rider resources: someone else's resource does not exist for you.

Every rider resource (sessions now; bookings, trips, payments later) is fetched by id and
then passed through `owned_or_404`. A rider asking for another rider's resource gets the
same 404 as for an id that does not exist, so ids cannot be probed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

from api.errors import NotFoundError

if TYPE_CHECKING:
    import uuid

    from api.identity import Principal


class Owned(Protocol):
    """Anything that belongs to one user."""

    @property
    def user_id(self) -> uuid.UUID:
        """The owner's user id."""
        ...


OwnedT = TypeVar("OwnedT", bound=Owned)


def owned_or_404(
    resource: OwnedT | None, principal: Principal, what: str, *, staff_may_see: bool = False
) -> OwnedT:
    """`resource` if `principal` owns it (or is staff and staff may see it), else NotFoundError."""
    if resource is not None and (
        resource.user_id == principal.user_id or (staff_may_see and principal.role.is_staff)
    ):
        return resource
    raise NotFoundError(f"{what} not found")
