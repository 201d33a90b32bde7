"""``advsmooth attack NAME``: run one registered attack on a model and data, summarise, save.

Per-sample attacks (deepfool, smoothfool, iterative-smooth, color-shift, ...) run on ``--n``
samples of ``--split``; universal ones (uap, smooth-uap) are fitted on ``--fit-n`` samples of
``--fit-split`` and evaluated on the ``--n`` samples of ``--split`` (disjoint samples when the two
splits are the same). With ``--out DIR`` the command writes ``DIR/adversarial.npz``,
``DIR/examples.png`` and ``DIR/summary.json``. See docs/cli.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._utils import atomic_path
from . import UserError

#: named flags → parameter (dest) names; the registry entry says which ones an attack takes
_NAMED = ("norm", "sigma", "overshoot", "max_iter", "candidates", "eps")


def register(subparsers: Any) -> argparse.ArgumentParser:
    from ..attacks.registry import REGISTRY

    lines = "\n".join(f"  {n:<18} {e.help}" for n, e in sorted(REGISTRY.items()))
    p = subparsers.add_parser(
        "attack", help="run an attack on a model and data; print a summary, save examples",
        description="Run the attack NAME on --n samples and print accuracy, success rate, "
                    "perturbation norms, roughness, iterations, evaluations and time. "
                    "With --out DIR, write DIR/adversarial.npz, DIR/examples.png and "
                    "DIR/summary.json.",
        epilog=f"attacks:\n{lines}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", help="attack name (see the list below)")
    p.add_argument("--model", "-m", required=True, help="model name (e.g. digits-lenet) or path")
    p.add_argument("--data", "-d", required=True, help="dataset name (e.g. digits) or npz:PATH")
    p.add_argument("--split", default="test", help="data split to attack (default: test)")
    p.add_argument("--n", type=int, default=100,
                   help="number of samples: a seeded random subset (default 100; 0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and the attack")
    p.add_argument("--batch-size", type=int, default=128, help="attack batch size")
    p.add_argument("--out", "-o", default=None, help="output folder (default: write nothing)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--data-root", default=None, help="folder holding dataset files")
    g = p.add_argument_group("attack options (each attack takes some of them)")
    g.add_argument("--norm", default=None, help="norm of the attack: 2 or inf")
    g.add_argument("--sigma", type=float, default=None, help="smoothing σ_g in pixels")
    g.add_argument("--overshoot", type=float, default=None, help="DeepFool overshoot η")
    g.add_argument("--max-iter", dest="max_iter", type=int, default=None, help="iteration cap")
    g.add_argument("--candidates", type=int, default=None, help="DeepFool candidate classes")
    g.add_argument("--eps", type=float, default=None,
                   help="budget in pixel units (ξ for uap / smooth-uap)")
    g.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                   help="any other constructor parameter (Python literal), repeatable")
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
    except (ValueError, SyntaxError):
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
    if e.kind == "universal" and getattr(args, "no_progress", False):
        params.setdefault("progress_bar", False)
    if e.accepts("seed") and "seed" not in params:
        params["seed"] = args.seed
    return params


def _check_args(args: argparse.Namespace) -> None:
    if args.n < 0:
        raise UserError(f"--n must be >= 0, got {args.n}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.grid_n < 1:
        raise UserError(f"--grid-n must be >= 1, got {args.grid_n}")
    if args.fit_n < 1:
        raise UserError(f"--fit-n must be >= 1, got {args.fit_n}")
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

def _select(total: int, n: int, seed: int, offset: int = 0) -> torch.Tensor:
    """Seeded random indices ``perm[offset : offset + n]`` (``n = 0``: all after offset)."""
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))
    stop = total if n == 0 else offset + n
    if stop > total:
        raise UserError(f"asked for {stop - offset} samples but only {total - offset} are "
                        "available")
    return perm[offset:stop].sort().values


def _load(args: argparse.Namespace) -> dict[str, Any]:
    import advsmooth as asm

    device = torch.device(args.device)
    model = asm.models.load(args.model, device=device)
    x_all, y_all = asm.data.load(args.data, split=args.split, root=args.data_root)
    idx = _select(len(y_all), args.n, args.seed)
    x, y = x_all[idx].to(device), y_all[idx].to(device)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = x.to(dtype)
    try:
        with torch.no_grad():
            out = model(x[:1])
    except RuntimeError as exc:
        raise UserError(f"model {args.model!r} does not accept {args.data!r} images of shape "
                        f"{tuple(x.shape[1:])}: {str(exc).splitlines()[0]}") from None
    k = out.shape[1] if out.ndim == 2 else 2
    if y.numel() and int(y.max()) >= k:
        raise UserError(f"{args.data!r} has labels up to {int(y.max())} but model {args.model!r} "
                        f"has {k} outputs")
    try:
        names = asm.data.class_names(args.data, args.data_root)
    except Exception:  # noqa: BLE001 - class names are decoration only
        names = None
    return {"model": model, "x": x, "y": y, "indices": idx, "class_names": names,
            "x_all": x_all, "y_all": y_all, "device": device, "dtype": dtype}


# ----------------------------------------------------------------------------------------------
# summaries
# ----------------------------------------------------------------------------------------------

def _nanfloat(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _roughness_stats(r: torch.Tensor) -> dict[str, float]:
    from ..filters import roughness

    if r.shape[0] == 0:
        return {"omega_x1e3": float("nan"), "omega_n_x1e3": float("nan")}
    rd = r.double()
    return {"omega_x1e3": 1e3 * float(roughness(rd, sigma_h=1.0).mean()),
            "omega_n_x1e3": 1e3 * float(roughness(rd, sigma_h=1.0, normalized=True).mean())}


def _run_sample_attack(attack: Any, data: dict[str, Any], args: argparse.Namespace
                       ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from ..attacks import run_batched

    model, x, y = data["model"], data["x"], data["y"]
    res = run_batched(attack, model, x, y, batch_size=args.batch_size,
                      progress_bar=not args.no_progress)
    s = res.summary()
    att = ~res.skipped
    ok = att & res.success
    summary: dict[str, Any] = {
        "n": len(res), "accuracy": float((res.clean_pred == y).double().mean()),
        "attacked": int(att.sum()), "success_rate": s["success_rate"],
        "median_l2": s["median_l2"], "mean_l2": s["mean_l2"],
        "median_linf": s["median_linf"], "mean_linf": s["mean_linf"],
        **_roughness_stats(res.perturbation[ok]),
        "mean_iterations": s["mean_iterations"],
        "forward_evals_per_image": s["forward_evals"], "grad_evals_per_image": s["grad_evals"],
        "seconds": s["seconds"],
    }
    if "hsv_magnitude" in res.extras and bool(ok.any()):
        summary["mean_hsv_magnitude"] = float(res.extras["hsv_magnitude"][ok].double().mean())
    arrays = {"x": x, "x_adv": res.x_adv, "y": y, "clean_pred": res.clean_pred,
              "pred": res.adv_pred, "success": res.success, "iterations": res.iterations}
    return summary, {k: v.detach().cpu().numpy() for k, v in arrays.items()}


def _run_universal(uap: Any, data: dict[str, Any], args: argparse.Namespace
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    import advsmooth as asm

    from ..attacks.base import predict
    from ..attacks.universal import universal_fooling_rate
    from ..metrics import fooling_rate

    model, x, y = data["model"], data["x"], data["y"]
    if args.fit_split == args.split:
        fit_idx = _select(len(data["y_all"]), args.fit_n, args.seed,
                          offset=len(data["indices"]))
        x_fit = data["x_all"][fit_idx]
    else:
        x_fit_all, _ = asm.data.load(args.data, split=args.fit_split, root=args.data_root)
        fit_idx = _select(len(x_fit_all), min(args.fit_n, len(x_fit_all)), args.seed)
        x_fit = x_fit_all[fit_idx]
    x_fit = x_fit.to(device=data["device"], dtype=data["dtype"])
    start = time.perf_counter()
    v = uap.fit(model, x_fit)
    fit_seconds = time.perf_counter() - start
    x_adv = (x + v).clamp(0.0, 1.0)
    with torch.no_grad():
        clean_pred = torch.cat([predict(model(x[s:s + args.batch_size]))
                                for s in range(0, len(x), args.batch_size)])
        adv_pred = torch.cat([predict(model(x_adv[s:s + args.batch_size]))
                              for s in range(0, len(x), args.batch_size)])
    fr = fooling_rate(model, x, x_adv, y, batch_size=args.batch_size)
    n_fit = len(x_fit)
    summary: dict[str, Any] = {
        "n": len(x), "accuracy": float((clean_pred == y).double().mean()),
        "fit_n": n_fit, "fit_split": args.fit_split,
        "universal_fooling_rate": universal_fooling_rate(model, x, v, clean_pred=clean_pred,
                                                         batch_size=args.batch_size),
        "fit_fooling_rate": uap.fooling_rate_,
        "success_rate": fr.rate, "n_excluded": fr.n_excluded,
        "v_l2": float(torch.linalg.vector_norm(v)), "v_linf": float(v.abs().max()),
        **_roughness_stats(v),
        "passes": uap.passes_, "updates": uap.updates_, "history": uap.history_,
        "projection_fallbacks": getattr(uap, "projection_fallbacks_", 0),
        "forward_evals_per_image": uap.cost_["forward"] / n_fit,
        "grad_evals_per_image": uap.cost_["grad"] / n_fit,
        "seconds": fit_seconds,
    }
    arrays = {"x": x, "x_adv": x_adv, "y": y, "clean_pred": clean_pred, "pred": adv_pred,
              "success": adv_pred != clean_pred, "v": v[0]}
    return summary, {k: t.detach().cpu().numpy() for k, t in arrays.items()}


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
    ("forward_evals_per_image", "forward evals / image", "{:.1f}"),
    ("grad_evals_per_image", "gradient evals / image", "{:.1f}"),
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
        return _nanfloat(obj)
    if isinstance(obj, (int, str, bool)) or obj is None:
        return obj
    return repr(obj)


def _main(args: argparse.Namespace) -> int:
    import advsmooth as asm

    from ..attacks.registry import build, entry
    from ..report.figures import perturbation_grid

    e = entry(args.name)
    _check_args(args)
    params = attack_params(args)
    attack = build(args.name, **params)
    data = _load(args)
    if e.kind == "universal":
        summary, arrays = _run_universal(attack, data, args)
    else:
        summary, arrays = _run_sample_attack(attack, data, args)
    print(f"{args.name} on {args.model} / {args.data}:{args.split}  ({attack!r})")
    print(format_table(summary))
    if args.out is None:
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "adversarial.npz") as tmp:
        np.savez_compressed(tmp, indices=data["indices"].numpy(), **arrays)
    order = np.flatnonzero(arrays["success"] & (arrays["clean_pred"] == arrays["y"]))
    rest = np.setdiff1d(np.arange(len(arrays["y"])), order)
    pick = np.concatenate([order, rest])[:args.grid_n]
    if len(pick):
        perturbation_grid(arrays["x"][pick], arrays["x_adv"][pick], arrays["clean_pred"][pick],
                          arrays["pred"][pick], out / "examples.png", magnify=args.magnify,
                          max_images=args.grid_n, class_names=data["class_names"],
                          title=f"{args.name} on {args.model}")
    record = {
        "attack": args.name, "attack_repr": repr(attack), "params": params,
        "model": args.model, "data": args.data, "split": args.split, "seed": args.seed,
        "summary": summary, "versions": {"advsmooth": asm.__version__,
                                         "torch": torch.__version__},
        "files": ["adversarial.npz", "examples.png"] if len(pick) else ["adversarial.npz"],
    }
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(_jsonable(record), indent=2) + "\n")
    print(f"wrote {out / 'adversarial.npz'}, {out / 'examples.png'}, {out / 'summary.json'}",
          file=sys.stderr)
    return 0
