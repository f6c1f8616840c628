"""How notifications leave: SMTP email, a signed webhook, SMS and push providers, the rider.

Each sender raises `TransientDeliveryError` for what a retry may fix (a relay that does not
answer, a 5xx, a timeout) and `PermanentDeliveryError` for what it cannot (a refused
address, a 4xx): the task retries the first kind with backoff and records the second.
"""

from __future__ import annotations

import contextlib
import json
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any, Final, Protocol

import httpx

from db.event_rules import Channel
from worker.notifications.signing import EVENT_ID_HEADER, sign

if TYPE_CHECKING:
    import psycopg

    from worker.notifications.repository import EventRow
    from worker.notifications.templates import Message
    from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

# HTTP answers worth retrying: the receiver is overloaded, restarting or timed out.
RETRYABLE_HTTP: Final = frozenset({408, 425, 429})


class DeliveryError(Exception):
    """A notification was not delivered."""


class TransientDeliveryError(DeliveryError):
    """Not delivered now; a later attempt may succeed."""


class PermanentDeliveryError(DeliveryError):
    """Not delivered, and trying again would not help."""


# --- email -------------------------------------------------------------------------------------


def _smtp_error(exc: Exception) -> DeliveryError:
    """Classify an SMTP failure: 4xx replies and lost connections are worth a retry."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        if codes and all(400 <= code < 500 for code in codes):
            return TransientDeliveryError(f"recipient deferred: {exc.recipients}")
        return PermanentDeliveryError(f"recipient refused: {exc.recipients}")
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
        message = f"SMTP {exc.smtp_code} {text}".strip()
        if 400 <= exc.smtp_code < 500:
            return TransientDeliveryError(message)
        return PermanentDeliveryError(message)
    # SMTPServerDisconnected, SMTPConnectError's kin, refused connections, timeouts, TLS.
    return TransientDeliveryError(f"{type(exc).__name__}: {exc}")


class EmailSender:
    """Plain-text mail through the configured SMTP relay, one message per recipient."""

    def __init__(self, settings: WorkerSettings) -> None:
        self._settings = settings

    def send(self, to: str, event: EventRow, message: Message) -> None:
        """Send one email; raise a DeliveryError saying whether to retry."""
        s = self._settings
        mail = EmailMessage()
        mail["Subject"] = message.subject
        mail["From"] = s.notify_email_from
        mail["To"] = to
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid(idstring=f"event-{event.id}")
        mail[EVENT_ID_HEADER] = str(event.id)
        mail.set_content(message.body)
        if s.notify_smtp_host is None:  # settings refuse ops emails without a relay
            raise PermanentDeliveryError("no SMTP relay configured (FREECAR_NOTIFY_SMTP_HOST)")
        try:
            smtp = smtplib.SMTP(
                s.notify_smtp_host, s.notify_smtp_port, timeout=s.notify_smtp_timeout_s
            )
        except (smtplib.SMTPException, OSError) as exc:
            raise _smtp_error(exc) from exc
        try:
            if s.notify_smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.notify_smtp_user:
                password = s.notify_smtp_password
                smtp.login(s.notify_smtp_user, password.get_secret_value() if password else "")
            smtp.send_message(mail, to_addrs=[to])
        except (smtplib.SMTPException, OSError) as exc:
            raise _smtp_error(exc) from exc
        else:
            # The relay has the message: a failed goodbye must not make the task send it again.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
        finally:
            # Without a QUIT on failure or interruption (a stopping worker): a stalled relay
            # would hold the process for its whole timeout before letting it go.
            smtp.close()


# --- webhook -----------------------------------------------------------------------------------


def webhook_payload(event: EventRow, message: Message) -> dict[str, Any]:
    """The JSON the operator's endpoint receives for one event."""
    return {
        "type": "event",
        "id": event.id,
        "kind": event.kind,
        "vehicle_id": event.vehicle_id,
        "plate": event.plate,
        "ts": event.ts.isoformat(),
        "lat": event.lat,
        "lon": event.lon,
        "geofence_id": event.geofence_id,
        "details": event.details,
        "subject": message.subject,
        "text": message.body,
    }


class WebhookSender:
    """POSTs signed JSON to the operator's URL."""

    def __init__(self, settings: WorkerSettings, client: httpx.Client | None = None) -> None:
        self._settings = settings
        # No redirects: the signature is for this URL, and a redirect is a misconfiguration.
        self._client = client or httpx.Client(
            timeout=settings.notify_webhook_timeout_s, follow_redirects=False
        )

    def send(self, url: str, event: EventRow, message: Message) -> None:
        """POST the event; raise a DeliveryError saying whether to retry."""
        secret = self._settings.notify_webhook_secret
        if secret is None:
            raise PermanentDeliveryError("no FREECAR_NOTIFY_WEBHOOK_SECRET to sign with")
        body = json.dumps(
            webhook_payload(event, message), separators=(",", ":"), sort_keys=True, default=str
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "FreeCar-Webhook/1",
            EVENT_ID_HEADER: str(event.id),
            **sign(secret.get_secret_value().encode(), body),
        }
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:  # timeouts, refused connections, broken responses
            raise TransientDeliveryError(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        error = f"HTTP {status}: {response.text[:200]}"
        if status >= 500 or status in RETRYABLE_HTTP:
            raise TransientDeliveryError(error)
        raise PermanentDeliveryError(error)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


# --- SMS and push --------------------------------------------------------------------------------


class TextProvider(Protocol):
    """An SMS or push gateway: one short text to one target, or a DeliveryError."""

    def send(self, target: str, event: EventRow, message: Message) -> None:
        """Deliver `message` to `target` (a phone number, a device token, a user)."""


class LoggingProvider:
    """Development stand-in for an SMS or push gateway: logs what it would send."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[tuple[str, str]] = []

    def send(self, target: str, event: EventRow, message: Message) -> None:
        """Log the message instead of sending it."""
        log.info("%s to %s about event %d: %s", self.name, target, event.id, message.subject)
        self.sent.append((target, message.subject))


# --- the rider ------------------------------------------------------------------------------------


def rider_on_trip(conn: psycopg.Connection[Any], event: EventRow) -> str | None:
    """The rider with an active trip on the event's vehicle (a push target), or None.

    There are no trips yet, so nobody is: this is the hook the trips issue fills in (look
    up the trip under way on `event.vehicle_id` at `event.ts` and return `user:<id>`).
    """
    del conn, event
    return None


class Senders:
    """Every channel's sender and who it reaches; the task makes one per run."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        sms: TextProvider | None = None,
        push: TextProvider | None = None,
    ) -> None:
        self.settings = settings
        self.email = EmailSender(settings)
        self.webhook = WebhookSender(settings)
        self.sms: TextProvider = sms or LoggingProvider("sms")
        self.push: TextProvider = push or LoggingProvider("push")

    def targets(
        self, conn: psycopg.Connection[Any], channel: Channel, event: EventRow
    ) -> list[str]:
        """Who the channel reaches for this event (empty: nobody configured)."""
        s = self.settings
        match channel:
            case Channel.OPS_EMAIL:
                return list(s.notify_ops_emails)
            case Channel.OPS_WEBHOOK:
                return [s.notify_webhook_url] if s.notify_webhook_url else []
            case Channel.OPS_SMS:
                return list(s.notify_ops_phones)
            case Channel.OPS_PUSH:
                return list(s.notify_ops_push_targets)
            case Channel.RIDER:
                rider = rider_on_trip(conn, event)
                return [] if rider is None else [rider]

    def send(self, channel: Channel, target: str, event: EventRow, message: Message) -> None:
        """Deliver through one channel to one target."""
        match channel:
            case Channel.OPS_EMAIL:
                self.email.send(target, event, message)
            case Channel.OPS_WEBHOOK:
                self.webhook.send(target, event, message)
            case Channel.OPS_SMS:
                self.sms.send(target, event, message)
            case Channel.OPS_PUSH | Channel.RIDER:
                self.push.send(target, event, message)

    def close(self) -> None:
        """Release connections."""
        self.webhook.close()
