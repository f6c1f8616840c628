"""Fleet rules: VINs, status transitions, credentials, bulk changes. Never commits."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from argon2 import PasswordHasher
from psycopg.errors import UniqueViolation

from api import pagination
from api.errors import ApiError, ConflictError, NotFoundError
from api.fleet import repository
from api.fleet.schemas import (
    TRANSITIONS,
    BrokerState,
    Location,
    MqttCredentials,
    Vehicle,
    VehicleCreate,
    VehiclePage,
    VehicleUpdate,
    VinCheckMode,
)
from broker.provisioning import DynsecClient, ProvisioningError
from db.vehicle_vocabulary import Category, VehicleStatus

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from psycopg import AsyncConnection
    from pydantic import JsonValue

    from api.fleet.repository import VehicleRow
    from api.fleet.settings import FleetSettings

log = logging.getLogger(__name__)

# The password is 24 random bytes (192 bits): nobody guesses it, so the hash needs no key
# stretching against guessing, only one-wayness. Light argon2id parameters keep a bulk
# create of a thousand vehicles at about a second instead of minutes.
_HASHER: Final = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD_BYTES: Final = 24

# ISO 3779 / 49 CFR 565: letter values and position weights for the check digit.
_VIN_VALUES: Final = {
    **{str(digit): digit for digit in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_VIN_WEIGHTS: Final = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
# First WMI character of the regions whose rules require the check digit: North America
# (1-5: US, Canada, Mexico) and China (L, GB 16735).
_CHECK_DIGIT_REGIONS: Final = frozenset("12345L")


class VinCheckDigitError(ConflictError):
    """The VIN's position 9 is not the check digit its other characters give.

    409, not 422: the request is well-formed (the schema cannot express a checksum), and
    the VIN contradicts itself, much as a taken plate contradicts the fleet.
    """

    code = "vin_check_digit"
    default_message = "the VIN's check digit (position 9) is wrong"


class VehicleExistsError(ConflictError):
    """The id is taken."""

    code = "vehicle_exists"
    default_message = "a vehicle with this id exists"


class PlateTakenError(ConflictError):
    """Another vehicle has this plate."""

    code = "plate_taken"
    default_message = "another vehicle has this plate"


class VinTakenError(ConflictError):
    """Another vehicle has this VIN."""

    code = "vin_taken"
    default_message = "another vehicle has this VIN"


class InvalidTransitionError(ConflictError):
    """The status cannot move that way (retired is final; the rest goes through available)."""

    code = "invalid_status_transition"
    default_message = "this status change is not allowed"


_UNIQUE_ERRORS: Final[dict[str, tuple[type[ApiError], str]]] = {
    "vehicles_pkey": (VehicleExistsError, "id"),
    "vehicles_plate_key": (PlateTakenError, "plate"),
    "vehicles_vin_key": (VinTakenError, "vin"),
}


def vin_check_digit(vin: str) -> str:
    """The check digit (`0`-`9` or `X`) the other 16 characters of `vin` give."""
    total = sum(_VIN_VALUES[char] * weight for char, weight in zip(vin, _VIN_WEIGHTS, strict=True))
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def check_vin(vin: str, mode: VinCheckMode) -> None:
    """Raise VinCheckDigitError if `mode` asks for the check digit and it is wrong."""
    if mode is VinCheckMode.OFF:
        return
    if mode is VinCheckMode.AUTO and vin[0] not in _CHECK_DIGIT_REGIONS:
        return
    expected = vin_check_digit(vin)
    if vin[8] != expected:
        raise VinCheckDigitError(
            f"the VIN's check digit (position 9) is {vin[8]!r}, its other characters give "
            f"{expected!r}; send vin_check=off for a VIN that carries no check digit",
            details={"field": "vin", "expected": expected, "found": vin[8]},
        )


def _unique_error(exc: UniqueViolation) -> ApiError:
    error_class, field = _UNIQUE_ERRORS.get(exc.diag.constraint_name or "", (ConflictError, "id"))
    return error_class(details={"field": field})


# --- conversions ----------------------------------------------------------------------------


def to_vehicle(row: VehicleRow) -> Vehicle:
    """The API's view of a vehicle row."""
    home = (
        None
        if row.home_lat is None or row.home_lon is None
        else Location(lat=row.home_lat, lon=row.home_lon)
    )
    broker = (
        BrokerState(
            provisioned=bool(row.broker_provisioned),
            error=row.broker_error,
            synced_at=row.broker_synced_at,
        )
        if row.has_credentials
        else None
    )
    return Vehicle(
        id=row.id,
        plate=row.plate,
        make=row.make,
        model=row.model,
        year=row.year,
        vin=row.vin,
        category=row.category,
        fuel_type=row.fuel_type,
        seats=row.seats,
        features=list(row.features),
        price_hour_minor=row.price_hour_minor,
        price_day_minor=row.price_day_minor,
        currency=row.currency,
        home=home,
        status=VehicleStatus(row.status),
        notes=row.notes,
        mileage_km=row.mileage_km,
        created_at=row.created_at,
        updated_at=row.updated_at,
        broker=broker,
    )


def _columns(model: VehicleCreate | VehicleUpdate, fields: Iterable[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in fields:
        value = getattr(model, name)
        if name == "home":
            values["home_lat"] = None if value is None else value.lat
            values["home_lon"] = None if value is None else value.lon
        elif name == "features":
            # Stored once each, in vocabulary order, whatever order the client sent.
            values[name] = None if value is None else sorted({str(f) for f in value})
        elif name in {"category", "fuel_type", "status"} and value is not None:
            values[name] = str(value)
        else:
            values[name] = value
    return values


# --- reads ------------------------------------------------------------------------------------


async def _vehicle_or_404(
    conn: AsyncConnection[Any], vehicle_id: str, *, for_update: bool = False
) -> VehicleRow:
    row = await repository.get(conn, vehicle_id, for_update=for_update)
    if row is None:
        raise NotFoundError("vehicle not found")
    return row


async def get_vehicle(conn: AsyncConnection[Any], vehicle_id: str) -> Vehicle:
    """One vehicle."""
    return to_vehicle(await _vehicle_or_404(conn, vehicle_id))


async def list_vehicles(  # noqa: PLR0913 - one per filter
    conn: AsyncConnection[Any],
    *,
    status: VehicleStatus | None,
    category: Category | None,
    query: str | None,
    cursor: str | None,
    limit: int,
) -> VehiclePage:
    """A page of vehicles, newest first, and the cursor of the next page (None on the last)."""
    filters = pagination.fingerprint(
        {"list": "fleet", "q": query, "status": status, "category": category}
    )
    after = None
    if cursor is not None:
        created_at, vehicle_id = pagination.decode_cursor(cursor, (datetime, str), filters).key
        assert isinstance(created_at, datetime)  # the shape says so
        after = (created_at, str(vehicle_id))
    rows = await repository.list_vehicles(
        conn,
        status=None if status is None else status.value,
        category=None if category is None else category.value,
        query=query,
        after=after,
        limit=limit + 1,  # one more tells whether a next page exists
    )
    page = pagination.next_page(rows, limit, lambda row: (row.created_at, row.id), filters)
    return VehiclePage(items=[to_vehicle(row) for row in page.rows], next_cursor=page.next_cursor)


# --- writes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedLogin:
    """A login made in this transaction; the password leaves only in the response."""

    vehicle_id: str
    password: str


async def issue_login(conn: AsyncConnection[Any], vehicle_id: str) -> IssuedLogin:
    """A new random password for the vehicle, stored as its hash only."""
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    password_hash = await asyncio.to_thread(_HASHER.hash, password)
    await repository.save_credentials(conn, vehicle_id, vehicle_id, password_hash)
    return IssuedLogin(vehicle_id, password)


async def create_vehicle(
    conn: AsyncConnection[Any], body: VehicleCreate, vin_check: VinCheckMode
) -> IssuedLogin:
    """Insert the vehicle and issue its login (the broker is told after the commit)."""
    if body.vin is not None:
        check_vin(body.vin, vin_check)
    values = {"id": body.id, **_columns(body, set(type(body).model_fields) - {"id"})}
    try:
        # A savepoint, so that a bulk request can go on collecting errors after this one.
        async with conn.transaction():
            await repository.insert(conn, values)
    except UniqueViolation as exc:
        raise _unique_error(exc) from exc
    return await issue_login(conn, body.id)


def check_transition(current: VehicleStatus, wanted: VehicleStatus) -> None:
    """Raise InvalidTransitionError unless `current` may become `wanted`."""
    if current is wanted or wanted in TRANSITIONS[current]:
        return
    allowed: list[JsonValue] = [status.value for status in sorted(TRANSITIONS[current])]
    raise InvalidTransitionError(
        f"a vehicle that is {current.value} cannot become {wanted.value}"
        + ("" if allowed else "; retired is final"),
        details={"from": current.value, "to": wanted.value, "allowed": allowed},
    )


async def update_vehicle(
    conn: AsyncConnection[Any], vehicle_id: str, body: VehicleUpdate, vin_check: VinCheckMode
) -> Vehicle:
    """Apply a PATCH; the status moves only along the allowed transitions."""
    fields = body.model_fields_set
    current = await _vehicle_or_404(conn, vehicle_id, for_update=True)
    if body.status is not None:
        check_transition(VehicleStatus(current.status), body.status)
    if body.vin is not None and "vin" in fields and body.vin != current.vin:
        check_vin(body.vin, vin_check)
    changes = _columns(body, fields)
    if changes:
        try:
            async with conn.transaction():
                await repository.update(conn, vehicle_id, changes)
        except UniqueViolation as exc:
            raise _unique_error(exc) from exc
    return await get_vehicle(conn, vehicle_id)


async def retire_vehicle(conn: AsyncConnection[Any], vehicle_id: str) -> Vehicle:
    """Retire the vehicle (idempotent: retiring a retired vehicle changes nothing)."""
    current = await _vehicle_or_404(conn, vehicle_id, for_update=True)
    if current.status != VehicleStatus.RETIRED:
        await repository.update(conn, vehicle_id, {"status": VehicleStatus.RETIRED.value})
    return await get_vehicle(conn, vehicle_id)


async def rotate_login(conn: AsyncConnection[Any], vehicle_id: str) -> IssuedLogin:
    """A new password for a vehicle that is not retired."""
    current = await _vehicle_or_404(conn, vehicle_id, for_update=True)
    if current.status == VehicleStatus.RETIRED:
        raise InvalidTransitionError(
            "a retired vehicle gets no login",
            details={"from": "retired", "to": "retired", "allowed": []},
        )
    return await issue_login(conn, vehicle_id)


# --- the broker, after the commit ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerOutcome:
    """What the broker said to one change."""

    ok: bool
    error: str | None


def _not_configured() -> BrokerOutcome:
    return BrokerOutcome(
        ok=False,
        error="FREECAR_MQTT_ADMIN_URL is not set, so the broker was not told; the login is "
        "stored and can be pushed later (rotate-credentials) once the broker is Mosquitto "
        "with the dynamic-security plugin",
    )


def _push_logins(
    settings: FleetSettings, logins: Sequence[IssuedLogin]
) -> dict[str, BrokerOutcome]:
    admin_url = settings.mqtt_admin_url.get_secret_value()
    if not admin_url:
        return dict.fromkeys((login.vehicle_id for login in logins), _not_configured())
    outcomes: dict[str, BrokerOutcome] = {}
    try:
        with DynsecClient(admin_url, timeout_s=settings.fleet_dynsec_timeout_s) as dynsec:
            for login in logins:
                try:
                    dynsec.provision_vehicle(
                        login.vehicle_id, login.password, root=settings.topic_root
                    )
                    outcomes[login.vehicle_id] = BrokerOutcome(ok=True, error=None)
                except ProvisioningError as exc:
                    outcomes[login.vehicle_id] = BrokerOutcome(ok=False, error=str(exc))
    # OSError and ValueError too: a broker that resets the connection, or an address paho
    # cannot use, must be reported like any other broker failure, never become a 500.
    except (ProvisioningError, OSError, ValueError) as exc:
        log.warning("vehicle logins not provisioned on the broker: %s", exc)
        for login in logins:
            outcomes.setdefault(login.vehicle_id, BrokerOutcome(ok=False, error=str(exc)))
    return outcomes


async def push_logins(
    conn: AsyncConnection[Any], settings: FleetSettings, logins: Sequence[IssuedLogin]
) -> dict[str, BrokerOutcome]:
    """Give the broker the committed logins and record its answers (call after commit)."""
    outcomes = await asyncio.to_thread(_push_logins, settings, logins)
    for vehicle_id, outcome in outcomes.items():
        await repository.record_broker(
            conn, vehicle_id, provisioned=outcome.ok, error=outcome.error
        )
    return outcomes


def _disable(settings: FleetSettings, vehicle_id: str) -> BrokerOutcome:
    admin_url = settings.mqtt_admin_url.get_secret_value()
    if not admin_url:
        return _not_configured()
    try:
        with DynsecClient(admin_url, timeout_s=settings.fleet_dynsec_timeout_s) as dynsec:
            dynsec.disable_vehicle(vehicle_id)
    except (ProvisioningError, OSError, ValueError) as exc:
        log.warning("vehicle %s not disabled on the broker: %s", vehicle_id, exc)
        return BrokerOutcome(ok=False, error=str(exc))
    return BrokerOutcome(ok=True, error=None)


async def disable_login(
    conn: AsyncConnection[Any], settings: FleetSettings, vehicle: Vehicle
) -> BrokerOutcome:
    """Make the broker refuse a retired vehicle's login (call after commit)."""
    if vehicle.broker is None:
        return BrokerOutcome(ok=True, error=None)  # never had a login
    outcome = await asyncio.to_thread(_disable, settings, vehicle.id)
    # Disabled on the broker means no longer provisioned; a failure keeps the old state
    # and says why, so retiring again retries.
    await repository.record_broker(
        conn,
        vehicle.id,
        provisioned=not outcome.ok and bool(vehicle.broker.provisioned),
        error=outcome.error,
    )
    return outcome


def credentials(login: IssuedLogin, outcome: BrokerOutcome, root: str) -> MqttCredentials:
    """The login as the response shows it, with the broker's answer."""
    return MqttCredentials(
        username=login.vehicle_id,
        password=login.password,
        mqtt_topic_root=root,
        broker_provisioned=outcome.ok,
        broker_error=outcome.error,
    )
