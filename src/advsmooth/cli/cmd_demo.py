"""``advsmooth demo``: prepare the embedded digits-lenet model and report its test accuracy.

Works on a fresh machine without network: the model is trained on the embedded digits data on
first use (seconds) and cached.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo", help="train (first use) or load digits-lenet and print its test accuracy",
        description="Prepare the digits-lenet model on the embedded scikit-learn digits "
                    "(trained on first use, then cached) and print its test accuracy.")
    p.add_argument("--model", default="digits-lenet",
                   help="a digits-* zoo model (default: digits-lenet)")
    p.add_argument("--retrain", action="store_true", help="train again even if cached")
    p.set_defaults(func=run_demo)
    return p


def run_demo(args: argparse.Namespace) -> int:
    """Load (training on first use) the demo model and print its digits test accuracy."""
    from .. import data, models
    from ..defenses.training import evaluate

    name = getattr(args, "model", "digits-lenet")
    if not name.startswith("digits-"):
        raise ValueError(f"--model must be a digits-* model (the demo runs on the embedded "
                         f"digits data), got {name!r}")
    model = models.load(name, retrain=getattr(args, "retrain", False))
    x, y = data.load("digits", split="test")
    acc = evaluate(model, (x, y))
    print(f"{name}: test accuracy {100 * acc:.2f} % on {len(y)} held-out digits "
          f"(1x28x28, cached at {models.digits_model_path(name)})")
    return 0
