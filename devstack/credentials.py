"""Per-stack MQTT logins: generated at start, never stored in the repository."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import quote

from devstack.ports import LOOPBACK

SERVICE_USERNAME = "freecar"
"""What the hub, the tests and the demo log in as: may use every fleet topic, under any client id.

Never give it to a car: unlike the logins made through the admin, it is not bound to a
client id, so whoever holds it can take over any client's session.
"""
ADMIN_USERNAME = "admin"
"""May use Mosquitto's `$CONTROL/dynamic-security/#` API to provision vehicles and hubs."""
# 24 random bytes: far beyond guessing, and URL-safe so URLs need no escaping.
PASSWORD_BYTES = 24


@dataclass(frozen=True, slots=True)
class Login:
    """A username and its password."""

    username: str
    password: str = ""

    @classmethod
    def generate(cls, username: str) -> Login:
        """A login for `username` with a fresh random password."""
        return cls(username, secrets.token_urlsafe(PASSWORD_BYTES))

    def url(self, port: int, host: str = LOOPBACK) -> str:
        """`mqtt://user:password@host:port`."""
        return (
            f"mqtt://{quote(self.username, safe='')}:{quote(self.password, safe='')}@{host}:{port}"
        )


@dataclass(frozen=True, slots=True)
class BrokerLogins:
    """The two logins every devstack broker accepts."""

    service: Login
    admin: Login

    @classmethod
    def generate(cls) -> BrokerLogins:
        """Fresh passwords for both logins."""
        return cls(Login.generate(SERVICE_USERNAME), Login.generate(ADMIN_USERNAME))
