"""Parse `mqtt://user:pass@host:port` URLs into the parts an MQTT client needs."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class BrokerUrlError(ValueError):
    """The MQTT URL is not of the form mqtt[s]://[user[:password]@]host[:port]."""


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where an MQTT broker listens and how to log in to it."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        """Parse a broker URL, refusing schemes other than mqtt and mqtts."""
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise BrokerUrlError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
        if not parts.hostname:
            raise BrokerUrlError(f"MQTT URL has no host: {url!r}")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError as exc:
            raise BrokerUrlError(f"MQTT URL has an invalid port: {url!r}") from exc
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=parts.scheme == "mqtts",
        )

    def redacted(self) -> str:
        """Render the URL with the password hidden, for logs and banners."""
        scheme = "mqtts" if self.tls else "mqtt"
        auth = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{auth}{self.host}:{self.port}"
