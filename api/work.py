"""Units of work on one connection, for requests whose side effects must follow a commit.

Most requests are one unit of work: `api.deps.Conn` commits after the endpoint returns.
A request that tells the broker about what it changed cannot: the broker must hear of a
change only once the change is committed (a rolled-back request must not have provisioned
a login), and the answer must still say what the broker did. Such an endpoint takes `Work`
instead: the request's connection in autocommit, on which each `transaction()` block is a
unit of work of its own, committed when the block ends and rolled back when it raises.

    async with work.transaction() as conn:
        login = await issue_login(conn, vehicle_id)
    outcome = await broker.provision(settings, [login])  # committed: now the broker
    async with work.transaction() as conn:
        await record_outcome(conn, outcome)
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from psycopg import AsyncConnection


class Work:
    """Units of work on one autocommit connection; statements outside them commit alone."""

    def __init__(self, conn: AsyncConnection[Any]) -> None:
        if not conn.autocommit:
            raise ValueError("units of work need a connection in autocommit")
        self._conn = conn

    @property
    def conn(self) -> AsyncConnection[Any]:
        """The connection, for single-statement reads outside any unit of work."""
        return self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection[Any]]:
        """One unit of work: committed when the block ends, rolled back if it raises."""
        async with self._conn.transaction():
            yield self._conn
