"""The agent installs alone: its extra lists no server dependency.

What it imports is checked with every other package's imports, in tests/test_layering.py.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_agent_extra_lists_no_server_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    agent = project["optional-dependencies"]["agent"]
    requirements = [*project["dependencies"], *agent]
    names = {
        req.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip() for req in requirements
    }
    assert names.isdisjoint({"psycopg", "psycopg-pool", "redis", "fastapi", "celery", "rich"})
    assert not any(req.startswith("freecar[") for req in agent)
    assert "aiomqtt" in names
