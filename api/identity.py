"""Who is calling: roles, account states and the authenticated principal every domain sees."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import uuid
    from ipaddress import IPv4Address, IPv6Address


class Role(StrEnum):
    """What an account may do; checked per endpoint by dependency."""

    CUSTOMER = "customer"
    FLEET_MANAGER = "fleet_manager"
    ADMIN = "admin"

    @property
    def is_staff(self) -> bool:
        """Fleet managers and admins."""
        return self is not Role.CUSTOMER


STAFF_ROLES: Final = frozenset({Role.FLEET_MANAGER, Role.ADMIN})


class UserStatus(StrEnum):
    """Whether an account may sign in; suspending one also ends its sessions."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class Principal:
    """The signed-in user of a request, after its token and its session were checked."""

    user_id: uuid.UUID
    role: Role
    session_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Client:
    """Where a request comes from, for session records and the audit trail."""

    ip: IPv4Address | IPv6Address | None
    user_agent: str
    request_id: str
