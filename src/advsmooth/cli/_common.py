"""Options and checks shared by several subcommands.

* options: ``--data-root``, ``--models-dir``, ``--device`` (:func:`add_common`); listing
  subcommands (:func:`add_listing`, :func:`print_listing`);
* argparse types: :func:`number` (accepts fractions such as ``8/255``), :func:`positive_number`,
  :func:`nonnegative_number`, :func:`positive_int`, :func:`nonnegative_int`;
* checks made before any work: :func:`resolve_device`, :func:`check_out_dir`,
  :func:`check_out_file`, :func:`check_model_input`.

Every check raises :class:`~advsmooth.cli.UserError` (or ``argparse.ArgumentTypeError`` inside
argparse), which the CLI prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .._utils import resolve_device as _resolve_device
from . import UserError

# ----------------------------------------------------------------------------------------------
# options
# ----------------------------------------------------------------------------------------------


def add_data_root(parser: argparse.ArgumentParser) -> None:
    """``--data-root DIR``: dataset folder (else $ADVSMOOTH_DATA, ./data, ../shared/data)."""
    parser.add_argument(
        "--data-root", default=None, metavar="DIR",
        help="folder holding dataset files (default: $ADVSMOOTH_DATA, else ./data, then "
             "../shared/data)")


def add_models_dir(parser: argparse.ArgumentParser) -> None:
    """``--models-dir DIR``: folder of pretrained checkpoints."""
    parser.add_argument(
        "--models-dir", default=None, metavar="DIR",
        help="folder holding pretrained checkpoints (default: $ADVSMOOTH_MODELS, else ./models, "
             "then ../shared/models)")


def add_device(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """``--device``: cpu, cuda, cuda:N, mps or auto."""
    parser.add_argument("--device", default=default,
                        help="cpu, cuda, cuda:N, mps or auto (default: "
                             f"{default if default is not None else 'the spec device'}; auto "
                             "= cuda when available)")


def add_common(parser: argparse.ArgumentParser, *, device: str | None = "auto",
               device_first: bool = False) -> None:
    """All of :func:`add_data_root`, :func:`add_models_dir` and :func:`add_device` (with
    ``device`` as its default; ``device_first``: listed before the other two)."""
    if device_first:
        add_device(parser, device)
    add_data_root(parser)
    add_models_dir(parser)
    if not device_first:
        add_device(parser, device)


def add_listing(subparsers: Any, name: str, func: Any, folder_option: Any, *, help: str,
                description: str) -> argparse.ArgumentParser:
    """A subcommand that lists registered things: its folder option (``folder_option(parser)``),
    ``--json``, and ``func`` to run."""
    p = subparsers.add_parser(name, help=help, description=description)
    folder_option(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=func)
    return p


def print_listing(rows: list[dict[str, Any]], as_json: bool, header: list[str],
                  row: Any) -> int:
    """Print ``rows`` as JSON, or as a table of ``row(r)`` under ``header``; exit status 0."""
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print_table([row(r) for r in rows], header)
    return 0


def write_report(out: str | os.PathLike[str], command: str, **kwargs: Any) -> dict[str, Any]:
    """``build_report(out, **kwargs)``; its note (figures left out) goes to stderr as
    ``advsmooth COMMAND: note: ...``."""
    from ..report import build_report

    paths = build_report(out, **kwargs)
    if paths.get("note"):
        print(f"advsmooth {command}: note: {paths['note']}", file=sys.stderr)
    return paths


def require_dir(path: str | None, option: str) -> None:
    """``FileNotFoundError`` naming ``option`` when ``path`` is given but is not a folder."""
    if path is not None and not Path(path).is_dir():
        raise FileNotFoundError(f"{option} {path}: no such directory")


@contextlib.contextmanager
def models_dir_env(models_dir: str | None) -> Iterator[None]:
    """Within the block, ``$ADVSMOOTH_MODELS`` is ``models_dir`` (when given; restored after).

    For commands whose models are loaded deep inside the experiment runner or a study."""
    if models_dir is None:
        yield
        return
    if not Path(models_dir).expanduser().is_dir():
        raise UserError(f"--models-dir {models_dir}: no such directory")
    old = os.environ.get("ADVSMOOTH_MODELS")
    os.environ["ADVSMOOTH_MODELS"] = str(models_dir)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ADVSMOOTH_MODELS", None)
        else:
            os.environ["ADVSMOOTH_MODELS"] = old


# ----------------------------------------------------------------------------------------------
# numbers (argparse types)
# ----------------------------------------------------------------------------------------------

_FRACTION = re.compile(r"^\s*([^/]+?)\s*/\s*([^/]+?)\s*$")


def parse_number(text: str) -> float:
    """A finite number written as a decimal (``0.03``, ``1e-3``) or a fraction (``8/255``).

    ``ValueError`` naming the text otherwise (NaN and infinities are refused).

    >>> parse_number("8/255") == 8 / 255
    True
    """
    s = str(text).strip()
    m = _FRACTION.match(s)
    try:
        if m:
            num, den = float(m.group(1)), float(m.group(2))
            if den == 0:
                raise ValueError
            value = num / den
        else:
            value = float(s)
    except ValueError:
        raise ValueError(f"expected a number or a fraction such as 8/255, got {text!r}") \
            from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {text!r}")
    return value


def number(text: str) -> float:
    """argparse type: any finite number or fraction (``8/255``)."""
    try:
        return parse_number(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_number(text: str) -> float:
    """argparse type: a finite number or fraction > 0."""
    v = number(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def nonnegative_number(text: str) -> float:
    """argparse type: a finite number or fraction >= 0."""
    v = number(text)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def _int_at_least(text: str, low: int) -> int:
    try:
        v: int | None = int(text)
    except ValueError:
        v = None
    if v is None or v < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def warn_unused(args: argparse.Namespace, option: str, unless: bool, reason: str) -> None:
    """Warn (one line on the CLI) that ``option``, given on the command line, has no effect
    because ``reason`` — unless ``unless`` holds."""
    given = any(a == option or a.startswith(option + "=") for a in getattr(args, "argv", []))
    if given and not unless:
        warnings.warn(f"{option} has no effect {reason}", UserWarning, stacklevel=2)


def hidden_alias(parser: Any, alias: str, dest: str, **kwargs: Any) -> None:
    """Accept ``alias`` as another spelling of the option stored in ``dest``, unlisted in
    ``--help`` (older spellings keep working)."""
    parser.add_argument(alias, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS,
                        **kwargs)


# ----------------------------------------------------------------------------------------------
# checks made before any work
# ----------------------------------------------------------------------------------------------

def resolve_device(value: str | None, option: str = "--device") -> str:
    """Map ``--device`` to a torch device string (:func:`advsmooth._utils.resolve_device`)."""
    return _resolve_device(value, option)


def _writable_dir(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def check_out_dir(path: str | os.PathLike[str] | None, option: str = "--out") -> None:
    """:class:`UserError` unless ``path`` is (or can be created as) a writable folder.

    Nothing is created; the nearest existing ancestor must be a writable folder."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"{option} {path}: is a file, not a folder")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"{option} {path}: {probe} is a file, not a folder")
    if probe.exists() and not _writable_dir(probe):
        raise UserError(f"{option} {path}: {probe} is not writable (permission denied)")


def check_out_file(path: str | os.PathLike[str] | None, option: str) -> None:
    """:class:`UserError` unless ``path`` can be written as a file (not a folder, in a writable
    folder); nothing is created."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{option} {path}: is a folder, not a file")
    if p.exists() and not os.access(p, os.W_OK):
        raise UserError(f"{option} {path}: is not writable (permission denied)")
    check_out_dir(p.parent if str(p.parent) else ".", option=f"{option} {path}: folder")


def expected_input_shape(model_name: str) -> tuple[int, ...] | None:
    """The ``C×H×W`` input a named model declares (zoo entry, or the description saved next to
    a trained model), or ``None`` when it declares none (torchvision, timm, ...)."""
    from .. import models

    if model_name in models.ZOO:
        return tuple(models.spec(model_name).in_shape)
    p = Path(model_name).expanduser()
    meta = p.with_name(p.name + ".json")
    if p.suffix in (".pt", ".pth") and meta.is_file():
        try:
            return tuple(models.read_description(meta)["in_shape"])
        except (OSError, ValueError):
            return None  # loading the model says what is wrong with its description
    return None


def data_shape(name: str, split: str = "test", root: str | None = None) -> tuple[int, ...]:
    """``C×H×W`` of the images of dataset ``name`` (the registry's shape, else read from the
    first image); the usual one-line errors for an unknown or missing dataset."""
    from .. import data

    if not name.startswith("npz:"):
        shape = data.info(name).shape
        if shape is not None:
            return tuple(shape)
    x, _ = data.load(name, split, root=root, indices=[0])
    return tuple(int(v) for v in x.shape[1:])


def check_n(n: int | None, data_name: str, split: str = "test") -> None:
    """:class:`UserError` when ``--n`` asks for more images than split ``split`` of
    ``data_name`` holds (where the registry knows its size; 0 / ``None``: all)."""
    from .. import data

    if not n or data_name.startswith("npz:") or data_name not in data.names():
        return
    size = data.info(data_name).sizes.get(split)
    if size is not None and n > size:
        raise UserError(f"--n {n} exceeds the {size} images of {data_name} ({split}); use "
                        f"--n {size} or 0 for all of them")


def check_model_input(model_name: str, data_name: str, image_shape: Sequence[int] | None,
                      model: Any = None, probe: Any = None) -> None:
    """:class:`UserError` when model ``model_name`` cannot take ``data_name`` images of shape
    ``image_shape`` (``C×H×W``): the declared input shape differs, or (given ``model`` and one
    ``probe`` image batch) a forward pass fails or returns something other than N×K logits."""
    if image_shape is None:
        return
    want = expected_input_shape(model_name)
    got = tuple(int(v) for v in image_shape)
    if want is not None and want != got:
        raise UserError(f"model {model_name!r} takes {'x'.join(map(str, want))} images but "
                        f"{data_name!r} has {'x'.join(map(str, got))}; pick a model trained on "
                        f"this dataset (see `advsmooth models`)")
    if model is None or probe is None:
        return
    from ..models.byo import check_input_shape

    try:  # the one probe forward (shared with specs): N×K logits for the probe images
        check_input_shape(model, probe, name=f"model {model_name!r}")
    except ValueError as exc:
        raise UserError(f"{exc} ({data_name!r} images)") from None


def print_table(rows: list[list[Any]], header: list[str]) -> None:
    """Print a plain left-aligned text table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
