"""`freecar sim --fleet FILE`: drive the vehicles of a fleet file, each with its drivetrain.

The file is what the fleet's bulk import takes (docs/fleet.md): CSV with a header line, or a
JSON array of objects. Only `id` and, if present, `fuel_type` are read; every other column
is ignored, so a fleet export or the demo's own fleet file works as it is. A car's
`fuel_type` decides what it reports: petrol and diesel `fuel_pct`, electric `battery_pct`,
hybrid both. Without it, the simulator's fleet mix draws one.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from protocol.errors import ProtocolError
from protocol.topics import check_vehicle_id
from simulator.world import Drivetrain

if TYPE_CHECKING:
    from pathlib import Path

# A fleet file is read whole: this bounds it far above any fleet one process can simulate
# (100,000 rows of a full bulk-import CSV are about 30 MB).
MAX_FILE_BYTES: Final = 64 * 1024 * 1024
MAX_VEHICLES: Final = 100_000


class FleetFileError(Exception):
    """The fleet file cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """The vehicles to simulate, in file order, and the drivetrain of each (None: drawn)."""

    vehicle_ids: list[str]
    drivetrains: list[Drivetrain | None]


def read_fleet_file(path: Path) -> FleetPlan:
    """Read the vehicles of a CSV or JSON fleet file; FleetFileError says what is wrong."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FleetFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise FleetFileError(f"{path} is larger than {MAX_FILE_BYTES // 2**20} MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FleetFileError(f"{path} is not UTF-8 text") from None
    rows = _json_rows(path, text) if text.lstrip().startswith("[") else _csv_rows(path, text)
    return _plan(path, rows)


def _json_rows(path: Path, text: str) -> list[dict[str, Any]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FleetFileError(f"{path} is not JSON: {exc}") from None
    if not all(isinstance(row, dict) for row in document):
        raise FleetFileError(f"{path}: expected a JSON array of objects with an `id`")
    rows: list[dict[str, Any]] = document
    return rows


def _csv_rows(path: Path, text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "id" not in reader.fieldnames:
        raise FleetFileError(f"{path}: no `id` column: expected CSV with one, or a JSON array")
    try:
        return list(reader)
    except csv.Error as exc:
        raise FleetFileError(f"{path}: line {reader.line_num}: {exc}") from None


def _plan(path: Path, rows: list[dict[str, Any]]) -> FleetPlan:
    if not rows:
        raise FleetFileError(f"{path} lists no vehicle")
    if len(rows) > MAX_VEHICLES:
        raise FleetFileError(f"{path} lists {len(rows):,} vehicles; at most {MAX_VEHICLES:,}")
    ids: list[str] = []
    drivetrains: list[Drivetrain | None] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        vid = row.get("id")
        if not isinstance(vid, str):
            raise FleetFileError(f"{path}: vehicle {number} has no `id`")
        try:
            check_vehicle_id(vid)
        except ProtocolError as exc:
            raise FleetFileError(f"{path}: vehicle {number}: {exc.message}") from None
        if vid in seen:
            raise FleetFileError(f"{path}: {vid} is listed twice")
        seen.add(vid)
        ids.append(vid)
        drivetrains.append(_drivetrain(path, number, row.get("fuel_type")))
    return FleetPlan(ids, drivetrains)


def _drivetrain(path: Path, number: int, fuel_type: object) -> Drivetrain | None:
    if fuel_type is None or fuel_type == "":
        return None
    try:
        return Drivetrain(str(fuel_type))
    except ValueError:
        known = ", ".join(d.value for d in Drivetrain)
        raise FleetFileError(
            f"{path}: vehicle {number}: fuel_type {fuel_type!r} is not one of {known}"
        ) from None
