"""Many agents in one event loop, fed by one world: the running half of `freecar sim`.

Every vehicle is a real `vehicle_agent.agent.Agent` with its own client id, login and
queue; its sensors and actuators are the world's `SimCar` for it. Agents start a few
hundred a second (thousands of CONNECTs at once is a storm the broker pays for). Stopping
has two phases: first every link comes back up and each agent is stopped as soon as its
queue is empty (nothing unacknowledged in flight), so what the summary counts as
acknowledged is exactly what the broker received; agents still holding fixes when the
drain time runs out are stopped anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from pydantic import SecretStr

from simulator.counting_queue import CountingQueue
from vehicle_agent.agent import Agent
from vehicle_agent.config import AgentConfig
from vehicle_agent.queue import MemoryFixQueue, SqliteFixQueue

if TYPE_CHECKING:
    from pathlib import Path

    from simulator.world import World
    from vehicle_agent.queue import FixQueue

log = logging.getLogger(__name__)

# How often the run loop looks at the fleet (connect timeout, duration, drain progress).
POLL_S: Final = 0.05
# The world never catches up more than this many ticks in one go, so a starved process
# stays responsive; its clock then lags the wall clock (reported as `world_lag_s`).
MAX_CATCHUP_TICKS: Final = 10
# Agents are moved out of the garbage collector's sight in batches of this many as they are
# built: they live until the end, and rescanning thousands of them in every full collection
# froze the loop for up to 1.3 s at 4,000 cars (measured), stalling every publish.
GC_FREEZE_EVERY: Final = 250
# Time allowed for stopped agents to publish `offline` and close: the agent gives that
# publish 3 s. With the default drain, a stop fits the 10 s a supervisor (the demo's,
# systemd's default is longer) waits before SIGKILL.
CLOSE_GRACE_S: Final = 4.0


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """How to run the agents: identities, logins, reporting rate, queues and timings."""

    vehicle_ids: list[str]
    mqtt_urls: list[str]  # one per vehicle, same order
    topic_root: str = "fleet"
    client_prefix: str = ""
    trusted_keys: tuple[str, ...] = ()
    rate_hz: float | None = None
    parked_rate_hz: float | None = None
    queue_dir: Path | None = None  # None: queues in memory
    connect_rate: float = 200.0
    connect_timeout_s: float = 30.0
    drain_timeout_s: float = 5.0
    duration_s: float | None = None


@dataclass(slots=True)
class Snapshot:
    """The fleet's counters at one moment, summed over vehicles."""

    elapsed_s: float = 0.0
    sim_time_s: float = 0.0
    vehicles: int = 0
    started: int = 0
    connected: int = 0
    links_down: int = 0
    fixes_enqueued: int = 0
    fixes_acked: int = 0
    unique_acked: int = 0
    backlog: int = 0
    queue_dropped: int = 0
    commands_executed: int = 0
    commands_rejected: int = 0
    commands_failed: int = 0
    reconnects: int = 0
    vehicles_with_errors: int = 0


@dataclass(slots=True)
class Outcome:
    """How the run ended."""

    broker_reachable: bool = False
    max_connected: int = 0
    duration_s: float = 0.0
    drain_s: float = 0.0
    undrained: int = 0
    world_lag_s: float = 0.0
    crashed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    stop_reason: str = ""


class Fleet:
    """The agents of a world, started, supervised and stopped together."""

    def __init__(self, world: World, settings: FleetSettings) -> None:
        if len(settings.vehicle_ids) != len(world.vehicles):
            raise ValueError("one vehicle id per simulated vehicle")
        self.world = world
        self.settings = settings
        # Validated once; each car's configuration is a copy with its identity. Agents and
        # their queues are built as they start (a SQLite queue takes milliseconds to
        # create), so setting up thousands of cars is spread over the connect ramp.
        self.template = agent_template(settings)
        self.queues: list[CountingQueue] = []
        self.agents: list[Agent] = []
        self.tasks: list[asyncio.Task[None]] = []
        world.on_network = self._set_network
        self.outcome = Outcome()
        self._started_at: float | None = None
        self._stopped_at: float | None = None

    def _build(self, index: int) -> Agent:
        """Make vehicle `index`'s agent and queue."""
        settings = self.settings
        vid = settings.vehicle_ids[index]
        path = None if settings.queue_dir is None else settings.queue_dir / f"{vid}.sqlite3"
        config = self.template.model_copy(
            update={
                "vehicle_id": vid,
                "mqtt_url": SecretStr(settings.mqtt_urls[index]),
                "client_id": settings.client_prefix + vid,
                "queue_path": path,
            }
        )
        inner: FixQueue = (
            MemoryFixQueue(config.queue_max_fixes)
            if path is None
            else SqliteFixQueue(path, config.queue_max_fixes)
        )
        queue = CountingQueue(inner)
        car = self.world.vehicles[index].car
        agent = Agent(config, position=car, status=car, actuator=car, queue=queue)
        if not self.world.link_up[index]:
            agent.set_network(False)
        self.queues.append(queue)
        self.agents.append(agent)
        return agent

    # --- controls -----------------------------------------------------------------------

    def _set_network(self, index: int, up: bool) -> None:  # noqa: FBT001 - World's callback
        if index < len(self.agents):  # one not yet started reads `world.link_up` when it does
            self.agents[index].set_network(up)

    def elapsed(self) -> float:
        """Seconds since `run` began (frozen once the fleet stopped)."""
        if self._started_at is None:
            return 0.0
        end = self._stopped_at
        if end is None:
            end = asyncio.get_running_loop().time()
        return end - self._started_at

    def snapshot(self) -> Snapshot:
        """Sum every agent's live counters."""
        snap = Snapshot(
            elapsed_s=self.elapsed(),
            sim_time_s=self.world.time_s,
            vehicles=len(self.settings.vehicle_ids),
            started=len(self.tasks),
            links_down=self.world.link_up.count(False),
        )
        for agent, queue in zip(self.agents, self.queues, strict=True):
            stats = agent.stats
            snap.connected += stats.connected
            snap.fixes_enqueued += stats.fixes_enqueued
            snap.fixes_acked += stats.fixes_acked
            snap.backlog += stats.queue_depth
            snap.queue_dropped += stats.queue_dropped
            snap.commands_executed += stats.commands_executed
            snap.commands_rejected += stats.commands_rejected
            snap.commands_failed += stats.commands_failed
            snap.reconnects += stats.reconnects
            snap.vehicles_with_errors += stats.last_error is not None
            snap.unique_acked += queue.unique_acked
        return snap

    # --- running ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, hurry: asyncio.Event | None = None) -> Outcome:
        """Run until `stop` is set, the duration passes or the broker proves unreachable.

        Setting `hurry` during the drain stops the remaining agents at once.
        """
        loop = asyncio.get_running_loop()
        self._started_at = loop.time()
        clock = asyncio.create_task(self._clock(), name="world-clock")
        starter = asyncio.create_task(self._start_agents(), name="agent-starter")
        outcome = self.outcome
        try:
            outcome.stop_reason = await self._supervise(stop)
        finally:
            self._stopped_at = loop.time()
            outcome.duration_s = self._stopped_at - self._started_at
            for helper in (clock, starter):
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
            outcome.world_lag_s = max(0.0, outcome.duration_s - self.world.time_s)
            drain_started = loop.time()
            if outcome.broker_reachable:
                outcome.undrained = await self._drain(hurry)
            outcome.drain_s = loop.time() - drain_started
            await self._stop_all()
            self._collect_errors()
            for queue in self.queues:
                queue.close()
        return outcome

    async def _supervise(self, stop: asyncio.Event) -> str:
        settings = self.settings
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)
            connected = sum(agent.stats.connected for agent in self.agents)
            self.outcome.max_connected = max(self.outcome.max_connected, connected)
            if connected:
                self.outcome.broker_reachable = True
            elapsed = self.elapsed()
            if not self.outcome.broker_reachable and elapsed >= settings.connect_timeout_s:
                return "broker_unreachable"
            if settings.duration_s is not None and elapsed >= settings.duration_s:
                return "duration"
        return "signal"

    async def _clock(self) -> None:
        """Advance the world in step with the wall clock."""
        loop = asyncio.get_running_loop()
        world = self.world
        origin = loop.time()
        while True:
            target = loop.time() - origin
            for _ in range(MAX_CATCHUP_TICKS):
                if world.time_s + world.tick_s > target:
                    break
                world.step()
            await asyncio.sleep(max(0.0, origin + world.time_s + world.tick_s - loop.time()))

    async def _start_agents(self) -> None:
        """Build and start the agents at `connect_rate` a second."""
        loop = asyncio.get_running_loop()
        origin = loop.time()
        interval = 1.0 / self.settings.connect_rate
        for index in range(len(self.settings.vehicle_ids)):
            # Always yield, even when behind: building a car takes milliseconds, and a
            # starter that never awaits would hold the loop until the last car is built.
            await asyncio.sleep(max(0.0, origin + index * interval - loop.time()))
            agent = self._build(index)
            task = asyncio.create_task(agent.run(), name=f"agent-{agent.config.vehicle_id}")
            task.add_done_callback(self._agent_done)
            self.tasks.append(task)
            if (index + 1) % GC_FREEZE_EVERY == 0:
                gc.freeze()
        gc.freeze()

    def _agent_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.outcome.crashed += 1
            self.outcome.errors[f"agent stopped: {type(error).__name__}: {error}"] += 1
            log.error("%s stopped with an error", task.get_name(), exc_info=error)

    async def _drain(self, hurry: asyncio.Event | None) -> int:
        """Stop each agent once its queue is empty; return how many still held fixes."""
        for agent in self.agents:
            agent.set_network(True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.drain_timeout_s
        pending = {i for i, task in enumerate(self.tasks) if not task.done()}
        while pending and loop.time() < deadline and not (hurry is not None and hurry.is_set()):
            for index in sorted(pending):
                # Depth 0 means every fix taken so far has its PUBACK: none is in flight.
                # Cancelling in the same step leaves no moment for a new fix to be sent.
                if self.agents[index].stats.queue_depth == 0:
                    self.tasks[index].cancel()
                    pending.discard(index)
            if pending:
                await asyncio.sleep(POLL_S)
        return len(pending)

    async def _stop_all(self) -> None:
        for task in self.tasks:
            if not task.done():
                task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=CLOSE_GRACE_S)

    def _collect_errors(self) -> None:
        for agent in self.agents:
            if agent.stats.last_error is not None:
                self.outcome.errors[agent.stats.last_error] += 1


def agent_template(settings: FleetSettings) -> AgentConfig:
    """One validated agent configuration; each vehicle's is a copy with its identity."""
    overrides: dict[str, object] = {
        "vehicle_id": settings.vehicle_ids[0] if settings.vehicle_ids else "sim",
        "mqtt_url": settings.mqtt_urls[0] if settings.mqtt_urls else "mqtt://127.0.0.1",
        "topic_root": settings.topic_root,
        "trusted_keys": list(settings.trusted_keys),
        "position_backend": "sim",
        "status_backend": "sim",
        "actuator_backend": "sim",
    }
    defaults = AgentConfig.model_fields
    moving = defaults["moving_interval_s"].default
    if settings.rate_hz is not None:
        moving = 1.0 / settings.rate_hz
        overrides["moving_interval_s"] = moving
    parked = max(moving, defaults["parked_interval_s"].default)
    if settings.parked_rate_hz is not None:
        parked = 1.0 / settings.parked_rate_hz
    # The agent requires parked >= moving: a parked car never reports more often.
    overrides["parked_interval_s"] = max(parked, moving)
    # Sample at least as often as fixes are due, so a status change is never late.
    overrides["sample_interval_s"] = min(moving, defaults["sample_interval_s"].default)
    return AgentConfig.load(None, **overrides)
