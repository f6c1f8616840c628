"""The one exception tree of devstack: catch `DevStackError` to handle them all."""

from __future__ import annotations


class DevStackError(Exception):
    """Something devstack was asked to do could not be done; the message says what and why."""


class ModeError(DevStackError, ValueError):
    """`FREECAR_DEVSTACK` or `--mode` holds a value other than auto, system or embedded."""


class BinaryNotFoundError(DevStackError):
    """No usable binary for a service in the chosen mode; the message lists what was tried."""


class ServiceStartError(DevStackError):
    """A service exited or did not answer in time; the message ends with its log's tail."""


class PortInUseError(ServiceStartError):
    """A service could not bind its port because another process took it first."""
