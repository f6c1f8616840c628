"""Request and response bodies of /v1/auth."""

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.auth.passwords import MAX_PASSWORD_LENGTH
from api.identity import Role
from api.schemas import Email, ShortText

# wx.login() codes are short printable tokens (32 characters today); the bound only keeps
# garbage from travelling to WeChat.
WeChatCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-+/=.]{1,256}$")]
# Refresh tokens are 43 characters of base64url (32 random bytes).
RefreshToken = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
DevUsername = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$")]
Password = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PASSWORD_LENGTH)]

_DEVICE = Field(
    default=None,
    description="What the rider or staff member calls this device; shown in the session list.",
)


class WeChatSignIn(BaseModel):
    """A rider signing in from the mini-program with a `wx.login()` code."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"code": "0a3XkIll2nDpVd4hqjll2WUabA3XkIlV"}]},
    )

    code: WeChatCode
    device: ShortText | None = _DEVICE


class StaffSignIn(BaseModel):
    """A fleet manager or admin signing in with email and password."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "email": "admin@example.com",
                    "password": "correct horse battery staple",
                    "device": "ops laptop",
                }
            ]
        },
    )

    email: Email
    password: Password
    device: ShortText | None = _DEVICE


class DevLogin(BaseModel):
    """Development only: sign in as any username, no WeChat or password."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"username": "demo"}, {"username": "ops", "role": "admin"}]
        },
    )

    username: DevUsername = "demo"
    role: Role | None = Field(
        default=None,
        description="The role of a new account (customer when left out). An existing account "
        "keeps its role: asking for another one is 409 `dev_login_role_mismatch`.",
    )
    device: ShortText | None = _DEVICE


class RefreshRequest(BaseModel):
    """Trade a refresh token for a new pair; the one presented is spent."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"refresh_token": "q5r0mN5xW3x0y6cE1eQb7f4Kc1vX9u2Ztq8Hn3J6LkA"}]
        },
    )

    refresh_token: RefreshToken


class SignedInUser(BaseModel):
    """The account a token pair belongs to."""

    id: uuid.UUID
    role: Role
    display_name: str | None


class TokenPair(BaseModel):
    """An access token for API calls and a refresh token for the next pair."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "v4.local.…",
                    "token_type": "bearer",
                    "expires_in": 900,
                    "refresh_token": "q5r0mN5xW3x0y6cE1eQb7f4Kc1vX9u2Ztq8Hn3J6LkA",
                    "refresh_expires_at": "2025-01-31T08:00:00Z",
                    "session_id": "6f1c2a9e-4a57-4d8e-9a43-3f1d8a2b7c10",
                    "user": {
                        "id": "0b8e7c1a-2f3d-4e5f-8a9b-0c1d2e3f4a5b",
                        "role": "customer",
                        "display_name": None,
                    },
                    "new_user": False,
                }
            ]
        }
    )

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth token type
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str = Field(description="Single use: each refresh returns a new one.")
    refresh_expires_at: datetime
    session_id: uuid.UUID
    user: SignedInUser
    new_user: bool = Field(description="True when this sign-in created the account.")


class SessionOut(BaseModel):
    """One signed-in device."""

    id: uuid.UUID
    method: Literal["wechat", "password", "dev"]
    device: str
    user_agent: str
    ip: str | None = Field(description="Where it signed in from.")
    last_ip: str | None = Field(description="Where it was last seen from.")
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime = Field(description="Ends then unless refreshed before.")
    current: bool = Field(description="The session of the token making this request.")


class SessionList(BaseModel):
    """The caller's live sessions, most recently seen first."""

    items: list[SessionOut]
