"""Nothing connects to a server the user did not name, and a missing one is named, not traced.

Before, an unset FREECAR_DATABASE_URL meant postgresql://localhost:5432/freecar: on a
machine with its own PostgreSQL, `freecar migrate` went to work on an unrelated server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from core.settings import MissingSettingError, Settings

if TYPE_CHECKING:
    from pathlib import Path

TIMEOUT_S = 120.0


def _clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREECAR_")}
    return env | values


def _freecar(
    *args: str, env: dict[str, str], stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "freecar", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=TIMEOUT_S,
        check=False,
    )


def _closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("name", "variable"),
    [
        ("database_url", "FREECAR_DATABASE_URL"),
        ("redis_url", "FREECAR_REDIS_URL"),
        ("mqtt_url", "FREECAR_MQTT_URL"),
    ],
)
@pytest.mark.parametrize("value", [None, "", "  "])
def test_an_unset_or_empty_url_names_its_variable_instead_of_meaning_localhost(
    monkeypatch: pytest.MonkeyPatch, name: str, variable: str, value: str | None
) -> None:
    for key in list(os.environ):
        if key.startswith("FREECAR_"):
            monkeypatch.delenv(key)
    if value is not None:
        monkeypatch.setenv(variable, value)
    settings = Settings()
    with pytest.raises(MissingSettingError, match=f"{variable} is not set"):
        getattr(settings, name).get_secret_value()
    assert name not in settings.secrets()
    assert "localhost" not in repr(settings)


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        (["migrate"], "FREECAR_DATABASE_URL"),
        (["command", "sh-0001", "unlock", "--wait"], "FREECAR_DATABASE_URL"),
        (["geofence", "list"], "FREECAR_DATABASE_URL"),
        (["create-admin", "ops@example.com", "--password-stdin"], "FREECAR_DATABASE_URL"),
        (["vehicle", "provision", "sh-0001", "--out", "agent.toml"], "FREECAR_"),
        (["worker"], "FREECAR_"),
        (["hub"], "FREECAR_"),
        (["api"], "FREECAR_DATABASE_URL"),
        (["sim", "--duration", "1"], "FREECAR_MQTT_URL"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else None,
)
def test_every_command_without_services_names_what_to_set(
    args: list[str], variable: str, tmp_path: Path
) -> None:
    done = _freecar(*args, env=_clean_env(), stdin="a long enough passphrase\n", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "is not set" in done.stderr or "no broker" in done.stderr, done.stderr
    assert variable in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["migrate"],
        ["command", "sh-0001", "unlock"],
        ["geofence", "list"],
        ["create-admin", "ops@example.com", "--password-stdin"],
    ],
    ids=lambda args: args[0],
)
def test_a_database_that_is_down_is_said_so_without_a_traceback(args: list[str]) -> None:
    url = f"postgresql://freecar@127.0.0.1:{_closed_port()}/freecar"
    done = _freecar(
        *args, env=_clean_env(FREECAR_DATABASE_URL=url), stdin="a long enough passphrase\n"
    )
    assert done.returncode != 0
    assert "cannot reach the database" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
