"""The ``advsmooth`` command line.

Each subcommand lives in a module ``advsmooth.cli.cmd_<name>`` that defines
``register(subparsers) -> argparse.ArgumentParser`` and sets ``func`` on its parser via
``parser.set_defaults(func=...)``. ``func(args) -> int`` returns the exit status.

User errors (unknown names, bad paths, bad values) print one line ``advsmooth: error: ...`` and
exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from .. import __version__

__all__ = ["main", "build_parser", "UserError"]


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


#: exceptions that mean "the user asked for something impossible": one line, exit 2
_USER_ERRORS = (UserError, ValueError, TypeError, KeyError, ImportError, OSError)


def _command_modules() -> list[str]:
    pkg = importlib.import_module(__name__)
    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.startswith("cmd_")]
    return sorted(names)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="advsmooth",
        description="Adversarial robustness through smoothness: DeepFool, SmoothFool, "
                    "smoothed-gradient attacks and smoothed inference.",
    )
    parser.add_argument("--version", action="version", version=f"advsmooth {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``advsmooth`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded with a run's provenance
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("advsmooth: interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as exc:
        if getattr(args, "debug", False):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, KeyError):
            msg = msg.strip("'\"")
        print(f"advsmooth {args.command}: error: {msg}", file=sys.stderr)
        return 2
