"""The worker's settings: the shared `FREECAR_*` ones plus `FREECAR_NOTIFY_*` for notifications."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from core.settings import Settings

if TYPE_CHECKING:
    from celery import Celery  # type: ignore[import-untyped] # celery ships no type hints

# A comma-separated list in the environment (`a@x.com,b@x.com`), not JSON.
CommaList = Annotated[list[str], NoDecode]


class WorkerSettings(Settings):
    """Everything `freecar worker` reads from the environment (prefix `FREECAR_`)."""

    notify_smtp_host: str | None = None
    """FREECAR_NOTIFY_SMTP_HOST: the mail relay that sends ops emails (none: no emails)."""
    notify_smtp_port: int = Field(default=25, ge=1, le=65_535)
    notify_smtp_starttls: bool = False
    """FREECAR_NOTIFY_SMTP_STARTTLS: upgrade the connection with STARTTLS (do, off localhost)."""
    notify_smtp_user: str | None = None
    notify_smtp_password: SecretStr | None = None
    notify_email_from: str = "FreeCar <freecar@localhost>"
    notify_ops_emails: CommaList = Field(default_factory=list)
    """FREECAR_NOTIFY_OPS_EMAILS: comma-separated addresses of the operations team."""
    notify_webhook_url: str | None = None
    """FREECAR_NOTIFY_WEBHOOK_URL: the operator's endpoint that receives signed JSON events."""
    notify_webhook_secret: SecretStr | None = None
    """FREECAR_NOTIFY_WEBHOOK_SECRET: the HMAC-SHA256 key shared with the receiver."""
    notify_ops_phones: CommaList = Field(default_factory=list)
    """FREECAR_NOTIFY_OPS_PHONES: who gets `ops_sms` (through the SMS provider)."""
    notify_ops_push_targets: CommaList = Field(default_factory=list)
    """FREECAR_NOTIFY_OPS_PUSH_TARGETS: device tokens or topics that get `ops_push`."""
    # A relay or receiver slower than this is treated as down (a transient error, retried).
    notify_smtp_timeout_s: float = Field(default=10.0, gt=0, le=120)
    notify_webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Eight tries with exponential backoff (1 s doubling, capped at 10 min) span about half
    # an hour: a relay restart or a receiver's deploy, not a day-long outage.
    notify_max_attempts: int = Field(default=8, ge=1, le=50)
    notify_retry_backoff_max_s: int = Field(default=600, ge=1)
    # The sweep re-queues events older than this that are still not notified (the hub's
    # own hand-off had a minute to arrive), up to `notify_pending_max_age_s`: an alarm a day
    # old is history, not news.
    notify_pending_after_s: float = Field(default=60.0, ge=0)
    notify_pending_max_age_s: float = Field(default=86_400.0, gt=0)
    # On SIGTERM, tasks in hand may run this long before they are put back in the queue
    # for the next worker. 6 s finishes a notification on a working relay and fits the
    # 10 s a supervisor (the demo's, Docker's default) waits before SIGKILL.
    worker_shutdown_grace_s: float = Field(default=6.0, ge=0, le=600)
    """FREECAR_WORKER_SHUTDOWN_GRACE_S: how long a stopping worker lets tasks finish."""

    @field_validator(
        "notify_ops_emails", "notify_ops_phones", "notify_ops_push_targets", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:  # noqa: ANN401 - raw environment input
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _emails_need_a_relay(self) -> Self:
        # No default relay: mail goes only through a server the operator named.
        if self.notify_ops_emails and not self.notify_smtp_host:
            raise ValueError(
                "FREECAR_NOTIFY_OPS_EMAILS needs FREECAR_NOTIFY_SMTP_HOST: the mail relay "
                "that sends them"
            )
        return self

    @model_validator(mode="after")
    def _webhook_needs_a_secret(self) -> Self:
        if self.notify_webhook_url and self.notify_webhook_secret is None:
            raise ValueError(
                "FREECAR_NOTIFY_WEBHOOK_URL needs FREECAR_NOTIFY_WEBHOOK_SECRET: receivers "
                "verify every delivery's signature"
            )
        return self


def worker_settings(app: Celery) -> WorkerSettings:
    """The settings of the app running a task: its own, or read from the environment once."""
    found = getattr(app, "freecar_settings", None)
    if isinstance(found, WorkerSettings):
        return found
    settings = WorkerSettings()
    app.freecar_settings = settings
    return settings
