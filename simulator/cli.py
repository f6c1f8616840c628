"""Run a virtual fleet: N simulated cars, each a real agent, driving a city's streets.

Every car is the same agent code an in-car unit runs, with simulated GPS, status and
actuators, talking MQTT to the broker in FREECAR_MQTT_URL (or --mqtt-url). Cars drive
between random junctions at road speeds, stop at red lights, park, lock and unlock; they
answer signed commands (give the hub's public key with --trusted-key) like real cars.

  freecar sim --vehicles 50 --duration 30 --json          # 50 cars for 30 s, JSON summary
  freecar sim --vehicles 60 --id-format 'sh-{n:04d}'      # the demo fleet, until Ctrl-C
  freecar sim --vehicles 20 --scenario theft --seed 7     # two locked cars get towed away
  freecar sim --area 121.40,31.18,121.54,31.27 --rate 1   # a street grid, a fix a second
  freecar sim --fleet fleet.csv                           # your fleet's ids and drivetrains

--area is a city (shanghai), a box MINLON,MINLAT,MAXLON,MAXLAT (a street grid) or a
GeoJSON file (its LineStrings are streets, its Polygon the service area). Scenarios:
normal, leave-service-area, offline-burst, door-ajar, low-fuel, theft, flaky-network;
docs/simulator.md says exactly what each does. The same --seed gives the same routes and
scenario events.

Ctrl-C (or SIGTERM) stops it: every car first sends what it still has queued (up to
--drain-timeout seconds), then says offline. A second Ctrl-C skips the wait.

Exit codes: 0 the run went through; 1 the broker was unreachable or refused the login (no
car connected within --connect-timeout); 2 bad arguments; 3 an agent crashed (a bug).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    import asyncio

    from simulator.fleet import Fleet, Outcome
    from simulator.progress import Display

MQTT_URL_ENV = "FREECAR_MQTT_URL"
TRUSTED_KEYS_ENV = "FREECAR_SIM_TRUSTED_KEYS"
DEFAULT_ID_FORMAT = "sim-{n:04d}"
DEFAULT_VEHICLES = 10
# A few hundred CONNECTs a second: mosquitto takes them in its stride on two cores, and a
# thousand-car fleet is on line in a few seconds.
DEFAULT_CONNECT_RATE = 200.0
DEFAULT_CONNECT_TIMEOUT_S = 30.0
# Queued fixes normally go out in well under a second (4,000 cars: 3 s); with the close
# grace this keeps a stop under the 10 s a supervisor waits before SIGKILL.
DEFAULT_DRAIN_TIMEOUT_S = 5.0
# Progress: a terminal redraws every second; a log gets a line every ten.
TTY_PROGRESS_S = 1.0
PLAIN_PROGRESS_S = 10.0
# The world's tick: one second resolves stops and turns; a faster reporting rate gets
# ticks as fast as its fixes, down to this.
MIN_TICK_S = 0.1
MAX_TICK_S = 1.0
EXIT_USAGE = 2
GC_YOUNG_THRESHOLD = 70_000


class UsageError(Exception):
    """An option that cannot be used; the message says why."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add `freecar sim` options."""
    fleet = parser.add_argument_group("fleet")
    fleet.add_argument(
        "--vehicles",
        type=int,
        default=None,
        metavar="N",
        help=f"cars (default {DEFAULT_VEHICLES}, or every car of --fleet)",
    )
    fleet.add_argument(
        "--fleet",
        type=Path,
        default=None,
        metavar="FILE",
        help="drive these vehicles: a CSV or JSON fleet file (the bulk import's format); "
        "`id` and `fuel_type` are read (electric cars report battery, hybrids both)",
    )
    fleet.add_argument(
        "--area",
        default="shanghai",
        metavar="CITY|BBOX|FILE",
        help="shanghai (default), MINLON,MINLAT,MAXLON,MAXLAT, or a .geojson file",
    )
    fleet.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="stop after this many seconds (default: run until Ctrl-C or SIGTERM)",
    )
    fleet.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="HZ",
        help="fixes per second per moving car (default: the agent's, one every 5 s)",
    )
    fleet.add_argument(
        "--parked-rate",
        type=float,
        default=None,
        metavar="HZ",
        help="fixes per second per parked car (default: the agent's, one a minute)",
    )
    fleet.add_argument(
        "--scenario",
        default="normal",
        metavar="NAME",
        help="normal (default), leave-service-area, offline-burst, door-ajar, low-fuel, "
        "theft, flaky-network",
    )
    fleet.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fleet.add_argument(
        "--id-format",
        default=None,
        metavar="FORMAT",
        help=f"vehicle ids, n counting from 1 (default {DEFAULT_ID_FORMAT!r})",
    )
    broker = parser.add_argument_group("broker")
    broker.add_argument(
        "--mqtt-url",
        default=None,
        metavar="URL",
        help=f"mqtt://user:pass@host:port shared by every car (default ${MQTT_URL_ENV}, "
        "which keeps the password off the command line, where every user can read it)",
    )
    broker.add_argument(
        "--credentials",
        type=Path,
        default=None,
        metavar="FILE",
        help='JSON {"<vehicle id>": {"username": ..., "password": ...}}: a login per car '
        "(host and port still come from the URL)",
    )
    broker.add_argument(
        "--topic-root", default="fleet", metavar="ROOT", help="topic root (default fleet)"
    )
    broker.add_argument(
        "--client-prefix",
        default="",
        metavar="TEXT",
        help="prepended to each vehicle id to make its MQTT client id (default none)",
    )
    broker.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="PASERK",
        help=f"hub public key (k4.public...) commands are signed with; repeatable; also "
        f"${TRUSTED_KEYS_ENV}, comma-separated. Without one, cars drop every command",
    )
    broker.add_argument(
        "--connect-rate",
        type=float,
        default=DEFAULT_CONNECT_RATE,
        metavar="PER_S",
        help=f"cars started per second (default {DEFAULT_CONNECT_RATE:.0f})",
    )
    broker.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT_S,
        metavar="S",
        help="give up (exit 1) if no car connected by then "
        f"(default {DEFAULT_CONNECT_TIMEOUT_S:.0f})",
    )
    queues = parser.add_argument_group("queues").add_mutually_exclusive_group()
    queues.add_argument(
        "--queue-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep each car's SQLite queue here, kept after exit (default: a temporary "
        "directory, removed on exit)",
    )
    queues.add_argument(
        "--memory-queue", action="store_true", help="queues in memory: no files at all"
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--json", action="store_true", help="print a JSON summary on stdout at exit"
    )
    output.add_argument(
        "--progress-interval",
        type=float,
        default=None,
        metavar="S",
        help=f"seconds between progress updates (default {TTY_PROGRESS_S:.0f} on a terminal, "
        f"{PLAIN_PROGRESS_S:.0f} otherwise; 0 for none)",
    )
    output.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULT_DRAIN_TIMEOUT_S,
        metavar="S",
        help=f"at stop, wait this long for queued fixes to go out (default "
        f"{DEFAULT_DRAIN_TIMEOUT_S:.0f})",
    )
    output.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="error",
        help="agent log level on stderr (default error: thousands of cars are chatty)",
    )


def run(args: argparse.Namespace) -> int:
    """Run `freecar sim`."""
    # Until the event loop takes over SIGTERM, let it unwind like Ctrl-C, so that the
    # temporary queue directory is removed whenever the signal comes.
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _run(args)
    except UsageError as exc:
        print(f"freecar sim: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import shutil
    from dataclasses import replace

    from simulator.fleet import Fleet
    from simulator.progress import make_display
    from simulator.summary import RunInfo, build_summary, exit_code
    from simulator.world import World
    from vehicle_agent.config import ConfigError

    plan = _fleet_plan(args)
    settings = _settings(args, plan.vehicle_ids)
    area = _area(args.area)
    disk = not args.memory_queue
    vehicles = len(plan.vehicle_ids)
    _warn_about_limits(vehicles, disk=disk, keys=bool(settings.trusted_keys))
    queue_dir, temp_dir = _queue_dir(args.queue_dir, disk=disk)
    try:
        tick = 1.0 if args.rate is None else min(MAX_TICK_S, max(MIN_TICK_S, 1.0 / args.rate))
        world = World(
            area.network,
            vehicles,
            seed=args.seed,
            scenario=args.scenario,
            tick_s=tick,
            drivetrains=plan.drivetrains,
        )
        try:
            fleet = Fleet(world, replace(settings, queue_dir=queue_dir if disk else None))
        except ConfigError as exc:  # e.g. a bad FREECAR_AGENT_* variable in the environment
            raise UsageError(str(exc)) from None
        stream = sys.stderr if args.json else sys.stdout
        interval = args.progress_interval
        if interval is None:
            interval = TTY_PROGRESS_S if stream.isatty() else PLAIN_PROGRESS_S
        title = f"freecar sim: {vehicles} cars, {area.name}, {args.scenario}"
        display = make_display(stream, title) if interval > 0 else None
        outcome = asyncio.run(_main(fleet, display, interval))
        signal.signal(signal.SIGTERM, _interrupt)  # closing the loop restored the default
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
    info = RunInfo(area.name, args.scenario, args.seed, args.rate, "disk" if disk else "memory")
    summary = build_summary(fleet, outcome, info)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    if not outcome.broker_reachable:
        first_error = next(iter(outcome.errors), "no connection attempt finished")
        print(
            f"freecar sim: no car could connect within {args.connect_timeout:g} s ({first_error})",
            file=sys.stderr,
        )
    return exit_code(outcome)


def _queue_dir(given: Path | None, *, disk: bool) -> tuple[Path | None, Path | None]:
    """Where the disk queues go, and the temporary directory to remove at exit (if any)."""
    import tempfile

    if not disk:
        return None, None
    if given is None:
        temporary = Path(tempfile.mkdtemp(prefix="freecar-sim-"))
        return temporary, temporary
    try:
        given.mkdir(parents=True, exist_ok=True)
        # Each car creates a file there: find out now, not from a thousand failing cars.
        with tempfile.TemporaryFile(dir=given):
            pass
    except OSError as exc:
        problem = exc.strerror or exc
        raise UsageError(f"--queue-dir {given}: cannot create files there ({problem})") from None
    return given, None


def _warn_about_limits(vehicles: int, *, disk: bool, keys: bool) -> None:
    """Raise the open-files limit; warn when it or the missing keys will bite."""
    from simulator.limits import raise_open_files_limit

    limit = raise_open_files_limit(vehicles, disk_queue=disk)
    if not limit.enough:
        print(
            f"freecar sim: warning: the open-files limit is {limit.soft}, about {limit.needed} "
            "are needed; raise `ulimit -n` or use --memory-queue",
            file=sys.stderr,
        )
    if not keys:
        print("freecar sim: no --trusted-key: the cars will drop every command", file=sys.stderr)


async def _main(fleet: Fleet, display: Display | None, interval: float) -> Outcome:
    import asyncio
    import gc

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hurry = asyncio.Event()

    def on_signal() -> None:
        # The first signal stops and drains; a second one stops without waiting.
        (hurry if stop.is_set() else stop).set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    loop.set_exception_handler(_ignore_closed_socket_race)
    # Thousands of agents allocate briskly; collecting the young generation every 700
    # allocations (the default) cost a tenth of the CPU at 4,000 cars. Garbage here is
    # short-lived messages, so collecting a hundred times less often is safe.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    progress = (
        asyncio.create_task(_show_progress(fleet, display, interval))
        if display is not None
        else None
    )
    try:
        return await fleet.run(stop, hurry=hurry)
    finally:
        if progress is not None:
            progress.cancel()
            await asyncio.gather(progress, return_exceptions=True)
        if display is not None:
            display.show(fleet.snapshot(), final=True)
            display.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _ignore_closed_socket_race(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Pass loop errors on, except aiomqtt's watch of a socket that closed meanwhile.

    aiomqtt asks the loop to watch a client's socket from paho's callback with
    `call_soon_threadsafe`; when the connection closes before that call runs (agents
    stopping by the thousand), the loop logs EBADF for a socket nobody needs any more.
    """
    import errno

    error = context.get("exception")
    handle = repr(context.get("handle", ""))
    if (
        isinstance(error, OSError)
        and error.errno == errno.EBADF
        and ("add_writer(" in handle or "add_reader(" in handle)
    ):
        logging.getLogger(__name__).debug("socket closed before the loop watched it: %s", handle)
        return
    loop.default_exception_handler(context)


async def _show_progress(fleet: Fleet, display: Display, interval: float) -> None:
    import asyncio

    while True:
        await asyncio.sleep(interval)
        display.show(fleet.snapshot())


def _print_summary(summary: dict[str, Any]) -> None:
    print(
        f"freecar sim: {summary['vehicles']} cars for {summary['duration_s']:.0f} s: "
        f"{summary['unique_fixes_acked']:,} fixes acknowledged "
        f"({summary['fixes_per_s']:,.1f}/s), {summary['queue_dropped']:,} dropped, "
        f"{summary['commands_executed']} commands done, {summary['commands_rejected']} "
        f"rejected, {summary['reconnects']} reconnects, {summary['errors']} errors"
    )


def _area(spec: str) -> Any:  # noqa: ANN401 - simulator.area.Area, imported lazily
    from simulator.area import AreaError, load_area

    try:
        return load_area(spec)
    except AreaError as exc:
        raise UsageError(str(exc)) from None


def _fleet_plan(args: argparse.Namespace) -> Any:  # noqa: ANN401 - FleetPlan, imported lazily
    """Which vehicles to drive: a fleet file's, or --vehicles of --id-format."""
    from simulator.fleet_file import FleetFileError, FleetPlan, read_fleet_file

    if args.fleet is None:
        count = DEFAULT_VEHICLES if args.vehicles is None else args.vehicles
        if count < 1:
            raise UsageError("--vehicles must be at least 1")
        ids = _vehicle_ids(args.id_format or DEFAULT_ID_FORMAT, count)
        return FleetPlan(ids, [None] * len(ids))
    if args.vehicles is not None or args.id_format is not None:
        raise UsageError("--fleet names the vehicles: leave out --vehicles and --id-format")
    try:
        return read_fleet_file(args.fleet)
    except FleetFileError as exc:
        raise UsageError(str(exc)) from None


def _settings(args: argparse.Namespace, ids: list[str]) -> Any:  # noqa: ANN401 - FleetSettings, imported lazily
    from protocol.broker_url import BrokerUrl, BrokerUrlError
    from protocol.errors import ProtocolError
    from protocol.keys import VerifyingKey
    from protocol.topics import check_root
    from simulator.fleet import FleetSettings
    from simulator.scenarios import ScenarioError, check_scenario

    _check_numbers(args)
    try:
        check_scenario(args.scenario)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    url = args.mqtt_url or os.environ.get(MQTT_URL_ENV)
    if not url:
        raise UsageError(f"no broker: set {MQTT_URL_ENV} (or pass --mqtt-url)")
    try:
        broker = BrokerUrl.parse(url)
    except BrokerUrlError as exc:
        raise UsageError(str(exc)) from None
    keys = [*args.trusted_key, *_split(os.environ.get(TRUSTED_KEYS_ENV, ""))]
    try:
        check_root(args.topic_root)
        for key in keys:
            VerifyingKey.from_paserk(key)
    except ProtocolError as exc:
        raise UsageError(exc.message) from None
    urls = [url] * len(ids)
    if args.credentials is not None:
        urls = _per_vehicle_urls(args.credentials, ids, broker)
    return FleetSettings(
        vehicle_ids=ids,
        mqtt_urls=urls,
        topic_root=args.topic_root,
        client_prefix=args.client_prefix,
        trusted_keys=tuple(keys),
        rate_hz=args.rate,
        parked_rate_hz=args.parked_rate,
        connect_rate=args.connect_rate,
        connect_timeout_s=args.connect_timeout,
        drain_timeout_s=args.drain_timeout,
        duration_s=args.duration,
    )


def _check_numbers(args: argparse.Namespace) -> None:
    for name in ("duration", "rate", "parked_rate", "connect_rate", "connect_timeout"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    if args.drain_timeout < 0:
        raise UsageError("--drain-timeout must not be negative")


def _split(text: str) -> list[str]:
    return [part for part in text.replace(",", " ").split() if part]


def _vehicle_ids(id_format: str, count: int) -> list[str]:
    try:
        ids = [id_format.format(n=n) for n in range(1, count + 1)]
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"--id-format {id_format!r}: {exc!r}; use n, e.g. 'car-{{n}}'") from None
    if len(set(ids)) != len(ids):
        raise UsageError(f"--id-format {id_format!r} gives the same id to several cars")
    try:
        from protocol.errors import ProtocolError
        from protocol.topics import check_vehicle_id

        for vid in ids:
            check_vehicle_id(vid)
    except ProtocolError as exc:
        raise UsageError(f"--id-format {id_format!r}: {exc.message}") from None
    return ids


def _per_vehicle_urls(path: Path, ids: list[str], broker: Any) -> list[str]:  # noqa: ANN401 - BrokerUrl
    from urllib.parse import quote

    try:
        logins = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if not isinstance(logins, dict):
        raise UsageError(f'{path}: expected {{"<vehicle id>": {{"username", "password"}}}}')
    missing = [vid for vid in ids if not isinstance(logins.get(vid), dict)]
    if missing:
        raise UsageError(f"{path} has no login for {len(missing)} cars, e.g. {missing[0]}")
    scheme = "mqtts" if broker.tls else "mqtt"
    host = f"[{broker.host}]" if ":" in broker.host else broker.host
    urls = []
    for vid in ids:
        login = logins[vid]
        user, password = login.get("username"), login.get("password")
        if not isinstance(user, str) or not isinstance(password, str):
            raise UsageError(f"{path}: {vid} needs a string username and password")
        urls.append(
            f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{broker.port}"
        )
    return urls
