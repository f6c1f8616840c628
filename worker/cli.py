"""Run the background worker: event notifications (email, webhook, SMS, push) and sweeps.

A Celery worker on FREECAR_REDIS_URL that runs the tasks the hub and the API queue, with the
scheduler (Celery beat) embedded so that `worker.notify_pending` runs every minute: it
re-queues notifications whose hand-off from the hub was lost. Run beat in one worker only
(`--no-beat` on the others); a second one would only do the sweep twice.

Configuration comes from FREECAR_* variables: FREECAR_DATABASE_URL, FREECAR_REDIS_URL, and
the notifications' FREECAR_NOTIFY_* (SMTP relay, ops addresses, webhook URL and secret...;
see worker/settings.py and docs/events.md).

SIGTERM (or SIGINT) stops it warmly: no new task is taken, the tasks in hand get
FREECAR_WORKER_SHUTDOWN_GRACE_S (6 s) to finish, and those still running then go back to
the queue for the next worker (tasks are acknowledged only once done, and each is
idempotent, so a task cut short runs again and sends nothing twice). The pool's own
processes ignore SIGTERM, so a signal to the whole process group (a terminal's Ctrl-C,
`kill -- -PGID`) kills no task midway.

Exit codes: 0 stopped cleanly; 2 bad configuration; others are Celery's.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

EXIT_CONFIG = 2
# Two processes suit a small server (and the demo on a laptop); notifications spend their
# time waiting on SMTP and HTTP, not on the CPU.
DEFAULT_CONCURRENCY = 2


def configure(parser: argparse.ArgumentParser) -> None:
    """Add `freecar worker` options."""
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"worker processes (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--no-beat",
        action="store_true",
        help="do not run the scheduler in this worker (run it in exactly one)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default INFO)",
    )


# Celery's documented switch (read by billiard when it is first imported): SIGTERM starts
# the cold shutdown, which waits `worker_soft_shutdown_timeout` for the tasks in hand and
# then requeues the rest, instead of the warm one, which waits for them however long they
# take. It also makes the pool's children ignore SIGTERM.
REMAP_SIGTERM = ("REMAP_SIGTERM", "SIGQUIT")


def run(args: argparse.Namespace) -> int:
    """Run `freecar worker` until SIGINT or SIGTERM."""
    if args.concurrency < 1:
        print("freecar worker: --concurrency must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    if "billiard" not in sys.modules:
        os.environ.setdefault(*REMAP_SIGTERM)
    from pydantic import ValidationError

    from worker.app import create_celery
    from worker.settings import WorkerSettings

    try:
        settings = WorkerSettings()
    except (ValidationError, ValueError) as exc:
        print(f"freecar worker: bad configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    app = create_celery(settings)
    argv = [
        "worker",
        f"--loglevel={args.log_level}",
        f"--concurrency={args.concurrency}",
        # Unique per process, so several workers on one host do not clash.
        f"--hostname=freecar-{os.getpid()}@%h",
        # Worker-to-worker chatter nothing of ours reads (monitoring events, the start-up
        # census, clock sync). It also costs a stop: with Redis gone, the farewell heartbeat
        # was retried forever, and a worker told to stop as its Redis went away never did.
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
    ]
    if not args.no_beat:
        argv.append("--beat")
    try:
        app.worker_main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0
