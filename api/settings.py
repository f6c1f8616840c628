"""The API's settings: the shared `FREECAR_*` connection settings plus `FREECAR_API_*`."""

from __future__ import annotations

import json
import re
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any, Self

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from api.auth.keys import TokenKey, parse_token_keys
from api.fleet.settings import FleetSettings
from core.filestore.settings import FileStoreSettings
from core.settings import Environment

# Per-endpoint budgets, on top of the per-IP and per-user ones: signing in and refreshing
# are what a credential-stuffing script hammers, so they get tight budgets per client. Keys
# are endpoint names (the handler's name, as in the OpenAPI operation ids).
DEFAULT_ENDPOINT_BUDGETS: dict[str, str] = {
    "wechat_sign_in": "10/minute;100/hour",
    "staff_sign_in": "10/minute;50/hour",
    "dev_login": "30/minute",
    "refresh": "30/minute",
}
_ENDPOINT_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def _split_commas(value: Any) -> Any:  # noqa: ANN401 - raw environment input, checked by pydantic after
    """Accept `a,b,c` as well as a JSON list for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class ApiSettings(FleetSettings, FileStoreSettings):
    """Everything `freecar api` reads from the environment (prefix `FREECAR_`)."""

    api_host: str = "127.0.0.1"
    """FREECAR_API_HOST: the address uvicorn binds."""
    api_port: int = Field(default=8000, ge=1, le=65_535)
    """FREECAR_API_PORT: the port uvicorn binds."""
    api_public_url: str = ""
    """FREECAR_API_PUBLIC_URL: how clients reach the API; default http://host:port."""
    # Behind a load balancer, the addresses whose X-Forwarded-For uvicorn trusts; the client
    # IP (rate limits, the admin allow-list, session records) comes from there.
    api_forwarded_allow_ips: str = "127.0.0.1"
    """FREECAR_API_FORWARDED_ALLOW_IPS: proxies trusted for X-Forwarded-For/Proto."""

    api_token_keys: SecretStr = SecretStr("")
    """FREECAR_API_TOKEN_KEYS: PASERK `k4.local.` keys, comma-separated; the first signs.

    Every listed key is accepted, so a key is rotated by putting the new one first and
    removing the old one after an access-token lifetime. Empty in development and test
    means an ephemeral key per process; production refuses to start without one.
    """
    api_token_audience: str = Field(default="freecar-api", min_length=1)
    """FREECAR_API_TOKEN_AUDIENCE: the `aud` claim issued and required."""
    api_token_issuer: str = Field(default="freecar", min_length=1)
    """FREECAR_API_TOKEN_ISSUER: the `iss` claim issued and required."""
    # 15 minutes: short enough that a stolen access token is worth little, long enough that a
    # rider's app refreshes a few times an hour, not on every screen.
    api_access_ttl_s: int = Field(default=900, ge=30, le=3_600)
    """FREECAR_API_ACCESS_TTL_S: access-token lifetime in seconds."""
    # 30 days without opening the app signs a rider out; each refresh starts a new 30 days.
    api_refresh_ttl_s: int = Field(default=30 * 86_400, ge=300, le=365 * 86_400)
    """FREECAR_API_REFRESH_TTL_S: refresh-token (and idle session) lifetime in seconds."""
    # A session's last-seen time is written at most this often, not on every request.
    api_session_touch_s: int = Field(default=60, ge=0, le=3_600)
    """FREECAR_API_SESSION_TOUCH_S: how stale `last_seen_at` may get before it is written."""

    api_wechat_appid: str = ""
    """FREECAR_API_WECHAT_APPID: the mini-program's AppID."""
    api_wechat_secret: SecretStr = SecretStr("")
    """FREECAR_API_WECHAT_SECRET: the mini-program's AppSecret."""
    api_wechat_base_url: str = "https://api.weixin.qq.com"
    """FREECAR_API_WECHAT_BASE_URL: where `/sns/jscode2session` lives (a fake in tests)."""
    # WeChat answers in tens of milliseconds; five seconds is an outage, and the rider's
    # mini-program gives up on the sign-in call not long after.
    api_wechat_timeout_s: float = Field(default=5.0, gt=0, le=60)
    """FREECAR_API_WECHAT_TIMEOUT_S: timeout of one jscode2session call."""

    api_cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """FREECAR_API_CORS_ORIGINS: browser origins allowed to call the API (comma-separated).

    The mini-program is not a browser and needs none; an admin web UI on another origin does.
    """
    # JSON bodies of this API are small; 1 MiB leaves room for the later domains' largest
    # (a booking with notes) and refuses a body meant to exhaust memory.
    api_max_body_bytes: int = Field(default=1 << 20, ge=1_024, le=64 << 20)
    """FREECAR_API_MAX_BODY_BYTES: larger request bodies get 413."""
    api_admin_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list
    )
    """FREECAR_API_ADMIN_NETWORKS: if set, /v1/admin answers only these networks (CIDR list)."""
    api_docs: bool = True
    """FREECAR_API_DOCS: serve /docs, /redoc and /openapi.json."""
    # Development mode signs anyone in (dev login) and may sign tokens with a throwaway key:
    # `freecar api` binds it to a network address only when told so, and dev login answers
    # only loopback clients even then.
    api_allow_development_on_network: bool = False
    """FREECAR_API_ALLOW_DEVELOPMENT_ON_NETWORK: let development mode bind a non-loopback host."""

    api_rate_limits: bool = True
    """FREECAR_API_RATE_LIMITS: enforce the budgets below (off only for load tests)."""
    # Per client IP across every endpoint. Riders on mobile networks share carrier NAT
    # addresses, so this is generous: it stops a single script, not a crowd.
    api_rate_limit_ip: str = "600/minute"
    """FREECAR_API_RATE_LIMIT_IP: budget per client IP."""
    # Per signed-in user. A rider's app makes a few calls per screen; staff tools page
    # through lists and poll, so staff get more.
    api_rate_limit_customer: str = "120/minute;2000/hour"
    """FREECAR_API_RATE_LIMIT_CUSTOMER: budget per customer."""
    api_rate_limit_staff: str = "600/minute"
    """FREECAR_API_RATE_LIMIT_STAFF: budget per fleet manager or admin."""
    api_rate_limit_endpoints: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ENDPOINT_BUDGETS)
    )
    """FREECAR_API_RATE_LIMIT_ENDPOINTS: JSON {"endpoint_name": "budget"}, per user or IP."""

    # A returned car needs a look, a wipe and sometimes a charge before the next rider; 15
    # minutes is what operators schedule, and it absorbs a rider who returns a little late.
    api_booking_buffer_s: int = Field(default=900, ge=0, le=86_400)
    """FREECAR_API_BOOKING_BUFFER_S: free time kept before and after every booking."""

    # Each request holds one connection for its transaction. Ten per process serves
    # hundreds of requests a second with millisecond queries; several API processes behind
    # a load balancer share the database's max_connections (100 by default).
    api_db_pool_min: int = Field(default=1, ge=0, le=100)
    """FREECAR_API_DB_POOL_MIN: connections kept open."""
    api_db_pool_max: int = Field(default=10, ge=1, le=200)
    """FREECAR_API_DB_POOL_MAX: connections at most."""
    # A request waiting longer than this for a connection gets 503 rather than hanging.
    api_db_pool_timeout_s: float = Field(default=5.0, gt=0, le=60)
    """FREECAR_API_DB_POOL_TIMEOUT_S: wait for a free connection at most this long."""

    @field_validator("api_cors_origins", mode="before")
    @classmethod
    def _cors_list(cls, value: Any) -> Any:  # noqa: ANN401 - raw environment input
        return _split_commas(value)

    @field_validator("api_admin_networks", mode="before")
    @classmethod
    def _network_list(cls, value: Any) -> Any:  # noqa: ANN401 - raw environment input
        items = _split_commas(value)
        if isinstance(items, list):
            return [
                ip_network(item, strict=False) if isinstance(item, str) else item for item in items
            ]
        return items

    @field_validator(
        "api_rate_limit_ip", "api_rate_limit_customer", "api_rate_limit_staff", mode="after"
    )
    @classmethod
    def _budget_parses(cls, value: str) -> str:
        parse_many(value)  # ValueError names the bad string
        return value

    @field_validator("api_rate_limit_endpoints", mode="after")
    @classmethod
    def _endpoint_budgets_parse(cls, value: dict[str, str]) -> dict[str, str]:
        for endpoint, budget in value.items():
            if not _ENDPOINT_NAME.fullmatch(endpoint):
                raise ValueError(f"{endpoint!r} is not an endpoint name such as 'refresh'")
            parse_many(budget)
        return value

    @field_validator("api_token_keys", mode="after")
    @classmethod
    def _keys_parse(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value().strip():
            parse_token_keys(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _production_needs_wechat(self) -> Self:
        if self.env is Environment.PRODUCTION and not self.api_wechat_appid:
            raise ValueError("FREECAR_API_WECHAT_APPID must be set in production")
        if self.api_db_pool_min > self.api_db_pool_max:
            raise ValueError("FREECAR_API_DB_POOL_MIN exceeds FREECAR_API_DB_POOL_MAX")
        return self

    def token_keys(self) -> list[TokenKey]:
        """The configured token keys, signing key first (empty when none is configured)."""
        text = self.api_token_keys.get_secret_value()
        return parse_token_keys(text) if text.strip() else []

    @property
    def public_url(self) -> str:
        """The API's base URL as clients see it."""
        return self.api_public_url.rstrip("/") or f"http://{self.api_host}:{self.api_port}"
