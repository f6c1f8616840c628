"""Import geofences from a GeoJSON file, or list them.

    $ freecar geofence import shanghai.geojson --replace
    imported 9 geofences from shanghai.geojson: 7 new, 2 replaced
    $ freecar geofence list --kind service_area

The file is a FeatureCollection whose features carry `name` and `kind` (`service_area`,
`parking_zone`, `restricted`) and optionally the other fields (`radius_m`, `width_m`,
`schedule`, margins, `dwell_s`, `active`) in `properties` (docs/geofences.md). Every
feature is checked first; if any is refused, each problem is printed on its own line and
nothing is imported. Otherwise all are imported in one transaction. A name already in the
database is refused unless --replace is given, which updates that fence in place (its id,
rules and past events stay) and deletes any other fence of the same name. Running hubs
reload the fences on their own once the import commits.

Reads FREECAR_DATABASE_URL. Exit codes: 0 imported (or, with --dry-run, would import);
2 invalid input: an unreadable file, a feature refused, a name twice in the file, or a name
already stored without --replace; 3 the database is unreachable.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from db.geofences.model import GeofenceSpec

EXIT_INVALID = 2
EXIT_DATABASE = 3
# GeoJSON's own kinds, listed here so that `--help` does not import pydantic and shapely.
KINDS = ("service_area", "parking_zone", "restricted")
# Rows per query when listing: a page of the repository's own size.
LIST_PAGE = 500


def configure(parser: argparse.ArgumentParser) -> None:
    """Add `freecar geofence` subcommands."""
    commands = parser.add_subparsers(dest="geofence_command", metavar="ACTION", required=True)
    imp = commands.add_parser(
        "import",
        help="import a GeoJSON FeatureCollection (all or nothing)",
        description="Validate every feature, then import all of them in one transaction.",
    )
    imp.add_argument("file", type=Path, metavar="FILE.geojson", help="the GeoJSON file")
    imp.add_argument(
        "--replace",
        action="store_true",
        help="update fences that already have a feature's name instead of refusing the file",
    )
    imp.add_argument(
        "--dry-run", action="store_true", help="validate and check names, then change nothing"
    )
    imp.add_argument("--json", action="store_true", help="print the outcome as JSON")
    lst = commands.add_parser("list", help="list the stored geofences")
    lst.add_argument("--kind", choices=KINDS, help="only fences of this kind")
    lst.add_argument(
        "--active",
        choices=("true", "false"),
        help="only active (true) or inactive (false) fences",
    )
    lst.add_argument("--json", action="store_true", help="print one JSON array")


def run(args: argparse.Namespace) -> int:
    """Run `freecar geofence import` or `freecar geofence list`."""
    import psycopg
    from pydantic import ValidationError

    from core.settings import Settings

    try:
        url = Settings().database_url.get_secret_value()
    except ValidationError as exc:
        print(f"freecar geofence: bad configuration: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        if args.geofence_command == "import":
            return _import(args, url)
        return _list(args, url)
    except psycopg.OperationalError as exc:
        print(f"freecar geofence: cannot reach the database: {exc}", file=sys.stderr)
        return EXIT_DATABASE


def _refuse(lines: list[str], *, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"imported": False, "problems": lines}, indent=2))
    for line in lines:
        print(line, file=sys.stderr)
    return EXIT_INVALID


def _read_specs(path: Path) -> tuple[list[GeofenceSpec], list[str]]:
    """The file's geofences, and every problem found in it (one line each)."""
    from db.geofences.model import GeofenceImportError, specs_from_geojson

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [], [f"{path}: cannot read: {exc.strerror or exc}"]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [], [f"{path}: not JSON: {exc}"]
    try:
        specs = specs_from_geojson(document)
    except GeofenceImportError as exc:
        return [], [f"{path}: {line}" for line in str(exc).splitlines()]
    if not specs:
        return [], [f"{path}: no features"]
    names = Counter(spec.name for spec in specs)
    # Within one file a repeated name is a mistake: which of the two would --replace keep?
    twice = sorted(name for name, count in names.items() if count > 1)
    return specs, [f"{path}: name used by more than one feature: {name}" for name in twice]


def _import(args: argparse.Namespace, url: str) -> int:
    import psycopg

    from db.geofences.repository import (
        delete_geofence,
        geofence_ids_by_name,
        insert_geofence,
        update_geofence,
    )

    fences, problems = _read_specs(args.file)
    if problems:
        return _refuse(problems, as_json=args.json)
    created: list[int] = []
    replaced: list[int] = []
    deleted: list[int] = []
    with psycopg.connect(url) as conn:
        # One transaction: hubs see the whole file at once (one NOTIFY burst at commit), or
        # nothing if anything fails.
        existing = geofence_ids_by_name(conn, [spec.name for spec in fences])
        if existing and not args.replace:
            conn.rollback()
            taken = [
                f"{args.file}: name already stored (use --replace): {name}"
                for name in sorted(existing)
            ]
            return _refuse(taken, as_json=args.json)
        for spec in fences:
            ids = existing.get(spec.name)
            if not ids:
                created.append(insert_geofence(conn, spec).id)
                continue
            keep, *others = ids
            update_geofence(conn, keep, spec)
            replaced.append(keep)
            for other in others:
                delete_geofence(conn, other)
                deleted.append(other)
        if args.dry_run:
            conn.rollback()
        else:
            conn.commit()
    _summary(args, created, replaced, deleted)
    return 0


def _summary(
    args: argparse.Namespace, created: list[int], replaced: list[int], deleted: list[int]
) -> None:
    if args.json:
        print(
            json.dumps(
                {
                    "imported": not args.dry_run,
                    "dry_run": args.dry_run,
                    # A dry run's new ids were rolled back: only their number means anything.
                    "created": [] if args.dry_run else created,
                    "replaced": replaced,
                    "deleted": deleted,
                    "new": len(created),
                },
                indent=2,
            )
        )
        return
    total = len(created) + len(replaced)
    verb = "would import" if args.dry_run else "imported"
    line = (
        f"{verb} {total} geofences from {args.file}: {len(created)} new, {len(replaced)} replaced"
    )
    if deleted:
        line += f", {len(deleted)} duplicates deleted"
    print(line)


def _list(args: argparse.Namespace, url: str) -> int:
    import psycopg

    from db.geofences.model import GeofenceKind
    from db.geofences.repository import list_geofences

    kind = None if args.kind is None else GeofenceKind(args.kind)
    active = None if args.active is None else args.active == "true"
    rows: list[dict[str, Any]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        after_id = 0
        while True:
            page = list_geofences(
                conn, kind=kind, active=active, after_id=after_id, limit=LIST_PAGE
            )
            rows += [
                {
                    "id": fence.id,
                    "name": fence.name,
                    "kind": str(fence.kind),
                    "type": fence.geometry["type"],
                    "active": fence.active,
                }
                for fence in page
            ]
            if len(page) < LIST_PAGE:
                break
            after_id = page[-1].id
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for row in rows:
        state = "active" if row["active"] else "inactive"
        print(f"{row['id']:>6}  {row['kind']:<12}  {row['type']:<12}  {state:<8}  {row['name']}")
    return 0
