"""Recordings of real GPS receivers standing still, from gpsd's regression tests.

tests/hub/data/gpsd/README.md says where each comes from and under which licence. Each
recording is there twice: the receiver's NMEA output (`<name>.log`, to replay through a real
gpsd) and gpsd's TPV reports for it (`<name>.tpv.jsonl`, trimmed to the fields the agent
reads), which `fixes()` turns into what the agent would publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

from vehicle_agent.backends.gpsd_reports import GpsdFix, parse_report

if TYPE_CHECKING:
    from types import ModuleType

DATA: Final = Path(__file__).resolve().parent / "data" / "gpsd"
# The widest wander (about 200 m: a phone modem with four satellites), then three receivers
# whose fixes gpsd turns into speeds of 34 to 65 km/h while they stand still.
WANDER: Final = "quectel-eg25-g"
RECORDINGS: Final = (WANDER, "garmin-10x", "motorola-t805", "haicom-305N")
# The receivers report once a second; a replay keeps that pace.
CYCLE_S: Final = 1.0
# Cycles without a fix replayed before the first fix: enough for gpsd to recognise NMEA.
LEAD_IN_CYCLES: Final = 3


class Reading(NamedTuple):
    """One usable TPV report, in the order gpsd sent it."""

    number: int
    fix: GpsdFix


def fixes(name: str) -> list[Reading]:
    """Every usable fix gpsd reported for a recording, as the agent's gpsd backend reads it."""
    readings: list[Reading] = []
    for line in (DATA / f"{name}.tpv.jsonl").read_text().splitlines():
        report = parse_report(line)
        if report is not None and report.fix is not None:
            readings.append(Reading(len(readings), report.fix))
    return readings


def nmea_cycles(name: str) -> list[list[bytes]]:
    """The recording's NMEA sentences, one list per second (a cycle starts with its GGA).

    The long wait for a first fix is cut to `LEAD_IN_CYCLES`; comments are dropped.
    """
    cycles: list[list[bytes]] = []
    for line in (DATA / f"{name}.log").read_bytes().splitlines():
        sentence = line.strip()
        if not sentence.startswith(b"$"):
            continue
        if sentence[3:6] == b"GGA" or not cycles:
            cycles.append([])
        cycles[-1].append(sentence + b"\r\n")
    first_fix = next(i for i, cycle in enumerate(cycles) if _has_fix(cycle))
    return cycles[max(0, first_fix - LEAD_IN_CYCLES) :]


def _has_fix(cycle: list[bytes]) -> bool:
    for sentence in cycle:
        fields = sentence.split(b",")
        if sentence[3:6] == b"GGA" and len(fields) > 6 and fields[6] not in {b"", b"0"}:
            return True
    return False


async def replay(master_fd: int, cycles: list[list[bytes]]) -> None:
    """Write the cycles to a receiver's pty at the recorded pace, as a serial line sends them.

    Within its second each sentence takes its share of the time by its length, as on a
    serial line: gpsd reports the GGA (with a speed it derives from the last two positions)
    before the RMC (with the receiver's own), and a reader sees whichever came last.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    for number, cycle in enumerate(cycles):
        size = sum(len(sentence) for sentence in cycle)
        at = start + number * CYCLE_S
        for sentence in cycle:
            await asyncio.sleep(max(0.0, at - loop.time()))
            # A pty whose reader (gpsd) is away drops what does not fit, as a serial line does.
            with contextlib.suppress(BlockingIOError):
                os.write(master_fd, sentence)
            at += CYCLE_S * len(sentence) / size
    await asyncio.sleep(max(0.0, start + len(cycles) * CYCLE_S - loop.time()))


def gpsd_harness() -> ModuleType:
    """tests/vehicle_agent/gpsd_harness.py (a private gpsd on a pty), loaded by path.

    Test directories are not packages; loading it by path shares the agent tests' harness
    rather than copying it.
    """
    name = "gpsd_harness"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "vehicle_agent" / "gpsd_harness.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
