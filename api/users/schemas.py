"""Request and response bodies of /v1/me and /v1/admin/users."""

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from api.auth.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from api.identity import Role, UserStatus
from api.schemas import Email, LongText, Phone, ShortText

ProfileField = Literal["display_name", "phone", "email", "emergency_contact", "address"]
# The roles' values, not Role members: pydantic's message for a Literal of enum members
# shows their repr ("Input should be <Role.ADMIN: 'admin'>").
StaffRole = Literal["fleet_manager", "admin"]
SignInMethod = Literal["wechat", "password", "dev"]
PostalCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 -]{1,9}$")]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
NewPassword = Annotated[
    str, StringConstraints(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)
]


class EmergencyContact(BaseModel):
    """Whom to call if something happens to the rider."""

    model_config = ConfigDict(extra="forbid")

    name: ShortText
    phone: Phone
    relationship: ShortText | None = None


class Address(BaseModel):
    """A postal address (invoices, licence verification)."""

    model_config = ConfigDict(extra="forbid")

    line1: LongText
    line2: LongText | None = None
    city: ShortText
    province: ShortText | None = None
    postal_code: PostalCode | None = None
    country: CountryCode = Field(default="CN", description="ISO 3166-1 alpha-2.")


class Preferences(BaseModel):
    """How the rider wants to be spoken to. A PATCH merges the fields it sends."""

    model_config = ConfigDict(extra="forbid")

    language: Literal["zh-CN", "en"] = "zh-CN"
    notify_push: bool = True
    notify_sms: bool = True
    notify_email: bool = False
    marketing: bool = False


class Completeness(BaseModel):
    """How much of the profile a booking will need is filled in."""

    percent: int = Field(ge=0, le=100)
    missing: list[ProfileField]


class Profile(BaseModel):
    """The caller's own account."""

    id: uuid.UUID
    role: Role
    status: UserStatus
    display_name: str | None
    phone: str | None
    email: str | None
    emergency_contact: EmergencyContact | None
    address: Address | None
    preferences: Preferences
    sign_in_methods: list[SignInMethod]
    created_at: datetime
    updated_at: datetime
    completeness: Completeness


class ProfileUpdate(BaseModel):
    """Fields to change; a field sent as null is cleared, a field left out is kept."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "display_name": "Li Wei",
                    "phone": "+8613800138000",
                    "email": "li.wei@example.com",
                    "emergency_contact": {
                        "name": "Li Na",
                        "phone": "+8613900139000",
                        "relationship": "sister",
                    },
                    "address": {
                        "line1": "100 Century Avenue",
                        "city": "Shanghai",
                        "postal_code": "200120",
                        "country": "CN",
                    },
                    "preferences": {"language": "en"},
                }
            ]
        },
    )

    display_name: ShortText | None = None
    phone: Phone | None = None
    email: Email | None = None
    emergency_contact: EmergencyContact | None = None
    address: Address | None = None
    preferences: Preferences | None = None


class AdminUser(Profile):
    """A user as admins see it."""

    suspended_at: datetime | None
    suspended_reason: str | None
    live_sessions: int = Field(description="Sessions that have not ended.")


class UserPage(BaseModel):
    """One page of users, newest first; pass `next_cursor` as `cursor` for the next one."""

    items: list[AdminUser]
    total: int = Field(description="How many users match the filters in all.")
    next_cursor: str | None = Field(description="Null on the last page.")


class SuspendRequest(BaseModel):
    """Why the account is suspended (kept in its history)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "chargeback fraud under investigation"}]},
    )

    reason: LongText


class StaffCreate(BaseModel):
    """A new fleet manager or admin account."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "email": "ops@example.com",
                    "password": "a long passphrase nobody guesses",
                    "role": "fleet_manager",
                    "display_name": "Fleet ops",
                }
            ]
        },
    )

    email: Email
    password: NewPassword
    role: StaffRole
    display_name: ShortText


class AuditEntry(BaseModel):
    """One thing that happened to an account."""

    id: int
    action: str
    actor_id: uuid.UUID | None = Field(description="Who did it; null when the user did.")
    details: dict[str, JsonValue]
    ip: str | None
    request_id: str | None
    created_at: datetime


class History(BaseModel):
    """A page of a user's history, newest first."""

    items: list[AuditEntry]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page."
    )
