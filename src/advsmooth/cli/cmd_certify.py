"""``advsmooth certify``: certified accuracy vs ℓ2 radius of a randomised-smoothing classifier
(Cohen et al.'s CERTIFY with N0, N, α; abstentions counted); a table on stdout and, with
``--out DIR``, ``DIR/certification.json``, ``.md`` and ``.html`` with the curve."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ._common import positive_int, positive_number
from ._model_data import add_model_data, eps_list, load_model_data, print_and_write


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "certify", help="certified accuracy vs L2 radius of a smoothed classifier",
        description="Wrap the model in a SmoothedClassifier with noise --sigma and run "
                    "CERTIFY (N0 selection samples, N estimation samples, level alpha) on every "
                    "input; print certified accuracy per radius and the abstentions.")
    add_model_data(p, default_n=100)
    p.add_argument("--sigma", type=positive_number, required=True,
                   help="Gaussian noise std in pixel units (e.g. 0.25)")
    p.add_argument("--n0", type=positive_int, default=100, help="selection samples (100)")
    p.add_argument("--N", dest="n_samples", type=positive_int, default=1000,
                   help="estimation samples (default 1000; Cohen et al. use 100000)")
    p.add_argument("--alpha", type=positive_number, default=0.001, help="failure probability")
    p.add_argument("--radii", default=None,
                   help="L2 radii of the table (default: 0 .. the largest certified radius)")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="inputs certified per call (memory only; default: 64)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write DIR/certification.json, .md and .html")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (shown on a terminal only)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if not 0.0 < args.alpha < 1.0:
        raise ValueError(f"--alpha must lie in (0, 1), got {args.alpha}")
    radii = eps_list(args.radii, "--radii")
    # N votes out of N give the lower confidence bound alpha^(1/N), at least 1/2 (no abstention)
    # only when N >= log2(1/alpha); below that every input abstains
    needed = math.ceil(math.log2(1.0 / args.alpha) - 1e-12)
    if args.n_samples < needed:
        raise ValueError(f"--N {args.n_samples} is too small for --alpha {args.alpha:g}: even "
                         f"{args.n_samples} votes out of {args.n_samples} cannot certify, so every "
                         f"input would abstain; use --N {needed} or more (1000 and more for "
                         "useful radii)")
    import advsmooth as asm

    from ..metrics.certification import certified_accuracy
    from ..report.evaluation import write_certification

    model, x, y, _ = load_model_data(args)
    smoothed = asm.defenses.SmoothedClassifier(model, sigma=args.sigma, seed=args.seed)
    report = certified_accuracy(smoothed, x, y, n0=args.n0, n=args.n_samples, alpha=args.alpha,
                                radii=radii, batch_size=args.batch_size,
                                noise_seed=args.seed, progress_bar=not args.no_progress)
    print_and_write(report, args.out, write_certification,
                    f"Certified robustness of {args.model} on {args.data}")
    return 0
