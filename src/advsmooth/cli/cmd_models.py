"""``advsmooth models``: list the model zoo and whether each model is available here."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_listing, add_models_dir, print_listing, require_dir


def register(subparsers: Any) -> argparse.ArgumentParser:
    return add_listing(
        subparsers, "models", _main, add_models_dir,
        help="list the model zoo (architecture, dataset, input, available here?)",
        description="List named models. cifar10-resnet*/mnist-* need their checkpoint files "
                    "(--models-dir); digits-*, cifar10-vgg and cifar10-wrn16-2 are trained on "
                    "first use from their dataset's train split and cached. "
                    "torchvision:NAME and timm:NAME are accepted wherever a model name is.")


def _row(r: dict[str, Any]) -> list[Any]:
    if r["source"] == "shared":
        avail = "yes" if r["available"] else "no (checkpoint missing)"
    else:
        avail = ("yes (cached)" if r["cached"] else "yes (trains on first use)"
                 if r["available"] else "no (train split missing)")
    acc = f"{r['accuracy']:.2f}" if r["accuracy"] is not None else "-"
    shape = "x".join(str(v) for v in r["in_shape"])
    return [r["name"], r["arch"], r["dataset"], shape, acc, avail]


def _main(args: argparse.Namespace) -> int:
    from .. import models

    require_dir(args.models_dir, "--models-dir")
    return print_listing(models.available(models_dir=args.models_dir), args.json,
                         ["name", "arch", "dataset", "input", "acc %", "available"], _row)
