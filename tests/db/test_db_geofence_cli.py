"""`freecar geofence import` and `list`: all or nothing, --replace, --dry-run, exit codes."""

from __future__ import annotations

import json
import secrets
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from freecar.cli import COMMANDS, main

if TYPE_CHECKING:
    from collections.abc import Iterator

DEMO = Path(__file__).resolve().parents[2] / "freecar" / "demo_data" / "shanghai.geojson"


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch, migrated_database_url: str) -> Iterator[str]:
    """The module's database as FREECAR_DATABASE_URL, emptied of geofences after each test."""
    monkeypatch.setenv("FREECAR_DATABASE_URL", migrated_database_url)
    yield migrated_database_url
    with psycopg.connect(migrated_database_url) as conn:
        conn.execute("DELETE FROM geofences")


def circle(name: str, lon: float = 121.47, **properties: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {"name": name, "kind": "parking_zone", "radius_m": 100, **properties},
        "geometry": {"type": "Point", "coordinates": [lon, 31.23]},
    }


def write(tmp_path: Path, *features: dict[str, Any]) -> Path:
    path = tmp_path / f"{secrets.token_hex(4)}.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}))
    return path


def stored(url: str) -> list[tuple[int, str, float | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, name, radius_m FROM geofences ORDER BY id").fetchall()
    return [(int(r[0]), str(r[1]), r[2]) for r in rows]


def test_registered() -> None:
    assert COMMANDS["geofence"] == "db.geofence_cli"


def test_imports_the_demo_file_then_lists_it(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["geofence", "import", str(DEMO)]) == 0
    assert "imported 8 geofences" in capsys.readouterr().out
    assert len(stored(database)) == 8

    assert main(["geofence", "list", "--kind", "service_area", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(f["name"], f["type"], f["active"]) for f in listed] == [
        ("Shanghai inner ring", "Polygon", True)
    ]
    assert main(["geofence", "list"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 8


def test_names_already_stored_need_replace(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["geofence", "import", str(write(tmp_path, circle("a"), circle("b")))]) == 0
    before = stored(database)
    capsys.readouterr()

    again = write(tmp_path, circle("a", radius_m=250), circle("c"))
    assert main(["geofence", "import", str(again)]) == 2
    assert "name already stored (use --replace): a" in capsys.readouterr().err
    assert stored(database) == before

    assert main(["geofence", "import", str(again), "--replace", "--dry-run"]) == 0
    assert "would import 2 geofences" in capsys.readouterr().out
    assert stored(database) == before

    assert main(["geofence", "import", str(again), "--replace", "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["replaced"] == [before[0][0]]
    assert len(outcome["created"]) == 1
    after = stored(database)
    # Replaced in place: same id, new definition; the untouched fence stays.
    assert after[0] == (before[0][0], "a", 250.0)
    assert after[1] == before[1]
    assert after[2][1] == "c"


def test_replace_folds_duplicates_already_stored(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(database) as conn:
        for _ in range(2):
            conn.execute(
                "INSERT INTO geofences (name, kind, geometry, radius_m) VALUES ('dup',"
                ' \'parking_zone\', \'{"type": "Point", "coordinates": [121.4, 31.2]}\', 50)'
            )
    first = stored(database)[0][0]
    assert main(["geofence", "import", str(write(tmp_path, circle("dup"))), "--replace"]) == 0
    assert "1 duplicates deleted" in capsys.readouterr().out
    assert stored(database) == [(first, "dup", 100.0)]


def test_every_problem_listed_and_nothing_imported(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_ring = {
        "type": "Feature",
        "properties": {"name": "open", "kind": "service_area"},
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[121.46, 31.22], [121.48, 31.22], [121.48, 31.24], [121.46, 31.24]]],
        },
    }
    path = write(
        tmp_path,
        circle("fine"),
        open_ring,
        circle("no radius", radius_m=None),
        circle("twice"),
        circle("twice"),
    )
    assert main(["geofence", "import", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert any("feature 1 (open)" in line and "ring_not_closed" in line for line in err)
    assert any("feature 2 (no radius)" in line and "radius_required" in line for line in err)
    assert stored(database) == []

    assert main(["geofence", "import", str(write(tmp_path, circle("x"), circle("x")))]) == 2
    assert "name used by more than one feature: x" in capsys.readouterr().err
    assert main(["geofence", "import", str(tmp_path / "missing.geojson")]) == 2
    assert "cannot read" in capsys.readouterr().err
    garbage = tmp_path / "garbage.geojson"
    garbage.write_text("{not json")
    assert main(["geofence", "import", str(garbage), "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["imported"] is False
    assert "not JSON" in captured.err
    assert stored(database) == []


def test_database_unreachable_exits_3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(
        "FREECAR_DATABASE_URL", f"postgresql://nobody@127.0.0.1:{port}/x?connect_timeout=2"
    )
    assert main(["geofence", "import", str(write(tmp_path, circle("a")))]) == 3
    assert main(["geofence", "list"]) == 3
    assert "cannot reach the database" in capsys.readouterr().err
