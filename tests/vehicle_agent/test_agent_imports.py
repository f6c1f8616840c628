"""The agent installs alone: vehicle_agent and protocol import nothing of the server side."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Packages an in-car unit does not have (`pip install freecar[agent]` brings none of their
# dependencies), and which must therefore never be imported by the agent or the protocol.
SERVER_SIDE = ("hub", "api", "db", "worker", "devstack", "simulator", "broker", "freecar")
# Third-party modules of the server extras; the agent extra must not need them.
SERVER_LIBRARIES = ("psycopg", "psycopg_pool", "redis", "fastapi", "celery", "rich", "shapely")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def agent_side_files() -> list[Path]:
    return sorted(
        path for package in ("vehicle_agent", "protocol") for path in (ROOT / package).rglob("*.py")
    )


@pytest.mark.parametrize("path", agent_side_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_agent_side_imports_nothing_of_the_server(path: Path) -> None:
    forbidden = SERVER_SIDE + SERVER_LIBRARIES
    bad = sorted(module for module in imported_modules(path) if module.split(".")[0] in forbidden)
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_protocol_imports_nothing_of_the_agent() -> None:
    for path in (ROOT / "protocol").rglob("*.py"):
        assert not any(m.split(".")[0] == "vehicle_agent" for m in imported_modules(path)), path


def test_the_agent_extra_lists_no_server_dependency() -> None:
    import tomllib  # noqa: PLC0415 - only this test reads pyproject

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    agent = project["optional-dependencies"]["agent"]
    requirements = [*project["dependencies"], *agent]
    names = {
        req.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip() for req in requirements
    }
    assert names.isdisjoint({"psycopg", "psycopg-pool", "redis", "fastapi", "celery", "rich"})
    assert not any(req.startswith("freecar[") for req in agent)
    assert "aiomqtt" in names
