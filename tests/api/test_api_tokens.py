"""Access tokens: what is refused (tampered, expired, wrong key or audience, no exp) and why."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pyseto
import pytest
from api_testing import TEST_TOKEN_KEY, Api, FakeClock, error_code

from api.auth.keys import generate_token_key, parse_token_key, parse_token_keys
from api.auth.tokens import AccessClaims, TokenCodec
from api.errors import InvalidTokenError, TokenExpiredError
from api.identity import Role
from protocol import base64url

KEY = parse_token_key(TEST_TOKEN_KEY)
OTHER_KEY = parse_token_key(generate_token_key())


def codec(*keys: str, clock: FakeClock | None = None, audience: str = "freecar-api") -> TokenCodec:
    ring = [parse_token_key(k) for k in keys] or [KEY]
    return TokenCodec(
        ring, audience=audience, issuer="freecar", ttl_s=900, clock=clock or FakeClock()
    )


def issue(c: TokenCodec) -> str:
    return c.issue(user_id=uuid.uuid4(), role=Role.CUSTOMER, session_id=uuid.uuid4()).token


def handmade(claims: dict[str, object], *, kid: str = KEY.key_id) -> str:
    """A token made outside the codec, with the test key: claims exactly as given."""
    footer = json.dumps({"kid": kid}).encode()
    return pyseto.encode(KEY.key, json.dumps(claims).encode(), footer).decode()


def good_claims(now: datetime) -> dict[str, object]:
    return {
        "sub": str(uuid.uuid4()),
        "role": "customer",
        "sid": str(uuid.uuid4()),
        "iat": now.isoformat(),
        "exp": (now + timedelta(minutes=15)).isoformat(),
        "jti": str(uuid.uuid4()),
        "aud": "freecar-api",
        "iss": "freecar",
    }


def test_round_trip_carries_every_claim_and_names_the_key_in_the_footer() -> None:
    clock = FakeClock(1_700_000_000.4)
    c = codec(clock=clock)
    user, session = uuid.uuid4(), uuid.uuid4()
    issued = c.issue(user_id=user, role=Role.ADMIN, session_id=session)
    claims = c.verify(issued.token)
    assert (claims.sub, claims.role, claims.sid) == (user, Role.ADMIN, session)
    assert (claims.aud, claims.iss) == ("freecar-api", "freecar")
    assert claims.iat == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert claims.exp - claims.iat == timedelta(seconds=900)
    assert issued.expires_in == 900
    assert issued.token.startswith("v4.local.")
    footer = json.loads(base64url.decode(issued.token.split(".")[3]))
    assert footer == {"kid": KEY.key_id}
    assert KEY.key_id.startswith("k4.lid.")


def test_a_tampered_token_is_refused() -> None:
    c = codec()
    token = issue(c)
    header, version, body, footer = token.split(".")
    flipped = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    with pytest.raises(InvalidTokenError, match="decrypt"):
        c.verify(f"{header}.{version}.{flipped}.{footer}")


def test_an_expired_token_is_refused_at_exp_not_before() -> None:
    clock = FakeClock()
    c = codec(clock=clock)
    token = issue(c)
    clock.advance(899)
    c.verify(token)
    clock.advance(1)
    with pytest.raises(TokenExpiredError):
        c.verify(token)


def test_a_token_from_another_key_is_refused() -> None:
    theirs = codec(TEST_TOKEN_KEY)
    ours = codec(generate_token_key())
    with pytest.raises(InvalidTokenError, match="does not hold"):
        ours.verify(issue(theirs))


def test_a_token_naming_our_key_but_made_with_another_is_refused() -> None:
    forged_footer = json.dumps({"kid": KEY.key_id}).encode()
    claims = json.dumps(good_claims(datetime.now(UTC))).encode()
    forged = pyseto.encode(OTHER_KEY.key, claims, forged_footer).decode()
    with pytest.raises(InvalidTokenError, match="decrypt"):
        codec().verify(forged)


def test_a_token_for_another_audience_or_issuer_is_refused() -> None:
    with pytest.raises(InvalidTokenError, match="audience"):
        codec().verify(issue(codec(audience="freecar-partner-api")))
    claims = good_claims(datetime.now(UTC)) | {"iss": "someone-else"}
    with pytest.raises(InvalidTokenError, match="issuer"):
        codec().verify(handmade(claims))


def test_a_token_without_exp_is_refused_although_pyseto_would_accept_it() -> None:
    claims = good_claims(datetime.now(UTC))
    del claims["exp"]
    token = handmade(claims)
    assert pyseto.decode(KEY.key, token).payload  # the library alone lets it through
    with pytest.raises(InvalidTokenError, match="exp"):
        codec().verify(token)


def test_a_token_issued_in_the_future_is_refused() -> None:
    claims = good_claims(datetime.now(UTC) + timedelta(minutes=5))
    with pytest.raises(InvalidTokenError, match="future"):
        codec().verify(handmade(claims))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-token",
        "v4.public.eyJ9.eyJ9",
        "v2.local.abc.def",
        "v4.local.abcdef",  # no footer
        "v4.local.abcdef.bm90LWpzb24",  # footer is not JSON
        "v4.local.abcdef." + base64url.encode(b'{"kid": 7}'),
        "v4.local." + "A" * 5000,
    ],
)
def test_malformed_tokens_are_refused_before_any_crypto(token: str) -> None:
    with pytest.raises(InvalidTokenError):
        codec().verify(token)


def test_claims_of_the_wrong_type_are_refused() -> None:
    claims = good_claims(datetime.now(UTC)) | {"role": "superuser"}
    with pytest.raises(InvalidTokenError, match="malformed"):
        codec().verify(handmade(claims))
    with pytest.raises(InvalidTokenError, match="malformed"):
        codec().verify(handmade(good_claims(datetime.now(UTC)) | {"sub": "alice"}))


def test_rotation_accepts_every_key_in_the_ring_and_signs_with_the_first() -> None:
    old, new = TEST_TOKEN_KEY, generate_token_key()
    before = issue(codec(old))
    during = codec(new, old)
    assert during.verify(before).aud == "freecar-api"
    fresh = issue(during)
    footer = json.loads(base64url.decode(fresh.split(".")[3]))
    assert footer["kid"] == parse_token_key(new).key_id
    with pytest.raises(InvalidTokenError):
        codec(new).verify(before)  # the old key removed: its tokens die


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("k4.public.AAAA", "k4.local"),
        ("k4.local.abc", "32 bytes"),
        ("k4.local.###", "base64url"),
        (f"{TEST_TOKEN_KEY},{TEST_TOKEN_KEY}", "twice"),
        (" , ", "no token key"),
    ],
)
def test_bad_key_rings_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_token_keys(text)


def test_claims_model_requires_every_claim() -> None:
    required = {name for name, field in AccessClaims.model_fields.items() if field.is_required()}
    assert required == {"sub", "role", "sid", "iat", "exp", "jti", "aud", "iss"}


# Over HTTP: each refusal is a 401 with its own code and a WWW-Authenticate challenge.


@pytest.mark.anyio
async def test_http_refuses_bad_tokens_with_stable_codes(api: Api, clock: FakeClock) -> None:
    who = await api.dev_login()
    assert (await api.get("/v1/me", who)).status_code == 200
    now = datetime.fromtimestamp(clock(), tz=UTC)
    no_exp = good_claims(now) | {"sub": who.user_id, "sid": who.session_id}
    del no_exp["exp"]
    wrong_aud = good_claims(now) | {"sub": who.user_id, "sid": who.session_id, "aud": "other"}
    header, version, body, footer = who.access_token.split(".")
    cases = {
        "tampered": (f"{header}.{version}.{body[:-2]}xx.{footer}", "invalid_token"),
        "wrong key": (issue(codec(generate_token_key())), "invalid_token"),
        "wrong audience": (handmade(wrong_aud), "invalid_token"),
        "missing exp": (handmade(no_exp), "invalid_token"),
        "garbage": ("hello", "invalid_token"),
    }
    for name, (token, code) in cases.items():
        response = await api.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert error_code(response) == code, name
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
    missing = await api.client.get("/v1/me")
    assert (missing.status_code, error_code(missing)) == (401, "missing_token")
    basic = await api.client.get("/v1/me", headers={"Authorization": "Basic dTpw"})
    assert (basic.status_code, error_code(basic)) == (401, "missing_token")
    clock.advance(api.settings.api_access_ttl_s)
    expired = await api.get("/v1/me", who)
    assert (expired.status_code, error_code(expired)) == (401, "token_expired")


@pytest.mark.anyio
async def test_a_request_decodes_its_token_once(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate limiter and the session check share one decoding of the access token."""
    admin = await api.dev_login(role="admin")
    assert api.settings.api_rate_limits  # the limiter reads the token too
    decoded: list[str] = []
    verify = TokenCodec.verify

    def counting(self: TokenCodec, token: str) -> AccessClaims:
        decoded.append(token)
        return verify(self, token)

    monkeypatch.setattr(TokenCodec, "verify", counting)
    for path in ("/v1/me", "/v1/admin/users", "/v1/auth/sessions"):
        decoded.clear()
        assert (await api.get(path, admin)).status_code == 200
        assert decoded == [admin.access_token], path
    decoded.clear()
    refused = await api.client.get("/v1/me", headers={"Authorization": "Bearer v4.local.nope"})
    assert error_code(refused) == "invalid_token"
    assert decoded == ["v4.local.nope"]
