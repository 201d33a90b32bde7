"""``advsmooth transfer --preset digits|cifar10 --out DIR``: the sg transferability study.

Runs a one-study spec (task ``transfer_study``) through the experiment runner: DIR holds the result
store (resumable; every trained model and intermediate result is an artefact) and the report
(tables and figures, ``DIR/report/report.html``). See :mod:`advsmooth.studies.transfer` for what
each preset reproduces.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._common import add_models_dir, nonnegative_int, positive_int

#: ``advsmooth.studies.transfer.DIGITS_PARTS`` joined (kept literal: building the parser must not
#: import torch; tests/test_transfer_study_figs.py checks they agree)
DEFAULT_PARTS = "tables,fig3,fig4,fig5,fig6,fig7"


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "transfer", help="reproduce the sg-IGSM transferability tables/figures (arXiv:1802.09707)",
        description="Transfer matrices (FGSM, IGSM, sg-IGSM, equal budget, targeted ensembles, "
                    "momentum), destruction rates, gradient similarity and decision-boundary "
                    "maps. --preset digits runs on the embedded digits models (no downloads); "
                    "--preset cifar10 needs the shared CIFAR-10 test set and ResNet checkpoints "
                    "(e.g. ../shared).")
    p.add_argument("--preset", choices=("digits", "cifar10"), default="digits",
                   help="which study to run (default: digits)")
    p.add_argument("--out", "-o", required=True,
                   help="output directory: result store and report (created; re-running resumes)")
    p.add_argument("--n", type=positive_int, default=None,
                   help="evaluation images correct for every model (digits: 200, cifar10: 500)")
    p.add_argument("--budget-n", type=positive_int, default=64,
                   help="cifar10: images of the equal-budget IGSM vs sg-IGSM table (default 64)")
    p.add_argument("--budget-sources", default="cifar10-resnet20",
                   help="cifar10: comma-separated source models of the equal-budget table "
                        "(default: cifar10-resnet20)")
    add_models_dir(p)
    p.add_argument("--parts", default=DEFAULT_PARTS,
                   help=f"digits: comma-separated sections to run (default: {DEFAULT_PARTS})")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed (subset, noise, targets)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_main)
    return p


def _main(args: argparse.Namespace) -> int:
    from ..experiments import SpecError, parse_spec, run_spec
    from ..experiments.studies_builtin import transfer_study_spec
    from ..report import build_report
    from ._common import check_out_dir, models_dir_env, warn_unused

    check_out_dir(args.out)
    for opt in ("--budget-n", "--budget-sources"):
        warn_unused(args, opt, args.preset == "cifar10", "with --preset digits")
    warn_unused(args, "--parts", args.preset == "digits", "with --preset cifar10 (it runs every "
                "part of its study)")
    params: dict[str, Any] = {
        "preset": args.preset, "seed": args.seed,
        "parts": [s.strip() for s in args.parts.split(",") if s.strip()],
        **({"n": args.n} if args.n is not None else {})}
    if args.preset == "cifar10":
        params["budget_n"] = args.budget_n
        params["budget_sources"] = [s.strip() for s in args.budget_sources.split(",")
                                    if s.strip()]
    try:
        spec = parse_spec(transfer_study_spec(params))
    except SpecError as exc:
        print(f"advsmooth transfer: error: {exc}", file=sys.stderr)
        return 2
    with models_dir_env(args.models_dir):  # the runner loads models by name
        result = run_spec(spec, args.out, progress=not args.no_progress)
    paths = build_report(result.out_dir)
    print(json.dumps({"preset": args.preset, "store": str(result.out_dir),
                      "report": str(paths["html"]),
                      "tables": sorted(p.stem for p in paths["tables"] if p.suffix == ".md"),
                      "figures": sorted(p.name for p in paths["figures"])}, indent=1))
    return 0
