"""The file store as a dependency; `GET /v1/files/{key}` serves the local store's signed URLs."""

import asyncio
import logging
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from api.deps import SettingsDep
from api.errors import ApiError, NotFoundError, ServiceUnavailableError, error_responses
from core.filestore import (
    FileNotFoundInStoreError,
    FileStore,
    FileStoreError,
    InvalidKeyError,
    LocalFileStore,
    SignatureError,
    open_filestore,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/files", tags=["files"])


async def _filestore(request: Request, settings: SettingsDep) -> FileStore:
    # One store per app, made on first use (an S3 client is worth keeping). Tests put
    # their own (with a clock they move) on app.state.filestore before the first request.
    state: Any = request.app.state
    store: FileStore | None = getattr(state, "filestore", None)
    if store is None:
        try:
            store = await asyncio.to_thread(open_filestore, settings, base_url=settings.public_url)
        except FileStoreError as exc:
            log.error("file store unavailable: %s", exc)  # noqa: TRY400 - the message is the whole story
            raise ServiceUnavailableError("file storage is not available") from exc
        state.filestore = store
    return store


FileStoreDep = Annotated[FileStore, Depends(_filestore)]


class InvalidSignatureError(ApiError):
    """The link was altered, or was not made by this deployment."""

    status = 403
    code = "invalid_signature"
    default_message = "this link is not valid"


class LinkExpiredError(ApiError):
    """The link's time is up: ask the API for a fresh one."""

    status = 403
    code = "link_expired"
    default_message = "this link has expired; fetch a new one"


@router.get(
    "/{key:path}",
    summary="A private file, through a signed link",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file."},
        **error_responses(403, 404),
    },
)
async def get_file(
    key: str,
    store: FileStoreDep,
    exp: Annotated[int, Query(ge=0, le=2**62, description="Expiry, Unix seconds.")],
    sig: Annotated[
        str, Query(pattern=r"^[A-Za-z0-9_-]{1,100}$", description="The link's signature.")
    ],
) -> Response:
    """Serve a file of the local store while its signed link is valid.

    Links come from the API (vehicle images); 403 `invalid_signature` when altered,
    `link_expired` after their expiry. With the S3 backend, links point at the store itself
    and this path answers 404.
    """
    if not isinstance(store, LocalFileStore):
        raise NotFoundError("file not found")
    try:
        store.verify(key, exp, sig)
        stored = await asyncio.to_thread(store.get, key)
    except InvalidKeyError as exc:
        raise NotFoundError("file not found") from exc
    except SignatureError as exc:
        if exc.expired:
            raise LinkExpiredError from exc
        raise InvalidSignatureError from exc
    except FileNotFoundInStoreError as exc:
        raise NotFoundError("file not found") from exc
    return Response(
        content=stored.data,
        media_type=stored.content_type,
        headers={
            # Private data: browsers may keep it until the link expires, proxies never.
            "Cache-Control": f"private, max-age={max(0, math.floor(exp - store.now()))}",
            "X-Content-Type-Options": "nosniff",
        },
    )
