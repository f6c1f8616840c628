"""/v1/admin/event-rules: create, list, get, PATCH, delete; refusals, roles, hub notifications."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
import pytest
from api_testing import Api, error_code

from db.event_rules import EVENT_RULES_CHANNEL, LISTEN_EVENT_RULES

pytestmark = pytest.mark.anyio

URL = "/v1/admin/event-rules"
NO_SUCH_FENCE = 999_999_999


def fence(url: str) -> int:
    """A fresh restricted circle; its id."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "INSERT INTO geofences (name, kind, geometry, radius_m) VALUES"
            " ('zone', 'restricted', '{\"type\": \"Point\", \"coordinates\": [121.4, 31.2]}', 50)"
            " RETURNING id"
        ).fetchone()
    assert row is not None
    return int(row[0])


def conflict(response: Any) -> str:
    """The stable code of a 409."""
    assert response.status_code == 409, response.text
    return error_code(response)


async def default_rule(api: Api, who: Any, kind: str) -> dict[str, Any]:
    """The kind's default rule as the API lists it."""
    page = (await api.get(URL, who, params={"kind": kind})).json()
    [rule] = [r for r in page["items"] if r["geofence_id"] is None]
    return dict(rule)


def heard(listener: psycopg.Connection[Any], *, timeout: float = 5) -> list[str]:
    """The payloads of the event-rule notifications that arrive within `timeout`."""
    found = list(listener.notifies(timeout=timeout, stop_after=1))
    assert all(n.channel == EVENT_RULES_CHANNEL for n in found)
    return [n.payload for n in found]


async def test_create_get_list_update_delete(api: Api, migrated_database_url: str) -> None:
    manager = await api.dev_login(role="fleet_manager")
    zone = fence(migrated_database_url)
    created = await api.post(
        URL,
        manager,
        json={
            "kind": "entered_restricted",
            "geofence_id": zone,
            "channels": ["ops_sms", "ops_push"],
            "command": "honk",
        },
    )
    assert created.status_code == 201, created.text
    rule = created.json()
    assert {k: rule[k] for k in ("kind", "geofence_id", "channels", "command", "enabled")} == {
        "kind": "entered_restricted",
        "geofence_id": zone,
        "channels": ["ops_sms", "ops_push"],
        "command": "honk",
        "enabled": True,
    }
    assert rule["created_at"] == rule["updated_at"]
    one = await api.get(f"{URL}/{rule['id']}", manager)
    assert one.status_code == 200
    assert one.json() == rule
    listed = (await api.get(URL, manager, params={"geofence_id": zone})).json()
    assert listed == {"items": [rule], "next_cursor": None}

    # PATCH changes only what it sends; null removes the command.
    changed = await api.patch(
        f"{URL}/{rule['id']}", manager, json={"command": None, "enabled": False}
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["channels"], body["command"], body["enabled"]) == (
        ["ops_sms", "ops_push"],
        None,
        False,
    )
    assert datetime.fromisoformat(body["updated_at"]) > datetime.fromisoformat(rule["updated_at"])
    with psycopg.connect(migrated_database_url) as conn:
        row = conn.execute(
            "SELECT kind, geofence_id, channels, command, enabled FROM event_rules WHERE id = %s",
            (rule["id"],),
        ).fetchone()
    assert row == ("entered_restricted", zone, ["ops_sms", "ops_push"], None, False)

    deleted = await api.delete(f"{URL}/{rule['id']}", manager)
    assert deleted.status_code == 204
    gone = await api.get(f"{URL}/{rule['id']}", manager)
    assert gone.status_code == 404
    assert error_code(gone) == "not_found"
    assert (await api.delete(f"{URL}/{rule['id']}", manager)).status_code == 404
    assert (await api.patch(f"{URL}/{rule['id']}", manager, json={})).status_code == 404


async def test_a_kind_has_one_default_rule_and_one_rule_per_fence(
    api: Api, migrated_database_url: str
) -> None:
    admin = await api.dev_login(role="admin")
    default = await default_rule(api, admin, "moving_while_locked")
    assert (default["channels"], default["command"]) == (["ops_email", "ops_webhook"], "immobilize")
    again = await api.post(URL, admin, json={"kind": "moving_while_locked"})
    assert conflict(again) == "rule_exists"
    assert again.json()["error"]["details"] == {
        "id": default["id"],
        "kind": "moving_while_locked",
        "geofence_id": None,
    }

    zone, other = fence(migrated_database_url), fence(migrated_database_url)
    # Overspeed events carry no fence today, but nothing in the hub forbids the rule.
    first = await api.post(URL, admin, json={"kind": "overspeed", "geofence_id": zone})
    assert first.status_code == 201, first.text
    duplicate = await api.post(
        URL, admin, json={"kind": "overspeed", "geofence_id": zone, "channels": ["rider"]}
    )
    assert conflict(duplicate) == "rule_exists"
    assert duplicate.json()["error"]["details"]["id"] == first.json()["id"]
    # Another fence, or another kind at the same fence, is another place.
    elsewhere = await api.post(URL, admin, json={"kind": "overspeed", "geofence_id": other})
    assert elsewhere.status_code == 201, elsewhere.text
    low_fuel = await api.post(URL, admin, json={"kind": "low_fuel", "geofence_id": zone})
    assert low_fuel.status_code == 201, low_fuel.text
    # Moving a rule onto a place that is taken is refused, and changes nothing.
    moved = await api.patch(f"{URL}/{elsewhere.json()['id']}", admin, json={"geofence_id": zone})
    assert conflict(moved) == "rule_exists"
    onto_default = await api.patch(
        f"{URL}/{elsewhere.json()['id']}", admin, json={"geofence_id": None}
    )
    assert conflict(onto_default) == "rule_exists"
    kept = await api.get(f"{URL}/{elsewhere.json()['id']}", admin)
    assert kept.json() == elsewhere.json()


async def test_a_rule_names_a_fence_that_exists(api: Api, migrated_database_url: str) -> None:
    admin = await api.dev_login(role="admin")
    missing = await api.post(URL, admin, json={"kind": "low_fuel", "geofence_id": NO_SUCH_FENCE})
    assert conflict(missing) == "unknown_geofence"
    assert missing.json()["error"]["details"] == {
        "field": "geofence_id",
        "geofence_id": NO_SUCH_FENCE,
    }
    rule = await api.post(
        URL, admin, json={"kind": "geofence_exit", "geofence_id": fence(migrated_database_url)}
    )
    assert rule.status_code == 201, rule.text
    patched = await api.patch(
        f"{URL}/{rule.json()['id']}", admin, json={"geofence_id": NO_SUCH_FENCE}
    )
    assert conflict(patched) == "unknown_geofence"


@pytest.mark.parametrize("command", ["unlock", "mobilize"])
async def test_a_rule_never_unlocks_or_mobilizes(
    api: Api, migrated_database_url: str, command: str
) -> None:
    admin = await api.dev_login(role="admin")
    zone = fence(migrated_database_url)
    refused = await api.post(
        URL, admin, json={"kind": "geofence_enter", "geofence_id": zone, "command": command}
    )
    assert conflict(refused) == "command_not_allowed"
    details = refused.json()["error"]["details"]
    assert details["command"] == command
    assert details["allowed"] == ["lock", "locate", "honk", "immobilize"]
    with psycopg.connect(migrated_database_url) as conn:
        count = conn.execute(
            "SELECT count(*) FROM event_rules WHERE geofence_id = %s", (zone,)
        ).fetchone()
    assert count == (0,)
    # Nor by SQL: the hub issues whatever a stored rule names.
    with (
        psycopg.connect(migrated_database_url) as conn,
        pytest.raises(psycopg.errors.CheckViolation),
    ):
        conn.execute(
            "INSERT INTO event_rules (kind, geofence_id, command)"
            " VALUES ('geofence_enter', %s, %s)",
            (zone, command),
        )

    rule = (await api.post(URL, admin, json={"kind": "geofence_enter", "geofence_id": zone})).json()
    patched = await api.patch(f"{URL}/{rule['id']}", admin, json={"command": command})
    assert conflict(patched) == "command_not_allowed"


async def test_deleting_a_default_rule_leaves_its_kind_doing_nothing(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    idle = await default_rule(api, admin, "idle")
    assert (await api.delete(f"{URL}/{idle['id']}", admin)).status_code == 204
    left = (await api.get(URL, admin, params={"kind": "idle"})).json()["items"]
    assert [r for r in left if r["geofence_id"] is None] == []
    # The place is free again.
    back = await api.post(URL, admin, json={"kind": "idle", "channels": ["ops_push"]})
    assert back.status_code == 201, back.text
    assert back.json()["id"] != idle["id"]


async def test_deleting_a_geofence_deletes_its_rules(api: Api, migrated_database_url: str) -> None:
    admin = await api.dev_login(role="admin")
    zone = fence(migrated_database_url)
    rule = (
        await api.post(URL, admin, json={"kind": "left_service_area", "geofence_id": zone})
    ).json()
    with psycopg.connect(migrated_database_url, autocommit=True) as listener:
        listener.execute(LISTEN_EVENT_RULES)
        assert (await api.delete(f"/v1/admin/geofences/{zone}", admin)).status_code == 204
        # The cascade is a change to the rules: the hubs hear of it.
        assert heard(listener) == ["DELETE"]
    gone = await api.get(f"{URL}/{rule['id']}", admin)
    assert gone.status_code == 404


async def test_every_change_and_no_refusal_tells_the_hubs(
    api: Api, migrated_database_url: str
) -> None:
    admin = await api.dev_login(role="admin")
    with psycopg.connect(migrated_database_url, autocommit=True) as listener:
        listener.execute(LISTEN_EVENT_RULES)
        zone = fence(migrated_database_url)
        created = await api.post(
            URL, admin, json={"kind": "door_open_while_locked", "geofence_id": zone}
        )
        assert created.status_code == 201
        assert heard(listener) == ["INSERT"]
        url = f"{URL}/{created.json()['id']}"
        assert (await api.patch(url, admin, json={"channels": ["ops_email"]})).status_code == 200
        assert heard(listener) == ["UPDATE"]
        assert (await api.delete(url, admin)).status_code == 204
        assert heard(listener) == ["DELETE"]
        # A refused change and a PATCH that changes nothing write nothing: no reload anywhere.
        assert conflict(await api.post(URL, admin, json={"kind": "offline"})) == "rule_exists"
        offline = await default_rule(api, admin, "offline")
        same = await api.patch(f"{URL}/{offline['id']}", admin, json={"enabled": True})
        assert same.json() == offline
        assert heard(listener, timeout=0.3) == []


async def test_list_filters_and_keyset_pages(api: Api, migrated_database_url: str) -> None:
    admin = await api.dev_login(role="admin")
    zone = fence(migrated_database_url)
    ids = []
    for kind, enabled in (("low_battery", True), ("offline", False), ("online", True)):
        response = await api.post(
            URL, admin, json={"kind": kind, "geofence_id": zone, "enabled": enabled}
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])

    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"geofence_id": zone, "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get(URL, admin, params=params)).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    disabled = (await api.get(URL, admin, params={"geofence_id": zone, "enabled": "false"})).json()
    assert [r["id"] for r in disabled["items"]] == [ids[1]]
    one_kind = (await api.get(URL, admin, params={"kind": "online", "limit": 500})).json()
    assert {r["kind"] for r in one_kind["items"]} == {"online"}
    assert ids[2] in [r["id"] for r in one_kind["items"]]
    everything = (await api.get(URL, admin, params={"limit": 500})).json()
    assert everything["next_cursor"] is None
    assert len(everything["items"]) >= 14 + 3  # the defaults and these

    typo = await api.get(URL, admin, params={"knd": "online"})
    assert typo.status_code == 400
    assert error_code(typo) == "unknown_query_parameter"
    for params in ({"cursor": "x!"}, {"kind": "no_such_kind"}, {"geofence_id": "0"}):
        bad = await api.get(URL, admin, params=params)
        assert bad.status_code == 422, params
        assert error_code(bad) == "validation_error"
    not_ours = await api.get(URL, admin, params={"cursor": "x1"})
    assert (not_ours.status_code, error_code(not_ours)) == (409, "invalid_cursor")


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "low_fuel", "channels": ["ops_email", "ops_email"]},
        {"kind": "low_fuel", "channels": ["carrier_pigeon"]},
        {"kind": "no_such_kind"},
        {"kind": "low_fuel", "command": "self_destruct"},
        {"kind": "low_fuel", "geofence_id": 0},
        {"kind": "low_fuel", "priority": 1},
        {"channels": []},
    ],
)
async def test_bodies_the_schema_refuses_are_422(api: Api, body: dict[str, Any]) -> None:
    admin = await api.dev_login(role="admin")
    response = await api.post(URL, admin, json=body)
    assert response.status_code == 422, response.text
    assert error_code(response) == "validation_error"


async def test_patch_may_not_null_a_required_field(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    rule = await default_rule(api, admin, "command_failed")
    for field in ("kind", "channels", "enabled"):
        response = await api.patch(f"{URL}/{rule['id']}", admin, json={field: None})
        assert response.status_code == 422, field
        assert error_code(response) == "validation_error"
    duplicate = await api.patch(f"{URL}/{rule['id']}", admin, json={"channels": ["rider", "rider"]})
    assert duplicate.status_code == 422
    assert (await api.get(f"{URL}/{rule['id']}", admin)).json() == rule


async def test_a_rule_written_with_sql_for_an_unknown_kind_can_be_read_and_fixed(
    api: Api, migrated_database_url: str
) -> None:
    with psycopg.connect(migrated_database_url) as conn:
        row = conn.execute(
            "INSERT INTO event_rules (kind, channels) VALUES ('low_fule', '{ops_email}')"
            " RETURNING id"
        ).fetchone()
    assert row is not None
    admin = await api.dev_login(role="admin")
    url = f"{URL}/{row[0]}"
    assert (await api.get(url, admin)).json()["kind"] == "low_fule"
    fixed = await api.patch(url, admin, json={"kind": "engine_on_without_trip"})
    # The default rule of that kind exists: the typo is best deleted.
    assert conflict(fixed) == "rule_exists"
    assert (await api.delete(url, admin)).status_code == 204


async def test_customers_may_not(api: Api) -> None:
    rider = await api.dev_login()
    for response in (
        await api.get(URL, rider),
        await api.post(URL, rider, json={"kind": "low_fuel"}),
        await api.get(f"{URL}/1", rider),
        await api.patch(f"{URL}/1", rider, json={"enabled": False}),
        await api.delete(f"{URL}/1", rider),
    ):
        assert response.status_code == 403
        assert error_code(response) == "forbidden"
    anonymous = await api.get(URL)
    assert anonymous.status_code == 401
    assert error_code(anonymous) == "missing_token"
    assert (await api.delete(f"{URL}/1")).status_code == 401
