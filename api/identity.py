"""Who is calling: roles, account states and the authenticated principal every domain sees."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import uuid


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


def is_loopback(ip: IPv4Address | IPv6Address | None) -> bool:
    """Whether `ip` is this machine (127.0.0.0/8, ::1, or ::ffff:127.x.y.z)."""
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip is not None and ip.is_loopback


def is_loopback_host(host: str) -> bool:
    """Whether binding `host` listens on this machine only (`localhost` or a loopback IP)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return is_loopback(ip_address(host.strip().strip("[]")))
    except ValueError:
        return False  # another host name: it may resolve to any interface


@dataclass(frozen=True, slots=True)
class Client:
    """Where a request comes from, for session records and the audit trail."""

    ip: IPv4Address | IPv6Address | None
    user_agent: str
    request_id: str

    @property
    def is_local(self) -> bool:
        """Whether the request comes from this machine (a loopback address)."""
        return is_loopback(self.ip)
