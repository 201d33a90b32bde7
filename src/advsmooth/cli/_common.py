"""Options shared by several subcommands (``--data-root``, ``--models-dir``, ``--device``)."""

from __future__ import annotations

import argparse
from typing import Any


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


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device``: cpu, cuda, cuda:N or auto."""
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:N or auto (default: cuda when available)")


def add_common(parser: argparse.ArgumentParser) -> None:
    """All of :func:`add_data_root`, :func:`add_models_dir` and :func:`add_device`."""
    add_data_root(parser)
    add_models_dir(parser)
    add_device(parser)


def resolve_device(value: str | None) -> str:
    """Map ``--device`` to a torch device string; ``ValueError`` for an unusable value."""
    import torch

    if value in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value == "cpu":
        return "cpu"
    if value.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {value}: CUDA is not available on this machine")
        return value
    raise ValueError(f"--device must be cpu, cuda, cuda:N or auto, got {value!r}")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return v


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (0 < v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def print_table(rows: list[list[Any]], header: list[str]) -> None:
    """Print a plain left-aligned text table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
