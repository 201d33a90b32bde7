"""``advsmooth evaluate``: how robust is this model? Robust accuracy over an ε grid from a cascade
of attacks (PGD-CE, DeepFool, APGD-CE, APGD-T, Square), the DeepFool bound and the
gradient-masking flags; a table on stdout and, with ``--out DIR``, ``DIR/evaluation.json``,
``.md`` and ``.html`` (see docs/evaluate.md)."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import positive_int, positive_number, warn_unused
from ._model_data import add_model_data, eps_list, load_model_data, print_and_write


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate", help="robust accuracy over an eps grid (AutoAttack-style cascade) + flags",
        description="Attack every sample with PGD-CE, DeepFool, APGD-CE, APGD-T (DLR) and "
                    "Square (Linf or L2), cheap to strong; a sample leaves at its first "
                    "success, and across the eps grid (ascending) only survivors go on. Prints "
                    "robust accuracy per eps, the DeepFool bound and gradient-masking flags.")
    add_model_data(p, default_n=500)
    p.add_argument("--eps", required=True,
                   help="radii, comma separated, fractions allowed: 2/255,4/255,8/255")
    p.add_argument("--norm", choices=("inf", "2"), default="inf",
                   help="threat model (default: inf)")
    p.add_argument("--stages", default="standard",
                   help="standard, fast, or a comma list of "
                        "pgd-ce,deepfool,fab-t,apgd-ce,apgd-t,square (standard: all; at Linf "
                        "without fab-t)")
    for flag, default, what in (
            ("--pgd-steps", 20, "steps of the first stage, PGD-CE with a random start"),
            ("--apgd-steps", 100, "iterations of each APGD run"),
            ("--apgd-restarts", 1, "APGD restarts from random points"),
            ("--apgd-targets", 3, "APGD-T target classes, the most likely wrong ones"),
            ("--fab-steps", 100, "iterations of FAB-T per target (L2 cascade)"),
            ("--fab-targets", 3, "FAB-T target classes"),
            ("--square-queries", 2000, "model queries per sample of the gradient-free Square "
                                       "stage")):
        p.add_argument(flag, type=positive_int, default=default,
                       help=f"{what} (default: {default})")
    p.add_argument("--square-all", action="store_true",
                   help="Square attacks every survivor, as AutoAttack (default: groups of "
                        "128 survivors, nearest by DeepFool first, until a group fools nobody "
                        "before Square has fooled any sample)")
    p.add_argument("--smoothness", default=None, metavar="SIGMAS",
                   help="SmoothFool profile at these sigma_g values (e.g. 1,2,4; default: off)")
    p.add_argument("--no-deepfool", action="store_true", help="skip the DeepFool distribution")
    p.add_argument("--smooth-sigma", type=positive_number, default=None,
                   help="evaluate the model wrapped in a SmoothedClassifier with this noise "
                        "sigma (pixels in [0, 1]; fractions allowed)")
    p.add_argument("--smooth-samples", type=positive_int, default=32,
                   help="noisy copies per prediction of the smoothed model (default: 32)")
    p.add_argument("--batch-size", type=positive_int, default=128,
                   help="images per attack call (128: a pass over at most 128 images keeps "
                        "the activations in the CPU cache)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write DIR/evaluation.json, .md and .html")
    p.add_argument("--progress", action="store_true",
                   help="print a line per (eps, stage) instead of the bar (for logs)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (shown on a terminal only)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..metrics.evaluation import evaluate, stage_names
    from ..report.evaluation import write_evaluation

    stages: Any = args.stages
    if stages not in ("standard", "fast"):
        stages = [s.strip() for s in stages.split(",") if s.strip()]
    stage_names(args.norm, stages)  # bad arguments fail before any loading
    eps = eps_list(args.eps)
    smoothness = eps_list(args.smoothness, "--smoothness")
    if args.n < 0:
        raise ValueError(f"--n must be >= 0, got {args.n}")
    model, x, y, _ = load_model_data(args)
    warn_unused(args, "--smooth-samples", args.smooth_sigma is not None,
                "without --smooth-sigma")
    if args.smooth_sigma is not None:
        import advsmooth as asm

        model = asm.defenses.SmoothedClassifier(model, sigma=args.smooth_sigma,
                                                samples=args.smooth_samples, seed=args.seed)
    report = evaluate(
        model, x, y, norm=args.norm, eps=eps, stages=stages, pgd_steps=args.pgd_steps,
        apgd_steps=args.apgd_steps, apgd_restarts=args.apgd_restarts,
        apgd_targets=args.apgd_targets, fab_steps=args.fab_steps,
        fab_targets=args.fab_targets, square_queries=args.square_queries,
        square_all=args.square_all, deepfool=not args.no_deepfool, smoothness=smoothness,
        batch_size=args.batch_size, seed=args.seed, progress=args.progress,
        progress_bar=not (args.no_progress or args.progress))
    print_and_write(report, args.out, write_evaluation,
                    f"Robustness of {args.model} on {args.data}")
    return 0
