"""Every database connection a hub opens: one function, the same options for all.

The writer, the command dispatcher, the start-up seeding and the listeners (the writer's and
the dispatcher's LISTENs ride on their own connections) all connect here, so they fail fast
the same way on a dead server and show up the same way in `pg_stat_activity`.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg

# Fail fast on a dead server instead of hanging a batch: connect within 5 s, and TCP
# keepalives notice a vanished server after about 10 + 3 x 5 = 25 s of silence.
CONNECT_TIMEOUT_S: Final = 5
KEEPALIVE_IDLE_S: Final = 10
KEEPALIVE_INTERVAL_S: Final = 5
KEEPALIVE_COUNT: Final = 3
# What `pg_stat_activity.application_name` shows, followed by the connection's role.
APPLICATION_NAME: Final = "freecar-hub"


def connect(database_url: str, role: str) -> psycopg.Connection[Any]:
    """An autocommit connection for one of the hub's roles (`writer`, `commands`, `seed`).

    Autocommit: each user opens its transactions explicitly (`conn.transaction()`), and a
    LISTEN takes effect at once rather than at the next commit.
    """
    return psycopg.connect(
        database_url,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name=f"{APPLICATION_NAME}-{role}",
        keepalives=1,
        keepalives_idle=KEEPALIVE_IDLE_S,
        keepalives_interval=KEEPALIVE_INTERVAL_S,
        keepalives_count=KEEPALIVE_COUNT,
    )


# Errors caused by the data a statement carries, not by the server's state: retrying the
# same data cannot help. A value past a server limit (class 54, "program limit exceeded",
# such as an array or a string too large) is one, although psycopg files it under
# OperationalError.
DATA_ERRORS: Final = (
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
    psycopg.errors.ProgramLimitExceeded,
)


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` means the database is (for now) unusable, not that the data is wrong.

    An outage is waited out and the work retried as it is; anything else (refused data, a
    bug) would fail the same way again.
    """
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) and not isinstance(
        exc, DATA_ERRORS
    )
