"""/v1/admin/geofences: create, list, get, PATCH (merged and validated whole), delete, roles."""

from __future__ import annotations

import copy
from typing import Any

import psycopg
import pytest
from api_testing import Api, error_code
from psycopg.types.json import Jsonb

pytestmark = pytest.mark.anyio

SQUARE: dict[str, Any] = {
    "type": "Polygon",
    "coordinates": [
        [[121.46, 31.22], [121.48, 31.22], [121.48, 31.24], [121.46, 31.24], [121.46, 31.22]]
    ],
}
URL = "/v1/admin/geofences"


def square(name: str = "downtown", **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "service_area", "geometry": copy.deepcopy(SQUARE), **extra}


def problem_types(response: Any) -> list[str]:
    """The stable codes of a refused definition."""
    assert response.status_code == 409, response.text
    assert error_code(response) == "invalid_geofence"
    return [p["type"] for p in response.json()["error"]["details"]]


async def test_create_get_list_update_delete(api: Api, migrated_database_url: str) -> None:
    manager = await api.dev_login(role="fleet_manager")
    created = await api.post(URL, manager, json=square(schedule={"tz": "Asia/Shanghai"}))
    assert created.status_code == 201, created.text
    fence = created.json()
    assert fence["kind"] == "service_area"
    assert fence["enter_margin_m"] == 10.0
    assert fence["schedule"] == {
        "days": [1, 2, 3, 4, 5, 6, 7],
        "from": "00:00",
        "to": "00:00",
        "tz": "Asia/Shanghai",
    }
    one = await api.get(f"{URL}/{fence['id']}", manager)
    assert one.status_code == 200
    assert one.json() == fence

    # PATCH merges with the stored spec: a circle needs its radius and a null geometry type.
    changed = await api.patch(
        f"{URL}/{fence['id']}",
        manager,
        json={
            "geometry": {"type": "Point", "coordinates": [121.47, 31.23]},
            "radius_m": 300,
            "kind": "parking_zone",
        },
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["name"], body["kind"], body["radius_m"]) == ("downtown", "parking_zone", 300.0)
    assert body["schedule"] == fence["schedule"]  # untouched fields stay
    cleared = await api.patch(f"{URL}/{fence['id']}", manager, json={"schedule": None})
    assert cleared.json()["schedule"] is None

    with psycopg.connect(migrated_database_url) as conn:
        row = conn.execute("SELECT kind, radius_m FROM geofences WHERE id = %s", (fence["id"],))
        assert row.fetchone() == ("parking_zone", 300.0)

    deleted = await api.delete(f"{URL}/{fence['id']}", manager)
    assert deleted.status_code == 204
    gone = await api.get(f"{URL}/{fence['id']}", manager)
    assert gone.status_code == 404
    assert error_code(gone) == "not_found"
    again = await api.delete(f"{URL}/{fence['id']}", manager)
    assert again.status_code == 404


async def test_list_filters_and_keyset_pages(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    ids = []
    for index in range(5):
        kind = "restricted" if index % 2 else "parking_zone"
        response = await api.post(
            URL,
            admin,
            json={
                "name": f"zone-{index}",
                "kind": kind,
                "geometry": {"type": "Point", "coordinates": [121.4 + index / 100, 31.2]},
                "radius_m": 100,
                "active": index != 4,
            },
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])

    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"kind": "parking_zone", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get(URL, admin, params=params)).json()
        seen += [f["id"] for f in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [i for i in seen if i in ids] == [ids[0], ids[2], ids[4]]
    inactive = (await api.get(URL, admin, params={"active": "false", "limit": 500})).json()
    assert ids[4] in [f["id"] for f in inactive["items"]]
    assert not {ids[0], ids[1], ids[2], ids[3]} & {f["id"] for f in inactive["items"]}

    typo = await api.get(URL, admin, params={"knd": "restricted"})
    assert typo.status_code == 400
    assert error_code(typo) == "unknown_query_parameter"
    bad_cursor = await api.get(URL, admin, params={"cursor": "x!"})
    assert bad_cursor.status_code == 422
    not_ours = await api.get(URL, admin, params={"cursor": "x1"})
    assert (not_ours.status_code, error_code(not_ours)) == (409, "invalid_cursor")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            square(geometry={"type": "Polygon", "coordinates": [SQUARE["coordinates"][0][:-1]]}),
            "ring_not_closed",
        ),
        (
            square(
                geometry={
                    "type": "Polygon",
                    "coordinates": [
                        [
                            [121.46, 31.22],
                            [121.48, 31.24],
                            [121.48, 31.22],
                            [121.46, 31.24],
                            [121.46, 31.22],
                        ]
                    ],
                }
            ),
            "invalid_geometry",
        ),
        (
            square(
                geometry={
                    "type": "Polygon",
                    "coordinates": [[[100, 20], [110, 20], [110, 30], [100, 30], [100, 20]]],
                }
            ),
            "too_large",
        ),
        (square(geometry={"type": "Point", "coordinates": [121.47, 31.23]}), "radius_required"),
        (square(radius_m=50), "radius_not_allowed"),
        (square(geometry={"type": "Feature"}), "unsupported_geometry_type"),
        (square(schedule={"tz": "Mars/Olympus"}), "unknown_time_zone"),
    ],
)
async def test_invalid_shapes_answer_409_with_stable_codes(
    api: Api, body: dict[str, Any], expected: str
) -> None:
    admin = await api.dev_login(role="admin")
    assert expected in problem_types(await api.post(URL, admin, json=body))


async def test_patch_validates_the_merged_whole(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    fence = (await api.post(URL, admin, json=square())).json()
    # A polygon given a radius, or a circle without one: only the merge shows it.
    assert "radius_not_allowed" in problem_types(
        await api.patch(f"{URL}/{fence['id']}", admin, json={"radius_m": 100})
    )
    assert "radius_required" in problem_types(
        await api.patch(
            f"{URL}/{fence['id']}",
            admin,
            json={"geometry": {"type": "Point", "coordinates": [121.47, 31.23]}},
        )
    )
    # null for a field that has no null: the schema says no.
    null_name = await api.patch(f"{URL}/{fence['id']}", admin, json={"name": None})
    assert null_name.status_code == 422
    assert error_code(null_name) == "validation_error"
    unchanged = await api.get(f"{URL}/{fence['id']}", admin)
    assert unchanged.json() == fence
    missing = await api.patch(f"{URL}/999999999", admin, json={"name": "x"})
    assert missing.status_code == 404


async def test_customers_may_not(api: Api) -> None:
    rider = await api.dev_login()
    for response in (
        await api.get(URL, rider),
        await api.post(URL, rider, json=square()),
        await api.get(f"{URL}/1", rider),
        await api.patch(f"{URL}/1", rider, json={"name": "x"}),
        await api.delete(f"{URL}/1", rider),
    ):
        assert response.status_code == 403
        assert error_code(response) == "forbidden"
    anonymous = await api.get(URL)
    assert anonymous.status_code == 401


async def test_a_row_the_model_refuses_can_still_be_read_and_fixed(
    api: Api, migrated_database_url: str
) -> None:
    """A fence written with plain SQL (the table checks less than the model) never breaks reads."""
    open_ring = {"type": "Polygon", "coordinates": [SQUARE["coordinates"][0][:-1]]}
    with psycopg.connect(migrated_database_url) as conn:
        row = conn.execute(
            "INSERT INTO geofences (name, kind, geometry) VALUES ('by hand', 'restricted', %s)"
            " RETURNING id",
            (Jsonb(open_ring),),
        ).fetchone()
    assert row is not None
    url = f"{URL}/{row[0]}"
    admin = await api.dev_login(role="admin")
    assert (await api.get(url, admin)).json()["geometry"] == open_ring
    listed = await api.get(URL, admin, params={"kind": "restricted", "limit": 500})
    assert row[0] in [f["id"] for f in listed.json()["items"]]
    assert "ring_not_closed" in problem_types(await api.patch(url, admin, json={"name": "x"}))
    fixed = await api.patch(url, admin, json={"geometry": SQUARE})
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["geometry"] == SQUARE
