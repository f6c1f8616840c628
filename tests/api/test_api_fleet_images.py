"""Vehicle photos: checked by content, stored privately, resized by the worker, signed links."""

from __future__ import annotations

import io
import json
import os
import secrets
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import redis
from api_testing import Api, FakeClock, MakeApi, SignedIn, error_code
from PIL import Image

from core.filestore import LocalFileStore
from worker.tasks import make_image_variants

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

URL_TTL_S = 60
MAX_BYTES = 40_000


def picture(width: int, height: int, fmt: str = "PNG", *, noise: bool = False) -> bytes:
    image = Image.new("RGB", (width, height), (200, 30, 30))
    if noise:  # incompressible, to pass a byte limit with few pixels
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


@pytest.fixture
async def store_api(
    make_api: MakeApi, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[tuple[Api, LocalFileStore]]:
    async with make_api(fleet_image_url_ttl_s=URL_TTL_S, fleet_image_max_bytes=MAX_BYTES) as api:
        # The store shares the test's clock, so links expire when the test says so.
        store = LocalFileStore(tmp_path / "files", secrets.token_bytes(32), clock=clock)
        api.app.state.filestore = store
        yield api, store


async def new_vehicle(api: Api, staff: SignedIn) -> str:
    suffix = secrets.token_hex(4)
    response = await api.post(
        "/v1/admin/vehicles",
        staff,
        json={
            "id": f"i-{suffix}",
            "plate": f"沪C·{suffix}",
            "make": "NIO",
            "model": "ET5",
            "category": "electric",
            "fuel_type": "electric",
            "price_hour_minor": 4000,
            "price_day_minor": 26000,
            "currency": "CNY",
        },
    )
    assert response.status_code == 201, response.text
    vehicle_id: str = response.json()["id"]
    return vehicle_id


async def upload(  # noqa: PLR0917 - the test's shorthand
    api: Api,
    staff: SignedIn,
    vehicle_id: str,
    data: bytes,
    name: str = "car.png",
    ctype: str = "image/png",
) -> Any:
    return await api.post(
        f"/v1/admin/vehicles/{vehicle_id}/images", staff, files={"file": (name, data, ctype)}
    )


async def test_upload_variants_signed_links_and_delete(
    store_api: tuple[Api, LocalFileStore],
    clock: FakeClock,
    migrated_database_url: str,
    redis_url: str,
) -> None:
    api, store = store_api
    staff = await api.dev_login(role="fleet_manager")
    vehicle_id = await new_vehicle(api, staff)
    original = picture(800, 600)
    response = await upload(api, staff, vehicle_id, original)
    assert response.status_code == 201, response.text
    image = response.json()
    assert (image["width"], image["height"], image["status"]) == (800, 600, "pending")
    assert image["content_type"] == "image/png"

    # The variants job was queued after the commit, on the real Redis the app uses.
    queued = redis.Redis.from_url(redis_url).lrange("celery", 0, -1)
    assert len(queued) == 1
    message = json.loads(queued[0])
    assert message["headers"]["task"] == "worker.vehicle_image_variants"
    assert message["headers"]["argsrepr"] == repr([image["id"]])

    # The signed link serves the original.
    served = await api.get(image["url"])
    assert served.status_code == 200, served.text
    assert served.content == original
    assert served.headers["content-type"] == "image/png"
    assert served.headers["cache-control"].startswith("private")

    # The worker's task, called as a plain function, makes the variants.
    status = await anyio.to_thread.run_sync(
        lambda: make_image_variants(image["id"], database_url=migrated_database_url, store=store)
    )
    assert status == "ready"
    listed = (await api.get(f"/v1/admin/vehicles/{vehicle_id}/images", staff)).json()["items"]
    assert [item["status"] for item in listed] == ["ready"]
    thumb = await api.get(listed[0]["variants"]["thumb"])
    assert thumb.status_code == 200
    with Image.open(io.BytesIO(thumb.content)) as small:
        assert (small.format, small.size) == ("JPEG", (320, 240))
    assert set(listed[0]["variants"]) == {"thumb", "large"}

    # Tampered links are refused; then the clock passes the expiry.
    tampered = listed[0]["url"].replace("sig=", "sig=A")
    assert error_code(await api.get(tampered)) == "invalid_signature"
    other_file = listed[0]["url"].replace("original.png", "thumb.jpg")
    assert error_code(await api.get(other_file)) == "invalid_signature"
    clock.advance(URL_TTL_S)
    expired = await api.get(listed[0]["url"])
    assert (expired.status_code, error_code(expired)) == (403, "link_expired")
    fresh = (await api.get(f"/v1/admin/vehicles/{vehicle_id}/images", staff)).json()["items"]
    assert (await api.get(fresh[0]["url"])).status_code == 200

    deleted = await api.delete(f"/v1/admin/vehicles/{vehicle_id}/images/{image['id']}", staff)
    assert deleted.status_code == 204
    assert not any(store.root.rglob("*.png"))
    assert not any(store.root.rglob("*.jpg"))
    assert (await api.get(f"/v1/admin/vehicles/{vehicle_id}/images", staff)).json() == {"items": []}
    again = await api.delete(f"/v1/admin/vehicles/{vehicle_id}/images/{image['id']}", staff)
    assert again.status_code == 404


async def test_uploads_are_judged_by_content(store_api: tuple[Api, LocalFileStore]) -> None:
    api, store = store_api
    staff = await api.dev_login(role="admin")
    vehicle_id = await new_vehicle(api, staff)
    renamed = await upload(
        api, staff, vehicle_id, b"just some text\n" * 20, "car.jpg", "image/jpeg"
    )
    assert (renamed.status_code, error_code(renamed)) == (409, "invalid_image")
    gif = await upload(api, staff, vehicle_id, picture(100, 100, "GIF"), "car.png", "image/png")
    assert error_code(gif) == "invalid_image"
    truncated = await upload(api, staff, vehicle_id, picture(300, 300)[:-40])
    assert error_code(truncated) == "invalid_image"
    tiny = await upload(api, staff, vehicle_id, picture(10, 200))
    assert (tiny.status_code, error_code(tiny)) == (409, "image_dimensions")
    big = await upload(api, staff, vehicle_id, picture(200, 200, noise=True))
    assert (big.status_code, error_code(big)) == (413, "payload_too_large")
    # A JPEG declared as a PNG with a .txt name is still a JPEG: accepted as what it is.
    jpeg = await upload(api, staff, vehicle_id, picture(120, 90, "JPEG"), "notes.txt", "text/plain")
    assert jpeg.status_code == 201
    assert jpeg.json()["content_type"] == "image/jpeg"
    assert [p.name for p in store.root.rglob("original.*") if p.suffix != ".json"] == [
        "original.jpg"
    ]
    missing = await upload(api, staff, "no-such-car", picture(100, 100))
    assert missing.status_code == 404
