"""``advsmooth scoreboard``: the paper claims against the committed results, with verdicts, in
the scoreboard block of ``experiments/README.md``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "scoreboard", help="paper claims vs committed results: print, --write or --check the "
                           "README's scoreboard",
        description="Read the claims file (claim, paper value, which results CSV / row / column, "
                    "verdict rule) and the committed results next to it, and print the "
                    "scoreboard table; --write puts it between the scoreboard markers of the "
                    "README, --check exits 1 if the README's scoreboard differs.")
    p.add_argument("--claims", default="experiments/results/claims.toml",
                   help="claims file (default: experiments/results/claims.toml); results paths "
                        "in it are relative to its folder")
    p.add_argument("--readme", default="experiments/README.md",
                   help="README holding the scoreboard block (default: experiments/README.md)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the scoreboard into the README")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 if the README's scoreboard is not the generated one")
    p.set_defaults(func=_main)
    return p


def _main(args: argparse.Namespace) -> int:
    import os

    from ..report.scoreboard import load_claims, render, score, sync_readme

    claims = Path(args.claims)
    link = os.path.relpath(claims.parent, Path(args.readme).parent)
    table = render(score(load_claims(claims), claims.parent), link_root=link)
    if not (args.write or args.check):
        print(table, end="")
        return 0
    ok = sync_readme(args.readme, table, write=args.write)
    if args.write:
        print(f"scoreboard -> {args.readme}")
        return 0
    if not ok:
        print(f"{args.readme}: the scoreboard differs from the generated one; run "
              "advsmooth scoreboard --write", file=sys.stderr)
    return 0 if ok else 1
