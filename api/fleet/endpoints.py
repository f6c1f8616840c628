"""/v1/admin/vehicles: the fleet's records, bulk changes, photos and MQTT logins (staff only).

HTTP only; the rules are in `service`, `bulk` and `images`. Changes the broker must follow
(a new login, a retirement) take `WorkDep`: the service commits the change, then tells the
broker, so the answer says whether the broker took them (`broker_provisioned`,
`broker_disabled`). The database is the record: a change the broker missed is retried by
rotating the login or retiring again.
"""

import uuid
from typing import Annotated, Any, Final

from fastapi import APIRouter, BackgroundTasks, Depends, File, Query, Request, UploadFile
from fastapi import status as http_status
from pydantic import TypeAdapter

from api.deps import Conn, ResourcesDep, SettingsDep, WorkDep, admin_network_guard
from api.errors import error_responses
from api.fleet import bulk, images, service
from api.fleet.auth import FleetStaff
from api.fleet.files import FileStoreDep
from api.fleet.schemas import (
    TRIMMED_TEXT,
    BulkOp,
    BulkResult,
    BulkRow,
    MqttCredentials,
    RetireResult,
    Vehicle,
    VehicleCreate,
    VehicleCreated,
    VehicleImage,
    VehicleImageList,
    VehiclePage,
    VehicleUpdate,
    VinCheckMode,
)
from api.pagination import CURSOR_RESPONSES, CursorQuery
from api.schemas import VehicleIdPath
from db.vehicle_vocabulary import Category, VehicleStatus

router = APIRouter(
    prefix="/admin/vehicles",
    tags=["fleet"],
    dependencies=[Depends(admin_network_guard)],
    responses=error_responses(401, 403),
)

# A page of 50 fills an admin's screen; 200 bounds one query's cost.
DEFAULT_PAGE = 50
MAX_PAGE = 200

VinCheckQuery = Annotated[
    VinCheckMode | None,
    Query(
        description="Check the VIN's check digit: `auto` (North American and Chinese VINs), "
        "`strict` (all) or `off`. Default: FREECAR_FLEET_VIN_CHECK."
    ),
]


def _inline(schema: Any, defs: dict[str, Any]) -> Any:  # noqa: ANN401 - any JSON
    """`schema` with every `#/$defs/...` reference replaced by its definition."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    return schema


def _bulk_json_schema() -> dict[str, Any]:
    # The rows are parsed by hand (one error report for CSV and JSON alike), so the schema
    # is put in the document directly, with the models' definitions inlined.
    schema = TypeAdapter(list[BulkRow]).json_schema()
    inlined: dict[str, Any] = _inline(schema, schema.get("$defs", {}))
    inlined["minItems"] = 1
    inlined["maxItems"] = bulk.MAX_ROWS
    return inlined


_BULK_JSON_SCHEMA: Final = _bulk_json_schema()


def _vin_mode(settings: SettingsDep, vin_check: VinCheckQuery = None) -> VinCheckMode:
    return vin_check or settings.fleet_vin_check


VinMode = Annotated[VinCheckMode, Depends(_vin_mode)]


@router.post(
    "",
    status_code=http_status.HTTP_201_CREATED,
    summary="Add a vehicle",
    responses=error_responses(409),
)
async def create_vehicle(
    body: VehicleCreate, _staff: FleetStaff, work: WorkDep, settings: SettingsDep, vin_mode: VinMode
) -> VehicleCreated:
    """Add a vehicle and issue its MQTT login, shown this once.

    409 `vehicle_exists`, `plate_taken`, `vin_taken`, `vin_check_digit` (the VIN's check
    digit is wrong; see `vin_check`). `credentials.broker_provisioned` says whether the
    broker took the login; when false, `broker_error` says why (no dynamic security, broker
    down) and `POST .../credentials` retries.
    """
    return await service.create_vehicle(work, settings, body, vin_mode)


@router.get("", summary="Find vehicles", responses=CURSOR_RESPONSES)
async def list_vehicles(  # noqa: PLR0913 - one per filter
    *,
    _staff: FleetStaff,
    conn: Conn,
    q: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=TRIMMED_TEXT,
            description="Part of the plate, make, model or id, or a whole VIN.",
        ),
    ] = None,
    status: VehicleStatus | None = None,
    category: Category | None = None,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> VehiclePage:
    """Newest first, filtered by status, category and text; page with `cursor`.

    409 `invalid_cursor` for a cursor that is malformed or was made for other filters.
    """
    return await service.list_vehicles(
        conn, status=status, category=category, query=q, cursor=cursor, limit=limit
    )


@router.post(
    "/bulk",
    summary="Create or update many vehicles at once",
    responses=error_responses(409, 415),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": _BULK_JSON_SCHEMA,
                    "example": [{"op": "update", "id": "sh-0201", "price_day_minor": 20000}],
                },
            },
        }
    },
)
async def bulk_vehicles(
    *,
    request: Request,
    _staff: FleetStaff,
    work: WorkDep,
    settings: SettingsDep,
    vin_mode: VinMode,
    op: Annotated[
        BulkOp | None, Query(description="The op of rows that do not name their own.")
    ] = None,
) -> BulkResult:
    """All rows or none: `bulk_rejected` lists every problem (row, field, code, message).

    422 when a row is malformed, 409 when all are well-formed but some conflict with the
    fleet (id or plate taken, refused status change, wrong VIN check digit).

    The body is JSON (the schema below: the single-vehicle fields plus `op`) or CSV sent as
    `Content-Type: text/csv`: a header line of field names (`op`, `id`, the vehicle's
    fields, `home_lat` and `home_lon`; `features` separated by `;`), empty cells left out.
    CSV is not among the schema's media types because no schema can say which CSV texts
    are valid. `op` comes from the row or the `op` parameter. At most 1000 rows. New
    vehicles' logins are in `rows[].credentials`, shown this once; rows that retire a
    vehicle also disable its login.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    rows = bulk.parse_body(media_type, await request.body())
    return await bulk.change_in_bulk(work, settings, rows, op, vin_mode)


@router.get("/{vehicle_id}", summary="One vehicle", responses=error_responses(404))
async def get_vehicle(vehicle_id: VehicleIdPath, _staff: FleetStaff, conn: Conn) -> Vehicle:
    """The vehicle with the state of its broker login."""
    return await service.get_vehicle(conn, vehicle_id)


@router.patch("/{vehicle_id}", summary="Change a vehicle", responses=error_responses(404, 409))
async def update_vehicle(
    *,
    vehicle_id: VehicleIdPath,
    body: VehicleUpdate,
    _staff: FleetStaff,
    work: WorkDep,
    settings: SettingsDep,
    vin_mode: VinMode,
) -> Vehicle:
    """Send only what changes; `null` clears an optional field.

    `status` moves available <-> rented, available <-> maintenance, anything -> retired;
    retired is final (409 `invalid_status_transition`). Retiring here also disables the
    vehicle's login, as `POST .../retire` does.
    """
    return await service.update_vehicle(work, settings, vehicle_id, body, vin_mode)


@router.post("/{vehicle_id}/retire", summary="Retire a vehicle", responses=error_responses(404))
async def retire_vehicle(
    vehicle_id: VehicleIdPath, _staff: FleetStaff, work: WorkDep, settings: SettingsDep
) -> RetireResult:
    """Retire it for good and make the broker refuse its login.

    Idempotent: retiring again retries the broker when `broker_disabled` was false.
    """
    return await service.retire_vehicle(work, settings, vehicle_id)


@router.post(
    "/{vehicle_id}/credentials",
    summary="Issue a new MQTT login",
    responses=error_responses(404, 409),
)
async def rotate_credentials(
    vehicle_id: VehicleIdPath, _staff: FleetStaff, work: WorkDep, settings: SettingsDep
) -> MqttCredentials:
    """A new password (shown this once); the old one stops working when the broker takes it.

    Also pushes a login the broker missed. 409 `invalid_status_transition` when retired.
    """
    return await service.rotate_credentials(work, settings, vehicle_id)


# --- images -------------------------------------------------------------------------------------


@router.post(
    "/{vehicle_id}/images",
    status_code=http_status.HTTP_201_CREATED,
    summary="Upload a photo",
    responses=error_responses(404, 409, 413),
)
async def upload_image(  # noqa: PLR0913 - the request's parts
    *,
    vehicle_id: VehicleIdPath,
    file: Annotated[UploadFile, File(description="A JPEG, PNG or WebP photo.")],
    _staff: FleetStaff,
    conn: Conn,
    settings: SettingsDep,
    resources: ResourcesDep,
    store: FileStoreDep,
    background: BackgroundTasks,
) -> VehicleImage:
    """Judged by its content, not its name or declared type: 409 `invalid_image` otherwise.

    413 over FREECAR_FLEET_IMAGE_MAX_BYTES; 409 `image_dimensions` outside the pixel limits.
    Thumbnails are made by the worker after the upload commits (`status` pending -> ready).
    """
    data = await file.read(settings.fleet_image_max_bytes + 1)
    image = await images.upload(conn, store, settings, vehicle_id, data)
    # Background tasks run after the response is sent, and the response is sent only after
    # the request's transaction committed: the worker never looks for an uncommitted row.
    background.add_task(images.queue_variants, resources.celery, image.id)
    return image


@router.get("/{vehicle_id}/images", summary="A vehicle's photos", responses=error_responses(404))
async def list_images(
    vehicle_id: VehicleIdPath,
    _staff: FleetStaff,
    conn: Conn,
    settings: SettingsDep,
    store: FileStoreDep,
) -> VehicleImageList:
    """Oldest first, with signed links that expire after FREECAR_FLEET_IMAGE_URL_TTL_S."""
    return await images.list_images(conn, store, settings, vehicle_id)


@router.delete(
    "/{vehicle_id}/images/{image_id}",
    status_code=http_status.HTTP_204_NO_CONTENT,
    summary="Delete a photo",
    responses=error_responses(404),
)
async def delete_image(
    *,
    vehicle_id: VehicleIdPath,
    image_id: uuid.UUID,
    _staff: FleetStaff,
    conn: Conn,
    store: FileStoreDep,
    background: BackgroundTasks,
) -> None:
    """The record goes at once; its files are removed after the commit."""
    keys = await images.delete_image(conn, vehicle_id, image_id)
    background.add_task(images.delete_files, store, keys)
