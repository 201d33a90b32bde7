"""``advsmooth smooth``: accuracy of a model and of its smoothed versions, clean and attacked.

Example::

    advsmooth smooth --model mnist-lenet-pgd --data mnist --n 100 --sigma 0.25 \
        --smooth-samples 32 --vote prediction,soft --attack pgd,epgd --eps 0.3 --steps 40 \
        --draws 3 --out runs/sm

prints one row per (attack, classifier) with the accuracy mean ± std over ``--draws`` evaluation
draws; ``--sweep`` adds the σ × M sweep. The study runs as a one-study spec (task ``smoothing``)
through the experiment runner: ``--out DIR`` keeps its result store (resumable) and report
(tables and plots, ``DIR/report/report.html``); without ``--out`` they go to a temporary folder.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._common import (
    add_common,
    check_model_input,
    check_n,
    check_out_dir,
    data_shape,
    hidden_alias,
    models_dir_env,
    nonnegative_int,
    nonnegative_number,
    parse_number,
    positive_int,
    resolve_device,
    warn_unused,
)


def _floats(text: str) -> list[float]:
    try:
        return [parse_number(t) for t in text.split(",") if t.strip()]
    except ValueError:
        msg = f"expected comma-separated numbers (fractions such as 8/255 too), got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "smooth", help="smoothed inference: base vs smoothed accuracy, clean and attacked",
        description="Evaluate randomised smoothing (prediction / weighted / soft votes) of MODEL "
                    "on DATA: clean and under PGD, EPGD, SmoothAdv-PGD, transfer or NAttack. "
                    "σ is in pixel units (use --noise-space normalized for the paper's "
                    "normalised-input σ).")
    p.add_argument("--model", "-m", required=True, help="zoo model name or saved model path")
    p.add_argument("--data", "-d", required=True, help="dataset name (e.g. digits) or npz:PATH")
    p.add_argument("--split", default="test", help="split (default: test)")
    p.add_argument("--n", type=positive_int, default=200,
                   help="seeded random subset size (default: 200)")
    p.add_argument("--data-seed", type=nonnegative_int, default=0,
                   help="seed of the subset (default: 0)")
    p.add_argument("--sigma", type=nonnegative_number, default=0.25, help="noise std σ (0.25)")
    p.add_argument("--smooth-samples", type=positive_int, default=64, dest="samples",
                   help="noisy copies per smoothed prediction, M (64)")
    hidden_alias(p, "--samples", "samples", type=positive_int)
    p.add_argument("--vote", default="prediction,weighted,soft",
                   help="comma-separated votes: prediction, weighted, weighted_c, soft, "
                        "logit_mean (default: prediction,weighted,soft)")
    p.add_argument("--C", type=nonnegative_number, default=0.5,
                   help="runner-up weight of weighted_c")
    p.add_argument("--noise-space", choices=("pixel", "normalized"), default="pixel")
    p.add_argument("--attack", default="none,pgd",
                   help="comma-separated: none, pgd, epgd, epgd_ref, smoothadv, transfer_pgd, "
                        "transfer_pgd_s, nattack (default: none,pgd)")
    p.add_argument("--eps", type=nonnegative_number, default=0.3,
                   help="l_inf radius, a number or a fraction such as 8/255 (0.3)")
    p.add_argument("--steps", type=positive_int, default=40, help="PGD steps k (40)")
    p.add_argument("--alpha", type=nonnegative_number, default=None,
                   help="step size (default 2.5*eps/steps)")
    p.add_argument("--m-backward", type=positive_int, default=8,
                   help="noisy copies per EPGD/SmoothAdv step (8)")
    p.add_argument("--source", default=None, help="source model of the transfer attacks")
    p.add_argument("--population", type=positive_int, default=300, help="NAttack population")
    p.add_argument("--nattack-iters", type=positive_int, default=500, help="NAttack iterations")
    hidden_alias(p, "--nattack-iter", "nattack_iters", type=positive_int)
    p.add_argument("--draws", type=positive_int, default=3,
                   help="evaluation draws of the randomised classifier (3)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed (0)")
    p.add_argument("--sweep", action="store_true", help="add the sigma x M sweep")
    p.add_argument("--sweep-sigmas", type=_floats, default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    p.add_argument("--sweep-samples", type=_ints, default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--budgets", type=_ints, default=[],
                   help="equal k*M budget study, e.g. 8,16,32 (default: off)")
    p.add_argument("--out", "-o", default=None,
                   help="keep the result store and the report (tables, plots) in this folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_common(p)
    p.set_defaults(func=_main)
    return p


def _main(args: argparse.Namespace) -> int:
    # the runner loads models by name: $ADVSMOOTH_MODELS is --models-dir for this call only
    with models_dir_env(args.models_dir):
        return _smooth(args)


def _smooth(args: argparse.Namespace) -> int:
    import tempfile

    from ..experiments import Store, parse_spec, run_spec
    from ..experiments.studies_builtin import smoothing_spec
    from ..studies.smoothing import MAIN_COLUMNS, rows_to_markdown

    device = resolve_device(args.device)
    check_out_dir(args.out)
    votes = [v.strip() for v in args.vote.split(",") if v.strip()]
    attacks = [a.strip() for a in args.attack.split(",") if a.strip()]
    from ..defenses.smoothing import VOTES
    from ..studies.smoothing import ATTACKS

    if not attacks:
        raise ValueError("--attack: give at least one attack (e.g. none,pgd)")
    # SmoothingSettings checks these too, but in spec terms: here they name the options
    for opt, names, known in (("vote", votes, VOTES), ("attack", attacks, ATTACKS)):
        for v in names:
            if v not in known:
                raise ValueError(f"--{opt}: unknown {opt} {v!r}; expected one of "
                                 f"{', '.join(known)}")
    transfer = any(a.startswith("transfer") for a in attacks)
    warn_unused(args, "--C", "weighted_c" in votes, "without --vote weighted_c")
    warn_unused(args, "--source", transfer,
                "without a transfer attack (--attack transfer_pgd / transfer_pgd_s)")
    if transfer and not args.source:
        raise ValueError("--attack transfer_pgd / transfer_pgd_s need --source MODEL")
    shape = data_shape(args.data, args.split, args.data_root)
    check_n(args.n, args.data, args.split)
    for name in (args.model, args.source):
        if name:
            check_model_input(name, args.data, shape)
    params: dict[str, Any] = {
        "model": args.model, "data": args.data, "split": args.split, "n": args.n,
        "data_seed": args.data_seed, "sigma": args.sigma, "samples": args.samples,
        "votes": votes, "C": args.C, "attacks": attacks, "eps": args.eps,
        "steps": args.steps, "alpha": args.alpha, "m_backward": args.m_backward,
        "source": args.source,
        "nattack": {"population": args.population, "max_iter": args.nattack_iters},
        "draws": args.draws, "seed": args.seed, "noise_space": args.noise_space,
        "sweep": args.sweep, "sweep_sigmas": args.sweep_sigmas,
        "sweep_samples": args.sweep_samples, "budgets": args.budgets}
    params = {k: v for k, v in params.items() if v is not None}
    spec = parse_spec(smoothing_spec(params))  # SpecError (a ValueError): one line, exit 2
    with tempfile.TemporaryDirectory(prefix="advsmooth-smooth-") as tmp:
        out = args.out if args.out is not None else tmp
        run_spec(spec, out, device=str(device), data_root=args.data_root,
                 progress=not args.no_progress)
        with Store(out, readonly=True) as st:
            rows = st.study_rows(st.cells()[0]["cell_id"])
        if args.out:
            from ..report import build_report

            build_report(out)
    print(rows_to_markdown([r for r in rows if r["table"] == "main"], MAIN_COLUMNS), end="")
    for table, title in (("sweep", "sigma x M sweep"), ("budget", "equal k x M budget")):
        extra = [{k: v for k, v in r.items() if k != "table"} for r in rows
                 if r["table"] == table]
        if extra:
            print(f"\n{title}:\n" + rows_to_markdown(extra), end="")
    if args.out:
        print(f"result store and report written to {args.out}")
    return 0
