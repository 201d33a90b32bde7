"""``advsmooth data``: list the registered datasets with shapes, sizes and availability."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_data_root, add_listing, print_listing, require_dir


def register(subparsers: Any) -> argparse.ArgumentParser:
    return add_listing(
        subparsers, "data", _main, add_data_root,
        help="list datasets (shape, classes, split sizes, available here?)",
        description="List the datasets advsmooth knows and whether their files are found "
                    "(nothing is downloaded). 'npz:PATH' is accepted wherever a dataset name is.")


def _row(r: dict[str, Any]) -> list[Any]:
    shape = "x".join(str(v) for v in r["shape"]) if r["shape"] else "?"
    sizes = ", ".join(f"{k} {v if v is not None else '?'}" for k, v in r["sizes"].items())
    avail = ", ".join(k for k, ok in r["available"].items() if ok) or "no"
    return [r["name"], shape, r["num_classes"], sizes, avail]


def _main(args: argparse.Namespace) -> int:
    from .. import data

    require_dir(args.data_root, "--data-root")
    return print_listing(data.available(root=args.data_root), args.json,
                         ["name", "shape", "classes", "sizes", "available"], _row)
