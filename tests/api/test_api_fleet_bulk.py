"""POST /v1/admin/vehicles/bulk: CSV or JSON, create or update, every row or none."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from api_testing import Api, SignedIn, error_code

pytestmark = pytest.mark.anyio

HEADER = (
    "op,id,plate,make,model,category,fuel_type,price_hour_minor,price_day_minor,currency,"
    "features,home_lat,home_lon"
)


def csv_row(vehicle_id: str, *, op: str = "create") -> str:
    return (
        f"{op},{vehicle_id},沪B·{vehicle_id[-6:].upper()},Tesla,Model 3,electric,electric,"
        "5000,30000,CNY,gps;backup_camera,31.2,121.5"
    )


def new_id() -> str:
    return f"b-{secrets.token_hex(4)}"


@pytest.fixture
async def staff(api: Api) -> SignedIn:
    return await api.dev_login(role="admin")


async def bulk(api: Api, who: SignedIn, body: str | list[Any], **params: Any) -> Any:
    if isinstance(body, str):
        return await api.client.post(
            "/v1/admin/vehicles/bulk",
            content=body.encode(),
            headers={**who.headers, "Content-Type": "text/csv"},
            params=params,
        )
    return await api.post("/v1/admin/vehicles/bulk", who, json=body, params=params)


async def exists(api: Api, who: SignedIn, vehicle_id: str) -> bool:
    return (await api.get(f"/v1/admin/vehicles/{vehicle_id}", who)).status_code == 200


async def test_csv_creates_every_row_with_logins(api: Api, staff: SignedIn) -> None:
    ids = [new_id() for _ in range(3)]
    response = await bulk(api, staff, "\n".join([HEADER, *(csv_row(i) for i in ids)]) + "\n")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["created"], body["updated"]) == (3, 0)
    assert [row["id"] for row in body["rows"]] == ids
    assert all(row["credentials"]["password"] for row in body["rows"])
    vehicle = (await api.get(f"/v1/admin/vehicles/{ids[1]}", staff)).json()
    assert vehicle["features"] == ["backup_camera", "gps"]
    assert vehicle["home"] == {"lat": 31.2, "lon": 121.5}


async def test_a_bad_row_changes_nothing(api: Api, staff: SignedIn) -> None:
    kept = new_id()
    assert (await bulk(api, staff, f"{HEADER}\n{csv_row(kept)}\n")).status_code == 200
    good, bad_category = new_id(), new_id()
    rows = [
        csv_row(good),
        csv_row(bad_category).replace(",electric,electric,", ",spaceship,electric,"),
        csv_row(kept),  # already exists
        f"update,{kept},,,,,,-5,,,,,",  # negative price
    ]
    response = await bulk(api, staff, "\n".join([HEADER, *rows]))
    assert (response.status_code, error_code(response)) == (422, "bulk_rejected")
    errors = response.json()["error"]["details"]["errors"]
    assert {(e["row"], e["field"], e["code"]) for e in errors} == {
        (2, "category", "enum"),
        (3, "id", "vehicle_exists"),
        (4, "price_hour_minor", "greater_than_equal"),
    }
    assert all(e["message"] for e in errors)
    # Row 1 was valid and inserted inside the transaction, then rolled back with the rest.
    assert not await exists(api, staff, good)
    assert (await api.get(f"/v1/admin/vehicles/{kept}", staff)).json()["price_hour_minor"] == 5000


async def test_json_updates_with_op_from_the_query(api: Api, staff: SignedIn) -> None:
    ids = [new_id(), new_id()]
    created = await bulk(api, staff, f"{HEADER}\n" + "\n".join(csv_row(i) for i in ids))
    assert created.status_code == 200
    response = await bulk(
        api,
        staff,
        [
            {"id": ids[0], "price_day_minor": 25000, "status": "maintenance"},
            {"id": ids[1], "notes": "new tyres", "home": None},
        ],
        op="update",
    )
    assert response.status_code == 200, response.text
    assert response.json()["updated"] == 2
    first = (await api.get(f"/v1/admin/vehicles/{ids[0]}", staff)).json()
    assert (first["price_day_minor"], first["status"]) == (25000, "maintenance")
    second = (await api.get(f"/v1/admin/vehicles/{ids[1]}", staff)).json()
    assert (second["notes"], second["home"]) == ("new tyres", None)
    # A refused transition in one row refuses the batch.
    response = await bulk(
        api,
        staff,
        [
            {"op": "update", "id": ids[1], "notes": "changed"},
            {"op": "update", "id": ids[0], "status": "rented"},
        ],
    )
    # Well-formed rows that conflict with the fleet: 409, same code, same report.
    assert (response.status_code, error_code(response)) == (409, "bulk_rejected")
    (error,) = response.json()["error"]["details"]["errors"]
    assert (error["row"], error["code"]) == (2, "invalid_status_transition")
    assert (await api.get(f"/v1/admin/vehicles/{ids[1]}", staff)).json()["notes"] == "new tyres"


async def test_malformed_bodies_are_4xx(api: Api, staff: SignedIn) -> None:
    cases: list[tuple[str | list[Any], dict[str, Any], str]] = [
        ("op,id,colour\ncreate,x,red\n", {}, "bulk_rejected"),  # unknown column
        ([{"id": "x"}], {}, "bulk_rejected"),  # no op anywhere
        ([1, 2], {"op": "create"}, "bulk_rejected"),
        ([], {"op": "create"}, "bulk_rejected"),
        ([{"op": "delete", "id": "x"}], {}, "bulk_rejected"),
    ]
    for body, params, code in cases:
        response = await bulk(api, staff, body, **params)
        assert (response.status_code, error_code(response)) == (422, code), body
    response = await api.client.post(
        "/v1/admin/vehicles/bulk",
        content=b"<xml/>",
        headers={**staff.headers, "Content-Type": "application/xml"},
    )
    assert (response.status_code, error_code(response)) == (415, "unsupported_media_type")
    response = await api.client.post(
        "/v1/admin/vehicles/bulk",
        content=b"\xff\xfe",
        headers={**staff.headers, "Content-Type": "text/csv"},
    )
    assert response.status_code == 422
