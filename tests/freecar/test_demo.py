"""`freecar demo` as a newcomer runs it, and the fleet it seeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import psycopg
import pytest

from freecar.demo_seed import MODELS, demo_vehicles, load_geofences, seed_demo

if TYPE_CHECKING:
    from pathlib import Path


def test_seed_is_idempotent_and_realistic(migrated_database_url: str) -> None:
    assert seed_demo(migrated_database_url, vehicles=60) == 60
    assert seed_demo(migrated_database_url, vehicles=60) == 0
    with psycopg.connect(migrated_database_url) as conn:
        cars = conn.execute(
            "SELECT count(*), count(DISTINCT plate), count(DISTINCT category),"
            " min(price_hour_minor), max(currency) FROM vehicles"
        ).fetchone()
        kinds = dict(conn.execute("SELECT kind, count(*) FROM geofences GROUP BY kind").fetchall())
    assert cars == (60, 60, 5, 1500, "CNY")
    assert kinds["service_area"] == 1
    assert kinds["parking_zone"] >= 3


def test_demo_cars_start_inside_the_service_area() -> None:
    area = next(f for f in load_geofences() if f["properties"]["kind"] == "service_area")
    ring = area["geometry"]["coordinates"][0]
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    for car in demo_vehicles(200):
        assert min(lats) < car["home_lat"] < max(lats)
        assert min(lons) < car["home_lon"] < max(lons)
        assert car["plate"].startswith("沪A·")


def _run_demo(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "freecar", "demo", *args],
        env=env,
        cwd=cwd,  # where it writes .freecar/demo.env
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["auto", "embedded"])
def test_demo_comes_up_prints_urls_and_stops_cleanly(mode: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREECAR_")}
    env["FREECAR_DEVSTACK"] = mode
    demo = _run_demo(["--vehicles", "50", "--duration", "60"], env, tmp_path)
    assert demo.stdout is not None
    seen: list[str] = []
    for line in demo.stdout:
        seen.append(line)
        if line.startswith("Press Ctrl-C"):
            break
    # Ctrl-C, as a person would stop it.
    demo.send_signal(signal.SIGINT)
    rest, _ = demo.communicate(timeout=60)
    output = "".join(seen) + rest
    assert demo.returncode == 0, output
    assert "FreeCar demo is up." in output
    assert "50 cars in Shanghai (50 newly seeded)" in output
    assert "postgresql://" in output
    assert "mqtt://" in output
    assert "nothing left running" in output


def test_every_demo_car_is_a_vehicle_the_api_accepts() -> None:
    """The seed bypasses the API; its categories, fuel types and features must be the API's.

    Before, demo cars carried `autopilot` and `leather`, which the API then refused when an
    operator edited such a car.
    """
    from api.fleet.schemas import VehicleCreate  # noqa: PLC0415 - the API's own vocabulary
    from api.vehicles.schemas import Category as SearchCategory  # noqa: PLC0415 - idem

    cars = demo_vehicles(500)
    for car in cars:
        body = {k: v for k, v in car.items() if k not in {"home_lat", "home_lon"}}
        body["home"] = {"lat": car["home_lat"], "lon": car["home_lon"]}
        VehicleCreate.model_validate(body)
        SearchCategory(car["category"])
    # Every model of the demo appears in a fleet this size, so every feature was checked.
    assert {(c["make"], c["model"]) for c in cars} == {(m.make, m.model) for m in MODELS}
