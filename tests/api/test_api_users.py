"""Profiles (/v1/me) and user administration (/v1/admin/users): roles, suspension, history."""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Any

import pytest
from api_testing import Api, SignedIn, error_code

pytestmark = pytest.mark.anyio

FULL_PROFILE: dict[str, Any] = {
    "display_name": "Li Wei",
    "phone": "+8613800138000",
    "email": "Li.Wei@Example.com",
    "emergency_contact": {"name": "Li Na", "phone": "13900139000", "relationship": "sister"},
    "address": {"line1": "100 Century Avenue", "city": "Shanghai", "postal_code": "200120"},
}


def unique_email() -> str:
    return f"p{secrets.token_hex(5)}@example.com"


# Profile


async def test_a_new_rider_profile_lists_what_is_missing(api: Api) -> None:
    rider = await api.dev_login()
    me = (await api.get("/v1/me", rider)).json()
    assert me["id"] == rider.user_id
    assert me["role"] == "customer"
    assert me["completeness"] == {
        "percent": 20,  # the dev login sets a display name
        "missing": ["phone", "email", "emergency_contact", "address"],
    }
    assert me["preferences"]["language"] == "zh-CN"
    assert me["sign_in_methods"] == ["dev"]


async def test_filling_the_profile_completes_it(api: Api) -> None:
    rider = await api.dev_login()
    body = FULL_PROFILE | {"email": unique_email().upper()}
    response = await api.patch("/v1/me", rider, json=body)
    assert response.status_code == 200, response.text
    me = response.json()
    assert me["completeness"] == {"percent": 100, "missing": []}
    assert me["email"] == body["email"].lower()
    assert me["address"]["country"] == "CN"
    assert me["emergency_contact"]["relationship"] == "sister"
    assert (await api.get("/v1/me", rider)).json() == me


async def test_patch_changes_only_what_is_sent_and_null_clears(api: Api) -> None:
    rider = await api.dev_login()
    await api.patch("/v1/me", rider, json=FULL_PROFILE | {"email": unique_email()})
    me = (await api.patch("/v1/me", rider, json={"phone": None})).json()
    assert me["phone"] is None
    assert me["display_name"] == "Li Wei"
    assert me["completeness"]["missing"] == ["phone"]
    assert me["completeness"]["percent"] == 80


async def test_preferences_merge_field_by_field(api: Api) -> None:
    rider = await api.dev_login()
    await api.patch("/v1/me", rider, json={"preferences": {"marketing": True}})
    me = (await api.patch("/v1/me", rider, json={"preferences": {"language": "en"}})).json()
    assert me["preferences"]["language"] == "en"
    assert me["preferences"]["marketing"] is True
    reset = (await api.patch("/v1/me", rider, json={"preferences": None})).json()
    assert reset["preferences"]["language"] == "zh-CN"
    assert reset["preferences"]["marketing"] is False


@pytest.mark.parametrize(
    "body",
    [
        {"phone": "call me"},
        {"phone": "+0123"},
        {"email": "not-an-email"},
        {"display_name": ""},
        {"display_name": " padded "},
        {"display_name": "nul\x00byte"},
        {"display_name": "x" * 101},
        {"emergency_contact": {"name": "Li Na"}},
        {"address": {"line1": "somewhere", "city": "Shanghai", "country": "China"}},
        {"preferences": {"language": "fr"}},
        {"preferences": {"theme": "dark"}},
        {"role": "admin"},
        {"status": "active"},
    ],
)
async def test_invalid_profile_changes_are_422_with_the_field(
    api: Api, body: dict[str, Any]
) -> None:
    rider = await api.dev_login()
    response = await api.patch("/v1/me", rider, json=body)
    assert (response.status_code, error_code(response)) == (422, "validation_error")
    locations = [tuple(problem["loc"]) for problem in response.json()["error"]["details"]]
    assert any(loc[:2] == ("body", next(iter(body))) for loc in locations), locations
    assert "\x00" not in response.text


async def test_an_email_in_use_is_409(api: Api) -> None:
    email = unique_email()
    first = await api.dev_login()
    second = await api.dev_login()
    assert (await api.patch("/v1/me", first, json={"email": email})).status_code == 200
    taken = await api.patch("/v1/me", second, json={"email": email.upper()})
    assert (taken.status_code, error_code(taken)) == (409, "email_taken")


async def test_profile_changes_reach_the_history(api: Api) -> None:
    rider = await api.dev_login()
    await api.patch("/v1/me", rider, json={"phone": "13800138000", "display_name": "Wei"})
    admin = await api.dev_login(role="admin")
    entries = (await api.get(f"/v1/admin/users/{rider.user_id}/history", admin)).json()["items"]
    assert entries[0]["action"] == "profile_updated"
    assert entries[0]["details"] == {"fields": ["display_name", "phone"]}
    assert entries[0]["actor_id"] is None
    assert re.fullmatch(r"[0-9a-f]{32}", entries[0]["request_id"])


# Roles


async def _admin_calls(api: Api, target: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every operation under /v1/admin, with a valid body where one is needed."""
    bodies = {
        ("POST", "/v1/admin/users"): {
            "email": unique_email(),
            "password": "a long passphrase here",
            "role": "fleet_manager",
            "display_name": "Ops",
        },
        ("POST", "/v1/admin/users/{user_id}/suspend"): {"reason": "testing"},
    }
    calls = []
    for path, operations in api.app.openapi()["paths"].items():
        if not path.startswith("/v1/admin"):
            continue
        for method in operations:
            key = (method.upper(), path)
            calls.append((key[0], path.replace("{user_id}", target), bodies.get(key)))
    assert len(calls) >= 6
    return calls


async def test_a_customer_gets_403_on_every_admin_endpoint(api: Api) -> None:
    customer = await api.dev_login()
    target = await api.dev_login()
    for method, path, body in await _admin_calls(api, target.user_id):
        response = await api.client.request(method, path, headers=customer.headers, json=body)
        assert (response.status_code, error_code(response)) == (403, "forbidden"), (method, path)
    assert (await api.get("/v1/me", target)).status_code == 200  # nothing happened to them


async def test_fleet_managers_read_users_but_only_admins_change_them(api: Api) -> None:
    manager = await api.dev_login(role="fleet_manager")
    target = await api.dev_login()
    allowed = {("GET", "/v1/admin/users"), ("GET", f"/v1/admin/users/{target.user_id}")}
    calls = await _admin_calls(api, target.user_id)
    # User management only: other admin areas (fleet, events) let fleet managers in.
    for method, path, body in [c for c in calls if c[1].startswith("/v1/admin/users")]:
        response = await api.client.request(method, path, headers=manager.headers, json=body)
        expected = 200 if (method, path) in allowed else 403
        assert response.status_code == expected, (method, path, response.text)


async def test_admin_endpoints_can_be_limited_to_networks(make_api: Any) -> None:
    async with make_api(api_admin_networks="10.1.0.0/16, 192.168.7.7") as api:
        admin = await api.dev_login(role="admin")
        outside = await api.get("/v1/admin/users", admin)
        assert (outside.status_code, error_code(outside)) == (403, "ip_not_allowed")
        inside = api.client_from("10.1.2.3")
        allowed = await inside.get("/v1/admin/users", headers=admin.headers)
        await inside.aclose()
        assert allowed.status_code == 200
        assert (await api.get("/v1/me", admin)).status_code == 200  # only /v1/admin is fenced


# Administration


async def test_admins_find_users_by_text_role_and_status(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    tag = secrets.token_hex(4)
    riders = [await api.dev_login(f"find-{tag}-{n}") for n in range(3)]
    await api.patch("/v1/me", riders[0], json={"phone": "13800000001"})
    page = (await api.get("/v1/admin/users", admin, params={"q": f"find-{tag}"})).json()
    assert page["total"] == 3
    assert [u["display_name"] for u in page["items"]] == [f"find-{tag}-{n}" for n in (2, 1, 0)]
    by_phone = (await api.get("/v1/admin/users", admin, params={"q": "13800000001"})).json()
    assert [u["id"] for u in by_phone["items"]] == [riders[0].user_id]
    by_id = (await api.get("/v1/admin/users", admin, params={"q": riders[1].user_id})).json()
    assert [u["id"] for u in by_id["items"]] == [riders[1].user_id]
    first = (
        await api.get("/v1/admin/users", admin, params={"q": f"find-{tag}", "limit": 2})
    ).json()
    assert (first["total"], len(first["items"])) == (3, 2)
    rest = (
        await api.get(
            "/v1/admin/users",
            admin,
            params={"q": f"find-{tag}", "limit": 2, "cursor": first["next_cursor"]},
        )
    ).json()
    assert (rest["total"], len(rest["items"]), rest["next_cursor"]) == (3, 1, None)
    assert [u["id"] for u in first["items"] + rest["items"]] == [
        riders[n].user_id for n in (2, 1, 0)
    ]
    elsewhere = await api.get(
        "/v1/admin/users", admin, params={"q": "find-", "cursor": first["next_cursor"]}
    )
    assert (elsewhere.status_code, error_code(elsewhere)) == (409, "invalid_cursor")
    admins = (await api.get("/v1/admin/users", admin, params={"role": "admin"})).json()
    assert all(u["role"] == "admin" for u in admins["items"])
    wildcard = (await api.get("/v1/admin/users", admin, params={"q": "%"})).json()
    assert wildcard["total"] == 0  # LIKE's wildcards are matched literally


async def test_every_admin_view_counts_live_sessions(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    tag = secrets.token_hex(4)
    two = [await api.dev_login(f"count-{tag}-a") for _ in range(2)]
    one = await api.dev_login(f"count-{tag}-b")
    await api.post("/v1/auth/logout", two[1])  # an ended session does not count
    await api.dev_login(f"count-{tag}-b")
    listed = (await api.get("/v1/admin/users", admin, params={"q": f"count-{tag}"})).json()
    counts = {user["id"]: user["live_sessions"] for user in listed["items"]}
    assert counts == {two[0].user_id: 1, one.user_id: 2}
    for user_id, expected in counts.items():
        detail = (await api.get(f"/v1/admin/users/{user_id}", admin)).json()
        assert detail["live_sessions"] == expected
    # Suspending ends them all; reactivating brings none back; a new sign-in counts again.
    suspended = await api.post(
        f"/v1/admin/users/{one.user_id}/suspend", admin, json={"reason": "x"}
    )
    assert suspended.json()["live_sessions"] == 0
    back = await api.post(f"/v1/admin/users/{one.user_id}/reactivate", admin)
    assert back.json()["live_sessions"] == 0
    await api.dev_login(f"count-{tag}-b")
    again = (await api.get("/v1/admin/users", admin, params={"q": f"count-{tag}-b"})).json()
    assert [user["live_sessions"] for user in again["items"]] == [1]
    staff = await api.post(
        "/v1/admin/users",
        admin,
        json={
            "email": unique_email(),
            "password": "a passphrase for ops",
            "role": "admin",
            "display_name": "Count",
        },
    )
    assert staff.json()["live_sessions"] == 0


async def test_suspension_kills_sessions_at_once_and_blocks_sign_in(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    name = f"s{secrets.token_hex(4)}"
    phone = await api.dev_login(name)
    tablet = await api.dev_login(name)
    detail = (await api.get(f"/v1/admin/users/{phone.user_id}", admin)).json()
    assert detail["live_sessions"] == 2
    response = await api.post(
        f"/v1/admin/users/{phone.user_id}/suspend", admin, json={"reason": "fraud check"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "suspended"
    assert response.json()["suspended_reason"] == "fraud check"
    for device in (phone, tablet):
        refused = await api.get("/v1/me", device)
        assert (refused.status_code, error_code(refused)) == (401, "session_revoked")
        no_refresh = await api.post(
            "/v1/auth/refresh", json={"refresh_token": device.refresh_token}
        )
        assert no_refresh.status_code == 401
    again = await api.client.post("/v1/auth/dev-login", json={"username": name})
    assert (again.status_code, error_code(again)) == (403, "account_suspended")
    # Suspending twice changes nothing; reactivating lets them sign in again.
    twice = await api.post(
        f"/v1/admin/users/{phone.user_id}/suspend", admin, json={"reason": "again"}
    )
    assert twice.json()["suspended_reason"] == "fraud check"
    back = await api.post(f"/v1/admin/users/{phone.user_id}/reactivate", admin)
    assert back.json()["status"] == "active"
    assert back.json()["suspended_at"] is None
    fresh = await api.dev_login(name)
    assert (await api.get("/v1/me", fresh)).status_code == 200
    history = (await api.get(f"/v1/admin/users/{phone.user_id}/history", admin)).json()
    actions = [entry["action"] for entry in history["items"]]
    assert actions[:4] == ["signed_in", "reactivated", "sign_in_refused", "suspended"]
    suspended = history["items"][3]
    assert suspended["actor_id"] == admin.user_id
    assert suspended["details"] == {"reason": "fraud check", "sessions": 2}


async def test_an_admin_cannot_suspend_themselves(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    response = await api.post(
        f"/v1/admin/users/{admin.user_id}/suspend", admin, json={"reason": "oops"}
    )
    assert (response.status_code, error_code(response)) == (409, "cannot_suspend_self")


async def test_unknown_users_are_404(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    nobody = uuid.uuid4()
    for method, path, body in [
        ("GET", f"/v1/admin/users/{nobody}", None),
        ("GET", f"/v1/admin/users/{nobody}/history", None),
        ("POST", f"/v1/admin/users/{nobody}/suspend", {"reason": "x"}),
        ("POST", f"/v1/admin/users/{nobody}/reactivate", None),
    ]:
        response = await api.client.request(method, path, headers=admin.headers, json=body)
        assert (response.status_code, error_code(response)) == (404, "not_found"), path


async def test_admins_create_staff_who_then_sign_in(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    email = unique_email()
    body = {
        "email": email,
        "password": "a passphrase for ops",
        "role": "fleet_manager",
        "display_name": "Night shift",
    }
    created = await api.post("/v1/admin/users", admin, json=body)
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "fleet_manager"
    assert created.json()["sign_in_methods"] == ["password"]
    duplicate = await api.post("/v1/admin/users", admin, json=body)
    assert (duplicate.status_code, error_code(duplicate)) == (409, "email_taken")
    weak = await api.post("/v1/admin/users", admin, json=body | {"password": "short"})
    assert weak.status_code == 422
    signed_in = SignedIn.from_response(
        await api.post("/v1/auth/staff", json={"email": email, "password": body["password"]})
    )
    assert signed_in.role == "fleet_manager"
    # A staff account signs in with its email: removing it is refused.
    removed = await api.patch("/v1/me", signed_in, json={"email": None})
    assert (removed.status_code, error_code(removed)) == (409, "email_required")
    entries = (await api.get(f"/v1/admin/users/{signed_in.user_id}/history", admin)).json()
    assert [e["action"] for e in entries["items"]] == ["signed_in", "staff_created"]


async def test_history_pages_backwards(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    name = f"h{secrets.token_hex(4)}"
    rider = None
    for _ in range(5):
        rider = await api.dev_login(name)
    assert rider is not None
    url = f"/v1/admin/users/{rider.user_id}/history"
    first = (await api.get(url, admin, params={"limit": 4})).json()
    assert len(first["items"]) == 4
    rest = (await api.get(url, admin, params={"limit": 4, "cursor": first["next_cursor"]})).json()
    assert len(rest["items"]) == 2  # five sign-ins and the account's creation
    assert rest["next_cursor"] is None
    exactly = (await api.get(url, admin, params={"limit": 6})).json()
    assert (len(exactly["items"]), exactly["next_cursor"]) == (6, None)
    other_user = await api.get(
        f"/v1/admin/users/{admin.user_id}/history", admin, params={"cursor": first["next_cursor"]}
    )
    assert (other_user.status_code, error_code(other_user)) == (409, "invalid_cursor")
    assert rest["items"][-1]["action"] == "account_created"
