"""/v1/vehicles/{id}/availability and the staff's maintenance windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from api_testing import Api, MakeApi, error_code
from test_api_vehicles import Fleet, hours, ids, soon

from api.vehicles.service import merge_busy

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio

BUFFER = timedelta(minutes=15)


@pytest.fixture
def fleet(migrated_database_url: str) -> Iterator[Fleet]:
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        yield Fleet(conn)


def slot(starts: datetime, ends: datetime, *reasons: str) -> dict[str, Any]:
    body: dict[str, Any] = {"from": _z(starts), "to": _z(ends)}
    if reasons:
        body["reasons"] = list(reasons)
    return body


def _z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _normalise(slots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in slots:
        copy = dict(item)
        copy["from"] = _z(datetime.fromisoformat(item["from"]))
        copy["to"] = _z(datetime.fromisoformat(item["to"]))
        out.append(copy)
    return out


async def test_availability_merges_and_clips(api: Api, fleet: Fleet) -> None:
    rider = await api.dev_login()
    start = soon()
    end = start + hours(12)
    vehicle_id = fleet.vehicle(100)
    fleet.book(vehicle_id, start - hours(3), start + hours(1))  # clipped at the start
    fleet.book(vehicle_id, start + hours(1), start + hours(2))  # touches: merged
    fleet.maintenance(vehicle_id, start + hours(2) + timedelta(minutes=20), start + hours(4))
    fleet.book(vehicle_id, start + hours(6), start + hours(7), status="cancelled")  # ignored
    fleet.book(vehicle_id, start + hours(8), start + hours(9))
    fleet.book(vehicle_id, end + timedelta(minutes=10), end + hours(1))  # buffer reaches in
    response = await api.get(
        f"/v1/vehicles/{vehicle_id}/availability",
        rider,
        params={"from": start.isoformat(), "to": end.isoformat()},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["buffer_s"] == 900
    assert _normalise(body["busy"]) == [
        # The bookings end at 2 h, plus the buffer; the maintenance starts 5 minutes later.
        slot(start, start + hours(2) + BUFFER, "booking"),
        slot(start + hours(2) + timedelta(minutes=20), start + hours(4), "maintenance"),
        slot(start + hours(8) - BUFFER, start + hours(9) + BUFFER, "booking"),
        slot(end - timedelta(minutes=5), end, "booking"),
    ]
    assert _normalise(body["free"]) == [
        slot(start + hours(2) + BUFFER, start + hours(2) + timedelta(minutes=20)),
        slot(start + hours(4), start + hours(8) - BUFFER),
        slot(start + hours(9) + BUFFER, end - timedelta(minutes=5)),
    ]


async def test_the_buffer_is_an_api_setting(make_api: MakeApi, fleet: Fleet) -> None:
    """FREECAR_API_BOOKING_BUFFER_S is read with the API's settings, like every other."""
    start = soon()
    vehicle_id = fleet.vehicle(100)
    fleet.book(vehicle_id, start + hours(1), start + hours(2))
    async with make_api(api_booking_buffer_s=0) as api:
        rider = await api.dev_login()
        response = await api.get(
            f"/v1/vehicles/{vehicle_id}/availability",
            rider,
            params={"from": start.isoformat(), "to": (start + hours(3)).isoformat()},
        )
        assert response.json()["buffer_s"] == 0
        assert _normalise(response.json()["busy"]) == [
            slot(start + hours(1), start + hours(2), "booking")
        ]
        # The search keeps the same buffer: free for the hour right after the booking.
        window = {"from": (start + hours(2)).isoformat(), "to": (start + hours(3)).isoformat()}
        assert vehicle_id in await ids(api, rider, fleet.params(radius_m=1_000, **window))


async def test_out_of_service_vehicle_is_busy_throughout(api: Api, fleet: Fleet) -> None:
    staff = await api.dev_login(role="admin")
    start = soon()
    vehicle_id = fleet.vehicle(100, status="maintenance")
    response = await api.get(
        f"/v1/vehicles/{vehicle_id}/availability",
        staff,
        params={"from": start.isoformat(), "to": (start + hours(1)).isoformat()},
    )
    assert response.status_code == 200, response.text
    assert _normalise(response.json()["busy"]) == [slot(start, start + hours(1), "out_of_service")]
    assert response.json()["free"] == []


async def test_availability_validation(api: Api, fleet: Fleet) -> None:
    rider = await api.dev_login()
    vehicle_id = fleet.vehicle(100)
    start = soon()

    async def code(path: str, **params: Any) -> tuple[int, str]:
        response = await api.get(path, rider, params=params)
        return response.status_code, error_code(response)

    path = f"/v1/vehicles/{vehicle_id}/availability"
    iso = start.isoformat()
    assert await code(path, **{"from": iso}) == (422, "validation_error")
    assert await code(path, **{"from": iso, "to": iso}) == (409, "invalid_window")
    long = (start + timedelta(days=32)).isoformat()
    assert await code(path, **{"from": iso, "to": long}) == (409, "invalid_window")
    old = (start - timedelta(days=60)).isoformat()
    assert await code(path, **{"from": old, "to": iso}) == (409, "invalid_window")
    assert await code(
        path, **{"from": "0001-01-01T00:00:00+00:00", "to": "0001-01-02T00:00:00+00:00"}
    ) == (409, "invalid_window")
    to = (start + hours(1)).isoformat()
    assert await code("/v1/vehicles/nope/availability", **{"from": iso, "to": to}) == (
        404,
        "not_found",
    )


def test_merge_busy_edges() -> None:
    t = datetime(2031, 1, 1, tzinfo=UTC)
    free, busy = merge_busy([], t, t + hours(1))
    assert [s.model_dump() for s in free] == [{"from_": t, "to": t + hours(1)}]
    assert busy == []
    intervals: list[tuple[datetime, datetime, Any]] = [
        (t - hours(5), t - hours(4), "booking"),  # entirely before: dropped
        (t + hours(1), t + hours(3), "maintenance"),
        (t, t + hours(2), "booking"),  # overlaps the maintenance: merged, both reasons
    ]
    free, busy = merge_busy(intervals, t, t + hours(4))
    assert [(s.from_, s.to, s.reasons) for s in busy] == [
        (t, t + hours(3), ["booking", "maintenance"])
    ]
    assert [(s.from_, s.to) for s in free] == [(t + hours(3), t + hours(4))]


async def test_maintenance_management(api: Api, fleet: Fleet) -> None:
    manager = await api.dev_login(role="fleet_manager")
    start = soon()
    vehicle_id = fleet.vehicle(100)
    booking = fleet.book(vehicle_id, start + hours(3), start + hours(4))
    path = f"/v1/admin/vehicles/{vehicle_id}/maintenance"
    window = {"from": start.isoformat(), "to": (start + hours(4)).isoformat(), "reason": "tyres"}

    created = await api.post(path, manager, json=window)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["vehicle_id"] == vehicle_id
    assert body["reason"] == "tyres"
    assert body["created_by"] == manager.user_id
    assert body["conflicting_bookings"] == [str(booking)]

    overlap = await api.post(
        path,
        manager,
        json={
            **window,
            "from": (start + hours(3)).isoformat(),
            "to": (start + hours(6)).isoformat(),
        },
    )
    assert (overlap.status_code, error_code(overlap)) == (409, "maintenance_overlap")

    # Not bookable during the window: the search leaves it out.
    rider = await api.dev_login()
    during = {"from": (start + hours(1)).isoformat(), "to": (start + hours(2)).isoformat()}
    assert await ids(api, rider, fleet.params(**during)) == []

    listed = await api.get(path, manager)
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["items"]] == [body["id"]]

    deleted = await api.delete(f"{path}/{body['id']}", manager)
    assert deleted.status_code == 204
    assert await ids(api, rider, fleet.params(**during)) == [vehicle_id]
    again = await api.delete(f"{path}/{body['id']}", manager)
    assert (again.status_code, error_code(again)) == (404, "not_found")
    assert (await api.get(path, manager)).json()["items"] == []


async def test_past_windows_listed_on_request(api: Api, fleet: Fleet) -> None:
    admin = await api.dev_login(role="admin")
    vehicle_id = fleet.vehicle(100)
    now = datetime.now(UTC)
    fleet.maintenance(vehicle_id, now - timedelta(days=3), now - timedelta(days=2))
    path = f"/v1/admin/vehicles/{vehicle_id}/maintenance"
    assert (await api.get(path, admin)).json()["items"] == []
    past = await api.get(path, admin, params={"include_past": "true"})
    assert len(past.json()["items"]) == 1


async def test_maintenance_validation(api: Api, fleet: Fleet) -> None:
    admin = await api.dev_login(role="admin")
    vehicle_id = fleet.vehicle(100)
    start = soon()
    path = f"/v1/admin/vehicles/{vehicle_id}/maintenance"

    async def code(body: dict[str, Any], url: str = path) -> tuple[int, str]:
        response = await api.post(url, admin, json=body)
        return response.status_code, error_code(response)

    iso, later = start.isoformat(), (start + hours(1)).isoformat()
    assert await code({"from": later, "to": iso, "reason": "x"}) == (409, "invalid_window")
    past_from = (start - timedelta(days=3)).isoformat()
    past_to = (start - timedelta(days=2)).isoformat()
    assert await code({"from": past_from, "to": past_to, "reason": "x"}) == (409, "invalid_window")
    assert await code({"from": iso, "to": later}) == (422, "validation_error")
    assert await code({"from": iso, "to": later, "reason": " padded"}) == (422, "validation_error")
    assert await code({"from": "2031-01-01T10:00:00", "to": later, "reason": "x"}) == (
        422,
        "validation_error",
    )
    assert await code(
        {"from": iso, "to": later, "reason": "x"}, "/v1/admin/vehicles/nope/maintenance"
    ) == (404, "not_found")
    missing = await api.delete(f"{path}/00000000-0000-0000-0000-000000000000", admin)
    assert missing.status_code == 404


async def test_customers_cannot_manage_maintenance(api: Api, fleet: Fleet) -> None:
    rider = await api.dev_login()
    vehicle_id = fleet.vehicle(100)
    start = soon()
    path = f"/v1/admin/vehicles/{vehicle_id}/maintenance"
    window = {"from": start.isoformat(), "to": (start + hours(1)).isoformat(), "reason": "x"}
    for response in (
        await api.post(path, rider, json=window),
        await api.get(path, rider),
        await api.delete(f"{path}/00000000-0000-0000-0000-000000000000", rider),
    ):
        assert (response.status_code, error_code(response)) == (403, "forbidden")
    assert (await api.post(path, json=window)).status_code == 401
