"""deepfool suite: DeepFool L2 in advsmooth vs Foolbox, torchattacks and ART, and
SmoothFool (σg = 2, 5) vs advsmooth's DeepFool.

Cases: (a) every correctly classified digits test image, ``digits-lenet`` and ``digits-resnet20``;
(b) a seeded sample of
1,000 MNIST test images, ``mnist-lenet``; (c) a seeded sample of 500 CIFAR-10 test images,
``cifar10-resnet20`` (b and c need ../shared and are skipped cleanly without it). Only the
correctly classified images of each sample are attacked (the count is reported).
"""

from __future__ import annotations

from typing import Any

import _harness as H
import _peers as P
import torch

DF = {"overshoot": 0.02, "steps": 50, "candidates": 10}

CASES = [
    # name, model, dataset, load kwargs, needs shared files
    ("digits", "digits-lenet", "digits", {}, []),
    ("digits-resnet20", "digits-resnet20", "digits", {}, []),
    ("mnist", "mnist-lenet", "mnist", {"sample": 1000, "seed": 0},
     ["data/mnist_test.npz", "models/mnist_lenet_clean.pt"]),
    ("cifar10", "cifar10-resnet20", "cifar10", {"sample": 500, "seed": 0},
     ["data/cifar10_test.npz", "models/cifar10_resnet20.pt"]),
]

#: default number of images torchattacks (a Python loop over samples) is timed on, per case
SLOW_SUBSET = {"digits": 100, "digits-resnet20": 40, "mnist": 100, "cifar10": 40}

#: advsmooth rows whose median L2 is paired with every peer's → column key
PAIRED = {"advsmooth": "paired_l2_ratio", "advsmooth-clip": "paired_l2_ratio_clip",
          "advsmooth-clip-clamp": "paired_l2_ratio_clip_clamp",
          "advsmooth-paper": "paired_l2_ratio_paper"}


def load_case(name: str, model_name: str, dataset: str, kw: dict[str, Any], quick: bool,
              limit: int | None) -> tuple[Any, torch.Tensor, torch.Tensor, int]:
    import advsmooth as asm
    model = H.frozen(asm.models.load(model_name))
    x, y = asm.data.load(dataset, "test", **kw)
    n_loaded = int(x.shape[0])
    ok = H.predict(model, x) == y
    x, y = x[ok], y[ok]
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return model, x.contiguous(), y.contiguous(), n_loaded


def _row(lib: str, model: Any, x: torch.Tensor, y: torch.Tensor, times: list[float],
         out: tuple[torch.Tensor, Any], counter: H.CountingModel, n_full: int) -> dict[str, Any]:
    x_adv, own = out
    ev = H.evaluate(model, x, y, x_adv)
    n = int(x.shape[0])
    t = H.median(times)
    row: dict[str, Any] = {
        "library": lib, "n_timed": n, "extrapolated": n < n_full,
        "seconds": t * n_full / n if n else float("nan"),
        "seconds_timed_median": t, "times": times,
        "ms_per_image": 1000 * t / n if n else float("nan"),
        **ev,
        "forward_per_image": counter.forward_rows / n if n else float("nan"),
        "grad_per_image": counter.grad_rows / n if n else float("nan"),
    }
    if own is not None:
        row["own_forward_per_image"] = float(own.forward_evals.double().mean())
        row["own_grad_per_image"] = float(own.grad_evals.double().mean())
        row["mean_iterations"] = float(own.iterations.double().mean())
    return row


def run_case(case: tuple, libs: list[str], args: Any, log: Any) -> dict[str, Any] | None:
    name, model_name, dataset, kw, needs = case
    missing = [p for p in needs if not (H.SHARED / p).exists()]
    if missing:
        log(f"  skip {name}: ../shared lacks {missing}")
        return {"case": name, "skipped": f"../shared lacks {missing}"}
    limit = args.limit
    model, x, y, n_loaded = load_case(name, model_name, dataset, kw, args.quick, limit)
    n = int(x.shape[0])
    log(f"  {name}: {model_name}, {n} correctly classified of {n_loaded} loaded")
    shape, k = tuple(x.shape[1:]), 10
    counters: dict[str, H.CountingModel] = {}
    runs: dict[str, Any] = {}
    subsets: dict[str, int] = {}
    for lib in libs:
        counters[lib] = H.CountingModel(model)
        runs[lib] = P.deepfool(lib, counters[lib], batch_size=args.batch_size, input_shape=shape,
                               num_classes=k, **DF)
        sub = n
        if lib == "torchattacks":
            sub = min(n, args.slow_subset if args.slow_subset is not None else SLOW_SUBSET[name])
        elif not lib.startswith("advsmooth") and args.peer_subset.get(name) is not None:
            sub = min(n, args.peer_subset[name])
        subsets[lib] = sub

    def job(lib: str):
        def f():
            counters[lib].reset()
            s = subsets[lib]
            return runs[lib](x[:s], y[:s])
        return f

    warm = {} if args.quick else {lib: (lambda lib=lib: runs[lib](x[:4], y[:4])) for lib in libs}
    times, outs = H.interleaved({lib: job(lib) for lib in libs}, args.repeats, warm, log)
    rows = [_row(lib, model, x[:subsets[lib]], y[:subsets[lib]], times[lib], outs[lib],
                 counters[lib], n) for lib in libs]
    base = next((r for r in rows if r["library"] == "advsmooth"), None)
    if base is not None:
        for r in rows:
            r["time_vs_advsmooth"] = r["seconds"] / base["seconds"]
    # paired median L2: advsmooth vs each peer on the images both fooled (the peer's timed subset)
    for ref, key in PAIRED.items():
        a = next((r for r in rows if r["library"] == ref), None)
        if a is None:
            continue
        for r in rows:
            if r["library"].startswith("advsmooth"):
                continue
            s = r["n_timed"]
            common = a["_ok"][:s] & r["_ok"]
            if common.any():
                r[key] = float(a["_l2"][:s][common].median() / r["_l2"][common].median())
                r["paired_n"] = int(common.sum())
    return {"case": name, "model": model_name, "dataset": dataset, "n_loaded": n_loaded,
            "n_attacked": n, "rows": rows}


# ----------------------------------------------------------------------------------------------
# SmoothFool vs DeepFool (advsmooth only)
# ----------------------------------------------------------------------------------------------

def run_smoothfool(case: tuple, args: Any, log: Any) -> dict[str, Any] | None:
    import advsmooth as asm
    if not hasattr(asm.attacks, "SmoothFool"):
        log("  SmoothFool not available in advsmooth yet: skipped")
        return {"case": case[0], "skipped": "advsmooth.attacks.SmoothFool not available"}
    name, model_name, dataset, kw, needs = case
    if any(not (H.SHARED / p).exists() for p in needs):
        return {"case": name, "skipped": "../shared missing"}
    model, x, y, n_loaded = load_case(name, model_name, dataset, kw, args.quick, args.limit)
    n = int(x.shape[0])
    if args.smoothfool_limit is not None:
        lim = args.smoothfool_limit
        x, y, n = x[:lim], y[:lim], min(n, lim)
    log(f"  smoothfool on {name}: {n} images")
    attacks = {"DeepFool": asm.attacks.DeepFool(norm=2, overshoot=DF["overshoot"],
                                                max_iter=DF["steps"], candidates=DF["candidates"])}
    clip_step = 0.5 if dataset == "cifar10" else 1.0  # SmoothClip ε: seed's CIFAR / MNIST value
    for s in args.sigmas:
        attacks[f"SmoothFool σg={s:g}"] = asm.attacks.SmoothFool(sigma=float(s),
                                                                 clip_step=clip_step)

    def job(a):
        def f():
            return asm.attacks.AttackResult.cat(
                [a(model, x[i:i + args.batch_size], y[i:i + args.batch_size])
                 for i in range(0, n, args.batch_size)])
        return f

    warm = {} if args.quick else {k: (lambda a=a: a(model, x[:4], y[:4]))
                                  for k, a in attacks.items()}
    times, outs = H.interleaved({k: job(a) for k, a in attacks.items()}, args.repeats, warm, log)
    rows = []
    for k, res in outs.items():
        ev = H.evaluate(model, x, y, res.x_adv)
        ok = res.success & ~res.skipped
        r = res.perturbation
        om = asm.metrics.roughness(r[ok], sigma_h=1.0, normalized=True) if ok.any() else None
        t = H.median(times[k])
        rows.append({
            "attack": k, "n": n, "seconds": t, "times": times[k], "ms_per_image": 1000 * t / n,
            **ev,
            "omega_n_x1e3": float(om.double().mean()) * 1e3 if om is not None else float("nan"),
            "forward_per_image": float(res.forward_evals.double().mean()),
            "grad_per_image": float(res.grad_evals.double().mean()),
            "mean_iterations": float(res.iterations.double().mean()),
        })
    df = rows[0]
    for r in rows:
        r["time_vs_deepfool"] = r["seconds"] / df["seconds"]
        r["grads_vs_deepfool"] = r["grad_per_image"] / df["grad_per_image"]
        r["omega_n_vs_deepfool"] = r["omega_n_x1e3"] / df["omega_n_x1e3"]
    return {"case": name, "model": model_name, "n_attacked": n, "clip_step": clip_step,
            "attacks": {k: repr(a) for k, a in attacks.items()}, "rows": rows}


# ----------------------------------------------------------------------------------------------
# targets and report
# ----------------------------------------------------------------------------------------------

def targets(cases: list[dict[str, Any]], sf: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in cases:
        rows = {r["library"]: r for r in c.get("rows", [])}
        a = rows.get("advsmooth")
        if a is None:
            continue
        out.append({"target": f"{c['case']}: DeepFool success on correctly classified "
                              "inputs = 100 %",
                    "value": a["success_rate"], "pass": a["success_rate"] == 1.0})
        peers = [r for lib, r in rows.items() if not lib.startswith("advsmooth")]
        if peers:
            paired = [r for r in peers if "paired_l2_ratio" in r]
            if paired:
                worst = max(paired, key=lambda r: r["paired_l2_ratio"])
                out.append({"target": f"{c['case']}: median L2 ≤ 1.01 × every peer's, paired on "
                                      "the images both fooled (largest ratio: vs "
                                      f"{worst['library']})",
                            "value": worst["paired_l2_ratio"],
                            "pass": worst["paired_l2_ratio"] <= 1.01})
            clipped = [r for r in peers if "paired_l2_ratio_clip" in r and r["box_violation"] == 0]
            if clipped and "advsmooth-clip" in rows:
                worst = max(clipped, key=lambda r: r["paired_l2_ratio_clip"])
                out.append({"target": f"{c['case']}: (same box semantics) advsmooth clip=True "
                                      f"median L2 ≤ 1.01 × clipping peers' (largest ratio: vs "
                                      f"{worst['library']})",
                            "value": worst["paired_l2_ratio_clip"],
                            "pass": worst["paired_l2_ratio_clip"] <= 1.01})
            fastest = min(peers, key=lambda r: r["seconds"])
            ratio = fastest["seconds"] / a["seconds"]
            out.append({"target": f"{c['case']}: ≥ 5× faster than the fastest peer "
                                  f"({fastest['library']})", "value": ratio, "pass": ratio >= 5.0})
        out += _clip_targets(c["case"], rows, peers)
    for c in sf:
        if c.get("case") != "digits" or "rows" not in c:
            continue
        s2 = next((r for r in c["rows"] if r["attack"] == "SmoothFool σg=2"), None)
        if s2 is None:
            continue
        out.append({"target": "digits: SmoothFool σg=2 success ≥ 99 %", "value": s2["success_rate"],
                    "pass": s2["success_rate"] >= 0.99})
        out.append({"target": "digits: SmoothFool σg=2 wall time per image ≤ 4× DeepFool's",
                    "value": s2["time_vs_deepfool"], "pass": s2["time_vs_deepfool"] <= 4.0})
        out.append({"target": "digits: SmoothFool σg=2 gradient evaluations per image ≤ 4× "
                              "DeepFool's", "value": s2["grads_vs_deepfool"],
                    "pass": s2["grads_vs_deepfool"] <= 4.0})
        out.append({"target": "digits: SmoothFool σg=2 Ωn (σh=1) ≤ 0.5× DeepFool's",
                    "value": s2["omega_n_vs_deepfool"], "pass": s2["omega_n_vs_deepfool"] <= 0.5})
    return out


def _passes(r: dict[str, Any]) -> float:
    return r["forward_per_image"] + r["grad_per_image"]


def _clip_targets(case: str, rows: dict[str, Any], peers: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """clip=True (the box-constrained step): ≥ 8× Foolbox's images/s, paired median L2 ≤ 1.00×
    Foolbox's, 100 % success; on MNIST, passes per image within 1.5× of unclipped."""
    c = rows.get("advsmooth-clip")
    fb = next((r for r in peers if r["library"] == "foolbox"), None)
    if c is None:
        return []
    out = [{"target": f"{case}: clip=True success = 100 %", "value": c["success_rate"],
            "pass": c["success_rate"] == 1.0}]
    if fb is not None:
        ratio = fb["seconds"] / c["seconds"]
        out.append({"target": f"{case}: clip=True ≥ 8× Foolbox's images/s", "value": ratio,
                    "pass": ratio >= 8.0})
        if "paired_l2_ratio_clip" in fb:
            out.append({"target": f"{case}: clip=True paired median L2 ≤ 1.00× Foolbox's",
                        "value": fb["paired_l2_ratio_clip"],
                        "pass": fb["paired_l2_ratio_clip"] <= 1.0})
    a = rows.get("advsmooth")
    if a is not None and case == "mnist":
        ratio = _passes(c) / _passes(a)
        out.append({"target": f"{case}: clip=True passes / image ≤ 1.5× unclipped",
                    "value": ratio, "pass": ratio <= 1.5})
    return out


DF_COLUMNS = [
    ("library", "library"), ("n_timed", "images timed"), ("extrapolated", "extrapolated"),
    ("seconds", "wall time (s, median)"), ("ms_per_image", "ms / image"),
    ("time_vs_advsmooth", "time ÷ advsmooth"), ("success_rate", "success"),
    ("median_l2", "median L2"), ("rho_adv", "ρ_adv"), ("median_linf", "median L∞"),
    ("box_violation", "max outside [0,1]"), ("forward_per_image", "forwards / image"),
    ("grad_per_image", "gradients / image"), ("own_forward_per_image", "own fwd / image"),
    ("own_grad_per_image", "own grad / image"),
    ("paired_l2_ratio", "advsmooth ÷ peer median L2 (paired)"),
    ("paired_l2_ratio_clip", "advsmooth-clip ÷ peer (paired)"),
    ("paired_l2_ratio_clip_clamp", "advsmooth-clip-clamp ÷ peer (paired)"),
    ("paired_l2_ratio_paper", "advsmooth-paper ÷ peer (paired)"),
]
SF_COLUMNS = [
    ("attack", "attack"), ("n", "images"), ("seconds", "wall time (s, median)"),
    ("ms_per_image", "ms / image"), ("time_vs_deepfool", "time ÷ DeepFool"),
    ("success_rate", "success"), ("median_l2", "median L2"), ("omega_n_x1e3", "Ωn ×10³ (σh=1)"),
    ("omega_n_vs_deepfool", "Ωn ÷ DeepFool"), ("grad_per_image", "gradients / image"),
    ("grads_vs_deepfool", "gradients ÷ DeepFool"), ("mean_iterations", "iterations"),
]
TARGET_COLUMNS = [("target", "target"), ("value", "measured"), ("pass", "met")]


def markdown(payload: dict[str, Any]) -> str:
    cfg = payload["config"]
    lines = ["# deepfool suite", "",
             f"DeepFool L2, overshoot {DF['overshoot']}, {DF['steps']} iterations, "
             f"{DF['candidates']} candidates; batches of {cfg['batch_size']} images for every "
             f"library; {cfg['repeats']} interleaved repeat(s), median wall time. Success, norms "
             "and ρ_adv are computed by one shared function (the model's forward on the returned "
             "x_adv); evaluations are counted by a wrapper module (images per forward / per "
             "backward reaching the logits). `extrapolated`: timed on the first `images timed` "
             "images and scaled linearly to the whole set (the other columns are over the timed "
             "images). Paired ratios: median L2 of advsmooth (default, unclipped; or with "
             "clip=True) over median L2 of the peer, both on the images both fooled. `max outside "
             "[0,1]` > 0 means the library does not clip (advsmooth default, ART with "
             "clip_values=None).", "", H.machine_md(payload["machine"]), ""]
    for c in payload["cases"]:
        if "skipped" in c:
            lines += [f"## {c['case']}: skipped ({c['skipped']})", ""]
            continue
        lines += [f"## {c['case']}: {c['model']}, {c['n_attacked']} correctly classified of "
                  f"{c['n_loaded']} images", "", H.md_table(c["rows"], DF_COLUMNS), ""]
    for c in payload["smoothfool"]:
        if "skipped" in c:
            lines += [f"## SmoothFool on {c['case']}: skipped ({c['skipped']})", ""]
            continue
        lines += [f"## SmoothFool vs DeepFool on {c['case']} ({c['model']}, {c['n_attacked']} "
                  f"images, SmoothClip step {c['clip_step']})", "",
                  H.md_table(c["rows"], SF_COLUMNS), ""]
    lines += ["## Targets", "", H.md_table(payload["targets"], TARGET_COLUMNS), ""]
    return "\n".join(lines)


def run(args: Any, libs: list[str], log: Any) -> dict[str, Any]:
    cases = [c for c in CASES if c[0] in args.cases]
    results = [run_case(c, libs, args, log) for c in cases]
    sf_cases = [c for c in CASES if c[0] in args.smoothfool_cases]
    sf = [run_smoothfool(c, args, log) for c in sf_cases] if not args.no_smoothfool else []
    return {"suite": "deepfool",
            "config": {"deepfool": DF, "libraries": libs, "batch_size": args.batch_size,
                       "repeats": args.repeats, "cases": args.cases, "limit": args.limit,
                       "slow_subset": args.slow_subset,
                       "peer_subset": args.peer_subset, "smoothfool_sigmas": args.sigmas},
            "cases": [r for r in results if r is not None],
            "smoothfool": [r for r in sf if r is not None],
            "targets": targets([r for r in results if r], [r for r in sf if r])}
