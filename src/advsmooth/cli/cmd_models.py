"""``advsmooth models``: list the model zoo and whether each model is available here."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import add_models_dir, print_table


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "models", help="list the model zoo (architecture, dataset, input, available here?)",
        description="List named models. cifar10-*/mnist-* need their checkpoint files "
                    "(--models-dir); digits-* are trained on first use and cached. "
                    "torchvision:NAME and timm:NAME are accepted wherever a model name is.")
    add_models_dir(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_main)
    return p


def _main(args: argparse.Namespace) -> int:
    from .. import models

    if args.models_dir is not None:
        from pathlib import Path

        if not Path(args.models_dir).is_dir():
            raise FileNotFoundError(f"--models-dir {args.models_dir}: no such directory")
    rows = models.available(models_dir=args.models_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = []
    for r in rows:
        if r["source"] == "shared":
            avail = "yes" if r["available"] else "no (checkpoint missing)"
        else:
            avail = "yes (cached)" if r["cached"] else "yes (trains on first use)"
        acc = f"{r['accuracy']:.2f}" if r["accuracy"] is not None else "-"
        shape = "x".join(str(v) for v in r["in_shape"])
        table.append([r["name"], r["arch"], r["dataset"], shape, acc, avail])
    print_table(table, ["name", "arch", "dataset", "input", "acc %", "available"])
    return 0
