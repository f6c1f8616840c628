"""/v1/admin/vehicles: the fleet's records, bulk changes, photos and MQTT logins (staff only).

Changes the broker must follow (a new login, a retirement) are committed first and pushed
to the broker right after, inside the same request, so the answer says whether the broker
took them (`broker_provisioned`, `broker_disabled`). The database is the record: a change
the broker missed is retried by rotating the login or retiring again.
"""

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, BackgroundTasks, Depends, File, Query, Request, UploadFile
from fastapi import status as http_status
from pydantic import TypeAdapter

from api.deps import Conn, ResourcesDep, SettingsDep, admin_network_guard
from api.errors import NotFoundError, error_responses
from api.fleet import bulk, images, service
from api.fleet.auth import FleetStaff
from api.fleet.files import FileStoreDep
from api.fleet.schemas import (
    TRIMMED_TEXT,
    BulkOp,
    BulkResult,
    BulkRow,
    BulkRowResult,
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
from core.filestore import FileStore
from core.images import image_key
from db import vehicle_images
from db.vehicle_vocabulary import Category, VehicleStatus
from jobs.names import VEHICLE_IMAGE_VARIANTS_TASK

log = logging.getLogger(__name__)

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
    body: VehicleCreate, _staff: FleetStaff, conn: Conn, settings: SettingsDep, vin_mode: VinMode
) -> VehicleCreated:
    """Add a vehicle and issue its MQTT login, shown this once.

    409 `vehicle_exists`, `plate_taken`, `vin_taken`; 422 `vin_check_digit` when the VIN's
    check digit is wrong (see `vin_check`). `credentials.broker_provisioned` says whether the
    broker took the login; when false, `broker_error` says why (no dynamic security, broker
    down) and `POST .../credentials` retries.
    """
    login = await service.create_vehicle(conn, body, vin_mode)
    await conn.commit()  # the database first; the broker follows what is committed
    outcome = (await service.push_logins(conn, settings, [login]))[login.vehicle_id]
    vehicle = await service.get_vehicle(conn, body.id)
    return VehicleCreated(
        **vehicle.model_dump(),
        credentials=service.credentials(login, outcome, settings.topic_root),
    )


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
    request: Request,
    _staff: FleetStaff,
    conn: Conn,
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
    vehicles' logins are in `rows[].credentials`, shown this once.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if media_type in {"text/csv", "application/csv"}:
        rows = bulk.parse_csv(body)
    elif media_type == "application/json" or media_type.endswith("+json"):
        rows = bulk.parse_json(body)
    else:
        raise bulk.UnsupportedMediaTypeError
    applied = await bulk.apply(conn, rows, op, vin_mode)
    await conn.commit()  # every row is in; now the broker learns the new logins
    logins = [row.login for row in applied if row.login is not None]
    outcomes = await service.push_logins(conn, settings, logins) if logins else {}
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
                else service.credentials(row.login, outcomes[row.vehicle_id], settings.topic_root),
            )
            for row in applied
        ],
    )


@router.get("/{vehicle_id}", summary="One vehicle", responses=error_responses(404))
async def get_vehicle(vehicle_id: VehicleIdPath, _staff: FleetStaff, conn: Conn) -> Vehicle:
    """The vehicle with the state of its broker login."""
    return await service.get_vehicle(conn, vehicle_id)


@router.patch("/{vehicle_id}", summary="Change a vehicle", responses=error_responses(404, 409))
async def update_vehicle(
    vehicle_id: VehicleIdPath,
    body: VehicleUpdate,
    _staff: FleetStaff,
    conn: Conn,
    settings: SettingsDep,
    vin_mode: VinMode,
) -> Vehicle:
    """Send only what changes; `null` clears an optional field.

    `status` moves available <-> rented, available <-> maintenance, anything -> retired;
    retired is final (409 `invalid_status_transition`). Retiring here also disables the
    vehicle's login, as `POST .../retire` does.
    """
    before = await service.get_vehicle(conn, vehicle_id)
    vehicle = await service.update_vehicle(conn, vehicle_id, body, vin_mode)
    if vehicle.status is VehicleStatus.RETIRED and before.status is not VehicleStatus.RETIRED:
        await conn.commit()
        await service.disable_login(conn, settings, vehicle)
        vehicle = await service.get_vehicle(conn, vehicle_id)
    return vehicle


@router.post("/{vehicle_id}/retire", summary="Retire a vehicle", responses=error_responses(404))
async def retire_vehicle(
    vehicle_id: VehicleIdPath, _staff: FleetStaff, conn: Conn, settings: SettingsDep
) -> RetireResult:
    """Retire it for good and make the broker refuse its login.

    Idempotent: retiring again retries the broker when `broker_disabled` was false.
    """
    vehicle = await service.retire_vehicle(conn, vehicle_id)
    await conn.commit()
    outcome = await service.disable_login(conn, settings, vehicle)
    vehicle = await service.get_vehicle(conn, vehicle_id)
    return RetireResult(
        **vehicle.model_dump(), broker_disabled=outcome.ok, broker_error=outcome.error
    )


@router.post(
    "/{vehicle_id}/credentials",
    summary="Issue a new MQTT login",
    responses=error_responses(404, 409),
)
async def rotate_credentials(
    vehicle_id: VehicleIdPath, _staff: FleetStaff, conn: Conn, settings: SettingsDep
) -> MqttCredentials:
    """A new password (shown this once); the old one stops working when the broker takes it.

    Also pushes a login the broker missed. 409 `invalid_status_transition` when retired.
    """
    login = await service.rotate_login(conn, vehicle_id)
    await conn.commit()
    outcome = (await service.push_logins(conn, settings, [login]))[login.vehicle_id]
    return service.credentials(login, outcome, settings.topic_root)


# --- images -------------------------------------------------------------------------------------


def _image_view(row: vehicle_images.ImageRow, store: FileStore, ttl_s: int) -> VehicleImage:
    variants = {
        name: store.signed_url(str(variant["key"]), ttl_s)
        for name, variant in sorted(row.variants.items())
        if isinstance(variant, dict) and "key" in variant
    }
    return VehicleImage(
        id=row.id,
        vehicle_id=row.vehicle_id,
        content_type=row.content_type,
        width=row.width,
        height=row.height,
        size_bytes=row.size_bytes,
        status=row.status,
        url=store.signed_url(row.key, ttl_s),
        variants=variants,
        urls_expire_at=datetime.fromtimestamp(time.time() + ttl_s, tz=UTC),
        created_at=row.created_at,
    )


def queue_variants(celery: Any, image_id: uuid.UUID) -> None:  # noqa: ANN401 - celery is untyped
    """Queue the variants task (runs after the response, so after the commit)."""
    try:
        celery.send_task(VEHICLE_IMAGE_VARIANTS_TASK, args=[str(image_id)])
    except Exception:
        # The image stays `pending`; uploading again or running the task by hand fixes it.
        log.exception("could not queue %s for image %s", VEHICLE_IMAGE_VARIANTS_TASK, image_id)


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
    await service.get_vehicle(conn, vehicle_id)
    data = await file.read(settings.fleet_image_max_bytes + 1)
    checked = await asyncio.to_thread(
        images.check_upload,
        data,
        max_bytes=settings.fleet_image_max_bytes,
        min_side=settings.fleet_image_min_side_px,
        max_side=settings.fleet_image_max_side_px,
    )
    image_id = uuid.uuid4()
    key = image_key(vehicle_id, image_id, f"original.{checked.extension}")
    # Stored before the row commits, so the worker always finds the file the row names.
    await asyncio.to_thread(store.put, key, checked.data, content_type=checked.content_type)
    row = await vehicle_images.insert_image(
        conn,
        {
            "id": image_id,
            "vehicle_id": vehicle_id,
            "key": key,
            "content_type": checked.content_type,
            "width": checked.width,
            "height": checked.height,
            "size_bytes": len(checked.data),
        },
    )
    # Background tasks run after the response is sent, and the response is sent only after
    # the request's transaction committed: the worker never looks for an uncommitted row.
    background.add_task(queue_variants, resources.celery, image_id)
    return _image_view(row, store, settings.fleet_image_url_ttl_s)


@router.get("/{vehicle_id}/images", summary="A vehicle's photos", responses=error_responses(404))
async def list_images(
    vehicle_id: VehicleIdPath,
    _staff: FleetStaff,
    conn: Conn,
    settings: SettingsDep,
    store: FileStoreDep,
) -> VehicleImageList:
    """Oldest first, with signed links that expire after FREECAR_FLEET_IMAGE_URL_TTL_S."""
    await service.get_vehicle(conn, vehicle_id)
    rows = await vehicle_images.list_images(conn, vehicle_id)
    return VehicleImageList(
        items=[_image_view(row, store, settings.fleet_image_url_ttl_s) for row in rows]
    )


def _delete_files(store: FileStore, keys: list[str]) -> None:
    for key in keys:
        try:
            store.delete(key)
        except Exception:  # a file left behind costs storage, not correctness
            log.exception("could not delete %s", key)


@router.delete(
    "/{vehicle_id}/images/{image_id}",
    status_code=http_status.HTTP_204_NO_CONTENT,
    summary="Delete a photo",
    responses=error_responses(404),
)
async def delete_image(
    vehicle_id: VehicleIdPath,
    image_id: uuid.UUID,
    _staff: FleetStaff,
    conn: Conn,
    store: FileStoreDep,
    background: BackgroundTasks,
) -> None:
    """The record goes at once; its files are removed after the commit."""
    row = await vehicle_images.delete_image(conn, vehicle_id, image_id)
    if row is None:
        raise NotFoundError("image not found")
    keys = [row.key] + [
        str(variant["key"])
        for variant in row.variants.values()
        if isinstance(variant, dict) and "key" in variant
    ]
    background.add_task(_delete_files, store, keys)
