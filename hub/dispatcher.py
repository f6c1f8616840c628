"""Command dispatch: claim queued commands, sign them, publish them, expire the stale.

One thread (`hub-commands`) per hub, with its own database connection that LISTENs on
`freecar_commands`: a new command wakes it at once, and it also looks every
`hub_command_sweep_s` (a notification is lost while the connection is down). Each round:

1. claim up to `CLAIM_LIMIT` queued commands with `FOR UPDATE SKIP LOCKED`, marking them
   `sent` by this hub, and commit: other hubs skip them, so each command is sent once;
2. sign each with the hub's Ed25519 key for the life it has left (the `exp` claim), and
   publish it at QoS 1 through the MQTT thread, with the same life as the MQTT 5 message
   expiry (a broker holding it for an offline car drops it when it is due);
3. wait for the broker's PUBACKs; what the broker did not take goes back to `queued`;
4. expire what can no longer run: queued commands too close to their TTL, sent ones whose
   car stayed silent past it.

Acks and confirmation arrive with ingest (`hub.writer`). The car refuses a token after its
`exp`, so no command runs after its TTL whatever the network does.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Final

import psycopg
import redis
from psycopg import sql

from db.commands import COMMANDS_CHANNEL
from hub.database import connect
from hub.events.pipeline import command_failed_events, publish_events, store_events
from hub.fanout import REDIS_TIMEOUT_S
from hub.repository import commands
from protocol.backoff import Backoff
from protocol.commands import Action
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable

    from hub.consumer import PublishTicket
    from hub.repository.commands import ClaimedCommand
    from hub.stats import HubStats
    from protocol.signing import CommandSigner

log = logging.getLogger(__name__)

# Commands claimed per round. Commands are rare next to telemetry (people tap unlock, a rule
# immobilises a car); a hundred per round drains a burst in a few round trips while one
# round's PUBACK wait stays short.
CLAIM_LIMIT: Final = 100
# Reconnect delays for the dispatcher's database connection, as for the writer's.
RETRY_FIRST_S: Final = 0.2
RETRY_CAP_S: Final = 10.0

_LISTEN: Final = sql.SQL("LISTEN {}").format(sql.Identifier(COMMANDS_CHANNEL))


class CommandDispatcher:
    """Sends this hub's share of the queued commands; start with `start()`, stop with `close()`."""

    def __init__(  # noqa: PLR0913 - keyword-only wiring, done once by the Hub
        self,
        *,
        database_url: str,
        hub_id: str,
        root: str,
        signer: CommandSigner,
        publish: Callable[[str, bytes, int], PublishTicket],
        connected: Callable[[], bool],
        stats: HubStats,
        sweep_s: float,
        publish_timeout_s: float,
        min_remaining_s: int,
        answer_grace_s: float,
        redis_url: str,
    ) -> None:
        self._database_url = database_url
        self._hub_id = hub_id
        self._root = root
        self._signer = signer
        self._publish = publish
        self._connected = connected
        self._stats = stats
        self._sweep_s = sweep_s
        self._publish_timeout_s = publish_timeout_s
        self._min_remaining_s = min_remaining_s
        self._answer_grace_s = answer_grace_s
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-commands", daemon=True)

    def start(self) -> None:
        """Start the dispatcher thread."""
        self._thread.start()

    def close(self, timeout: float) -> bool:
        """Stop after the current round; False if the thread did not finish in `timeout`."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        stopped = not self._thread.is_alive()
        if stopped:
            self._redis.close()
        return stopped

    # --- the dispatcher thread -------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(initial_s=RETRY_FIRST_S, max_s=RETRY_CAP_S)
        while not self._stop.is_set():
            try:
                with connect(self._database_url, "commands") as conn:
                    conn.execute(_LISTEN)
                    backoff.reset()
                    self._serve(conn)
            except psycopg.Error as exc:
                self._stats.command_errors += 1
                delay = backoff.next_delay()
                log.warning("command dispatch lost the database (%s); retry in %.1fs", exc, delay)
                self._stop.wait(delay)
            except Exception:
                # A bug: log it and keep the thread alive; the commands stay in the table.
                self._stats.command_errors += 1
                log.exception("command dispatch failed")
                self._stop.wait(self._sweep_s)

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        """Rounds until stopped: dispatch and expire, then wait for a NOTIFY or the sweep."""
        while not self._stop.is_set():
            if self._connected():
                # Keep going while rounds come back full: a burst drains without waiting.
                while self._dispatch_round(conn) == CLAIM_LIMIT and not self._stop.is_set():
                    pass
            self._expire(conn)
            # Wakes on any NOTIFY; what it says does not matter, the table is the truth.
            for _ in conn.notifies(timeout=self._sweep_s, stop_after=1):
                pass

    def _dispatch_round(self, conn: psycopg.Connection[Any]) -> int:
        """Claim, sign, publish and settle one round of commands; return how many claimed."""
        with conn.transaction():
            claimed = commands.claim_commands(
                conn,
                hub_id=self._hub_id,
                key_id=self._signer.key_id,
                min_remaining_s=self._min_remaining_s,
                limit=CLAIM_LIMIT,
            )
        if not claimed:
            return 0
        # Committed: from here on these are ours alone. Publish, then wait for the broker.
        in_flight = [(command, self._send(command)) for command in claimed]
        deadline = time.monotonic() + self._publish_timeout_s
        failed = []
        for command, ticket in in_flight:
            if ticket is None or not ticket.wait(max(0.0, deadline - time.monotonic())):
                failed.append(command.id)
        sent = len(claimed) - len(failed)
        self._stats.commands_sent += sent
        if failed:
            self._stats.commands_send_failed += len(failed)
            log.warning("%d commands not taken by the broker; back in the queue", len(failed))
            with conn.transaction():
                commands.unclaim_commands(conn, failed)
        return len(claimed)

    def _send(self, command: ClaimedCommand) -> PublishTicket | None:
        """Sign and queue one command for publishing; None if it has no time left."""
        # The token lives until the row's expiry, on this hub's clock, rounded down: the car
        # never acts on it later than the TTL the issuer asked for.
        ttl_s = math.floor(command.expires_at.timestamp() - time.time())
        if ttl_s < 1:
            return None
        try:
            signed = self._signer.sign(
                command.vehicle_id, Action(command.action), ttl_s=ttl_s, cmd_id=command.id
            )
        except Exception:
            # Cannot happen with rows the schema checked; if it does, the command goes back
            # to the queue and ends at its TTL, and the log says why.
            self._stats.command_errors += 1
            log.exception("signing command %s failed", command.id)
            return None
        topic = Topic.command(command.vehicle_id, root=self._root).value
        log.info("sending %s to %s (command %s)", command.action, command.vehicle_id, command.id)
        return self._publish(topic, signed.payload, ttl_s)

    def _expire(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            expired = commands.expire_commands(
                conn, min_remaining_s=self._min_remaining_s, grace_s=self._answer_grace_s
            )
            stored = store_events(conn, command_failed_events(expired))
        if expired:
            self._stats.commands_expired += len(expired)
            log.info("%d commands expired", len(expired))
            publish_events(self._redis, stored, self._stats)
