"""``advsmooth check-defense``: run the gradient-masking checklist on a model and print the
verdict table (see :mod:`advsmooth.checks` and docs/trustworthy.md).

Exit status: 0 when no check failed, 1 when at least one failed (gradient masking likely),
2 for a user error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .._utils import atomic_path
from ._common import (
    add_common,
    check_model_input,
    check_out_file,
    data_shape,
    hidden_alias,
    nonnegative_int,
    positive_int,
    positive_number,
    resolve_device,
    warn_unused,
)
from ._model_data import load_images


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check-defense", help="gradient-masking sanity checks with a verdict table",
        description="Run the evaluation checklist (unbounded attacks reach ~100%, success grows "
                    "with eps, iterative > single-step, white-box > transfer, gradient > noise, "
                    "EPGD >= single draw for randomised models, NAttack cross-check) and print "
                    "a verdict table. Exit 1 when a check fails or none could run.")
    p.add_argument("--model", "-m", required=True, help="model name (e.g. digits-lenet) or path")
    p.add_argument("--data", "-d", required=True, help="dataset name (e.g. digits) or npz:PATH")
    p.add_argument("--split", default="test", help="data split (default: test)")
    p.add_argument("--n", type=positive_int, default=64,
                   help="samples to check: the first N in file order (default 64)")
    p.add_argument("--random-subset", action="store_true",
                   help="take a seeded random subset of N samples instead of the first N")
    p.add_argument("--eps", type=_radii, nargs="+", default=None, action=_Flat,
                   help="increasing Linf radii in pixel units, numbers or fractions such as "
                        "8/255, separated by spaces or commas (default 4/255 ... 64/255)")
    p.add_argument("--surrogate", default=None, help="model for the transfer check")
    p.add_argument("--smooth-sigma", type=positive_number, default=None,
                   help="wrap the model in a SmoothedClassifier with this sigma")
    p.add_argument("--smooth-samples", type=positive_int, default=32,
                   help="noisy copies per forward of the SmoothedClassifier (default 32)")
    p.add_argument("--steps", type=positive_int, default=20, help="PGD steps (default 20)")
    p.add_argument("--nattack-population", type=positive_int, default=40,
                   help="NAttack population (default 40)")
    p.add_argument("--nattack-iters", type=positive_int, default=40,
                   help="NAttack iterations (default 40)")
    hidden_alias(p, "--nattack-iter", "nattack_iters", type=positive_int)
    p.add_argument("--no-nattack", action="store_true", help="skip the NAttack cross-check")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of every random component")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_common(p)
    p.set_defaults(func=run)
    return p


def _radii(text: str) -> list[float]:
    """argparse type: one radius or a comma list of them (``evaluate --eps`` style)."""
    return [positive_number(t) for t in text.split(",") if t.strip()]


class _Flat(argparse.Action):
    """Store the radii of every word (``--eps 4/255 8/255`` or ``--eps 4/255,8/255``) as one
    flat list."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, [e for part in values for e in part])


def run(args: argparse.Namespace) -> int:
    import advsmooth as asm

    from ..checks import evaluate_defense

    device = resolve_device(args.device)
    check_out_file(args.json, "--json")
    if args.eps is not None and not args.eps:
        raise ValueError("--eps: give at least one radius (or leave --eps out for the default "
                         "grid)")
    if args.eps and any(b <= a for a, b in zip(args.eps, args.eps[1:])):
        raise ValueError(f"--eps must be increasing, got {' '.join(map(str, args.eps))}")
    shape = data_shape(args.data, args.split, args.data_root)
    for name in (args.model, args.surrogate):
        if name:
            check_model_input(name, args.data, shape)
    model = asm.models.load(args.model, device=device, models_dir=args.models_dir,
                            verbose=False)
    surrogate = None
    if args.surrogate:
        surrogate = asm.models.load(args.surrogate, device=device, models_dir=args.models_dir,
                                    verbose=False)
    x, y = load_images(args)
    if len(x):
        check_model_input(args.model, args.data, shape, model=model, probe=x[:1].to(device))
    warn_unused(args, "--smooth-samples", args.smooth_sigma is not None,
                "without --smooth-sigma")
    if args.smooth_sigma is not None:
        model = asm.defenses.SmoothedClassifier(model, sigma=args.smooth_sigma,
                                                samples=args.smooth_samples, seed=args.seed)
    kw: dict[str, Any] = {}
    if args.eps:
        kw["eps_grid"] = tuple(args.eps)
    report = evaluate_defense(
        model, (x.to(device), y.to(device)), surrogate=surrogate, n=args.n, seed=args.seed,
        steps=args.steps, nattack_population=args.nattack_population,
        nattack_iter=args.nattack_iters, nattack=not args.no_nattack,
        progress_bar=not args.no_progress, **kw)
    print(report.table())
    if args.json:
        path = Path(args.json)
        text = json.dumps(report.to_dict(), indent=2, default=float)
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return 0 if report.passed else 1
