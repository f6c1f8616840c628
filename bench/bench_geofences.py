"""Geofence evaluation: fixes per second through the hub's engine, against 100 to 10,000 fences.

The fences are a synthetic but city-shaped set around Shanghai: one service area of about
6,000 km2 (a few hundred vertices) that every fix is inside, then parking zones (circles of
80-400 m, 70%), irregular polygons (300 m to 3 km across, 20%) and corridors (1-5 km long,
30-100 m wide, 10%), their centres scattered about People's Square (sigma 20 km). The fleet is
1,000 cars that start scattered about it too (sigma 10 km), a third parked (GPS jitter only)
and the rest driving at 18-54 km/h with a fix every 5 s, in batches of 5,000 fixes as the hub
writes them (`bench_storage.BATCH`).

Each run measures, on the same fences and batches:

- **STRtree bulk query**: shapely 2's `STRtree.query(points, predicate="intersects")` for
  the whole batch, positions already projected: the cost of a plain spatial index, as a
  yardstick (it answers only "which fences contain each fix", with no margins, state or
  time; the engine finds its candidates with a grid of its own, not with this tree).
- **GeofenceEngine.evaluate**: the whole engine from `TelemetryRow`s to transitions:
  columns, projection, candidates, hysteresis classes, segment crossing and the state
  machine, then `dirty_states()` as the hub takes them to save with each batch. The note
  splits its time into phases (microseconds per fix).

Run alone with `python -m bench --only geofences` (or this module with `python -m`).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import shapely

from bench.bench_storage import BATCH
from bench.report import Report, Result
from db.geofences.model import Geofence, GeofenceKind
from db.telemetry import TelemetryRow
from hub.geofences import FenceIndex, GeofenceEngine
from hub.geofences.projection import to_plane
from hub.service import tune_gc

if TYPE_CHECKING:
    from collections.abc import Sequence

SUITE: Final = "geofences"
FENCE_COUNTS: Final = (100, 1_000, 10_000)
# The target for the largest case.
TARGET_FIXES_PER_S: Final = 300_000
VEHICLES: Final = 1_000
# Seconds between a car's fixes: a common moving-report interval for trackers, and long
# enough (25-75 m at city speeds) that segment crossing is exercised on most steps.
FIX_INTERVAL_S: Final = 5
# Batches evaluated before timing (the first ones enter every car into its fences), then
# timed. 20 batches is 100,000 fixes: a few tenths of a second per case at the target rate.
WARMUP_BATCHES: Final = 2
TIMED_BATCHES: Final = 20
QUICK_TIMED_BATCHES: Final = 3
PEOPLES_SQUARE: Final = (31.2304, 121.4737)
METRES_PER_DEGREE: Final = 111_195.0


def _offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return (
        lat + north_m / METRES_PER_DEGREE,
        lon + east_m / (METRES_PER_DEGREE * math.cos(math.radians(lat))),
    )


def _ring(
    rng: random.Random,
    centre: tuple[float, float],
    *,
    radius_m: float,
    vertices: int,
    wobble: float,
) -> list[list[float]]:
    """A star-shaped (so simple) closed ring about a centre: one vertex per angular sector."""
    sector = 2 * math.pi / vertices
    angles = [(k + rng.uniform(0, 0.8)) * sector for k in range(vertices)]
    ring = []
    for angle in angles:
        reach = radius_m * rng.uniform(1 - wobble, 1.0)
        la, lo = _offset(*centre, reach * math.sin(angle), reach * math.cos(angle))
        ring.append([lo, la])
    ring.append(ring[0])
    return ring


def make_fences(count: int, seed: int = 1) -> list[Geofence]:
    """`count` fences: one service area, then the city mix (validated like API input)."""
    rng = random.Random(seed)
    lat0, lon0 = PEOPLES_SQUARE
    fences = [
        Geofence(
            id=1,
            name="service area",
            kind=GeofenceKind.SERVICE_AREA,
            geometry={
                "type": "Polygon",
                "coordinates": [
                    _ring(rng, PEOPLES_SQUARE, radius_m=45_000, vertices=400, wobble=0.1)
                ],
            },
        )
    ]
    for number in range(2, count + 1):
        lat, lon = _offset(lat0, lon0, rng.gauss(0, 20_000), rng.gauss(0, 20_000))
        roll = rng.random()
        common: dict[str, Any] = {"id": number, "name": f"fence {number}"}
        if roll < 0.7:
            fences.append(
                Geofence(
                    **common,
                    kind=GeofenceKind.PARKING_ZONE,
                    geometry={"type": "Point", "coordinates": [lon, lat]},
                    radius_m=rng.uniform(80, 400),
                )
            )
        elif roll < 0.9:
            radius = math.exp(rng.uniform(math.log(150), math.log(1_500)))
            ring = _ring(rng, (lat, lon), radius_m=radius, vertices=rng.randint(6, 40), wobble=0.5)
            fences.append(
                Geofence(
                    **common,
                    kind=GeofenceKind.RESTRICTED,
                    geometry={"type": "Polygon", "coordinates": [ring]},
                )
            )
        else:
            line = [[lon, lat]]
            heading = rng.uniform(0, 2 * math.pi)
            for _ in range(rng.randint(1, 6)):
                heading += rng.uniform(-0.6, 0.6)
                step = rng.uniform(300, 900)
                lat, lon = _offset(lat, lon, step * math.sin(heading), step * math.cos(heading))
                line.append([lon, lat])
            fences.append(
                Geofence(
                    **common,
                    kind=GeofenceKind.RESTRICTED,
                    geometry={"type": "LineString", "coordinates": line},
                    width_m=rng.uniform(30, 100),
                )
            )
    return fences


@dataclass(slots=True)
class _Car:
    name: str
    lat: float
    lon: float
    heading: float
    speed: float  # metres per second


def make_batches(count: int, seed: int = 2) -> list[list[TelemetryRow]]:
    """`count` batches of BATCH fixes from VEHICLES cars, in arrival (time-major) order."""
    rng = random.Random(seed)
    cars = []
    for number in range(VEHICLES):
        lat, lon = _offset(*PEOPLES_SQUARE, rng.gauss(0, 10_000), rng.gauss(0, 10_000))
        parked = rng.random() < 1 / 3
        speed = 0.0 if parked else rng.uniform(5, 15)
        cars.append(_Car(f"car-{number:05d}", lat, lon, rng.uniform(0, 2 * math.pi), speed))
    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    per_batch = BATCH // VEHICLES
    batches: list[list[TelemetryRow]] = []
    step = 0
    for _ in range(count):
        rows: list[TelemetryRow] = []
        for _ in range(per_batch):
            ts = start + timedelta(seconds=step * FIX_INTERVAL_S)
            for car in cars:
                car.heading += rng.gauss(0, 0.15)
                run = car.speed * FIX_INTERVAL_S
                car.lat, car.lon = _offset(
                    car.lat, car.lon, run * math.sin(car.heading), run * math.cos(car.heading)
                )
                # GPS noise of a few metres on every fix, parked or not.
                lat, lon = _offset(car.lat, car.lon, rng.gauss(0, 3), rng.gauss(0, 3))
                rows.append(
                    TelemetryRow(
                        vehicle_id=car.name,
                        ts=ts,
                        seq=step,
                        lat=lat,
                        lon=lon,
                        speed_kmh=car.speed * 3.6,
                        heading=None,
                        odometer_km=None,
                        fuel_pct=None,
                        battery_pct=None,
                        locked=False,
                        doors_open=False,
                        engine_on=car.speed > 0,
                        alarm=None,
                        accuracy_m=rng.uniform(3, 10),
                        extra=None,
                    )
                )
            step += 1
        batches.append(rows)
    return batches


def _raw_query(tree: shapely.STRtree, batches: Sequence[Sequence[TelemetryRow]]) -> float:
    """Fixes per second of the bare STRtree bulk query, positions already in arrays."""
    columns = []
    for rows in batches:
        lon = np.array([r.lon for r in rows], dtype=float)
        lat = np.array([r.lat for r in rows], dtype=float)
        columns.append(to_plane(lon, lat))
    started = time.perf_counter()
    for x, y in columns:
        tree.query(shapely.points(x, y), predicate="intersects")
    return sum(len(rows) for rows in batches) / (time.perf_counter() - started)


def _phases(engine: GeofenceEngine, fixes: int) -> str:
    parts = [
        f"{phase} {seconds / fixes * 1e6:.2f}" for phase, seconds in engine.stats.seconds.items()
    ]
    return "µs/fix: " + ", ".join(parts)


def run(report: Report, *, quick: bool) -> None:
    """Measure the raw query and the engine for each fence count."""
    timed = QUICK_TIMED_BATCHES if quick else TIMED_BATCHES
    batches = make_batches(WARMUP_BATCHES + timed)
    warmup, measured = batches[:WARMUP_BATCHES], batches[WARMUP_BATCHES:]
    fixes = sum(len(rows) for rows in measured)
    for count in FENCE_COUNTS:
        fences = make_fences(count)
        started = time.perf_counter()
        index = FenceIndex(fences)
        built_s = time.perf_counter() - started
        tune_gc()  # as `freecar hub` does at start; a reload should freeze its fences too
        raw_case = f"STRtree bulk query, {count:,} fences"
        report.add(
            Result(
                SUITE, raw_case, _raw_query(shapely.STRtree(index.outlines), measured), "fixes/s"
            )
        )

        engine = GeofenceEngine(index)
        for rows in warmup:
            engine.evaluate(rows)
            engine.dirty_states()
        engine.stats.seconds.clear()
        before = engine.stats.pairs, engine.stats.transitions, engine.stats.crossing_checks
        started = time.perf_counter()
        for rows in measured:
            # As the hub does: the batch's changed states are taken to be saved with it.
            engine.evaluate(rows)
            engine.dirty_states()
        rate = fixes / (time.perf_counter() - started)
        pairs = (engine.stats.pairs - before[0]) / fixes
        moved = (engine.stats.transitions - before[1]) / fixes * 10_000
        checks = (engine.stats.crossing_checks - before[2]) / fixes
        note = (
            f"index built in {built_s:.2f} s; {pairs:.2f} candidate fences/fix, "
            f"{checks:.2f} crossing checks/fix, {moved:.0f} transitions/10k fixes; "
            f"{_phases(engine, fixes)}"
        )
        if count == max(FENCE_COUNTS):
            verdict = "meets" if rate >= TARGET_FIXES_PER_S else "misses"
            note += f"; {verdict} the {TARGET_FIXES_PER_S:,}/s target"
        report.add(
            Result(
                SUITE,
                f"GeofenceEngine.evaluate, {count:,} fences",
                rate,
                "fixes/s",
                note=note,
                baseline=raw_case,
            )
        )


def main(argv: list[str] | None = None) -> int:
    """Run this suite alone and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_geofences", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer batches: checks it runs")
    args = parser.parse_args(argv)
    report = Report()
    run(report, quick=args.quick)
    for result in report.results:
        if result.baseline is not None:
            print(f"{result.case}: {report.ratio(result)}; {result.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
