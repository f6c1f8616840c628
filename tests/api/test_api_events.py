"""/v1/admin/events: filters, keyset pagination, bad filters, and who may read it."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from api_testing import Api, error_code
from psycopg.types.json import Jsonb
from support.vehicles import insert_vehicles

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def seed(url: str, events: list[tuple[str, datetime, int | None]]) -> tuple[str, list[int]]:
    """A fresh vehicle and its events (kind, ts, geofence id); the vehicle id and event ids."""
    vehicle = f"ev-{secrets.token_hex(4)}"
    with psycopg.connect(url) as conn:
        insert_vehicles(conn, [vehicle])
        ids = []
        for kind, ts, fence in events:
            row = conn.execute(
                "INSERT INTO events (vehicle_id, kind, ts, lat, lon, geofence_id, details)"
                " VALUES (%s, %s, %s, 31.2, 121.4, %s, %s) RETURNING id",
                (vehicle, kind, ts, fence, Jsonb({"n": len(ids)})),
            ).fetchone()
            assert row is not None
            ids.append(int(row[0]))
    return vehicle, ids


def fence(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "INSERT INTO geofences (name, kind, geometry, radius_m) VALUES"
            " ('zone', 'restricted', '{\"type\": \"Point\", \"coordinates\": [121.4, 31.2]}', 50)"
            " RETURNING id"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def list_events(api: Api, who: Any, **params: Any) -> Any:
    response = await api.get("/v1/admin/events", who, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_staff_filter_by_vehicle_kind_fence_and_time(
    api: Api, migrated_database_url: str
) -> None:
    zone = fence(migrated_database_url)
    vehicle, ids = seed(
        migrated_database_url,
        [
            ("low_fuel", T0, None),
            ("overspeed", T0 + timedelta(minutes=1), None),
            ("entered_restricted", T0 + timedelta(minutes=2), zone),
            ("low_fuel", T0 + timedelta(minutes=3), None),
        ],
    )
    seed(migrated_database_url, [("low_fuel", T0, None)])  # another car: never listed
    manager = await api.dev_login(role="fleet_manager")

    page = await list_events(api, manager, vehicle_id=vehicle)
    assert [e["id"] for e in page["items"]] == ids[::-1]  # newest first
    assert page["next_cursor"] is None
    first = page["items"][-1]
    assert first["kind"] == "low_fuel"
    assert first["details"] == {"n": 0}
    assert first["notify"] is True
    assert first["notified_at"] is None

    both = await list_events(api, manager, vehicle_id=vehicle, kind=["overspeed", "low_fuel"])
    assert [e["id"] for e in both["items"]] == [ids[3], ids[1], ids[0]]
    by_fence = await list_events(api, manager, geofence_id=zone)
    assert [e["id"] for e in by_fence["items"]] == [ids[2]]
    window = await list_events(
        api,
        manager,
        vehicle_id=vehicle,
        **{
            "from": (T0 + timedelta(minutes=1)).isoformat(),
            "to": (T0 + timedelta(minutes=3)).isoformat(),  # exclusive
        },
    )
    assert [e["id"] for e in window["items"]] == [ids[2], ids[1]]


async def test_pages_follow_the_cursor_without_gaps_or_repeats(
    api: Api, migrated_database_url: str
) -> None:
    # Two events share a timestamp: the id breaks the tie, so none is skipped.
    times = [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    vehicle, ids = seed(migrated_database_url, [("idle", ts, None) for ts in [*times, T0]])
    admin = await api.dev_login(role="admin")

    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"vehicle_id": vehicle, "limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = await list_events(api, admin, **params)
        seen += [e["id"] for e in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))
    stamps = [(t, i) for t, i in zip([*times, T0], ids, strict=True)]
    assert seen == [i for _, i in sorted(stamps, reverse=True)]


async def test_bad_filters_have_stable_codes(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    for params in (
        {"kind": "teleported"},
        {"from": "2026-03-01T12:00:00"},  # no UTC offset: ambiguous
        {"vehicle_id": "bad id"},
        {"limit": 0},
        {"cursor": "not base64url!"},
        {"geofence_id": -1},
    ):
        response = await api.get("/v1/admin/events", admin, params=params)
        assert response.status_code == 422, params
        assert error_code(response) == "validation_error"
    not_ours = await api.get("/v1/admin/events", admin, params={"cursor": "bm90LWEtY3Vyc29y"})
    assert (not_ours.status_code, error_code(not_ours)) == (409, "invalid_cursor")
    # An empty window is not an error: it holds no events.
    backwards = await list_events(
        api, admin, **{"from": T0.isoformat(), "to": (T0 - timedelta(hours=1)).isoformat()}
    )
    assert backwards == {"items": [], "next_cursor": None}


async def test_riders_and_strangers_may_not_read_events(api: Api) -> None:
    rider = await api.dev_login()
    refused = await api.get("/v1/admin/events", rider)
    assert refused.status_code == 403
    assert error_code(refused) == "forbidden"
    anonymous = await api.get("/v1/admin/events")
    assert anonymous.status_code == 401
