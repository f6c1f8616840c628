"""An environment file another shell loads: `export FREECAR_...` lines, for its owner only.

`freecar demo` and `freecar devstack --env-file PATH` write one once their services are up:

    . .freecar/demo.env

It exports the FREECAR_* variables of the services, passwords included, which is why only
its owner may read it (mode 0600, in a directory of mode 0700 when it makes one), and, for
the demo, puts the `freecar` command on PATH. It appears whole (written aside, then
renamed), so a shell waiting for it never reads half of it, and it is removed when its
writer stops; a file left by a writer that was killed names a pid that no longer runs, and
the next one replaces it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

# Only the owner may read it (it holds the broker's passwords) or list its directory.
FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
# The first line names the process that wrote it, so only that process removes it.
_MARKER: Final = "# written by freecar, pid {pid}"


def render(env: Mapping[str, str], *, pid: int, bin_dir: Path | None) -> str:
    """The file's text: POSIX shell, every value quoted."""
    lines = [
        _MARKER.format(pid=pid),
        "# Load it into a shell to use these services: . THIS_FILE",
        "# It holds their passwords: keep it to yourself. It is removed when they stop.",
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
