"""Run the whole product on this machine: services, schema, a demo fleet and every component.

Starts private PostgreSQL, Redis and MQTT through devstack unless FREECAR_DATABASE_URL is
set (then it uses the configured services), applies the migrations, seeds the demo fleet in
Shanghai, starts each component that exists as a supervised child process, prints where
everything is, and on Ctrl-C (or after --duration seconds) stops all of it cleanly.

For another shell it writes the services' FREECAR_* variables (passwords included, mode
0600) and `freecar`'s directory on PATH to --env-file (default .freecar/demo.env), and
prints the line that loads it; `freecar command`, `create-admin`, `sim` then work there.

The demo's hub registers vehicles it does not know (FREECAR_HUB_REGISTER_UNKNOWN), so a
`freecar sim --vehicles 200` from another shell puts 200 more cars on the map; a
production hub dead-letters them instead. The simulated fleet drives the seeded cars, each
reporting what it runs on (electric cars a battery, hybrids fuel and battery).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

from freecar.demo_env import DEFAULT_ENV_FILE

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping
    from contextlib import ExitStack

    from freecar.supervisor import Component

DEFAULT_VEHICLES = 60


def configure(parser: argparse.ArgumentParser) -> None:
    """Add `freecar demo` options."""
    parser.add_argument(
        "--vehicles",
        type=int,
        default=DEFAULT_VEHICLES,
        help=f"cars in the demo fleet (default {DEFAULT_VEHICLES}, at least 1)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop by itself after this long (default: run until Ctrl-C)",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed for the demo fleet")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=DEFAULT_ENV_FILE,
        metavar="PATH",
        help="where to write what another shell loads to use the demo "
        f"(default {DEFAULT_ENV_FILE}, mode 0600, removed on exit)",
    )


# The demo is a trial: its hub takes in cars it has never heard of (Traccar's
# `registerUnknown`), so testers' simulated fleets show up without registering them first.
DEMO_HUB_ENV: Final = {"FREECAR_HUB_REGISTER_UNKNOWN": "true"}


def demo_components(
    env: Mapping[str, str], fleet_file: Path, keys: Mapping[str, Mapping[str, str]]
) -> list[Component]:
    """The components the demo supervises: each one that this version of FreeCar has."""
    from freecar.cli import COMMANDS
    from freecar.supervisor import Component

    # Subcommand -> extra arguments; later components join the demo by existing. Every
    # secret goes by environment: a command line is readable by every user (`ps`).
    wanted: dict[str, list[str]] = {
        "hub": [],
        "api": [],
        "worker": [],
        # The simulated cars are the seeded ones: the same ids and what each runs on.
        "sim": ["--fleet", str(fleet_file), "--area", "shanghai"],
    }
    extra_env: dict[str, Mapping[str, str]] = {
        "hub": {**keys["hub"], **DEMO_HUB_ENV},
        "sim": keys["sim"],
    }
    return [
        Component(
            name,
            [sys.executable, "-m", "freecar", name, *extra],
            {**env, **extra_env.get(name, {})},
        )
        for name, extra in wanted.items()
        if name in COMMANDS
    ]


def command_keys(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Per component: the hub's signing key, and its public half for the simulated cars.

    The configured FREECAR_HUB_SIGNING_KEY if there is one, else a key made for this run.
    Only the hub gets the secret half.
    """
    from protocol.keys import SigningKey

    configured = env.get("FREECAR_HUB_SIGNING_KEY", "").strip()
    if configured.startswith("-----BEGIN"):
        key = SigningKey.from_pem(configured.encode("ascii"))
    elif configured:
        key = SigningKey.from_paserk(configured)
    else:
        key = SigningKey.generate()
    return {
        "hub": {"FREECAR_HUB_SIGNING_KEY": key.to_paserk()},
        "sim": {"FREECAR_SIM_TRUSTED_KEYS": key.verifying_key.to_paserk()},
    }


def _wait_for_stop(duration: float | None) -> threading.Event:
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if duration is not None:
        timer = threading.Timer(duration, stop.set)
        timer.daemon = True  # a Ctrl-C before the timer fires must not wait for it
        timer.start()
    return stop


EXIT_FAILED = 1
EXIT_USAGE = 2


class DemoError(Exception):
    """The demo cannot start; the message says why."""


def run(args: argparse.Namespace) -> int:
    """Run `freecar demo`."""
    if args.vehicles < 1:
        print("freecar demo: --vehicles must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run(args)
    except DemoError as exc:
        print(f"freecar demo: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from devstack.env_file import prepare_env_dir, remove_env_file, write_env_file
    from freecar.demo_env import command_dir
    from freecar.demo_seed import CITY
    from freecar.supervisor import Supervisor

    try:  # before anything starts: a file it cannot write would only fail later
        prepare_env_dir(args.env_file)
    except OSError as exc:
        raise DemoError(f"--env-file {args.env_file}: {exc.strerror or exc}") from None
    stop = _wait_for_stop(args.duration)
    with ExitStack() as resources:
        env = _services(resources)
        timescaledb, new_cars, fleet_file = _prepare(resources, env["FREECAR_DATABASE_URL"], args)
        env = {**env, **_api_address(env)}
        keys = command_keys(env)
        try:
            env_file = write_env_file(args.env_file, shell_env(env, keys), bin_dir=command_dir())
        except OSError as exc:
            raise DemoError(f"cannot write {args.env_file}: {exc.strerror or exc}") from None
        resources.callback(remove_env_file, env_file)
        components = demo_components(env, fleet_file, keys)
        supervisor = Supervisor(components, base_env={**os.environ, **env})
        resources.callback(supervisor.stop)
        supervisor.start()
        telemetry = "TimescaleDB hypertable" if timescaledb else "plain PostgreSQL table"
        _print_banner(
            env,
            f"{args.vehicles} cars in {CITY} ({new_cars} newly seeded)",
            telemetry,
            components,
            env_file,
        )
        supervisor.run_until(stop.is_set)
        print("demo: stopping...", flush=True)
    print("demo: stopped; nothing left running", flush=True)
    return 0


def _services(resources: ExitStack) -> dict[str, str]:
    """The FREECAR_* of the services: the configured ones, or a private devstack's."""
    if os.environ.get("FREECAR_DATABASE_URL"):
        print("demo: using the services configured in FREECAR_* variables", flush=True)
        return {k: v for k, v in os.environ.items() if k.startswith("FREECAR_")}
    from devstack.errors import DevStackError
    from devstack.stack import start_stack

    print("demo: starting private PostgreSQL, Redis and MQTT broker...", flush=True)
    try:
        stack = resources.enter_context(start_stack())
    except DevStackError as exc:
        raise DemoError(str(exc)) from None
    return stack.env()


def _prepare(
    resources: ExitStack, database_url: str, args: argparse.Namespace
) -> tuple[bool, int, Path]:
    """Migrate and seed; whether telemetry is on TimescaleDB, new cars, the sim's fleet file."""
    from tempfile import TemporaryDirectory

    import psycopg

    from db.migrate import MigrationError, migrate
    from freecar.demo_seed import demo_fleet, seed_demo

    print("demo: applying migrations...", flush=True)
    try:
        status = migrate(database_url)
        new_cars = seed_demo(database_url, vehicles=args.vehicles, seed=args.seed)
        fleet = demo_fleet(database_url, vehicles=args.vehicles, seed=args.seed)
    except psycopg.OperationalError as exc:
        hint = ""
        if os.environ.get("FREECAR_DATABASE_URL"):
            # Often a shell that loaded an earlier demo's environment file.
            hint = (
                "; FREECAR_DATABASE_URL is set in this shell, so the demo used it: unset the "
                "FREECAR_* variables to let it start services of its own"
            )
        raise DemoError(f"cannot reach the database: {exc}{hint}") from None
    except (MigrationError, psycopg.Error) as exc:
        raise DemoError(f"the database refused the demo's schema or data: {exc}") from None
    private = Path(resources.enter_context(TemporaryDirectory(prefix="freecar-demo-")))
    fleet_file = private / "fleet.json"
    fleet_file.write_text(json.dumps(fleet), encoding="utf-8")
    return status.timescaledb, new_cars, fleet_file


def shell_env(env: Mapping[str, str], keys: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """What another shell needs: the services' FREECAR_* and the hub's public key.

    Not the API's address (a `freecar api` started there would take the same port), and
    not the hub's secret key: the simulated cars of that shell need only its public half.
    """
    api = {"FREECAR_API_HOST", "FREECAR_API_PORT"}
    shared = {k: v for k, v in env.items() if k.startswith("FREECAR_") and k not in api}
    shared.pop("FREECAR_HUB_SIGNING_KEY", None)
    return {**shared, **keys["sim"]}


def _print_banner(
    env: Mapping[str, str],
    fleet: str,
    telemetry: str,
    components: list[Component],
    env_file: Path,
) -> None:
    import shlex

    from protocol.broker_url import BrokerUrl

    running = ", ".join(c.name for c in components) or "none yet besides the services"
    lines = [
        "",
        "FreeCar demo is up.",
        f"  fleet       {fleet}",
        f"  database    {_redact(env['FREECAR_DATABASE_URL'])}  (telemetry: {telemetry})",
        f"  redis       {env['FREECAR_REDIS_URL']}",
        f"  mqtt        {BrokerUrl.parse(env['FREECAR_MQTT_URL']).redacted()}",
        f"  components  {running}",
        *_api_lines(env, components),
        "",
        "In another shell, this line puts freecar on PATH and points it at this demo:",
        f"  . {shlex.quote(str(env_file))}",
        "",
        "Press Ctrl-C to stop everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


def _redact(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


# The API's usual port, taken when free so the demo's URLs are the familiar ones.
DEFAULT_API_PORT = 8000
# Long enough for the API to import, open its pool and answer on a loaded machine; the
# banner says so if it is still starting after that.
API_START_S = 30.0


def _api_address(env: Mapping[str, str]) -> dict[str, str]:
    """Where the demo's API listens: the configured port, else 8000 if free, else any port."""
    import socket

    host = env.get("FREECAR_API_HOST", "127.0.0.1")
    if env.get("FREECAR_API_PORT"):
        return {"FREECAR_API_HOST": host, "FREECAR_API_PORT": env["FREECAR_API_PORT"]}
    with socket.socket() as probe:
        try:
            probe.bind((host, DEFAULT_API_PORT))
            port = DEFAULT_API_PORT
        except OSError:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    return {"FREECAR_API_HOST": host, "FREECAR_API_PORT": str(port)}


def _api_ready(url: str, deadline_s: float) -> bool:
    """Whether `url` answers 200 within `deadline_s` (polled, never longer)."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own http URL
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def _api_lines(env: Mapping[str, str], components: list[Component]) -> list[str]:
    """The banner's API lines: where it is, its docs, and a dev login to paste."""
    if "api" not in {c.name for c in components}:
        return []
    base = f"http://{env['FREECAR_API_HOST']}:{env['FREECAR_API_PORT']}"
    state = "" if _api_ready(f"{base}/health/ready", API_START_S) else "  (still starting)"
    login = (
        f"curl -s -X POST {base}/v1/auth/dev-login -H 'Content-Type: application/json'"
        """ -d '{"username": "demo"}'"""
    )
    lines = [f"  api         {base}{state}", f"  docs        {base}/docs"]
    # The development sign-in exists only in development (devstack's FREECAR_ENV).
    if env.get("FREECAR_ENV", "development") == "development":
        lines[1] += "  (dev-login, then Authorize with the access_token)"
        lines += [
            f"  dev login   {login}",
            f"              curl -s {base}/v1/me -H 'Authorization: Bearer <access_token>'",
        ]
    return lines
