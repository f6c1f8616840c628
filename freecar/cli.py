"""The `freecar` command: one entry point, one subcommand per component.

Subcommand modules are imported when the parser is built, so they import only the standard
library at module level and load their real dependencies inside `run`. That keeps
`freecar --help` fast and lets an in-car unit with only the `agent` extra run `freecar agent`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

# name -> module that provides `configure(parser)` and `run(args) -> int`.
COMMANDS: dict[str, str] = {
    "devstack": "devstack.cli",
    "migrate": "db.cli",
    "demo": "freecar.demo",
    "agent": "vehicle_agent.cli",
    "sim": "simulator.cli",
    "hub": "hub.cli",
    "api": "api.cli",
    "create-admin": "api.users.cli",
    "command": "db.command_cli",
    "vehicle": "api.fleet.cli",
    "worker": "worker.cli",
    "geofence": "db.geofence_cli",
}


class CommandModule(Protocol):
    """What a subcommand module provides."""

    __doc__: str | None

    def configure(self, parser: argparse.ArgumentParser) -> None:
        """Add the subcommand's arguments."""

    def run(self, args: argparse.Namespace) -> int:
        """Run the subcommand and return the process exit code."""


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="freecar",
        description="FreeCar car-sharing fleet platform.",
        epilog="Run `freecar COMMAND --help` for a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module: CommandModule = importlib.import_module(module_name)
        summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        sub = subparsers.add_parser(
            name,
            help=summary,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(sub)
        sub.set_defaults(_run=module.run)
    return parser


# Exit code of a command that cannot start as configured (what argparse uses for bad usage).
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args))  # noqa: SLF001 - argparse's namespace, set just above
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        problem = configuration_problem(exc)
        if problem is None:
            raise
        print(f"freecar {args.command}: {problem}", file=sys.stderr)
        return EXIT_CONFIG


def configuration_problem(exc: BaseException) -> str | None:
    """What is wrong with the configuration, if `exc` says so; None for any other error.

    Every command reads its settings from FREECAR_* variables; a missing or malformed one is
    the user's to fix, so it gets a sentence naming the variable, not a traceback.
    """
    from pydantic import ValidationError

    from core.settings import MissingSettingError

    if isinstance(exc, MissingSettingError):
        return str(exc)
    if isinstance(exc, ValidationError) and exc.title.endswith("Settings"):
        problems = "; ".join(
            f"FREECAR_{'_'.join(map(str, error['loc'])).upper()}: {error['msg']}"
            if error["loc"]
            else error["msg"]
            for error in exc.errors(include_url=False)
        )
        return f"bad configuration: {problems}"
    return None


if __name__ == "__main__":
    sys.exit(main())
