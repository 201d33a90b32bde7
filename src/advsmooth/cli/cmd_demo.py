"""``advsmooth demo``: minimal vs smooth perturbations on the embedded digits data.

Works on a fresh machine without network: the digits model is trained on first use (seconds)
and cached; the demo experiment (DeepFool, SmoothFool at σg ∈ {1, 2, 5, 10}, FGSM) runs into a
resumable result store and its report (tables, fooling-rate-vs-σg plot, perturbation grids,
``report.html``) is written to ``--out``. ``--write-spec PATH`` writes the demo's spec as TOML
instead of running it (``experiments/digits_demo.toml`` is generated this way, so the shipped
spec and the demo never drift apart).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..demo import DEMO_N
from ._common import nonnegative_int


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo", help="DeepFool vs SmoothFool on the embedded digits model: table, plots, report",
        description="Prepare the digits model (trained on first use, then cached), run DeepFool, "
                    "SmoothFool at sigma_g in {1, 2, 5, 10} and FGSM on digits test images, "
                    "print the summary table and write the report (Markdown/CSV/JSON tables, "
                    "fooling rate vs sigma_g, perturbation grids, report.html).")
    p.add_argument("--model", default="digits-lenet",
                   help="a digits-* zoo model (default: digits-lenet)")
    p.add_argument("--n", type=int, default=DEMO_N,
                   help=f"number of digits test images (seeded random subset; default {DEMO_N})")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="experiment seed (default 0)")
    p.add_argument("--out", default="advsmooth-demo",
                   help="output directory (default ./advsmooth-demo; re-running resumes)")
    p.add_argument("--retrain", action="store_true", help="train the digits model again")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--write-spec", default=None, metavar="PATH",
                   help="write the demo experiment (with --n/--seed/--model) as a TOML spec to "
                        "PATH and exit without running it (e.g. experiments/digits_demo.toml; "
                        "run it with `advsmooth run PATH`)")
    p.set_defaults(func=run_demo)
    return p


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo experiment and print where its report is."""
    from .. import data, models
    from ..demo import run_demo as _run
    from ..demo import write_demo_spec

    name = getattr(args, "model", "digits-lenet")
    if not name.startswith("digits-"):
        raise ValueError(f"--model must be a digits-* model (the demo runs on the embedded "
                         f"digits data), got {name!r}")
    n, size = getattr(args, "n", DEMO_N), int(data.info("digits").sizes["test"])
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    if n > size:
        raise ValueError(f"--n {n} exceeds the {size} digits test images; use --n {size} or "
                         "fewer")
    if getattr(args, "write_spec", None):
        from ._common import check_out_file

        check_out_file(args.write_spec, "--write-spec")
        path = write_demo_spec(args.write_spec, n=n, seed=args.seed, model=name)
        print(f"wrote {path} (run it with: advsmooth run {path} --out DIR --report)")
        return 0
    from ._common import check_out_dir

    check_out_dir(getattr(args, "out", "advsmooth-demo"))
    if getattr(args, "retrain", False):
        models.load(name, retrain=True)
    _run(getattr(args, "out", "advsmooth-demo"), n=n,
         seed=getattr(args, "seed", 0), model=name,
         progress=not getattr(args, "no_progress", False))
    return 0
