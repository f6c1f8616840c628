"""The ownership matrix: rider A reaching for rider B's resources gets 404, everywhere."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from api_testing import Api, error_code

from api.errors import NotFoundError
from api.identity import Principal, Role
from api.ownership import owned_or_404

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Thing:
    user_id: uuid.UUID


def principal(role: Role = Role.CUSTOMER) -> Principal:
    return Principal(user_id=uuid.uuid4(), role=role, session_id=uuid.uuid4())


def test_owned_or_404_lets_only_the_owner_through() -> None:
    owner, stranger = principal(), principal()
    mine = Thing(owner.user_id)
    assert owned_or_404(mine, owner, "thing") is mine
    with pytest.raises(NotFoundError, match="thing not found"):
        owned_or_404(mine, stranger, "thing")
    with pytest.raises(NotFoundError):
        owned_or_404(None, owner, "thing")
    # Staff see riders' things only where an endpoint says so.
    admin = principal(Role.ADMIN)
    with pytest.raises(NotFoundError):
        owned_or_404(mine, admin, "thing")
    assert owned_or_404(mine, admin, "thing", staff_may_see=True) is mine
    with pytest.raises(NotFoundError):
        owned_or_404(mine, stranger, "thing", staff_may_see=True)


async def test_rider_a_cannot_see_or_touch_rider_b_resources(api: Api) -> None:
    alice = await api.dev_login()
    bob = await api.dev_login()
    absent = uuid.uuid4()
    # Every rider resource by id: another rider's answers exactly like one that never existed.
    matrix = [
        ("GET", "/v1/auth/sessions/{id}", bob.session_id),
        ("DELETE", "/v1/auth/sessions/{id}", bob.session_id),
    ]
    for method, template, their_id in matrix:
        theirs = await api.client.request(
            method, template.format(id=their_id), headers=alice.headers
        )
        nobodys = await api.client.request(
            method, template.format(id=absent), headers=alice.headers
        )
        for response in (theirs, nobodys):
            assert (response.status_code, error_code(response)) == (404, "not_found"), template
        assert theirs.json()["error"]["message"] == nobodys.json()["error"]["message"]
    # Lists show only the caller's own, and Bob was not touched.
    listed = (await api.get("/v1/auth/sessions", alice)).json()["items"]
    assert [s["id"] for s in listed] == [alice.session_id]
    assert (await api.get("/v1/me", bob)).json()["id"] == bob.user_id
    assert (await api.get(f"/v1/auth/sessions/{bob.session_id}", bob)).status_code == 200
    # /v1/me is always the caller's own: there is no id to aim at someone else.
    assert (await api.get("/v1/me", alice)).json()["id"] == alice.user_id
