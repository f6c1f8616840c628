"""Sign-in (WeChat against a fake jscode2session, staff, development), refresh, sessions."""

from __future__ import annotations

import secrets
import uuid

import psycopg
import pytest
from api_testing import TEST_TOKEN_KEY, Api, MakeApi, SignedIn, error_code
from api_wechat_fake import APPID, SECRET, FakeWeChatServer, openid_for, session_key_for

from api.app import create_app
from api.auth.keys import parse_token_key
from api.auth.tokens import TokenCodec
from api.identity import Role
from api.users.service import create_staff
from core.settings import Environment

pytestmark = pytest.mark.anyio


def code(prefix: str = "") -> str:
    return f"{prefix}{secrets.token_urlsafe(16)}"


# WeChat


async def test_first_wechat_sign_in_creates_the_rider_and_the_next_finds_them(
    api: Api, wechat: FakeWeChatServer
) -> None:
    login = code()
    first = await api.post("/v1/auth/wechat", json={"code": login, "device": "iPhone 15"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["new_user"] is True
    assert body["user"]["role"] == "customer"
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == api.settings.api_access_ttl_s
    # WeChat's session_key stays on the server side of the exchange, and is not stored.
    assert session_key_for(login) not in first.text
    asked = wechat.requests[-1]
    assert asked == {
        "appid": APPID,
        "secret": SECRET,
        "js_code": login,
        "grant_type": "authorization_code",
    }
    again = await api.post("/v1/auth/wechat", json={"code": login})
    assert again.json()["new_user"] is False
    assert again.json()["user"]["id"] == body["user"]["id"]
    me = await api.get("/v1/me", SignedIn.from_response(again))
    assert me.json()["sign_in_methods"] == ["wechat"]
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        row = conn.execute(
            "SELECT wechat_openid, wechat_unionid FROM users WHERE id = %s", (body["user"]["id"],)
        ).fetchone()
        dumped = conn.execute("SELECT row_to_json(u)::text FROM users u").fetchall()
    assert row == (openid_for(login), None)
    assert all(session_key_for(login) not in text for (text,) in dumped)


async def test_the_unionid_is_kept_when_wechat_sends_one(api: Api) -> None:
    login = code("union-")
    response = await api.post("/v1/auth/wechat", json={"code": login})
    assert response.status_code == 200
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        unionid = conn.execute(
            "SELECT wechat_unionid FROM users WHERE id = %s", (response.json()["user"]["id"],)
        ).fetchone()
    assert unionid == ("u" + openid_for(login)[1:],)


@pytest.mark.parametrize(
    ("prefix", "status", "api_code", "retry_after"),
    [
        ("bad-", 401, "wechat_invalid_code", None),
        ("used-", 401, "wechat_code_used", None),
        ("blocked-", 403, "wechat_user_blocked", None),
        ("limit-", 503, "wechat_rate_limited", "60"),
        ("busy-", 503, "wechat_busy", "1"),
        ("http500-", 502, "wechat_unavailable", None),
        ("garbage-", 502, "wechat_unavailable", None),
        ("noopenid-", 502, "wechat_unavailable", None),
        ("hang-", 502, "wechat_unavailable", None),
    ],
)
async def test_wechat_errors_become_clear_api_errors(
    api: Api, prefix: str, status: int, api_code: str, retry_after: str | None
) -> None:
    response = await api.post("/v1/auth/wechat", json={"code": code(prefix)})
    assert response.status_code == status, response.text
    assert error_code(response) == api_code
    assert response.headers.get("Retry-After") == retry_after


async def test_wrong_app_credentials_are_an_upstream_error_and_never_leak(
    make_api: MakeApi,
) -> None:
    async with make_api(api_wechat_secret="not-the-right-secret") as api:
        response = await api.post("/v1/auth/wechat", json={"code": code()})
    assert response.status_code == 502
    assert error_code(response) == "wechat_unavailable"
    assert response.json()["error"]["details"] == {"wechat_errcode": 40125}
    assert "not-the-right-secret" not in response.text


async def test_wechat_unreachable_and_not_configured(make_api: MakeApi) -> None:
    async with make_api(api_wechat_base_url="http://127.0.0.1:9") as api:
        response = await api.post("/v1/auth/wechat", json={"code": code()})
        assert (response.status_code, error_code(response)) == (502, "wechat_unavailable")
    async with make_api(api_wechat_appid="", api_wechat_secret="") as api:
        response = await api.post("/v1/auth/wechat", json={"code": code()})
        assert (response.status_code, error_code(response)) == (503, "wechat_not_configured")


@pytest.mark.parametrize("body", [{}, {"code": ""}, {"code": "has space"}, {"code": "x" * 300}])
async def test_bad_wechat_requests_are_422(api: Api, body: dict[str, str]) -> None:
    response = await api.post("/v1/auth/wechat", json=body)
    assert (response.status_code, error_code(response)) == (422, "validation_error")


# Staff


ADMIN_PASSWORD = "a long admin passphrase"


async def _staff(api: Api, role: str = "admin", password: str = ADMIN_PASSWORD) -> str:
    email = f"staff-{secrets.token_hex(4)}@Example.com"
    async with await psycopg.AsyncConnection.connect(
        api.settings.database_url.get_secret_value()
    ) as conn:
        await create_staff(
            conn,
            email=email,
            password=password,
            role=Role(role),
            display_name="Ops",
            actor=None,
            client=None,
        )
        await conn.commit()
    return email


async def test_staff_sign_in_with_email_and_password(api: Api) -> None:
    email = await _staff(api)
    response = await api.post(
        "/v1/auth/staff",
        json={"email": email.upper(), "password": "a long admin passphrase", "device": "laptop"},
    )
    who = SignedIn.from_response(response)
    assert who.role == "admin"
    me = await api.get("/v1/me", who)
    assert me.json()["email"] == email.lower()
    assert me.json()["sign_in_methods"] == ["password"]


async def test_wrong_password_and_unknown_email_look_the_same(api: Api) -> None:
    email = await _staff(api)
    wrong = await api.post("/v1/auth/staff", json={"email": email, "password": "wrong"})
    unknown = await api.post(
        "/v1/auth/staff", json={"email": "nobody@example.com", "password": "wrong"}
    )
    for response in (wrong, unknown):
        assert (response.status_code, error_code(response)) == (401, "invalid_credentials")
        assert response.json()["error"]["message"] == "email or password is wrong"


async def test_a_wechat_rider_cannot_use_staff_sign_in(api: Api) -> None:
    rider = await api.dev_login()
    await api.patch("/v1/me", rider, json={"email": "rider@example.org"})
    response = await api.post(
        "/v1/auth/staff", json={"email": "rider@example.org", "password": "anything at all"}
    )
    assert (response.status_code, error_code(response)) == (401, "invalid_credentials")


# Development sign-in


async def test_dev_login_exists_only_in_development(make_api: MakeApi) -> None:
    async with make_api(env="test") as api:
        response = await api.post("/v1/auth/dev-login", json={"username": "demo"})
        assert (response.status_code, error_code(response)) == (404, "not_found")
        assert "/v1/auth/dev-login" not in api.app.openapi()["paths"]
        # Production settings refuse the test stack's placeholder passwords; the routes are
        # decided from `env` alone, so a copy with env=production shows what it would serve.
        production = api.settings.model_copy(update={"env": Environment.PRODUCTION})
        assert "/v1/auth/dev-login" not in create_app(production).openapi()["paths"]
        assert (
            "/v1/auth/dev-login"
            in create_app(
                api.settings.model_copy(update={"env": Environment.DEVELOPMENT})
            ).openapi()["paths"]
        )


async def test_dev_login_can_take_any_role(api: Api) -> None:
    admin = await api.dev_login(role="admin")
    assert admin.role == "admin"
    assert (await api.get("/v1/admin/users", admin)).status_code == 200


async def test_dev_login_never_changes_an_existing_accounts_role(api: Api) -> None:
    name = f"d{secrets.token_hex(4)}"
    customer = await api.dev_login(name)
    promote = await api.post("/v1/auth/dev-login", json={"username": name, "role": "admin"})
    assert (promote.status_code, error_code(promote)) == (409, "dev_login_role_mismatch")
    assert promote.json()["error"]["details"] == {
        "username": name,
        "role": "customer",
        "requested": "admin",
    }
    assert "<Role" not in promote.text
    # The customer's token still reaches nothing of the staff's, and the account kept its role.
    denied = await api.get("/v1/admin/users", customer)
    assert (denied.status_code, error_code(denied)) == (403, "forbidden")
    assert (await api.get("/v1/me", customer)).json()["role"] == "customer"
    # Without a role, dev login signs in as the account is; the same role is fine too.
    again = SignedIn.from_response(await api.post("/v1/auth/dev-login", json={"username": name}))
    assert (again.role, again.user_id) == ("customer", customer.user_id)
    assert (await api.dev_login(name, role="customer")).user_id == customer.user_id
    # A new account without a role is a customer.
    fresh = await api.post("/v1/auth/dev-login", json={"username": f"n{secrets.token_hex(4)}"})
    assert SignedIn.from_response(fresh).role == "customer"


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
async def test_dev_login_answers_loopback_clients(api: Api, address: str) -> None:
    client = api.client_from(address)
    response = await client.post("/v1/auth/dev-login", json={"username": "demo"})
    assert response.status_code == 200, response.text
    await client.aclose()


@pytest.mark.parametrize("address", ["203.0.113.7", "10.0.0.2", "2001:db8::1", "testclient"])
async def test_dev_login_refuses_other_clients(api: Api, address: str) -> None:
    client = api.client_from(address)
    response = await client.post(
        "/v1/auth/dev-login", json={"username": f"far{secrets.token_hex(3)}", "role": "admin"}
    )
    assert (response.status_code, error_code(response)) == (403, "dev_login_not_local")
    await client.aclose()


# Refresh rotation


async def refresh(api: Api, token: str) -> SignedIn:
    return SignedIn.from_response(await api.post("/v1/auth/refresh", json={"refresh_token": token}))


async def test_refresh_rotates_both_tokens_and_keeps_the_session(api: Api) -> None:
    first = await api.dev_login()
    second = await refresh(api, first.refresh_token)
    assert second.session_id == first.session_id
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    third = await refresh(api, second.refresh_token)
    assert (await api.get("/v1/me", third)).status_code == 200


async def test_reusing_a_spent_refresh_token_revokes_the_whole_family(api: Api) -> None:
    name = f"r{secrets.token_hex(4)}"
    rider = await api.dev_login(name)
    other_device = await api.dev_login(name)
    spent = rider.refresh_token
    current = await refresh(api, spent)
    replay = await api.post("/v1/auth/refresh", json={"refresh_token": spent})
    assert (replay.status_code, error_code(replay)) == (401, "refresh_token_reused")
    # Everything of that family is dead at once: the newest access and refresh tokens too.
    me = await api.get("/v1/me", current)
    assert (me.status_code, error_code(me)) == (401, "session_revoked")
    after = await api.post("/v1/auth/refresh", json={"refresh_token": current.refresh_token})
    assert (after.status_code, error_code(after)) == (401, "session_revoked")
    again = await api.post("/v1/auth/refresh", json={"refresh_token": spent})
    assert error_code(again) == "refresh_token_reused"
    # Another session is another family: untouched.
    assert (await api.get("/v1/me", other_device)).status_code == 200
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        reason = conn.execute(
            "SELECT revoke_reason FROM auth_sessions WHERE id = %s", (rider.session_id,)
        ).fetchone()
        reuse = conn.execute(
            "SELECT count(*) FROM user_audit WHERE user_id = %s AND action = 'refresh_reuse'",
            (rider.user_id,),
        ).fetchone()
    assert reason == ("refresh_reuse",)
    assert reuse == (1,)


async def test_refresh_tokens_are_stored_only_as_hashes(api: Api) -> None:
    rider = await api.dev_login()
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        rows = conn.execute(
            "SELECT token_hash FROM refresh_tokens WHERE session_id = %s", (rider.session_id,)
        ).fetchall()
    assert len(rows) == 1
    assert len(rows[0][0]) == 32
    assert rider.refresh_token.encode() not in rows[0][0]


async def test_unknown_and_expired_refresh_tokens_are_refused(api: Api) -> None:
    unknown = await api.post("/v1/auth/refresh", json={"refresh_token": "A" * 43})
    assert (unknown.status_code, error_code(unknown)) == (401, "invalid_refresh_token")
    rider = await api.dev_login()
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        conn.execute(
            "UPDATE refresh_tokens SET issued_at = now() - interval '2 days',"
            " expires_at = now() - interval '1 day' WHERE session_id = %s",
            (rider.session_id,),
        )
    expired = await api.post("/v1/auth/refresh", json={"refresh_token": rider.refresh_token})
    assert (expired.status_code, error_code(expired)) == (401, "refresh_token_expired")


# Sessions


async def test_sessions_list_devices_and_mark_the_current_one(api: Api) -> None:
    name = f"r{secrets.token_hex(4)}"
    phone = await api.dev_login(name, device="Huawei P60")
    tablet = await api.dev_login(name, device="iPad")
    response = await api.client.get(
        "/v1/auth/sessions", headers={**phone.headers, "User-Agent": "MicroMessenger/8.0.50"}
    )
    assert response.status_code == 200
    items = response.json()["items"]
    assert {item["id"] for item in items} == {phone.session_id, tablet.session_id}
    mine = next(item for item in items if item["current"])
    assert mine["id"] == phone.session_id
    assert mine["device"] == "Huawei P60"
    assert mine["ip"] == "127.0.0.1"
    assert {"created_at", "last_seen_at", "expires_at", "user_agent", "method"} <= set(mine)


async def test_a_deleted_session_is_refused_on_its_next_request(api: Api) -> None:
    name = f"r{secrets.token_hex(4)}"
    phone = await api.dev_login(name)
    stolen = await api.dev_login(name)
    assert (await api.get("/v1/me", stolen)).status_code == 200
    deleted = await api.delete(f"/v1/auth/sessions/{stolen.session_id}", phone)
    assert deleted.status_code == 204
    refused = await api.get("/v1/me", stolen)
    assert (refused.status_code, error_code(refused)) == (401, "session_revoked")
    no_refresh = await api.post("/v1/auth/refresh", json={"refresh_token": stolen.refresh_token})
    assert error_code(no_refresh) == "session_revoked"
    assert (await api.get("/v1/me", phone)).status_code == 200
    gone = await api.get(f"/v1/auth/sessions/{stolen.session_id}", phone)
    assert gone.status_code == 404


async def test_logout_ends_this_session_only(api: Api) -> None:
    name = f"r{secrets.token_hex(4)}"
    phone = await api.dev_login(name)
    tablet = await api.dev_login(name)
    assert (await api.post("/v1/auth/logout", phone)).status_code == 204
    refused = await api.get("/v1/me", phone)
    assert error_code(refused) == "session_revoked"
    assert (await api.get("/v1/me", tablet)).status_code == 200
    history = await api.get(
        f"/v1/admin/users/{phone.user_id}/history", await api.dev_login(role="admin")
    )
    actions = [entry["action"] for entry in history.json()["items"]]
    assert actions[0] == "signed_out"
    assert actions.count("signed_in") == 2


async def test_a_token_for_a_session_that_never_existed_is_refused(api: Api) -> None:
    rider = await api.dev_login()
    forged = TokenCodec(
        [parse_token_key(TEST_TOKEN_KEY)], audience="freecar-api", issuer="freecar", ttl_s=900
    ).issue(user_id=uuid.UUID(rider.user_id), role=Role.ADMIN, session_id=uuid.uuid4())
    response = await api.client.get("/v1/me", headers={"Authorization": f"Bearer {forged.token}"})
    assert (response.status_code, error_code(response)) == (401, "session_revoked")
