"""/v1/admin/vehicles: records, VIN check digits, status transitions, paging, MQTT logins."""

from __future__ import annotations

import re
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
import pytest
from api_testing import Api, MakeApi, SignedIn, error_code
from psycopg import sql

from api.fleet.schemas import VinCheckMode
from api.fleet.service import check_vin, vin_check_digit
from broker.provisioning import CLIENT_NOT_FOUND, DynsecClient
from db.vehicle_vocabulary import Category, FuelType, VehicleStatus

# The broker tests' MQTT probe (tests/broker has no package to import it from).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "broker"))
from mqtt_testing import MqttProbe

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from enum import StrEnum

    from devstack.stack import DevStack

pytestmark = pytest.mark.anyio

NA_VIN = "1M8GDM9AXKP042788"  # the textbook North American VIN, check digit X
CN_VIN = "LGXC16DF3N0000001"
EU_VIN = "WVWZZZ1JZ3W386752"  # European: position 9 is a filler, no check digit
NOT_AUTHORISED = {5, 135}
VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def valid_vin() -> str:
    """A random North American VIN with a correct check digit."""
    body = "1" + "".join(secrets.choice(VIN_ALPHABET) for _ in range(16))
    return body[:8] + vin_check_digit(body) + body[9:]


def vehicle_body(**overrides: Any) -> dict[str, Any]:
    suffix = secrets.token_hex(4)
    body: dict[str, Any] = {
        "id": f"t-{suffix}",
        "plate": f"沪A·{suffix.upper()}",
        "make": "BYD",
        "model": "Qin Plus",
        "year": 2023,
        "category": "electric",
        "fuel_type": "electric",
        "features": ["gps", "bluetooth"],
        "price_hour_minor": 3500,
        "price_day_minor": 22000,
        "currency": "CNY",
        "home": {"lat": 31.2304, "lon": 121.4737},
    }
    body.update(overrides)
    return body


@pytest.fixture
async def staff(api: Api) -> SignedIn:
    return await api.dev_login(role="fleet_manager")


async def create(api: Api, who: SignedIn, **overrides: Any) -> dict[str, Any]:
    response = await api.post("/v1/admin/vehicles", who, json=vehicle_body(**overrides))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# VIN check digits (ISO 3779)


def test_check_digit_examples() -> None:
    assert vin_check_digit(NA_VIN) == "X"
    assert vin_check_digit("11111111111111111") == "1"
    check_vin(NA_VIN, VinCheckMode.STRICT)
    check_vin(EU_VIN, VinCheckMode.AUTO)  # not checked: no check digit in Europe
    check_vin(NA_VIN[:8] + "5" + NA_VIN[9:], VinCheckMode.OFF)


async def test_a_wrong_check_digit_is_refused_with_a_code(api: Api, staff: SignedIn) -> None:
    wrong = NA_VIN[:8] + "5" + NA_VIN[9:]
    response = await api.post("/v1/admin/vehicles", staff, json=vehicle_body(vin=wrong))
    assert response.status_code == 409  # well-formed, but the VIN contradicts itself
    assert error_code(response) == "vin_check_digit"
    assert response.json()["error"]["details"] == {"field": "vin", "expected": "X", "found": "5"}
    # A Chinese VIN is checked too; a European one is not unless asked.
    response = await api.post(
        "/v1/admin/vehicles", staff, json=vehicle_body(vin=CN_VIN[:8] + "7" + CN_VIN[9:])
    )
    assert error_code(response) == "vin_check_digit"
    assert (
        await api.post("/v1/admin/vehicles", staff, json=vehicle_body(vin=EU_VIN))
    ).status_code == 201
    response = await api.post(
        "/v1/admin/vehicles?vin_check=strict", staff, json=vehicle_body(vin="WVWZZZ1JZ3W386753")
    )
    assert error_code(response) == "vin_check_digit"
    # And an operator can turn it off for one request.
    response = await api.post(
        "/v1/admin/vehicles?vin_check=off", staff, json=vehicle_body(vin=wrong)
    )
    assert response.status_code == 201


async def test_vin_format_and_vocabulary_are_schema_errors(api: Api, staff: SignedIn) -> None:
    for bad in ({"vin": "1M8GDM9AXKP04278O"}, {"features": ["jetpack"]}, {"currency": "XYZ"}):
        response = await api.post("/v1/admin/vehicles", staff, json=vehicle_body(**bad))
        assert response.status_code == 422, bad
        assert error_code(response) == "validation_error"


# Records


async def test_create_get_update_and_conflicts(api: Api, staff: SignedIn) -> None:
    created = await create(api, staff, vin=valid_vin(), features=["gps", "child_seat", "gps"])
    assert created["status"] == "available"
    assert created["features"] == ["child_seat", "gps"]
    vehicle_id = created["id"]
    got = (await api.get(f"/v1/admin/vehicles/{vehicle_id}", staff)).json()
    assert got["plate"] == created["plate"]
    assert got["home"] == {"lat": 31.2304, "lon": 121.4737}

    response = await api.patch(
        f"/v1/admin/vehicles/{vehicle_id}",
        staff,
        json={"notes": "scratch on rear bumper", "mileage_km": 1520.5, "home": None},
    )
    assert response.status_code == 200, response.text
    assert response.json()["notes"] == "scratch on rear bumper"
    assert response.json()["home"] is None
    response = await api.patch(f"/v1/admin/vehicles/{vehicle_id}", staff, json={"make": None})
    assert (response.status_code, error_code(response)) == (422, "validation_error")

    again = await api.post("/v1/admin/vehicles", staff, json=vehicle_body(id=vehicle_id))
    assert (again.status_code, error_code(again)) == (409, "vehicle_exists")
    same_plate = await api.post(
        "/v1/admin/vehicles", staff, json=vehicle_body(plate=created["plate"])
    )
    assert error_code(same_plate) == "plate_taken"
    other = await create(api, staff)
    response = await api.patch(
        f"/v1/admin/vehicles/{other['id']}", staff, json={"plate": created["plate"]}
    )
    assert (response.status_code, error_code(response)) == (409, "plate_taken")
    missing = await api.get("/v1/admin/vehicles/no-such-car", staff)
    assert (missing.status_code, error_code(missing)) == (404, "not_found")


async def test_riders_cannot_manage_the_fleet(api: Api) -> None:
    rider = await api.dev_login()
    response = await api.post("/v1/admin/vehicles", rider, json=vehicle_body())
    assert (response.status_code, error_code(response)) == (403, "forbidden")
    assert (await api.get("/v1/admin/vehicles", rider)).status_code == 403


async def test_status_transitions(api: Api, staff: SignedIn) -> None:
    vehicle_id = (await create(api, staff))["id"]
    url = f"/v1/admin/vehicles/{vehicle_id}"

    async def move(status: str) -> Any:
        return await api.patch(url, staff, json={"status": status})

    assert (await move("rented")).json()["status"] == "rented"
    refused = await move("maintenance")  # rented -> maintenance must pass through available
    assert (refused.status_code, error_code(refused)) == (409, "invalid_status_transition")
    assert refused.json()["error"]["details"] == {
        "from": "rented",
        "to": "maintenance",
        "allowed": ["available", "retired"],
    }
    assert (await move("available")).status_code == 200
    assert (await move("maintenance")).status_code == 200
    assert (await move("maintenance")).status_code == 200  # no change is no transition
    assert (await move("available")).status_code == 200
    retired = await api.post(f"{url}/retire", staff)
    assert retired.status_code == 200
    assert retired.json()["status"] == "retired"
    for status in ("available", "rented", "maintenance"):
        response = await move(status)
        assert (response.status_code, error_code(response)) == (409, "invalid_status_transition")
    assert (await api.post(f"{url}/retire", staff)).status_code == 200  # idempotent
    rotate = await api.post(f"{url}/credentials", staff)
    assert error_code(rotate) == "invalid_status_transition"


async def test_list_filters_and_keyset_pages(api: Api, staff: SignedIn) -> None:
    make = f"Make{secrets.token_hex(3)}"
    ids = [(await create(api, staff, make=make, category="suv"))["id"] for _ in range(5)]
    await api.patch(f"/v1/admin/vehicles/{ids[0]}", staff, json={"status": "maintenance"})
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"q": make.lower(), "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/v1/admin/vehicles", staff, params=params)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))
    maintenance = (
        await api.get("/v1/admin/vehicles", staff, params={"q": make, "status": "maintenance"})
    ).json()
    assert [item["id"] for item in maintenance["items"]] == [ids[0]]
    none = await api.get("/v1/admin/vehicles", staff, params={"q": make, "category": "luxury"})
    assert none.json()["items"] == []
    by_id = (await api.get("/v1/admin/vehicles", staff, params={"q": ids[3]})).json()
    assert [item["id"] for item in by_id["items"]] == [ids[3]]
    bad = await api.get("/v1/admin/vehicles", staff, params={"cursor": "0.a"})
    assert (bad.status_code, error_code(bad)) == (422, "validation_error")
    not_ours = await api.get("/v1/admin/vehicles", staff, params={"cursor": "bm90LWEtY3Vyc29y"})
    assert (not_ours.status_code, error_code(not_ours)) == (409, "invalid_cursor")
    # A cursor pages only the list it was made for.
    first = (await api.get("/v1/admin/vehicles", staff, params={"q": make, "limit": 1})).json()
    other = await api.get(
        "/v1/admin/vehicles",
        staff,
        params={"q": make, "status": "available", "cursor": first["next_cursor"]},
    )
    assert (other.status_code, error_code(other)) == (409, "invalid_cursor")


# MQTT logins


async def test_without_an_admin_login_the_broker_is_not_told(api: Api, staff: SignedIn) -> None:
    created = await create(api, staff)
    credentials = created["credentials"]
    assert credentials["username"] == created["id"]
    assert len(credentials["password"]) >= 32
    assert credentials["broker_provisioned"] is False
    assert "FREECAR_MQTT_ADMIN_URL" in credentials["broker_error"]
    assert created["broker"]["provisioned"] is False
    # The password is never shown again, nor stored in clear.
    again = (await api.get(f"/v1/admin/vehicles/{created['id']}", staff)).json()
    assert "credentials" not in again
    assert credentials["password"] not in str(again)


async def test_an_unreachable_broker_is_reported_not_crashed(make_api: MakeApi) -> None:
    async with make_api(
        mqtt_admin_url="mqtt://admin:pw@127.0.0.1:9", fleet_dynsec_timeout_s=1
    ) as api:
        staff = await api.dev_login(role="admin")
        created = await create(api, staff)
        assert created["credentials"]["broker_provisioned"] is False
        assert "cannot reach" in created["credentials"]["broker_error"]
        retired = (await api.post(f"/v1/admin/vehicles/{created['id']}/retire", staff)).json()
        assert retired["broker_disabled"] is False
        assert retired["status"] == "retired"


@pytest.fixture
async def dynsec_api(
    make_api: MakeApi, devstack: DevStack, mqtt_topic_root: str
) -> AsyncIterator[Api]:
    if not devstack.info.mqtt_dynamic_security:
        pytest.skip(f"the session's broker is {devstack.info.mqtt_broker}: no dynamic security")
    async with make_api(
        mqtt_admin_url=devstack.info.mqtt_admin_url, topic_root=mqtt_topic_root
    ) as api:
        yield api


async def test_created_vehicle_talks_on_its_topics_and_retired_one_is_refused(
    dynsec_api: Api, devstack: DevStack, mqtt_url: str, mqtt_topic_root: str
) -> None:
    api, root = dynsec_api, mqtt_topic_root
    staff = await api.dev_login(role="fleet_manager")
    created = await create(api, staff)
    vehicle_id, password = created["id"], created["credentials"]["password"]
    assert created["credentials"]["broker_provisioned"] is True, created
    assert created["broker"]["provisioned"] is True
    watcher = MqttProbe(mqtt_url)
    assert watcher.connect() == 0
    watcher.subscribe(f"{root}/#")
    car = MqttProbe(devstack.info.mqtt_url, username=vehicle_id, password=password)
    try:
        assert car.connect() == 0
        car.publish(f"{root}/other-car/telemetry", b"forged")
        car.publish(f"{root}/{vehicle_id}/telemetry", b"fix")
        assert watcher.next_message() == (f"{root}/{vehicle_id}/telemetry", b"fix")
        assert watcher.messages.empty()
    finally:
        car.close()

    # A rotated login replaces the old password.
    rotated = (await api.post(f"/v1/admin/vehicles/{vehicle_id}/credentials", staff)).json()
    assert rotated["broker_provisioned"] is True
    old = MqttProbe(devstack.info.mqtt_url, username=vehicle_id, password=password)
    assert old.connect() in NOT_AUTHORISED
    old.close()

    retired = (await api.post(f"/v1/admin/vehicles/{vehicle_id}/retire", staff)).json()
    assert retired["broker_disabled"] is True
    assert retired["broker"]["provisioned"] is False
    gone = MqttProbe(devstack.info.mqtt_url, username=vehicle_id, password=rotated["password"])
    assert gone.connect() in NOT_AUTHORISED
    gone.close()
    watcher.close()


@pytest.mark.parametrize(
    ("column", "vocabulary"),
    [("category", Category), ("fuel_type", FuelType), ("status", VehicleStatus)],
)
def test_the_vocabulary_is_the_tables(
    migrated_database_url: str, column: str, vocabulary: type[StrEnum]
) -> None:
    """db.vehicle_vocabulary and the vehicles table's CHECK constraints list the same words."""
    with psycopg.connect(migrated_database_url) as conn:
        definitions = [
            str(row[0])
            for row in conn.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = 'vehicles'::regclass AND contype = 'c'"
            )
        ]
    (check,) = [d for d in definitions if f"({column} = ANY" in d or f"(({column} = ANY" in d]
    assert set(re.findall(r"'([a-z_]+)'::text", check)) == {word.value for word in vocabulary}


# The broker follows commits


def install_failure(database_url: str, name: str, clause: LiteralString) -> None:
    """A trigger `name` (`clause` says when it fires) that makes the database refuse."""
    trigger = sql.Identifier(name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
            ).format(trigger)
        )
        conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON vehicle_credentials").format(trigger))
        conn.execute(sql.SQL("CREATE {} EXECUTE FUNCTION {}()").format(sql.SQL(clause), trigger))


def broker_knows(devstack: DevStack, username: str) -> bool:
    """Whether the broker's dynamic security has a client of this name."""
    with DynsecClient(devstack.info.mqtt_admin_url) as dynsec:
        found = dynsec.run(
            {"command": "getClient", "username": username}, accept=(CLIENT_NOT_FOUND,)
        )
    return found.get("error") != CLIENT_NOT_FOUND


async def test_a_request_that_rolls_back_tells_the_broker_nothing(
    dynsec_api: Api, devstack: DevStack, migrated_database_url: str
) -> None:
    # The commit itself fails for these vehicles: a deferred check, as a constraint would.
    install_failure(
        migrated_database_url,
        "refuse_doomed_commit",
        "CONSTRAINT TRIGGER refuse_doomed_commit AFTER INSERT ON vehicle_credentials"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.vehicle_id LIKE 'doomed-%')",
    )
    staff = await dynsec_api.dev_login(role="fleet_manager")
    doomed = f"doomed-{secrets.token_hex(3)}"
    response = await dynsec_api.post("/v1/admin/vehicles", staff, json=vehicle_body(id=doomed))
    assert (response.status_code, error_code(response)) == (500, "internal_error")
    missing = await dynsec_api.get(f"/v1/admin/vehicles/{doomed}", staff)
    assert missing.status_code == 404
    assert not broker_knows(devstack, doomed)
    # In bulk, one doomed row rolls every row back, and the broker hears of none.
    fine, also_doomed = f"t-{secrets.token_hex(3)}", f"doomed-{secrets.token_hex(3)}"
    rows = [
        vehicle_body(id=fine) | {"op": "create"},
        vehicle_body(id=also_doomed) | {"op": "create"},
    ]
    response = await dynsec_api.post("/v1/admin/vehicles/bulk", staff, json=rows)
    assert response.status_code == 500
    assert not broker_knows(devstack, fine)
    assert not broker_knows(devstack, also_doomed)


async def test_a_committed_login_reaches_the_broker_even_if_its_answer_is_not_recorded(
    dynsec_api: Api, devstack: DevStack, migrated_database_url: str
) -> None:
    # Recording the broker's answer fails for these vehicles, after the vehicle committed.
    install_failure(
        migrated_database_url,
        "refuse_broker_record",
        "TRIGGER refuse_broker_record BEFORE UPDATE OF broker_synced_at ON vehicle_credentials"
        " FOR EACH ROW WHEN (NEW.vehicle_id LIKE 'unrecorded-%')",
    )
    staff = await dynsec_api.dev_login(role="fleet_manager")
    vehicle_id = f"unrecorded-{secrets.token_hex(3)}"
    response = await dynsec_api.post("/v1/admin/vehicles", staff, json=vehicle_body(id=vehicle_id))
    # The car exists and its one-time password is in the answer, which says what the broker
    # did; the stored state says the answer was not recorded.
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["credentials"]["broker_provisioned"] is True
    assert created["broker"] == {"provisioned": False, "error": None, "synced_at": None}
    car = MqttProbe(
        devstack.info.mqtt_url, username=vehicle_id, password=created["credentials"]["password"]
    )
    try:
        assert car.connect() == 0
    finally:
        car.close()


async def test_a_bulk_retirement_refuses_the_vehicles_login(
    dynsec_api: Api, devstack: DevStack
) -> None:
    staff = await dynsec_api.dev_login(role="admin")
    created = await create(dynsec_api, staff)
    vehicle_id, password = created["id"], created["credentials"]["password"]
    assert created["credentials"]["broker_provisioned"] is True
    response = await dynsec_api.post(
        "/v1/admin/vehicles/bulk",
        staff,
        json=[{"op": "update", "id": vehicle_id, "status": "retired"}],
    )
    assert response.status_code == 200, response.text
    car = MqttProbe(devstack.info.mqtt_url, username=vehicle_id, password=password)
    try:
        assert car.connect() in NOT_AUTHORISED
    finally:
        car.close()
    retired = (await dynsec_api.get(f"/v1/admin/vehicles/{vehicle_id}", staff)).json()
    assert retired["status"] == "retired"
    assert retired["broker"]["provisioned"] is False
