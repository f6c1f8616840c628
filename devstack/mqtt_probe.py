"""The smallest MQTT 3.1.1 client there is: CONNECT, read CONNACK, DISCONNECT.

Used to tell when a broker is ready, which means it accepts our credentials, not merely
that its port is open. Standard library only.
"""

from __future__ import annotations

import secrets
import socket
import struct

from devstack.ports import LOOPBACK

CONNECT = 0x10
CONNACK = 0x20
DISCONNECT = b"\xe0\x00"
PROTOCOL_LEVEL_311 = 4
CLEAN_SESSION = 0x02
PASSWORD_FLAG = 0x40
USERNAME_FLAG = 0x80
# A probe lives for a few milliseconds; the broker may drop it after this many seconds.
KEEPALIVE = 10
CONNACK_ACCEPTED = 0


def _utf8(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!H", len(data)) + data


def _remaining_length(length: int) -> bytes:
    encoded = bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(encoded)


def connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    """An MQTT 3.1.1 CONNECT packet with a clean session."""
    flags = CLEAN_SESSION
    payload = _utf8(client_id)
    if username is not None:
        flags |= USERNAME_FLAG
        payload += _utf8(username)
        if password is not None:
            flags |= PASSWORD_FLAG
            payload += _utf8(password)
    variable = _utf8("MQTT") + bytes([PROTOCOL_LEVEL_311, flags]) + struct.pack("!H", KEEPALIVE)
    body = variable + payload
    return bytes([CONNECT]) + _remaining_length(len(body)) + body


def connack_code(
    port: int,
    username: str | None = None,
    password: str | None = None,
    *,
    host: str = LOOPBACK,
    timeout: float = 2.0,
) -> int | None:
    """The CONNACK return code the broker answers with (0 = accepted), or None if none came."""
    client_id = f"devstack-probe-{secrets.token_hex(4)}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(connect_packet(client_id, username, password))
            reply = b""
            while len(reply) < 4:
                chunk = conn.recv(4 - len(reply))
                if not chunk:
                    return None
                reply += chunk
            if reply[0] != CONNACK:
                return None
            if reply[3] == CONNACK_ACCEPTED:
                conn.sendall(DISCONNECT)
            return reply[3]
    except OSError:
        return None
