"""Start PostgreSQL, Redis and an MQTT broker together, and take them all down again.

    with start_stack() as stack:
        run_something(stack.info.database_url, env=stack.env())

Everything lives in one temporary directory; `close()` stops the services in order and
removes it, and a watchdog process does the same if the owner dies without closing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Self

from devstack.accounts import postgres_account
from devstack.amqtt_broker import AmqttBroker
from devstack.binaries import (
    AmqttRuntime,
    MosquittoBinaries,
    PostgresBinaries,
    RedisBinary,
    SearchPaths,
    find_broker,
    find_postgres,
    find_redis,
)
from devstack.credentials import BrokerLogins
from devstack.errors import DevStackError
from devstack.info import StackInfo
from devstack.modes import Mode
from devstack.mosquitto import MosquittoBroker
from devstack.postgres import MAINTENANCE_DATABASE, PostgresServer, reachable_binaries
from devstack.procs import kill_processes_under
from devstack.redis import RedisServer
from devstack.service import DEFAULT_READY_TIMEOUT, Service
from devstack.watchdog import Watchdog

if TYPE_CHECKING:
    from types import TracebackType

STACK_DIR_PREFIX = "freecar-devstack-"
# Owner, group and others may traverse (not list) the stack directory: PostgreSQL's
# account must reach its own directory inside when the owner is root.
TRAVERSABLE = 0o711

MqttBroker = MosquittoBroker | AmqttBroker


class DevStack:
    """A running private PostgreSQL, Redis and MQTT broker; `close()` removes every trace.

    Each service (`postgres`, `redis`, `mqtt`) can be stopped, started, restarted or
    killed on its own and comes back on the same port with the same data.
    """

    def __init__(  # noqa: PLR0913 - keyword-only, and only start_stack builds one
        self,
        *,
        mode: Mode,
        root: Path,
        watchdog: Watchdog,
        postgres: PostgresServer,
        redis: RedisServer,
        mqtt: MqttBroker,
        logins: BrokerLogins,
    ) -> None:
        self.mode = mode
        self.root = root
        self.postgres = postgres
        self.redis = redis
        self.mqtt = mqtt
        self.logins = logins
        self._watchdog = watchdog
        self._closed = False
        self.info = self._describe()

    def _describe(self) -> StackInfo:
        mqtt = self.mqtt
        mosquitto = isinstance(mqtt, MosquittoBroker)
        runtime = mqtt.binaries if isinstance(mqtt, MosquittoBroker) else mqtt.runtime
        broker_binary = " ".join(mqtt.command()[: 1 if mosquitto else 3])
        return StackInfo(
            mode=self.mode.value,
            stack_dir=str(self.root),
            database_url=self.postgres.url(),
            admin_database_url=self.postgres.url(MAINTENANCE_DATABASE),
            postgres_version=self.postgres.binaries.version,
            postgres_source=self.postgres.binaries.source.value,
            postgres_bindir=str(self.postgres.binaries.bindir),
            timescaledb=self.postgres.timescaledb,
            redis_url=self.redis.url(),
            redis_version=self.redis.binary.version,
            redis_source=self.redis.binary.source.value,
            redis_binary=str(self.redis.binary.path),
            mqtt_url=self.logins.service.url(mqtt.port),
            mqtt_admin_url=self.logins.admin.url(mqtt.port),
            mqtt_broker="mosquitto" if mosquitto else "amqtt",
            mqtt_version=runtime.version,
            broker_source=runtime.source.value,
            broker_binary=broker_binary,
            mqtt_shared_subscriptions=mosquitto,
            mqtt_dynamic_security=mosquitto,
        )

    @property
    def services(self) -> tuple[Service, ...]:
        """The services in the order they are stopped: broker, Redis, PostgreSQL."""
        return (self.mqtt, self.redis, self.postgres)

    @property
    def closed(self) -> bool:
        """Whether `close()` has run."""
        return self._closed

    def env(self) -> dict[str, str]:
        """The `FREECAR_*` variables that point FreeCar's processes at this stack."""
        return self.info.env()

    def database_url(self, name: str) -> str:
        """The superuser URL of database `name` (which need not exist yet)."""
        return self.postgres.url(name)

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create an empty database (or a copy of `template`) and return its URL."""
        return self.postgres.create_database(name, template=template)

    def drop_database(self, name: str) -> None:
        """Drop database `name` if it exists, disconnecting its clients."""
        self.postgres.drop_database(name)

    def close(self) -> None:
        """Stop the services in order and remove the stack directory; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        _tear_down(self.root, self._watchdog, self.services)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<DevStack {self.mode.value} {state} in {self.root}>"


def _tear_down(root: Path, watchdog: Watchdog, services: tuple[Service, ...]) -> None:
    errors: list[str] = []
    for service in services:
        try:
            service.stop()
        except Exception as exc:  # noqa: BLE001 - keep tearing down, report at the end
            errors.append(f"{service.name}: {exc}")
            service.kill()
    survivors = kill_processes_under(root, watchdog.executables)
    shutil.rmtree(root, ignore_errors=True)
    watchdog.close()
    if survivors:
        errors.append(f"processes {survivors} survived in {root}")
    if root.exists():
        errors.append(f"{root} could not be removed")
    if errors:
        raise DevStackError("devstack teardown was not clean: " + "; ".join(errors))


def start_stack(
    mode: Mode | str | None = None,
    *,
    search: SearchPaths | None = None,
    base_dir: Path | None = None,
    ready_timeout: float = DEFAULT_READY_TIMEOUT,
) -> DevStack:
    """Start a private PostgreSQL, Redis and MQTT broker on free loopback ports.

    `mode` defaults to `FREECAR_DEVSTACK`, else auto. `search` narrows where system
    binaries are looked for; `base_dir` is where the temporary directory goes (default:
    the system's temporary directory). Raises `DevStackError` with the reason and the
    failing service's log tail, after removing whatever had started.
    """
    mode = Mode.resolve(mode)
    search = search or SearchPaths()
    # Find everything first, so a missing binary fails before anything is created.
    postgres_binaries = find_postgres(mode, search)
    redis_binary = find_redis(mode, search)
    broker_runtime = find_broker(mode, search)
    account = postgres_account()

    root = Path(tempfile.mkdtemp(prefix=STACK_DIR_PREFIX, dir=base_dir)).resolve()
    if account is not None:
        root.chmod(TRAVERSABLE)
    try:
        watchdog = Watchdog.start(
            root, _executables(postgres_binaries, redis_binary, broker_runtime)
        )
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise

    logins = BrokerLogins.generate()
    services: list[Service] = []
    try:
        postgres = PostgresServer(
            reachable_binaries(postgres_binaries, account, root),
            workdir=root / "postgres",
            log_path=root / "postgres.log",
            account=account,
            ready_timeout=ready_timeout,
        )
        redis = RedisServer(
            redis_binary,
            workdir=root / "redis",
            log_path=root / "redis.log",
            ready_timeout=ready_timeout,
        )
        mqtt = _broker(broker_runtime, logins, root, ready_timeout)
        services = [mqtt, redis, postgres]
        # Redis and the broker boot while initdb runs.
        redis.launch()
        mqtt.launch()
        postgres.initialise()
        postgres.launch()
        for service in (redis, mqtt, postgres):
            service.wait_ready()
        postgres.create_default_database()
    except BaseException:
        # The original error matters more than an unclean teardown after it.
        with contextlib.suppress(DevStackError):
            _tear_down(root, watchdog, tuple(services))
        raise
    return DevStack(
        mode=mode,
        root=root,
        watchdog=watchdog,
        postgres=postgres,
        redis=redis,
        mqtt=mqtt,
        logins=logins,
    )


def _executables(
    postgres: PostgresBinaries, redis: RedisBinary, broker: MosquittoBinaries | AmqttRuntime
) -> frozenset[str]:
    program = broker.path if isinstance(broker, MosquittoBinaries) else broker.python
    return frozenset(
        os.path.realpath(path) for path in (postgres.tool("postgres"), redis.path, program)
    )


def _broker(
    runtime: MosquittoBinaries | AmqttRuntime, logins: BrokerLogins, root: Path, timeout: float
) -> MqttBroker:
    if isinstance(runtime, MosquittoBinaries):
        return MosquittoBroker(
            runtime,
            logins,
            workdir=root / "mosquitto",
            log_path=root / "mosquitto.log",
            ready_timeout=timeout,
        )
    return AmqttBroker(
        runtime, logins, workdir=root / "amqtt", log_path=root / "amqtt.log", ready_timeout=timeout
    )
