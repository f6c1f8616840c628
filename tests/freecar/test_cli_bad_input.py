"""Bad files, bad arguments and missing services end in a sentence and an exit code.

Each case printed a Python traceback before: a binary file where GeoJSON or TOML was
expected, a queue or environment file that cannot be written, a database that is down.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

TIMEOUT_S = 120.0
BINARY = b"\x00\xff\xfe binary, not text"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["sim", "--area", "{binary}"], "not UTF-8 text"),
        (["sim", "--fleet", "{binary}"], "not UTF-8 text"),
        (["sim", "--queue-dir", "{file}/queues"], "--queue-dir"),
        (["agent", "--config", "{binary}"], "not UTF-8 text"),
        (["geofence", "import", "{binary}"], "not JSON"),
        (["demo", "--env-file", "{file}/demo.env"], "--env-file"),
        (["demo", "--duration", "1", "--env-file", "{tmp}/demo.env"], "cannot reach the database"),
        (["migrate", "--database-url", "not a url"], "the database refused it"),
    ],
    ids=lambda value: "-".join(value[:2]) if isinstance(value, list) else None,
)
def test_bad_input_gets_a_sentence_not_a_traceback(
    tmp_path: Path, args: list[str], says: str
) -> None:
    binary = tmp_path / "binary.dat"
    binary.write_bytes(BINARY)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    values = {"binary": str(binary), "file": str(a_file), "tmp": str(tmp_path)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREECAR_")}
    env["FREECAR_MQTT_URL"] = f"mqtt://u:p@127.0.0.1:{_closed_port()}"
    env["FREECAR_DATABASE_URL"] = f"postgresql://nobody@127.0.0.1:{_closed_port()}/nothing"
    done = subprocess.run(
        [sys.executable, "-m", "freecar", *(arg.format(**values) for arg in args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert done.returncode in {1, 2}, done.stderr
    assert says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
