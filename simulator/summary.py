"""The end-of-run summary: what `--json` prints, field by field as in docs/simulator.md."""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from simulator.fleet import Fleet, Outcome

# Distinct error messages listed in the summary; the rest are only counted.
MAX_ERROR_MESSAGES: Final = 10

EXIT_OK: Final = 0
EXIT_BROKER_UNREACHABLE: Final = 1
EXIT_USAGE: Final = 2
EXIT_AGENT_CRASHED: Final = 3


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What the run was asked to do."""

    area: str
    scenario: str
    seed: int
    rate_hz: float | None
    queue: str  # "memory" or "disk"


def exit_code(outcome: Outcome) -> int:
    """The process exit code for how the run ended."""
    if not outcome.broker_reachable:
        return EXIT_BROKER_UNREACHABLE
    if outcome.crashed:
        return EXIT_AGENT_CRASHED
    return EXIT_OK


def cpu_seconds() -> float:
    """User plus system CPU time this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_summary(fleet: Fleet, outcome: Outcome, info: RunInfo) -> dict[str, Any]:
    """Every counter of the run, as JSON-ready data."""
    snap = fleet.snapshot()
    per_vehicle = dict.fromkeys(fleet.settings.vehicle_ids, 0)
    for agent, queue in zip(fleet.agents, fleet.queues, strict=True):
        per_vehicle[agent.config.vehicle_id] = queue.unique_acked
    duration = outcome.duration_s
    return {
        "vehicles": snap.vehicles,
        "area": info.area,
        "scenario": info.scenario,
        "seed": info.seed,
        "rate_hz": info.rate_hz,
        "queue": info.queue,
        "duration_s": round(duration, 3),
        "drain_s": round(outcome.drain_s, 3),
        "sim_time_s": round(snap.sim_time_s, 3),
        "world_lag_s": round(outcome.world_lag_s, 3),
        "broker_reachable": outcome.broker_reachable,
        "max_connected": outcome.max_connected,
        "fixes_enqueued": snap.fixes_enqueued,
        "fixes_acked": snap.fixes_acked,
        "unique_fixes_acked": snap.unique_acked,
        "unique_fixes_acked_per_vehicle": per_vehicle,
        "fixes_per_s": round(snap.unique_acked / duration, 3) if duration > 0 else 0.0,
        "backlog_at_exit": snap.backlog,
        "undrained_vehicles": outcome.undrained,
        "queue_dropped": snap.queue_dropped,
        "commands_executed": snap.commands_executed,
        "commands_rejected": snap.commands_rejected,
        "commands_failed": snap.commands_failed,
        "reconnects": snap.reconnects,
        "errors": sum(outcome.errors.values()),
        "error_messages": dict(outcome.errors.most_common(MAX_ERROR_MESSAGES)),
        "agents_crashed": outcome.crashed,
        "scenario_events": dict(sorted(fleet.world.counts.items())),
        "cpu_s": round(cpu_seconds(), 3),
        "stop_reason": outcome.stop_reason,
        "exit_code": exit_code(outcome),
    }
