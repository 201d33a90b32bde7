"""``advsmooth attack NAME``: run one registered attack on a model and data, summarise, save.

Per-sample attacks (deepfool, smoothfool, iterative-smooth, color-shift, ...) are a one-cell
experiment: the command builds the spec (one dataset selection, one model, one attack) and runs
it through the experiment runner, so ``--out DIR`` is a run folder like ``advsmooth run``'s —
``DIR/results.sqlite`` (resumable), ``DIR/artefacts/``, ``DIR/report/`` — plus the files of
this command, ``DIR/adversarial.npz``, ``DIR/examples.png`` and ``DIR/summary.json``. Without
``--out`` the run goes to a temporary folder that is removed afterwards. The printed table is
:func:`advsmooth.attacks.summary.summarize` of the stored per-sample rows.

Universal ones (uap, smooth-uap) are fitted on ``--fit-n`` samples of ``--fit-split`` and
evaluated on the ``--n`` samples of ``--split`` (disjoint samples when the two splits are the
same). See docs/cli.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._utils import MissingDependency, atomic_path, optional_import
from . import UserError
from ._common import (
    add_common,
    check_model_input,
    check_n,
    check_out_dir,
    data_shape,
    models_dir_env,
    nonnegative_int,
    number,
    parse_number,
    resolve_device,
    write_report,
)

#: named flags → parameter (dest) names; the registry entry says which ones an attack takes
_NAMED = ("norm", "sigma", "overshoot", "max_iter", "candidates", "eps")


def register(subparsers: Any) -> argparse.ArgumentParser:
    from ..attacks.registry import REGISTRY

    lines = "\n".join(f"  {n:<18} {e.help}" for n, e in sorted(REGISTRY.items()))
    p = subparsers.add_parser(
        "attack", help="run an attack on a model and data; print a summary, save examples",
        description="Run the attack NAME on --n samples and print accuracy, success rate, "
                    "perturbation norms, roughness, iterations, evaluations per attacked image "
                    "and time. Adversarial images stay in [0, 1] (--no-clip: the paper's "
                    "unclipped DeepFool). With --out DIR (a run folder, resumable): "
                    "DIR/results.sqlite, DIR/report/, DIR/adversarial.npz, DIR/examples.png "
                    "and DIR/summary.json.",
        epilog=f"attacks:\n{lines}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", help="attack name (see the list below)")
    p.add_argument("--model", "-m", required=True, help="model name (e.g. digits-lenet) or path")
    p.add_argument("--data", "-d", required=True, help="dataset name (e.g. digits) or npz:PATH")
    p.add_argument("--split", default="test", help="data split to attack (default: test)")
    p.add_argument("--n", type=int, default=100,
                   help="number of samples: a seeded random subset (default 100; 0 = all)")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the subset and the attack")
    p.add_argument("--batch-size", type=int, default=128, help="attack batch size")
    p.add_argument("--out", "-o", default=None,
                   help="run folder: store, report, npz/png/json (default: write nothing)")
    add_common(p, device_first=True)
    g = p.add_argument_group("attack options (each attack takes some of them)")
    g.add_argument("--norm", default=None,
                   help="norm of the attack: 2 or inf (DeepFool: any p > 1, e.g. 1.5)")
    g.add_argument("--sigma", type=number, default=None, help="smoothing σ_g in pixels")
    g.add_argument("--overshoot", type=number, default=None, help="DeepFool overshoot η")
    g.add_argument("--max-iter", dest="max_iter", type=int, default=None, help="iteration cap")
    g.add_argument("--candidates", type=int, default=None, help="DeepFool candidate classes")
    g.add_argument("--eps", type=number, default=None,
                   help="budget in pixel units, a number or a fraction such as 8/255 (ξ for "
                        "uap / smooth-uap)")
    g.add_argument("--no-clip", action="store_true",
                   help="attacks with a clip option (deepfool): keep the paper's unclipped "
                        "iterates, so x_adv may leave [0, 1] (default: clip=True, valid images)")
    g.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                   help="any other constructor parameter (Python literal or a fraction such as "
                        "8/255), repeatable")
    u = p.add_argument_group("universal perturbations (uap, smooth-uap)")
    u.add_argument("--fit-split", default="train", help="split to fit v on (default train)")
    u.add_argument("--fit-n", type=int, default=200, help="samples to fit v on (default 200)")
    f = p.add_argument_group("figure")
    f.add_argument("--grid-n", type=int, default=8, help="images in examples.png (default 8)")
    f.add_argument("--magnify", default="auto",
                   help="perturbation magnification in the figure: auto or a number")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_main)
    return p


# ----------------------------------------------------------------------------------------------
# argument handling
# ----------------------------------------------------------------------------------------------

def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return parse_number(text)  # a fraction such as 8/255
    except ValueError:
        return text


def _norm(text: str) -> Any:
    t = text.strip().lower()
    if t in ("inf", "linf", "infinity"):
        return "inf"
    try:
        v = float(t)
    except ValueError:
        raise UserError(f"--norm must be 2, inf or a number > 1, got {text!r}") from None
    return int(v) if v.is_integer() else v


def attack_params(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword parameters for the registry entry from the named flags and ``--param``."""
    from ..attacks.registry import entry

    e = entry(args.name)
    params: dict[str, Any] = {}
    for flag in _NAMED:
        val = getattr(args, flag, None)
        if val is None:
            continue
        opt = "--" + flag.replace("_", "-")
        if flag not in e.options:
            takes = ", ".join("--" + o.replace("_", "-") for o in e.options) or "none"
            raise UserError(f"attack {args.name!r} does not take {opt} (named options it takes: "
                            f"{takes}; use --param KEY=VALUE for others)")
        params[e.param_for(flag)] = _norm(val) if flag == "norm" else val
    for item in args.param:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise UserError(f"--param must look like KEY=VALUE, got {item!r}")
        params[key] = _literal(value.strip())
    if e.accepts("clip"):
        params.setdefault("clip", not getattr(args, "no_clip", False))
    elif getattr(args, "no_clip", False):
        raise UserError(f"attack {args.name!r} has no clip option (--no-clip is for attacks "
                        "that take one, e.g. deepfool)")
    if e.accepts("seed") and "seed" not in params:
        params["seed"] = args.seed
    return params


def _check_args(args: argparse.Namespace) -> None:
    for dest, low in (("n", 0), ("batch_size", 1), ("grid_n", 1), ("fit_n", 1)):
        if getattr(args, dest) < low:
            raise UserError(f"--{dest.replace('_', '-')} must be >= {low}, got "
                            f"{getattr(args, dest)}")
    if args.magnify != "auto":
        try:
            m = float(args.magnify)
        except ValueError:
            raise UserError(f"--magnify must be 'auto' or a number > 0, got {args.magnify!r}") \
                from None
        if not m > 0:
            raise UserError(f"--magnify must be 'auto' or a number > 0, got {args.magnify!r}")
        args.magnify = m


# ----------------------------------------------------------------------------------------------
# data and model
# ----------------------------------------------------------------------------------------------

def _probe_model(args: argparse.Namespace, device: str) -> None:
    """Load the model (``--models-dir`` honoured) and run it once on one image of the data: a
    model/data mismatch is a one-line error before any work, as are labels the model has no
    output for."""
    import advsmooth as asm

    model = asm.models.load(args.model, device=device, models_dir=args.models_dir,
                            verbose=False)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x, _ = asm.data.load(args.data, split=args.split, root=args.data_root, indices=[0])
    check_model_input(args.model, args.data, tuple(x.shape[1:]), model=model,
                      probe=x.to(device=device, dtype=dtype))
    with torch.no_grad():
        k = int(model(x.to(device=device, dtype=dtype)).shape[1])
    if args.data in asm.data.REGISTRY:
        classes = asm.data.info(args.data).num_classes
        if classes is not None and classes > k:
            raise UserError(f"{args.data!r} has {classes} classes but model {args.model!r} has "
                            f"{k} outputs")


def _class_names(args: argparse.Namespace) -> list[str] | None:
    import advsmooth as asm

    try:
        return asm.data.class_names(args.data, args.data_root)
    except Exception:  # noqa: BLE001 - class names are decoration only
        return None


# ----------------------------------------------------------------------------------------------
# summaries
# ----------------------------------------------------------------------------------------------

def _one_cell_spec(args: argparse.Namespace, **body: Any) -> Any:
    """The validated one-cell spec ``body`` of ``advsmooth attack`` (name, description, seed)."""
    import re

    from ..experiments import parse_spec

    return parse_spec({"name": re.sub(r"[^A-Za-z0-9_.-]+", "_", f"attack-{args.name}"),
                       "description": f"advsmooth attack {args.name} on {args.model}",
                       "seed": args.seed, **body}, source=f"attack {args.name}")


def attack_spec(args: argparse.Namespace, params: dict[str, Any]) -> Any:
    """The one-cell experiment spec of ``advsmooth attack`` (validated)."""
    ds: dict[str, Any] = {"name": args.data, "split": args.split}
    check_n(args.n, args.data, args.split)
    if args.n:
        ds.update(sample=args.n, seed=args.seed)
    return _one_cell_spec(args, batch_size=args.batch_size, save_adversarial=True,
                          datasets=[ds], models=[{"name": args.model}],
                          attacks=[{"name": args.name, "params": params}])


def _run_sample_attack(args: argparse.Namespace, params: dict[str, Any], out: Path,
                       device: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run the one-cell spec into the run folder ``out``; the summary comes from the store."""
    from ..attacks.summary import summarize
    from ..experiments import Store, expand_cells, run_spec
    from ..experiments.runner import read_adversarial

    spec = attack_spec(args, params)
    run_spec(spec, out, device=device, data_root=args.data_root,
             progress=not args.no_progress)
    cell_id = expand_cells(spec)[0].cell_id
    with Store(out, readonly=True) as st:
        cols = st.samples(cell_id)
        seconds = next(c["seconds"] for c in st.cells() if c["cell_id"] == cell_id)
    s = summarize(cols, seconds=seconds)
    summary: dict[str, Any] = {
        "n": int(s["n"]), "accuracy": s["accuracy"], "attacked": int(s["attacked"]),
        "success_rate": s["success_rate"], "median_l2": s["median_l2"], "mean_l2": s["mean_l2"],
        "median_linf": s["median_linf"], "mean_linf": s["mean_linf"],
        "omega_x1e3": 1e3 * s["omega"], "omega_n_x1e3": 1e3 * s["omega_n"],
        "mean_iterations": s["iterations"], "forward_evals_per_image": s["forward_evals"],
        "grad_evals_per_image": s["grad_evals"], "seconds": s["seconds"],
    }
    images = read_adversarial(out, cell_id, ("x", "x_adv"))
    if images is None:
        raise FileNotFoundError(f"{out}: no saved adversarial examples of cell {cell_id}")
    if not np.array_equal(images["idx"], np.arange(len(cols["label"]))):
        raise FileNotFoundError(f"{out / 'artefacts' / cell_id}: saved batches do not cover the "
                                f"{len(cols['label'])} samples (remove the folder to recompute "
                                "them)")
    arrays = {"x": images["x"], "x_adv": images["x_adv"], "y": cols["label"],
              "clean_pred": cols["clean_pred"], "pred": cols["adv_pred"],
              "success": cols["success"].astype(bool), "iterations": cols["iterations"],
              "indices": cols["source_index"]}
    return summary, arrays


def _run_universal(args: argparse.Namespace, params: dict[str, Any], out: Path,
                   device: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run the one-cell ``universal_attack`` study into ``out``; summary and arrays come from
    its stored row and artefact."""
    from .. import data
    from ..experiments import expand_cells, run_spec
    from ..experiments.artefacts import Artefacts, Step
    from ..experiments.attack_universal import STEP_KIND

    if args.data in data.REGISTRY and args.fit_split not in data.info(args.data).splits:
        raise ValueError(f"--fit-split must be one of {data.info(args.data).splits} for "
                         f"{args.data!r}, got {args.fit_split!r}")
    study = {"dataset": args.data, "split": args.split, "n": args.n, "seed": args.seed,
             "fit_split": args.fit_split, "fit_n": args.fit_n, "batch_size": args.batch_size,
             "model": args.model, "attack": args.name, "attack_params": params}
    spec = _one_cell_spec(args, studies=[{"task": "universal_attack", "params": study}])
    run_spec(spec, out, device=device, data_root=args.data_root,
             progress=not args.no_progress)
    step = Step(STEP_KIND, dict(expand_cells(spec)[0].params))
    arts = Artefacts(out, readonly=True)
    try:
        done = arts.load(step)
    finally:
        arts.close()
    if done is None:
        raise FileNotFoundError(f"{out}: the universal perturbation's artefact is missing or "
                                "damaged (run the command again to recompute it)")
    arrays = {k: t.numpy() for k, t in done.tensors.items()}
    return dict(done.rows[0]), arrays


_LABELS = [
    ("n", "samples", "{:.0f}"), ("accuracy", "clean accuracy", "{:.2%}"),
    ("universal_fooling_rate", "universal fooling rate", "{:.2%}"),
    ("fit_fooling_rate", "fooling rate on fit set", "{:.2%}"),
    ("success_rate", "success rate (correct inputs)", "{:.2%}"),
    ("median_l2", "median L2", "{:.4f}"), ("mean_l2", "mean L2", "{:.4f}"),
    ("median_linf", "median Linf", "{:.4f}"), ("mean_linf", "mean Linf", "{:.4f}"),
    ("v_l2", "||v||_2", "{:.4f}"), ("v_linf", "||v||_inf", "{:.4f}"),
    ("omega_x1e3", "Omega x1e3 (sigma_h=1)", "{:.3f}"),
    ("omega_n_x1e3", "Omega_n x1e3 (sigma_h=1)", "{:.3f}"),
    ("mean_hsv_magnitude", "mean HSV magnitude", "{:.4f}"),
    ("mean_iterations", "mean iterations", "{:.2f}"), ("passes", "passes", "{:.0f}"),
    ("forward_evals_per_image", "forward evals / attacked image", "{:.1f}"),
    ("grad_evals_per_image", "gradient evals / attacked image", "{:.1f}"),
    ("forward_evals_per_fit_image", "forward evals / fit image", "{:.1f}"),
    ("grad_evals_per_fit_image", "gradient evals / fit image", "{:.1f}"),
    ("seconds", "time (s)", "{:.2f}"),
]


def format_table(summary: dict[str, Any]) -> str:
    """The summary as an aligned two-column text table."""
    rows = []
    for key, label, fmt in _LABELS:
        if key not in summary:
            continue
        val = summary[key]
        text = "n/a" if val is None or (isinstance(val, float) and math.isnan(val)) \
            else fmt.format(val)
        rows.append((label, text))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return None if math.isnan(obj) else float(obj)
    if isinstance(obj, (int, str, bool)) or obj is None:
        return obj
    return repr(obj)


def _clip_note(params: dict[str, Any]) -> str | None:
    if "clip" not in params:
        return None
    if params["clip"]:
        return "adversarial images are clipped to [0, 1] (--no-clip: the paper's unclipped mode)"
    return "--no-clip: adversarial images are not clipped and may leave [0, 1] (the paper's mode)"


def _write_files(args: argparse.Namespace, out: Path, attack: Any, params: dict[str, Any],
                 summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[str]:
    """``adversarial.npz``, ``examples.png`` (when matplotlib is installed), ``summary.json``."""
    import advsmooth as asm

    with atomic_path(out / "adversarial.npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    files = ["adversarial.npz"]
    order = np.flatnonzero(arrays["success"] & (arrays["clean_pred"] == arrays["y"]))
    rest = np.setdiff1d(np.arange(len(arrays["y"])), order)
    pick = np.concatenate([order, rest])[:args.grid_n]
    try:
        optional_import("matplotlib")
        have_mpl = True
    except MissingDependency as exc:
        have_mpl = False
        print(f"advsmooth attack: note: examples.png left out: {exc}", file=sys.stderr)
    if len(pick) and have_mpl:
        from ..report.figures import perturbation_grid

        perturbation_grid(arrays["x"][pick], arrays["x_adv"][pick], arrays["clean_pred"][pick],
                          arrays["pred"][pick], out / "examples.png", magnify=args.magnify,
                          max_images=args.grid_n, class_names=_class_names(args),
                          title=f"{args.name} on {args.model}")
        files.append("examples.png")
    record = {
        "attack": args.name, "attack_repr": repr(attack), "params": params,
        "model": args.model, "data": args.data, "split": args.split, "seed": args.seed,
        "summary": summary, "versions": {"advsmooth": asm.__version__,
                                         "torch": torch.__version__},
        "files": list(files),
    }
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(_jsonable(record), indent=2) + "\n")
    return [*files, "summary.json"]


def _main(args: argparse.Namespace) -> int:
    from ..attacks.registry import build, entry

    e = entry(args.name)
    _check_args(args)
    device = resolve_device(args.device)
    check_out_dir(args.out)
    params = attack_params(args)
    try:
        attack = build(args.name, **params)
    except TypeError as exc:
        raise UserError(f"attack {args.name!r}: {exc}") from None
    check_model_input(args.model, args.data, data_shape(args.data, args.split, args.data_root))
    with models_dir_env(args.models_dir), tempfile.TemporaryDirectory(
            prefix="advsmooth-attack-") as scratch:
        out = Path(args.out) if args.out is not None else Path(scratch)
        _probe_model(args, device)
        run = _run_universal if e.kind == "universal" else _run_sample_attack
        summary, arrays = run(args, params, out, device)
        print(f"{args.name} on {args.model} / {args.data}:{args.split}  ({attack!r})")
        print(format_table(summary))
        note = _clip_note(params)
        if note:
            print(note)
        if args.out is None:
            return 0
        files = _write_files(args, out, attack, params, summary, arrays)
    paths = write_report(out, "attack")
    written = ", ".join(str(out / f) for f in files)
    print(f"wrote {written}; run store {out / 'results.sqlite'}, report {paths['html']}",
          file=sys.stderr)
    return 0
