"""`freecar sim --fleet FILE`: the vehicles of a fleet file, each reporting what it runs on.

The demo's cars are seeded with a fuel type; before, the simulator drew each car's
drivetrain at random, so electric demo cars reported `fuel_pct` and no battery.
"""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

import pytest
from sim_testing import WAIT_S, recorder, sim_command, sim_env
from support.waiting import poll

from simulator.area import load_area
from simulator.fleet_file import FleetFileError, read_fleet_file
from simulator.world import Drivetrain, World

if TYPE_CHECKING:
    from pathlib import Path

    from devstack.stack import DevStack

RUN_TIMEOUT_S = 60.0
FLEET = [
    {"id": "ev-1", "fuel_type": "electric", "make": "BYD", "plate": "沪A·D00001"},
    {"id": "hy-1", "fuel_type": "hybrid"},
    {"id": "pe-1", "fuel_type": "petrol"},
    {"id": "di-1", "fuel_type": "diesel"},
    {"id": "xx-1"},
]


def test_a_json_fleet_file_gives_ids_and_drivetrains(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(FLEET), encoding="utf-8")
    plan = read_fleet_file(path)
    assert plan.vehicle_ids == ["ev-1", "hy-1", "pe-1", "di-1", "xx-1"]
    assert plan.drivetrains == [
        Drivetrain.ELECTRIC,
        Drivetrain.HYBRID,
        Drivetrain.PETROL,
        Drivetrain.DIESEL,
        None,
    ]


def test_a_bulk_import_csv_is_a_fleet_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text(
        "op,id,plate,make,model,category,fuel_type,price_hour_minor\n"
        "create,sh-0101,沪A·D0101,BYD,Qin Plus,electric,electric,3500\n"
        "create,sh-0102,沪A·12345,VW,Lavida,economy,petrol,2500\n",
        encoding="utf-8",
    )
    plan = read_fleet_file(path)
    assert plan.vehicle_ids == ["sh-0101", "sh-0102"]
    assert plan.drivetrains == [Drivetrain.ELECTRIC, Drivetrain.PETROL]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("", "no `id` column"),
        ("[]", "lists no vehicle"),
        ("[1, 2]", "array of objects"),
        ("[{", "not JSON"),
        ("plate,make\nX,Y\n", "no `id` column"),
        ('[{"id": "a/b"}]', "vehicle 1"),
        ('[{"id": "a"}, {"id": "a"}]', "listed twice"),
        ('[{"id": "a", "fuel_type": "coal"}]', "'coal' is not one of"),
        ('[{"plate": "X"}]', "vehicle 1 has no `id`"),
    ],
)
def test_a_bad_fleet_file_says_what_is_wrong(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "fleet.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(FleetFileError, match=says):
        read_fleet_file(path)


def test_binary_and_missing_files_are_refused(tmp_path: Path) -> None:
    binary = tmp_path / "fleet.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(FleetFileError, match="not UTF-8"):
        read_fleet_file(binary)
    with pytest.raises(FleetFileError, match="cannot read"):
        read_fleet_file(tmp_path / "missing.csv")


def test_each_drivetrain_reports_its_own_gauges_and_keeps_its_routes() -> None:
    network = load_area("shanghai").network
    given = [Drivetrain.ELECTRIC, Drivetrain.HYBRID, Drivetrain.PETROL, Drivetrain.DIESEL]
    world = World(network, 4, seed=3, drivetrains=given)
    drawn = World(network, 4, seed=3)
    for _ in range(120):
        world.step()
        drawn.step()
    reported = [
        (car.status().fuel_pct is not None, car.status().battery_pct is not None)
        for car in world.cars
    ]
    # (fuel, battery): electric, hybrid, petrol, diesel.
    assert reported == [(False, True), (True, True), (True, False), (True, False)]
    # The drivetrain does not change where a car goes: same seed, same tracks.
    assert [v.point for v in world.vehicles] == [v.point for v in drawn.vehicles]


def test_the_cars_of_a_fleet_file_report_their_own_gauges(
    devstack: DevStack, mqtt_topic_root: str, tmp_path: Path
) -> None:
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(FLEET[:3]), encoding="utf-8")
    url = devstack.info.mqtt_url
    root = mqtt_topic_root
    args = [
        "--fleet", str(path), "--duration", "3", "--json", "--topic-root", root,
        "--client-prefix", f"{root}-", "--progress-interval", "0",
    ]  # fmt: skip
    with recorder(url, root) as seen:
        done = subprocess.run(
            sim_command(*args),
            env=sim_env(url),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert poll(lambda: len(seen.unique()) >= summary["unique_fixes_acked"], timeout=WAIT_S)
    assert set(summary["unique_fixes_acked_per_vehicle"]) == {"ev-1", "hy-1", "pe-1"}
    for vid, fuel, battery in (("ev-1", False, True), ("hy-1", True, True), ("pe-1", True, False)):
        fixes = seen.fixes_of(vid)
        assert fixes, vid
        for fix in fixes:
            assert (fix.get("fuel_pct") is not None, fix.get("battery_pct") is not None) == (
                fuel,
                battery,
            ), (vid, fix)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--vehicles", "3"], "leave out --vehicles"),
        (["--id-format", "car-{n}"], "leave out --vehicles and --id-format"),
    ],
)
def test_fleet_and_vehicle_counts_do_not_mix(tmp_path: Path, extra: list[str], says: str) -> None:
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(FLEET), encoding="utf-8")
    done = subprocess.run(
        sim_command("--fleet", str(path), *extra, "--mqtt-url", "mqtt://u:p@127.0.0.1:1"),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
        env=sim_env(None),
    )
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
