"""Background tasks. Each is a plain function first (tests call it directly), then a Celery task."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from celery import shared_task  # type: ignore[import-untyped] # celery ships no type hints

from jobs.names import PING_TASK, VEHICLE_IMAGE_VARIANTS_TASK

if TYPE_CHECKING:
    from core.filestore import FileStore


@shared_task(name=PING_TASK)  # type: ignore[untyped-decorator] # celery is untyped
def ping() -> str:
    """Answer "pong": proves a worker consumes the queue."""
    return "pong"


def make_image_variants(
    image_id: str, *, database_url: str | None = None, store: FileStore | None = None
) -> str | None:
    """Make a vehicle image's thumbnails; its new status (None if the image was deleted).

    Idempotent (the same variants under the same keys), so a redelivered task is harmless.
    The database and the file store come from the environment unless given.
    """
    import psycopg  # noqa: PLC0415 - the worker loads what a task needs when it runs

    from core.filestore import FileStoreSettings, open_filestore  # noqa: PLC0415 - idem
    from worker.images import process_image  # noqa: PLC0415 - idem

    # The API and the worker must share the store: the same FREECAR_FILES_* settings (with
    # the local backend, the same FREECAR_FILES_DIR on a shared volume).
    settings = FileStoreSettings()
    url = database_url or settings.database_url.get_secret_value()
    file_store = store if store is not None else open_filestore(settings)

    async def run() -> str | None:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            status = await process_image(conn, file_store, uuid.UUID(image_id))
            await conn.commit()  # the task is the unit of work
            return status

    return asyncio.run(run())


@shared_task(name=VEHICLE_IMAGE_VARIANTS_TASK)  # type: ignore[untyped-decorator] # celery is untyped
def vehicle_image_variants(image_id: str) -> str | None:
    """Celery task: make a vehicle image's thumbnails after its upload committed."""
    return make_image_variants(image_id)
