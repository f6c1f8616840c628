"""Ingest the fleet's telemetry: MQTT in, TimescaleDB/PostgreSQL and Redis live fan-out out.

Subscribes to every vehicle's telemetry, status and command-ack topics (a shared
subscription, so several hubs split the load), filters fixes, writes them in batches, keeps
each vehicle's live state and acknowledges each message only once its batch has committed.
Several hubs may run at once; give each its own --client-id (stable across restarts, so a
restarted hub resumes its session and gets what arrived while it was away).

Configuration comes from FREECAR_* variables: FREECAR_DATABASE_URL, FREECAR_REDIS_URL,
FREECAR_MQTT_URL, FREECAR_MQTT_SHARED_SUBSCRIPTIONS, FREECAR_TOPIC_ROOT, and the hub's own
FREECAR_HUB_* tuning (batch size and delay, filter limits, silence timeout...; see
hub/settings.py).

The hub is the only component that commands cars: it sends the commands queued in the
database (`freecar command`, the API), signed with FREECAR_HUB_SIGNING_KEY or the key in
FREECAR_HUB_SIGNING_KEY_FILE (Ed25519, PASERK k4.secret or PEM; `freecar hub --new-key FILE`
makes one). Cars trust its public half. Outside production a hub without a key makes one up
for its lifetime and logs the public half.

SIGINT or SIGTERM commits the batch in hand, acknowledges it and disconnects cleanly.

Exit codes: 0 stopped cleanly; 1 the last batch could not be committed (the broker
redelivers it to the next hub); 2 bad configuration.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

EXIT_UNCOMMITTED = 1
EXIT_CONFIG = 2


def configure(parser: argparse.ArgumentParser) -> None:
    """Add `freecar hub` options (each overrides its FREECAR_* variable)."""
    parser.add_argument(
        "--client-id", help="MQTT client id (FREECAR_HUB_CLIENT_ID; default hub-<hostname>)"
    )
    parser.add_argument("--topic-root", help="topic root (FREECAR_TOPIC_ROOT; default fleet)")
    parser.add_argument(
        "--new-key",
        metavar="FILE",
        help="write a new signing key to FILE (owner-only, PASERK), print its public half "
        "(what cars trust) and exit",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default INFO)",
    )


def _new_key(path: Path) -> int:
    from protocol.keys import SigningKey

    key = SigningKey.generate()
    try:
        key.save(path, fmt="paserk")
    except FileExistsError:
        print(f"freecar hub: {path} exists; not replacing a key", file=sys.stderr)
        return EXIT_CONFIG
    print(key.verifying_key.to_paserk())
    return 0


def run(args: argparse.Namespace) -> int:
    """Run `freecar hub` until SIGINT or SIGTERM."""
    if args.new_key:
        return _new_key(Path(args.new_key))
    from pydantic import ValidationError

    from hub.service import Hub
    from hub.settings import HubSettings
    from protocol.errors import ProtocolError

    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    overrides: dict[str, Any] = {}
    if args.client_id:
        overrides["hub_client_id"] = args.client_id
    if args.topic_root:
        overrides["topic_root"] = args.topic_root
    try:
        settings = HubSettings(**overrides)
        hub = Hub(settings)
    except (ValidationError, ValueError, ProtocolError) as exc:
        print(f"freecar hub: bad configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    def on_signal(_signum: int, _frame: object) -> None:
        hub.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return hub.run()
