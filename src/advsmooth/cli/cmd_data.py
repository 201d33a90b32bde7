"""``advsmooth data``: list the registered datasets with shapes, sizes and availability."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import add_data_root, print_table


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "data", help="list datasets (shape, classes, split sizes, available here?)",
        description="List the datasets advsmooth knows and whether their files are found "
                    "(nothing is downloaded). 'npz:PATH' is accepted wherever a dataset name is.")
    add_data_root(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_main)
    return p


def _main(args: argparse.Namespace) -> int:
    from .. import data

    if args.data_root is not None:
        from pathlib import Path

        if not Path(args.data_root).is_dir():
            raise FileNotFoundError(f"--data-root {args.data_root}: no such directory")
    rows = data.available(root=args.data_root)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = []
    for r in rows:
        shape = "x".join(str(v) for v in r["shape"]) if r["shape"] else "?"
        sizes = ", ".join(f"{k} {v if v is not None else '?'}" for k, v in r["sizes"].items())
        avail = ", ".join(k for k, ok in r["available"].items() if ok) or "no"
        table.append([r["name"], shape, r["num_classes"], sizes, avail])
    print_table(table, ["name", "shape", "classes", "sizes", "available"])
    return 0
