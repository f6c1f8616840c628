"""The layering of ARCHITECTURE.md, kept by a test: which package may import which.

Every import counts, at any depth (a lazy import inside a function is still a dependency),
and so do imports only made for type checking: they tie the packages together all the same.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import Final

import pytest

ROOT = Path(__file__).resolve().parents[1]

EVERYTHING_BELOW: Final = frozenset(
    {"protocol", "core", "jobs", "vehicle_agent", "db", "broker", "hub", "api", "worker",
     "simulator", "devstack"}
)  # fmt: skip

# Our packages, bottom up, with the packages of ours each may import. Anything not listed is
# forbidden: a new dependency between packages is a design decision, made here.
ALLOWED: Final[dict[str, frozenset[str]]] = {
    # The MQTT contract, imported by all four sides.
    "protocol": frozenset(),
    # The shared base: settings and the file store; nothing above it.
    "core": frozenset({"protocol"}),
    # Task names and a send-only Celery producer, for processes that queue work.
    "jobs": frozenset({"core"}),
    # The in-car unit installs alone (`pip install freecar[agent]`).
    "vehicle_agent": frozenset({"protocol"}),
    # Migrations and the database access shared by hub, API and worker.
    "db": frozenset({"protocol", "core"}),
    # Mosquitto configuration and vehicle logins.
    "broker": frozenset({"protocol", "core"}),
    # hub and api never import each other: they meet in the database and in Redis.
    "hub": frozenset({"protocol", "core", "db", "jobs"}),
    "api": frozenset({"protocol", "core", "db", "jobs", "broker"}),
    "worker": frozenset({"protocol", "core", "db", "jobs"}),
    # The testers' fleet runs the same agent code.
    "simulator": frozenset({"protocol", "vehicle_agent"}),
    "devstack": frozenset({"protocol", "core"}),
    # The `freecar` command and the demo wire everything together; so does the benchmark.
    "freecar": EVERYTHING_BELOW,
    "bench": EVERYTHING_BELOW,
}

# Third-party libraries a package must not need, by package.
SERVER_LIBRARIES: Final = frozenset(
    {"psycopg", "psycopg_pool", "redis", "fastapi", "starlette", "uvicorn", "celery", "rich",
     "shapely", "boto3", "PIL", "argon2", "limits"}
)  # fmt: skip
WEB_LIBRARIES: Final = frozenset({"fastapi", "starlette", "uvicorn"})
FORBIDDEN_LIBRARIES: Final[dict[str, frozenset[str]]] = {
    # An in-car unit has only the `agent` extra.
    "protocol": SERVER_LIBRARIES,
    "vehicle_agent": SERVER_LIBRARIES,
    "simulator": SERVER_LIBRARIES - {"rich"},
    # Only the API is a web application: nothing else pulls in FastAPI.
    "core": WEB_LIBRARIES | {"celery", "psycopg", "redis"},
    "jobs": WEB_LIBRARIES | {"psycopg"},
    "db": WEB_LIBRARIES | {"celery"},
    "broker": WEB_LIBRARIES | {"celery"},
    "hub": WEB_LIBRARIES,
    "worker": WEB_LIBRARIES,
    "devstack": WEB_LIBRARIES | {"celery"},
}


@cache
def imported_modules(path: Path) -> frozenset[str]:
    """Every absolute module a file imports, at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return frozenset(found)


def package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_every_package_has_a_rule() -> None:
    """A new top-level package must say where it stands."""
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages - {"tests"} == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_packages_below_it(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    bad = sorted(
        f"{path.relative_to(ROOT)}: {module}"
        for path in package_files(package)
        for module in imported_modules(path)
        if module.split(".")[0] in ALLOWED and module.split(".")[0] not in allowed
    )
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", sorted(FORBIDDEN_LIBRARIES))
def test_a_package_does_not_need_libraries_of_the_layers_above(package: str) -> None:
    forbidden = FORBIDDEN_LIBRARIES[package]
    bad = sorted(
        f"{path.relative_to(ROOT)}: {module}"
        for path in package_files(package)
        for module in imported_modules(path)
        if module.split(".")[0] in forbidden
    )
    assert not bad, "\n".join(bad)


def test_the_rules_have_no_cycle() -> None:
    """Bottom up: a package only ever depends on packages listed before it."""
    seen: set[str] = set()
    for package, allowed in ALLOWED.items():
        assert allowed <= seen, f"{package} depends on {sorted(allowed - seen)} listed after it"
        seen.add(package)
