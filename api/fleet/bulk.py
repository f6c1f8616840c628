"""Bulk create and update from CSV or JSON: every row applies, or none does.

Rows are validated with the same models as the single-vehicle endpoints, then applied one
by one in one unit of work (each in a savepoint, so one refusal does not hide the next).
Any problem anywhere raises BulkRejectedError listing every row's problems, and the unit
of work rolls the whole batch back. Once it is committed, the broker gets the new logins
and refuses the retired ones.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError
from pydantic_core import from_json

from api.errors import ApiError
from api.fleet import broker, service
from api.fleet.schemas import (
    BulkOp,
    BulkResult,
    BulkRowResult,
    RowError,
    Vehicle,
    VehicleCreate,
    VehicleUpdate,
    VinCheckMode,
)

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from api.fleet.settings import FleetSettings
    from api.work import Work

# A fleet's delivery batch fits easily; beyond this, split the file (one transaction holds
# a lock on every row it touches until it commits).
MAX_ROWS: Final = 1_000
# CSV cells holding lists separate items with this (the comma separates cells).
LIST_SEPARATOR: Final = ";"
_CSV_EXTRA_COLUMNS: Final = frozenset({"op", "id", "home_lat", "home_lon"})
CSV_COLUMNS: Final = frozenset(VehicleCreate.model_fields) - {"home"} | _CSV_EXTRA_COLUMNS


class BulkRejectedError(ApiError):
    """At least one row is malformed; nothing was changed. `details.errors` lists them all."""

    status = 422
    code = "bulk_rejected"
    default_message = "some rows are invalid; nothing was changed"


class BulkConflictError(BulkRejectedError):
    """Every row is well-formed, but some contradict the fleet (taken id or plate, status)."""

    status = 409


class UnsupportedMediaTypeError(ApiError):
    """The body is neither CSV nor JSON."""

    status = 415
    code = "unsupported_media_type"
    default_message = "send text/csv or application/json"


@dataclass(frozen=True, slots=True)
class Row:
    """One parsed row: its number, what to do, and its fields as the models take them."""

    number: int
    op: BulkOp | None
    fields: dict[str, Any]


def _reject(errors: list[RowError], *, malformed: bool = True) -> BulkRejectedError:
    error_class = BulkRejectedError if malformed else BulkConflictError
    return error_class(
        f"{len(errors)} problem(s) in the request; nothing was changed",
        details={"errors": [error.model_dump() for error in errors]},
    )


def _parse_op(value: object, number: int, errors: list[RowError]) -> BulkOp | None:
    if value is None or value == "":
        return None
    try:
        return BulkOp(str(value))
    except ValueError:
        errors.append(
            RowError(row=number, field="op", code="invalid_op", message="op is create or update")
        )
        return None


def parse_csv(body: bytes) -> list[Row]:
    """Rows of a CSV with a header line; empty cells are left out (unchanged or default)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _reject(
            [RowError(row=0, field=None, code="not_utf8", message="the CSV is not UTF-8")]
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip() for name in reader.fieldnames or []]
    unknown = sorted(set(header) - CSV_COLUMNS)
    if not header or unknown:
        message = f"unknown column(s): {', '.join(unknown)}" if unknown else "no header line"
        raise _reject([RowError(row=0, field=None, code="bad_header", message=message)])
    reader.fieldnames = header
    rows: list[Row] = []
    errors: list[RowError] = []
    try:
        for number, record in enumerate(reader, start=1):
            if len(rows) >= MAX_ROWS:
                raise _reject([_too_many()])
            if None in record:  # more cells than the header names
                errors.append(
                    RowError(row=number, field=None, code="extra_cells", message="too many cells")
                )
                continue
            fields: dict[str, Any] = {
                name: value.strip() for name, value in record.items() if value and value.strip()
            }
            op = _parse_op(fields.pop("op", None), number, errors)
            if "features" in fields:
                fields["features"] = [
                    item.strip()
                    for item in fields["features"].split(LIST_SEPARATOR)
                    if item.strip()
                ]
            lat, lon = fields.pop("home_lat", None), fields.pop("home_lon", None)
            if lat is not None or lon is not None:
                fields["home"] = {"lat": lat, "lon": lon}
            rows.append(Row(number=number, op=op, fields=fields))
    except csv.Error as exc:
        errors.append(RowError(row=reader.line_num, field=None, code="bad_csv", message=str(exc)))
    if errors:
        raise _reject(errors)
    return rows


def _too_many() -> RowError:
    return RowError(
        row=MAX_ROWS + 1, field=None, code="too_many_rows", message=f"at most {MAX_ROWS} rows"
    )


def parse_json(body: bytes) -> list[Row]:
    """Rows of a JSON array of objects."""
    try:
        # pydantic's parser, as FastAPI's own bodies: it refuses lone surrogates ("\\udc00"),
        # which json.loads lets through and PostgreSQL would then refuse.
        data = from_json(body)
    except ValueError:
        raise _reject(
            [RowError(row=0, field=None, code="bad_json", message="the body is not JSON")]
        ) from None
    if not isinstance(data, list):
        raise _reject(
            [RowError(row=0, field=None, code="bad_json", message="send a JSON array of rows")]
        )
    if len(data) > MAX_ROWS:
        raise _reject([_too_many()])
    rows: list[Row] = []
    errors: list[RowError] = []
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            errors.append(
                RowError(row=number, field=None, code="not_an_object", message="a row is an object")
            )
            continue
        fields = dict(item)
        op = _parse_op(fields.pop("op", None), number, errors)
        rows.append(Row(number=number, op=op, fields=fields))
    if errors:
        raise _reject(errors)
    return rows


def _validation_errors(number: int, exc: ValidationError) -> list[RowError]:
    """One error per field, named by its top-level field (union branches folded together)."""
    by_field: dict[str | None, RowError] = {}
    # "Input should be None" is the other branch of an optional field's union: noise when
    # the real complaint is about the value.
    errors = sorted(
        exc.errors(include_url=False, include_input=False),
        key=lambda error: error["type"] == "none_required",
    )
    for error in errors:
        field = str(error["loc"][0]) if error["loc"] else None
        # Only where and which rule: a rejected value is not echoed back.
        by_field.setdefault(
            field, RowError(row=number, field=field, code=error["type"], message=error["msg"])
        )
    return list(by_field.values())


def parse_body(media_type: str, body: bytes) -> list[Row]:
    """The rows of a CSV (`text/csv`) or JSON body; 415 for anything else."""
    if media_type in {"text/csv", "application/csv"}:
        return parse_csv(body)
    if media_type == "application/json" or media_type.endswith("+json"):
        return parse_json(body)
    raise UnsupportedMediaTypeError


@dataclass(frozen=True, slots=True)
class Applied:
    """One applied row: the login of a new vehicle, the vehicle a row retired."""

    number: int
    op: BulkOp
    vehicle_id: str
    login: broker.Login | None
    retired: Vehicle | None = None


async def apply(
    conn: AsyncConnection[Any], rows: list[Row], default_op: BulkOp | None, vin_check: VinCheckMode
) -> list[Applied]:
    """Validate and apply every row; BulkRejectedError (nothing kept) if any fails."""
    if not rows:
        raise _reject([RowError(row=0, field=None, code="no_rows", message="no rows to apply")])
    errors: list[RowError] = []
    malformed = False
    applied: list[Applied] = []
    for row in rows:
        op = row.op or default_op
        if op is None:
            malformed = True
            errors.append(
                RowError(
                    row=row.number,
                    field="op",
                    code="missing_op",
                    message="give each row an op, or pass ?op=create|update",
                )
            )
            continue
        try:
            if op is BulkOp.CREATE:
                create = VehicleCreate.model_validate(row.fields)
                login = await service.add_vehicle(conn, create, vin_check)
                applied.append(Applied(row.number, op, create.id, login))
            else:
                fields = dict(row.fields)
                vehicle_id = fields.pop("id", None)
                if not isinstance(vehicle_id, str) or not vehicle_id:
                    malformed = True
                    errors.append(
                        RowError(
                            row=row.number, field="id", code="missing", message="id is required"
                        )
                    )
                    continue
                update = VehicleUpdate.model_validate(fields)
                vehicle, retired_now = await service.change_vehicle(
                    conn, vehicle_id, update, vin_check
                )
                applied.append(
                    Applied(row.number, op, vehicle_id, None, vehicle if retired_now else None)
                )
        except ValidationError as exc:
            malformed = True
            errors.extend(_validation_errors(row.number, exc))
        except ApiError as exc:
            field = exc.details.get("field") if isinstance(exc.details, dict) else None
            errors.append(
                RowError(
                    row=row.number,
                    field=None if field is None else str(field),
                    code=exc.code,
                    message=exc.message,
                )
            )
    if errors:
        # 422 when some row breaks the format; 409 when all are well-formed but conflict.
        raise _reject(errors, malformed=malformed)
    return applied


async def change_in_bulk(
    work: Work,
    settings: FleetSettings,
    rows: list[Row],
    default_op: BulkOp | None,
    vin_check: VinCheckMode,
) -> BulkResult:
    """Apply every row in one unit of work; then the broker learns its logins and retirements."""
    async with work.transaction() as conn:
        applied = await apply(conn, rows, default_op, vin_check)
    logins = [row.login for row in applied if row.login is not None]
    answers = await service.provision_logins(work, settings, logins)
    for row in applied:
        if row.retired is not None:
            await service.withdraw_login(work, settings, row.retired)
    return BulkResult(
        created=sum(row.op is BulkOp.CREATE for row in applied),
        updated=sum(row.op is BulkOp.UPDATE for row in applied),
        rows=[
            BulkRowResult(
                row=row.number,
                op=row.op,
                id=row.vehicle_id,
                credentials=None
                if row.login is None
                else service.credentials(row.login, answers[row.vehicle_id], settings.topic_root),
            )
            for row in applied
        ],
    )
