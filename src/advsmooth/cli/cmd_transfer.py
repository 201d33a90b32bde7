"""``advsmooth transfer --preset digits|cifar10 --out DIR``: the transferability study of seed 001.

Writes Markdown/CSV tables, PNG figures, ``results.json`` and ``summary.md`` into DIR (see
:mod:`advsmooth.studies.transfer` for what each preset reproduces).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import add_models_dir

#: ``advsmooth.studies.transfer.DIGITS_PARTS`` joined (kept literal: building the parser must not
#: import torch; tests/test_transfer_study_figs.py checks they agree)
DEFAULT_PARTS = "tables,fig3,fig4,fig5,fig6,fig7"


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "transfer", help="reproduce the transferability tables/figures (sg-IGSM, seed 001)",
        description="Transfer matrices (FGSM, IGSM, sg-IGSM, equal budget, targeted ensembles, "
                    "momentum), destruction rates, gradient similarity and decision-boundary "
                    "maps. --preset digits runs on the embedded digits models (no downloads); "
                    "--preset cifar10 needs the shared CIFAR-10 test set and ResNet checkpoints "
                    "(e.g. ../shared).")
    p.add_argument("--preset", choices=("digits", "cifar10"), default="digits",
                   help="which study to run (default: digits)")
    p.add_argument("--out", "-o", required=True, help="output directory (created)")
    p.add_argument("--n", type=int, default=None,
                   help="evaluation images correct for every model (digits: 200, cifar10: 500)")
    p.add_argument("--budget-n", type=int, default=64,
                   help="cifar10: images of the equal-budget IGSM vs sg-IGSM table (default 64)")
    p.add_argument("--budget-sources", default="cifar10-resnet20",
                   help="cifar10: comma-separated source models of the equal-budget table "
                        "(default: cifar10-resnet20)")
    add_models_dir(p)
    p.add_argument("--parts", default=DEFAULT_PARTS,
                   help=f"digits: comma-separated sections to run (default: {DEFAULT_PARTS})")
    p.add_argument("--seed", type=int, default=0, help="seed (subset, noise, targets)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_main)
    return p


def _main(args: argparse.Namespace) -> int:
    from ..studies.transfer import run_transfer_study
    from ._common import check_out_dir, models_dir_env

    check_out_dir(args.out)
    sources = tuple(s.strip() for s in args.budget_sources.split(",") if s.strip())
    with models_dir_env(args.models_dir):
        res = run_transfer_study(
            args.preset, args.out, args.n, args.seed, progress=not args.no_progress,
            budget_n=args.budget_n, budget_sources=sources, models_dir=args.models_dir,
            parts=tuple(s.strip() for s in args.parts.split(",") if s.strip()))
    print(json.dumps({"preset": res["preset"], "n": res["n"], "seconds": round(res["seconds"], 1),
                      "summary": res["summary"], "tables": sorted(res["tables"]),
                      "figures": sorted(res["figures"])}, indent=1))
    return 0
