"""The ``advsmooth`` command line.

Each subcommand lives in a module ``advsmooth.cli.cmd_<name>`` that defines
``register(subparsers) -> argparse.ArgumentParser`` and sets ``func`` on its parser via
``parser.set_defaults(func=...)``. ``func(args) -> int`` returns the exit status.

Errors:

* a **user error** — a bad option (argparse), :class:`UserError`, ``ValueError``, an
  ``OSError`` about a file or folder (missing, not writable, full disk) or a missing optional
  dependency — prints one line ``advsmooth CMD: error: ...`` and exits with status 2. Input is
  validated where it enters, so these come before any work;
* anything else is a bug: its traceback is shown, followed by a line asking to report it, and the
  exit status is 1. ``--debug`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .. import __version__
from .._utils import MissingDependency

__all__ = ["main", "build_parser", "UserError", "USER_ERRORS"]


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


#: exceptions that mean "the user asked for something impossible": one line, exit 2
USER_ERRORS = (UserError, ValueError, OSError, MissingDependency)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``... error: MSG (see ... --help)``)
    instead of a usage block followed by the message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _command_modules() -> list[str]:
    pkg = importlib.import_module(__name__)
    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.startswith("cmd_")]
    return sorted(names)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = _Parser(
        prog="advsmooth",
        description="Adversarial robustness through smoothness: DeepFool, SmoothFool, "
                    "smoothed-gradient attacks and smoothed inference.",
    )
    parser.add_argument("--version", action="version", version=f"advsmooth {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _command_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror}"
        if exc.filename2 is not None:
            text += f" ({exc.filename2})"
    if not text:
        return type(exc).__name__
    # a multi-line message (a spec's list of problems) folded onto one line
    head, *rest = [ln.strip() for ln in text.splitlines() if ln.strip()]
    rest = [ln[2:] if ln.startswith(("- ", "• ")) else ln for ln in rest]
    return head.rstrip(":") + (": " + "; ".join(rest) if rest else "")


def _options(parser: argparse.ArgumentParser, command: str) -> set[str]:
    """The ``--long`` option strings of subcommand ``command``."""
    for action in parser._actions:  # argparse keeps its subparsers there
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return {o for o in action.choices[command]._option_string_actions
                    if o.startswith("--")}
    return set()


def _as_option(text: str, options: set[str]) -> str:
    """A message that starts with a library parameter name (``max_iter must be ...``) names the
    command's option instead (``--max-iter must be ...``) when the command has one."""
    m = re.match(r"([a-z][a-z0-9_]*)(?=( must |: ))", text)
    if m and "--" + m.group(1).replace("_", "-") in options:
        return "--" + m.group(1).replace("_", "-") + text[m.end():]
    return text


def _one_line_warning(command: str) -> Callable[..., None]:
    """``warnings.showwarning`` for the command line: ``advsmooth CMD: warning: MSG`` on stderr
    (no source line: the user ran a command, not a script; ``--debug`` shows the usual form)."""
    seen: set[str] = set()

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        line = f"advsmooth {command}: warning: {_one_line(Exception(str(message)))}"
        if line not in seen:  # once per command, whichever code path warned again
            seen.add(line)
            print(line, file=sys.stderr)
    return show


#: options naming a file or folder (argparse dests), where an empty string is refused
_PATH_OPTIONS = ("out", "write_spec", "json", "results", "checkpoint", "data_root", "models_dir",
                 "model", "data", "spec", "dir", "claims", "readme", "resume")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``advsmooth`` command; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        prog = f"advsmooth {args.command}" if getattr(args, "command", None) else "advsmooth"
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extra)} "
                       f"(see `{prog} --help`)\n")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded with a run's provenance
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    empty = [d for d in _PATH_OPTIONS if isinstance(getattr(args, d, None), str)
             and not getattr(args, d).strip()]
    if empty:  # "" would silently mean the current folder (or nothing) depending on the command
        opt = "--" + empty[0].replace("_", "-")
        name = opt if opt in _options(parser, args.command) else empty[0].upper()
        print(f"advsmooth {args.command}: error: {name}: empty; give a name or a path",
              file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            if not getattr(args, "debug", False):
                warnings.showwarning = _one_line_warning(args.command)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("advsmooth: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if getattr(args, "debug", False):
            raise
        text = _as_option(_one_line(exc), _options(parser, args.command))
        print(f"advsmooth {args.command}: error: {text}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: show it, ask for a report
        traceback.print_exc()
        print(f"advsmooth {args.command}: internal error ({type(exc).__name__}); this is a bug "
              f"in advsmooth {__version__}: please report it with the traceback above",
              file=sys.stderr)
        return 1
