"""How requests borrow database connections: reads in autocommit, idle ones probed first."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import psycopg
import pytest
from api_testing import FakeClock, make_settings
from psycopg import pq
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

import api
from api.deps import _connection
from api.resources import IdleConnectionCheck, open_resources

if TYPE_CHECKING:
    from api_wechat_fake import FakeWeChatServer

pytestmark = pytest.mark.anyio


def request(method: str) -> Request:
    return Request({"type": "http", "method": method, "path": "/", "headers": []})


async def transaction_status_after_a_select(method: str, resources: Any) -> tuple[bool, Any]:
    """Borrow a connection as a `method` request would; autocommit and status after a read."""
    borrowed = _connection(request(method), resources)
    conn = await anext(borrowed)
    try:
        await conn.execute("SELECT 1")
        return conn.autocommit, conn.info.transaction_status
    finally:
        await borrowed.aclose()


async def test_reads_run_in_autocommit_and_writes_in_a_transaction(
    migrated_database_url: str, redis_url: str, wechat: FakeWeChatServer
) -> None:
    settings = make_settings(migrated_database_url, redis_url, wechat.url, api_db_pool_max=1)
    async with open_resources(settings) as resources:
        for method in ("GET", "HEAD"):
            got = await transaction_status_after_a_select(method, resources)
            assert got == (True, pq.TransactionStatus.IDLE)
        # The same (only) connection goes back to the pool as it came: writes get BEGIN.
        for method in ("POST", "PATCH", "DELETE"):
            got = await transaction_status_after_a_select(method, resources)
            assert got == (False, pq.TransactionStatus.INTRANS)


async def back_in(pool: AsyncConnectionPool[Any]) -> None:
    """Wait until the pool has taken its connection back (it resets it in the background)."""
    with anyio.fail_after(10):
        while pool.get_stats().get("pool_available", 0) < 1:  # noqa: ASYNC110 - no event to wait on
            await anyio.sleep(0.01)


async def test_a_connection_is_probed_only_after_it_idled(migrated_database_url: str) -> None:
    clock = FakeClock(start=0.0)
    idle = IdleConnectionCheck(fresh_s=1.0, clock=clock)
    async with AsyncConnectionPool(
        migrated_database_url, min_size=1, max_size=1, check=idle.check, reset=idle.returned
    ) as pool:
        async with pool.connection() as conn:
            backend = conn.info.backend_pid
        assert idle.probes == 1  # never seen returned: probed
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
        assert idle.probes == 1  # back a moment ago: lent as it is
        await back_in(pool)
        # The database drops the connection while it idles (a restart, say).
        with psycopg.connect(migrated_database_url, autocommit=True) as admin:
            # With a timeout, the call returns once the backend is gone.
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", [backend])
        clock.advance(1.5)
        async with pool.connection() as conn:
            # Probed, found dead, replaced: the borrower gets a working connection.
            assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
            assert conn.info.backend_pid != backend
        assert idle.probes >= 2


def test_only_units_of_work_commit() -> None:
    """Endpoints and services never commit: `api.deps` and `api.work` own every commit.

    A command-line tool (`cli.py`) is a unit of work of its own, like a request.
    """
    root = Path(api.__file__).resolve().parent
    owners = {root / "deps.py", root / "work.py", root / "resources.py"}
    commits = [
        f"{path.relative_to(root.parent)}:{node.lineno}"
        for path in sorted(root.rglob("*.py"))
        if path not in owners and path.name != "cli.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "commit"
    ]
    assert commits == []
