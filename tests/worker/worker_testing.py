"""Helpers for the worker tests: a real SMTP server, a webhook receiver, events to notify.

Every wait is bounded (poll until a condition holds or a timeout passes).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import http.server
import socket
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import psycopg
from aiosmtpd.controller import Controller

from worker.notifications.signing import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify,
)
from worker.settings import WorkerSettings

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session

WEBHOOK_SECRET = "test-webhook-secret-0123456789"
OPS_EMAILS = ["ops1@fleet.example", "ops2@fleet.example"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class SmtpSink:
    """An aiosmtpd server on a free loopback port that keeps every message it accepts.

    Clearing `gate` holds every new recipient (before any message is sent) until it is set
    again: a delivery caught in flight. `held` is set once one is waiting.
    """

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook and its signature
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        del server, session, rcpt_options
        if not self.gate.is_set():
            self.held.set()
            # The server's own loop: wait without blocking it, bounded by the test's gate.
            while not self.gate.is_set():  # noqa: ASYNC110 - a threading.Event, set by the test
                await asyncio.sleep(0.02)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        del server, session
        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for rcpts, m in self.messages if address in rcpts]


@dataclass(frozen=True, slots=True)
class Received:
    """One request the webhook receiver got."""

    body: bytes
    headers: dict[str, str]
    genuine: bool
    status: int


class WebhookReceiver:
    """A local HTTP endpoint that checks the signature; answers from `script`, then 200."""

    def __init__(self, secret: str = WEBHOOK_SECRET) -> None:
        self.secret = secret.encode()
        self.script: list[int] = []
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                genuine = verify(
                    receiver.secret,
                    self.headers.get(TIMESTAMP_HEADER, ""),
                    body,
                    self.headers.get(SIGNATURE_HEADER, ""),
                )
                with receiver._lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                    if not genuine:
                        status = 401
                    receiver.received.append(Received(body, dict(self.headers), genuine, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass  # quiet: the test reads `received`

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/freecar/events"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def for_event(self, event_id: int) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.headers.get(EVENT_ID_HEADER) == str(event_id)]


def worker_settings(
    database_url: str,
    redis_url: str,
    *,
    smtp: SmtpSink | None = None,
    webhook: WebhookReceiver | None = None,
    **overrides: Any,
) -> WorkerSettings:
    """Settings for a test worker: the test SMTP server and webhook receiver, quick timeouts."""
    values: dict[str, Any] = {
        "env": "test",
        "database_url": database_url,
        "redis_url": redis_url,
        "notify_smtp_host": "127.0.0.1",
        "notify_smtp_port": smtp.port if smtp else free_port(),
        "notify_ops_emails": list(OPS_EMAILS),
        "notify_email_from": "FreeCar <alerts@fleet.example>",
        "notify_smtp_timeout_s": 5.0,
        "notify_webhook_timeout_s": 5.0,
        "notify_max_attempts": 4,
    }
    if webhook is not None:
        values["notify_webhook_url"] = webhook.url
        values["notify_webhook_secret"] = WEBHOOK_SECRET
    values.update(overrides)
    return WorkerSettings(**values)


def insert_event(
    url: str,
    vehicle_id: str,
    kind: str,
    *,
    details: dict[str, Any] | None = None,
    notify: bool = True,
    age_s: float = 0.0,
    geofence_id: int | None = None,
) -> int:
    """Store an event as the hub would; `age_s` backdates it (for the sweep)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "INSERT INTO events (vehicle_id, kind, ts, lat, lon, geofence_id, details, notify,"
            " created_at) VALUES (%s, %s, now() - make_interval(secs => %s), 31.23, 121.47,"
            " %s, %s, %s, now() - make_interval(secs => %s)) RETURNING id",
            (
                vehicle_id,
                kind,
                age_s,
                geofence_id,
                psycopg.types.json.Jsonb(details or {}),
                notify,
                age_s,
            ),
        ).fetchone()
    assert row is not None
    return int(row[0])


def deliveries(url: str, event_id: int) -> dict[tuple[str, str], tuple[str, int]]:
    """(channel, target) -> (status, attempts) of an event's notifications."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT channel, target, status, attempts FROM notification_deliveries"
            " WHERE event_id = %s",
            (event_id,),
        ).fetchall()
    return {(str(c), str(t)): (str(s), int(a)) for c, t, s, a in rows}


def notified(url: str, event_id: int) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT notified_at FROM events WHERE id = %s", (event_id,)).fetchone()
    assert row is not None
    return row[0] is not None
