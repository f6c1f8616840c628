"""Fleet rules: VINs, status transitions, vehicle logins, and the commands that change them.

Functions that take a connection work inside the caller's unit of work and never commit.
The commands that the broker must follow (a new login, a retirement) take `Work`: they run
the change as a unit of work of its own, tell the broker once it is committed, and record
the broker's answer in another (see `api.work`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import psycopg
from argon2 import PasswordHasher
from psycopg.errors import UniqueViolation

from api import pagination
from api.errors import ApiError, ConflictError, NotFoundError
from api.fleet import broker, repository
from api.fleet.schemas import (
    TRANSITIONS,
    BrokerState,
    Location,
    MqttCredentials,
    RetireResult,
    Vehicle,
    VehicleCreate,
    VehicleCreated,
    VehiclePage,
    VehicleUpdate,
    VinCheckMode,
)
from db.vehicle_vocabulary import Category, VehicleStatus

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from psycopg import AsyncConnection
    from pydantic import JsonValue

    from api.fleet.repository import VehicleRow
    from api.fleet.settings import FleetSettings
    from api.work import Work

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


# --- changes, inside the caller's unit of work ------------------------------------------------


async def issue_login(conn: AsyncConnection[Any], vehicle_id: str) -> broker.Login:
    """A new random password for the vehicle, stored as its hash only."""
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    password_hash = await asyncio.to_thread(_HASHER.hash, password)
    await repository.save_credentials(conn, vehicle_id, vehicle_id, password_hash)
    return broker.Login(vehicle_id, password)


async def add_vehicle(
    conn: AsyncConnection[Any], body: VehicleCreate, vin_check: VinCheckMode
) -> broker.Login:
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


async def change_vehicle(
    conn: AsyncConnection[Any], vehicle_id: str, body: VehicleUpdate, vin_check: VinCheckMode
) -> tuple[Vehicle, bool]:
    """Apply a PATCH along the allowed transitions; the vehicle, and whether it retired now."""
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
    vehicle = await get_vehicle(conn, vehicle_id)
    retired_now = (
        vehicle.status is VehicleStatus.RETIRED and current.status != VehicleStatus.RETIRED
    )
    return vehicle, retired_now


async def mark_retired(conn: AsyncConnection[Any], vehicle_id: str) -> Vehicle:
    """Retire the vehicle (idempotent: retiring a retired vehicle changes nothing)."""
    current = await _vehicle_or_404(conn, vehicle_id, for_update=True)
    if current.status != VehicleStatus.RETIRED:
        await repository.update(conn, vehicle_id, {"status": VehicleStatus.RETIRED.value})
    return await get_vehicle(conn, vehicle_id)


async def rotate_login(conn: AsyncConnection[Any], vehicle_id: str) -> broker.Login:
    """A new password for a vehicle that is not retired."""
    current = await _vehicle_or_404(conn, vehicle_id, for_update=True)
    if current.status == VehicleStatus.RETIRED:
        raise InvalidTransitionError(
            "a retired vehicle gets no login",
            details={"from": "retired", "to": "retired", "allowed": []},
        )
    return await issue_login(conn, vehicle_id)


# --- the broker, after the commit ---------------------------------------------------------------


async def record_broker_answers(
    work: Work, answers: Mapping[str, broker.Outcome], *, provisioned: Mapping[str, bool]
) -> bool:
    """Record what the broker now holds for each vehicle, in a unit of work of its own.

    `provisioned` says, per vehicle, whether the broker holds its current login after that
    answer. The change itself is committed already: if the database fails now, the answer
    is logged and False returned; the next push (rotating the login, retiring again)
    records it.
    """
    if not answers:
        return True
    try:
        async with work.transaction() as conn:
            for vehicle_id, outcome in answers.items():
                await repository.record_broker(
                    conn, vehicle_id, provisioned=provisioned[vehicle_id], error=outcome.error
                )
    except psycopg.Error as exc:
        log.warning("the broker's answer for %s was not recorded: %s", ", ".join(answers), exc)
        return False
    return True


async def _as_recorded(work: Work, vehicle: Vehicle, *, recorded: bool) -> Vehicle:
    """The vehicle as the database now holds it, or as it was if recording failed."""
    if not recorded:
        return vehicle
    try:
        return await get_vehicle(work.conn, vehicle.id)
    except psycopg.Error as exc:
        log.warning("vehicle %s not read back after the broker answered: %s", vehicle.id, exc)
        return vehicle


async def provision_logins(
    work: Work, settings: FleetSettings, logins: list[broker.Login]
) -> dict[str, broker.Outcome]:
    """Give the broker logins that are committed, and record its answers."""
    answers = await broker.provision(settings, logins)
    await record_broker_answers(
        work, answers, provisioned={vehicle_id: o.ok for vehicle_id, o in answers.items()}
    )
    return answers


async def withdraw_login(
    work: Work, settings: FleetSettings, vehicle: Vehicle
) -> tuple[Vehicle, broker.Outcome]:
    """Make the broker refuse a committed retirement's login; the vehicle as recorded."""
    if vehicle.broker is None:
        return vehicle, broker.Outcome(ok=True, error=None)  # never had a login
    outcome = await broker.disable(settings, vehicle.id)
    # Disabled on the broker means no longer provisioned; a failure keeps the old state and
    # says why, so retiring again retries.
    still = not outcome.ok and vehicle.broker.provisioned
    recorded = await record_broker_answers(
        work, {vehicle.id: outcome}, provisioned={vehicle.id: still}
    )
    return await _as_recorded(work, vehicle, recorded=recorded), outcome


def credentials(login: broker.Login, outcome: broker.Outcome, root: str) -> MqttCredentials:
    """The login as the response shows it, with the broker's answer."""
    return MqttCredentials(
        username=login.vehicle_id,
        password=login.password,
        mqtt_topic_root=root,
        broker_provisioned=outcome.ok,
        broker_error=outcome.error,
    )


# --- commands: a unit of work, then the broker ---------------------------------------------------


async def create_vehicle(
    work: Work, settings: FleetSettings, body: VehicleCreate, vin_check: VinCheckMode
) -> VehicleCreated:
    """Add a vehicle and its login; once that is committed, give the broker the login."""
    async with work.transaction() as conn:
        login = await add_vehicle(conn, body, vin_check)
        vehicle = await get_vehicle(conn, body.id)
    answer = (await broker.provision(settings, [login]))[login.vehicle_id]
    recorded = await record_broker_answers(
        work, {login.vehicle_id: answer}, provisioned={login.vehicle_id: answer.ok}
    )
    vehicle = await _as_recorded(work, vehicle, recorded=recorded)
    return VehicleCreated(
        **vehicle.model_dump(), credentials=credentials(login, answer, settings.topic_root)
    )


async def update_vehicle(
    work: Work,
    settings: FleetSettings,
    vehicle_id: str,
    body: VehicleUpdate,
    vin_check: VinCheckMode,
) -> Vehicle:
    """Apply a PATCH; a vehicle it retires has its login refused once that is committed."""
    async with work.transaction() as conn:
        vehicle, retired_now = await change_vehicle(conn, vehicle_id, body, vin_check)
    if retired_now:
        vehicle, _ = await withdraw_login(work, settings, vehicle)
    return vehicle


async def retire_vehicle(work: Work, settings: FleetSettings, vehicle_id: str) -> RetireResult:
    """Retire the vehicle; once that is committed, make the broker refuse its login.

    Idempotent: retiring again retries the broker.
    """
    async with work.transaction() as conn:
        vehicle = await mark_retired(conn, vehicle_id)
    vehicle, outcome = await withdraw_login(work, settings, vehicle)
    return RetireResult(
        **vehicle.model_dump(), broker_disabled=outcome.ok, broker_error=outcome.error
    )


async def rotate_credentials(
    work: Work, settings: FleetSettings, vehicle_id: str
) -> MqttCredentials:
    """A new password; once it is committed, the broker gets it (the old one stops working)."""
    async with work.transaction() as conn:
        login = await rotate_login(conn, vehicle_id)
    answer = (await provision_logins(work, settings, [login]))[vehicle_id]
    return credentials(login, answer, settings.topic_root)
