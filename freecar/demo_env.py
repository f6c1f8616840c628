"""The demo's environment file: what another shell loads to use the running demo.

`freecar demo` writes it (default `.freecar/demo.env` in the directory it was started from,
which git ignores) once its services are up, and prints the one line that loads it:

    . /path/to/freecar/.freecar/demo.env

It puts the `freecar` command on PATH and exports the FREECAR_* variables of the demo's
services (passwords included, which is why it is the owner's alone, mode 0600), and the
hub's public key, so that `freecar command`, `freecar create-admin`, `freecar sim` and the
rest work as the README shows. The demo removes it when it stops; a file left by a demo
that was killed names a pid that no longer runs, and the next demo replaces it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_ENV_FILE: Final = Path(".freecar") / "demo.env"
# Only the owner may read it (it holds the broker's passwords) or list its directory.
FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
# The first line names the demo that wrote it, so only that demo removes it.
_MARKER: Final = "# freecar demo pid {pid}"


def command_dir() -> Path | None:
    """The directory of the `freecar` command this demo runs from (a venv's bin), if any."""
    here = Path(sys.executable).parent
    return here if (here / "freecar").is_file() else None


def render(env: Mapping[str, str], *, pid: int, bin_dir: Path | None) -> str:
    """The file's text: POSIX shell, every value quoted."""
    lines = [
        _MARKER.format(pid=pid),
        "# Load it into a shell to use the running demo: . THIS_FILE",
        "# It holds the demo's passwords: keep it to yourself. The demo removes it on exit.",
    ]
    if bin_dir is not None:
        lines.append(f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"')
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    return "\n".join(lines) + "\n"


def prepare_env_dir(path: Path) -> None:
    """Make the file's directory (owner only) if missing; OSError if it cannot be written."""
    directory = path.absolute().parent
    if not directory.exists():
        directory.mkdir(mode=DIR_MODE, parents=True)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot write in its directory", str(directory))


def write_env_file(path: Path, env: Mapping[str, str], *, bin_dir: Path | None) -> Path:
    """Write the file atomically with mode 0600; return its absolute path."""
    path = path.absolute()
    prepare_env_dir(path)
    text = render(env, pid=os.getpid(), bin_dir=bin_dir)
    # mkstemp creates the file 0600 before a byte is written; the rename makes it appear whole.
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(temporary).chmod(FILE_MODE)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def remove_env_file(path: Path) -> None:
    """Remove the file if this process wrote it (another demo may have replaced it since)."""
    try:
        with path.open(encoding="utf-8") as handle:
            first = handle.readline().rstrip("\n")
    except OSError:
        return
    if first == _MARKER.format(pid=os.getpid()):
        with contextlib.suppress(OSError):
            path.unlink()
