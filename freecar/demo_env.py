"""Where the demo's environment file goes, and what it puts on PATH (devstack writes it)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

# In the directory the demo starts from (the project's, for `make demo`); git ignores it.
DEFAULT_ENV_FILE: Final = Path(".freecar") / "demo.env"


def command_dir() -> Path | None:
    """The directory of the `freecar` command this demo runs from (a venv's bin), if any."""
    here = Path(sys.executable).parent
    return here if (here / "freecar").is_file() else None
