"""Free TCP ports on the loopback interface."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a port the kernel just reported free on `host`.

    The kernel picks from its ephemeral range (32768-60999 on Linux), so the standard
    ports of services already running on the machine (5432, 6379, 1883) never come back.
    Another process may still take the port before the service binds it; services detect
    that and retry with a new port on their first start.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def accepts_connections(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Whether something listens on `host:port` right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
