"""advsmooth's own DeepFool options, measured against each other (no peers needed).

Three tables behind the choices documented in docs/deepfool.md:

1. **Linearisation point**: ``linearize_with_overshoot`` True (default, LTS4 Python / Foolbox)
   vs False (the paper's pseudo-code): success, median L2, the paired per-image median ratio,
   mean iterations — exact faces, every correctly classified image of each case.
2. **Chunks and memory layout**: the same exact computation with the whole active set at once,
   chunks of 128 / 256, and chunks of 128 with channels-last inputs: wall time (median of
   ``--repeats`` interleaved repeats) and the largest per-image L2 difference to the first.
3. **Nearest faces and the box**: ``faces="nearest"`` (default) vs ``faces="all"`` (the
   paper's every face): paired median ratio, its range, identical iterations, gradients per
   image; and with ``clip=True``, ``box="project"`` (default) vs ``box="clamp"`` (the paper's
   step then a clamp) — on the standard models (L2) and on the adversarially trained
   ``mnist-lenet-pgd`` (L2 and L∞), where face normals change fastest.
4. **Clamped steps before the box-constrained ones** (``--sections box_steps``): with
   ``clip=True, box="project"``, 0, 1 or 2 (the default) clamped steps before the projected
   ones, against ``box="clamp"``: paired median L2, iterations and passes per image, with the
   unclipped run's passes; seeded 150-image test samples of ``mnist-lenet``, ``digits-lenet``
   and ``cifar10-resnet20`` (the table in docs/deepfool.md). Also the slack of each result: the
   smallest scale ``s`` (bisection, 30 halvings) such that ``x + s·(x_adv − x)`` is still
   misclassified, its per-image median, and the per-image median ratio to the clamp once both
   are scaled back to their own ``s`` (how much of the difference is the last step's landing
   beyond the boundary rather than the direction of the perturbation).

Cases: ``digits-lenet`` (embedded digits, always), ``mnist-lenet``, ``mnist-lenet-pgd`` and
``cifar10-resnet20`` (need ../shared; skipped cleanly without it). DeepFool: overshoot 0.02,
50 iterations, 10 candidates.

Run:  .venv/bin/python benchmarks/deepfool_variants.py [--quick] [--repeats 3]
          [--sections linearisation,layouts,faces_box,box_steps]
Writes benchmarks/results/deepfool_variants.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as H  # noqa: E402
import bench_deepfool as BD  # noqa: E402

import advsmooth as asm  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
DF = {"overshoot": 0.02, "max_iter": 50, "candidates": 10}

#: name, model, dataset, load kwargs, shared files needed: the deepfool suite's cases plus an
#: adversarially trained model, where the nearest-face test falls back most often
CASES = [*BD.CASES,
         ("mnist-pgd", "mnist-lenet-pgd", "mnist", {"sample": 300, "seed": 1},
          ["data/mnist_test.npz", "models/mnist_lenet_pgdadv.pt"])]


def _load(case: tuple, limit: int | None) -> tuple[Any, torch.Tensor, torch.Tensor] | None:
    name, model_name, dataset, kw, needs = case
    if any(not (H.SHARED / p).exists() for p in needs):
        return None
    model = H.frozen(asm.models.load(model_name))
    x, y = asm.data.load(dataset, "test", **kw)
    ok = H.predict(model, x) == y
    x, y = x[ok], y[ok]
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return model, x.contiguous(), y.contiguous()


def _norm(res: Any, p: float) -> torch.Tensor:
    return res.norms(p)


def _paired(res: Any, ref: Any, p: float) -> dict[str, float]:
    ok = res.success & ref.success & ~ref.skipped
    a, b = _norm(res, p)[ok], _norm(ref, p)[ok]
    ratio = a / b.clamp_min(1e-12)
    return {"paired_median_ratio": float(a.median() / b.median()) if ok.any() else float("nan"),
            "per_image_min": float(ratio.min()) if ok.any() else float("nan"),
            "per_image_max": float(ratio.max()) if ok.any() else float("nan")}


def _summary(res: Any, p: float) -> dict[str, float]:
    att = ~res.skipped
    return {"success_rate": float(res.success[att].float().mean()),
            "median_norm": float(_norm(res, p)[res.success & att].median()),
            "mean_iterations": float(res.iterations[att].double().mean()),
            "grad_per_image": float(res.grad_evals[att].double().mean()),
            "forward_per_image": float(res.forward_evals[att].double().mean())}


def linearisation(cases: dict[str, tuple], log: Any) -> list[dict[str, Any]]:
    rows = []
    for name, (model, x, y) in cases.items():
        if name == "mnist-pgd":
            continue
        out = {lwo: asm.attacks.DeepFool(linearize_with_overshoot=lwo, **DF)(model, x, y)
               for lwo in (False, True)}
        for lwo, res in out.items():
            row = {"case": name, "n": int(x.shape[0]),
                   "linearize_with_overshoot": lwo, **_summary(res, 2.0)}
            if lwo:
                row.update(_paired(res, out[False], 2.0))
            rows.append(row)
        log(f"  linearisation {name}: paired {rows[-1]['paired_median_ratio']:.4f}")
    return rows


LAYOUTS = {
    "whole active set": {"chunk_size": None, "channels_last": False},
    "chunks of 128": {"chunk_size": 128, "channels_last": False},
    "chunks of 256": {"chunk_size": 256, "channels_last": False},
    "chunks of 128 + channels-last (default)": {"chunk_size": 128, "channels_last": None},
}


def layouts(cases: dict[str, tuple], repeats: int, log: Any) -> list[dict[str, Any]]:
    rows = []
    for name, (model, x, y) in cases.items():
        if name == "mnist-pgd":
            continue
        atks = {k: asm.attacks.DeepFool(faces="all", **kw, **DF)
                for k, kw in LAYOUTS.items()}
        jobs = {k: (lambda a=a, m=model, xx=x, yy=y: a(m, xx, yy)) for k, a in atks.items()}
        warm = {k: (lambda a=a, m=model, xx=x[:8], yy=y[:8]: a(m, xx, yy))
                for k, a in atks.items()}
        times, outs = H.interleaved(jobs, repeats, warm, log)
        ref = outs["whole active set"]
        base = H.median(times["whole active set"])
        for k in LAYOUTS:
            diff = (_norm(outs[k], 2.0) - _norm(ref, 2.0)).abs() / _norm(ref, 2.0).clamp_min(1e-12)
            rows.append({"case": name, "n": int(x.shape[0]), "layout": k,
                         "seconds": H.median(times[k]), "times": times[k],
                         "time_vs_whole": H.median(times[k]) / base,
                         "max_rel_l2_diff": float(diff[~ref.skipped].max()),
                         "success_rate": float(outs[k].success.float().mean())})
    return rows


#: the faces/box variants, each with its reference
FACES_BOX = {
    "faces=nearest": ({}, {"faces": "all"}),
    "clip, box=project": ({"clip": True}, {"clip": True, "box": "clamp"}),
    "clip, box=project, faces=all": ({"clip": True, "faces": "all"},
                                     {"clip": True, "box": "clamp", "faces": "all"}),
}


def faces_and_box(cases: dict[str, tuple], log: Any) -> list[dict[str, Any]]:
    rows = []
    settings = [(name, 2.0) for name in cases if name != "mnist-pgd"]
    if "mnist-pgd" in cases:
        settings += [("mnist-pgd", 2.0), ("mnist-pgd", float("inf"))]
    for name, p in settings:
        model, x, y = cases[name]
        norm: Any = "inf" if p == float("inf") else 2
        done: dict[str, Any] = {}
        for variant, (kw, ref_kw) in FACES_BOX.items():
            for k in (kw, ref_kw):
                if repr(k) not in done:
                    done[repr(k)] = asm.attacks.DeepFool(norm=norm, **k, **DF)(model, x, y)
            res, ref = done[repr(kw)], done[repr(ref_kw)]
            rows.append({"case": name, "norm": norm, "n": int(x.shape[0]), "variant": variant,
                         "reference": ", ".join(f"{k}={v}" for k, v in ref_kw.items()),
                         **_summary(res, p), **_paired(res, ref, p),
                         "ref_mean_iterations": float(ref.iterations.double().mean()),
                         "ref_grad_per_image": float(ref.grad_evals.double().mean()),
                         "same_iterations": bool(torch.equal(res.iterations, ref.iterations))})
            log(f"  {name} L{norm} {variant}: paired {rows[-1]['paired_median_ratio']:.4f}, "
                f"grads {rows[-1]['grad_per_image']:.2f} vs {rows[-1]['ref_grad_per_image']:.2f}")
    return rows


#: models of the clamped-steps table, on seeded 150-image test samples
BOX_STEP_CASES = [("mnist-lenet", "mnist", ["data/mnist_test.npz", "models/mnist_lenet_clean.pt"]),
                  ("digits-lenet", "digits", []),
                  ("cifar10-resnet20", "cifar10",
                   ["data/cifar10_test.npz", "models/cifar10_resnet20.pt"])]


def _tight_scale(model: Any, res: Any, halvings: int = 30) -> torch.Tensor:
    """Per image, the smallest ``s`` in (0, 1] (to ``2⁻³⁰``) with ``x + s·(x_adv − x)`` (in
    [0, 1]) still misclassified: how far ``x_adv`` lies beyond the boundary along its own
    perturbation; 1 for an image the attack did not fool."""
    d = res.x_adv - res.x
    lo, hi = torch.zeros(d.shape[0]), torch.ones(d.shape[0])
    with torch.no_grad():
        for _ in range(halvings):
            mid = (lo + hi) / 2
            adv = model((res.x + mid.view(-1, 1, 1, 1) * d).clamp(0, 1)).argmax(1) != res.labels
            hi, lo = torch.where(adv, mid, hi), torch.where(adv, lo, mid)
    return hi


def box_steps(quick: bool, log: Any) -> list[dict[str, Any]]:
    """Section 4: 0 / 1 / 2 clamped steps before the box-constrained ones, against the clamp."""
    from advsmooth.attacks import deepfool as D
    rows = []
    default = D._CLAMPED_STEPS
    for name, ds, needs in BOX_STEP_CASES[1:2] if quick else BOX_STEP_CASES:
        if any(not (H.SHARED / p).exists() for p in needs):
            log(f"  skip {name}: ../shared missing")
            continue
        model = H.frozen(asm.models.load(name))
        x, y = asm.data.load(ds, "test", sample=8 if quick else 150, seed=0)
        clamp = asm.attacks.DeepFool(clip=True, box="clamp", **DF)(model, x, y)
        plain = asm.attacks.DeepFool(**DF)(model, x, y)
        ok = ~clamp.skipped
        clamp_tight = _tight_scale(model, clamp)

        def passes(r: Any, ok: torch.Tensor = ok) -> float:
            return float((r.forward_evals + r.grad_evals)[ok].double().mean())
        try:
            for k in (0, 1, 2):
                D._CLAMPED_STEPS = k
                res = asm.attacks.DeepFool(clip=True, **DF)(model, x, y)
                ratio = res.norms(2)[ok] / clamp.norms(2)[ok]
                tight = _tight_scale(model, res)
                rows.append({"case": name, "n": int(ok.sum()), "clamped_steps": k,
                             "default": k == default,
                             "success_rate": float(res.success[ok].double().mean()),
                             "per_image_median_vs_clamp": float(ratio.median()),
                             "paired_median_ratio": float(res.norms(2)[ok].median()
                                                          / clamp.norms(2)[ok].median()),
                             "mean_iterations": float(res.iterations[ok].double().mean()),
                             "passes_per_image": passes(res),
                             "clamp_iterations": float(clamp.iterations[ok].double().mean()),
                             "clamp_passes": passes(clamp), "unclipped_passes": passes(plain),
                             "median_slack": float(1 - tight[ok].median()),
                             "clamp_median_slack": float(1 - clamp_tight[ok].median()),
                             "tightened_median_vs_clamp": float(
                                 (ratio * tight[ok] / clamp_tight[ok]).median())})
                log(f"  {name} {k} clamped steps: {rows[-1]['per_image_median_vs_clamp']:.4f} "
                    f"of the clamp, {rows[-1]['passes_per_image']:.1f} passes")
        finally:
            D._CLAMPED_STEPS = default
    return rows


def markdown(payload: dict[str, Any]) -> str:
    lines = ["# DeepFool variants (advsmooth only)", "",
             "DeepFool L2 unless stated, overshoot 0.02, 50 iterations, 10 candidates, correctly "
             "classified images only. Paired ratios: median norm of the variant over the median "
             "norm of the reference, on the images both fooled; per-image min/max of the same "
             "ratio.", "", H.machine_md(payload["machine"]), "",
             "## Linearisation point (reference: linearize_with_overshoot=False, the paper)", "",
             H.md_table(payload["linearisation"], [
                 ("case", "case"), ("n", "images"),
                 ("linearize_with_overshoot", "linearize_with_overshoot"),
                 ("success_rate", "success"), ("median_norm", "median L2"),
                 ("paired_median_ratio", "paired median ÷ paper point"),
                 ("per_image_min", "per-image min"), ("per_image_max", "per-image max"),
                 ("mean_iterations", "iterations"), ("grad_per_image", "gradients / image")]),
             "", f"## Chunks and memory layout ({payload['config']['repeats']} interleaved "
             "repeats, median wall time)", "",
             H.md_table(payload["layouts"], [
                 ("case", "case"), ("n", "images"), ("layout", "layout"),
                 ("seconds", "wall time (s)"), ("time_vs_whole", "÷ whole active set"),
                 ("max_rel_l2_diff", "max per-image relative L2 difference"),
                 ("success_rate", "success")]),
             "", "## Nearest faces and the box (each variant over its reference)", "",
             H.md_table(payload["faces_box"], [
                 ("case", "case"), ("norm", "norm"), ("n", "images"), ("variant", "variant"),
                 ("reference", "reference"), ("success_rate", "success"),
                 ("median_norm", "median norm"), ("paired_median_ratio", "paired median ÷ ref"),
                 ("per_image_min", "per-image min"), ("per_image_max", "per-image max"),
                 ("mean_iterations", "iterations"), ("ref_mean_iterations", "ref iterations"),
                 ("same_iterations", "same iterations"),
                 ("grad_per_image", "gradients / image"),
                 ("ref_grad_per_image", "ref gradients / image"),
                 ("forward_per_image", "forwards / image")]), "",
             "## Clamped steps before the box-constrained ones (clip=True; reference: "
             "box=\"clamp\")", "",
             H.md_table(payload["box_steps"], [
                 ("case", "case"), ("n", "images"), ("clamped_steps", "clamped steps"),
                 ("default", "default"), ("success_rate", "success"),
                 ("per_image_median_vs_clamp", "per-image median ÷ clamp"),
                 ("paired_median_ratio", "paired median ÷ clamp"),
                 ("mean_iterations", "iterations"), ("passes_per_image", "passes / image"),
                 ("clamp_iterations", "clamp iterations"), ("clamp_passes", "clamp passes"),
                 ("unclipped_passes", "unclipped passes"), ("median_slack", "slack (median)"),
                 ("clamp_median_slack", "clamp slack"),
                 ("tightened_median_vs_clamp", "per-image median ÷ clamp, both tightened")]),
             "", "Slack: 1 − the smallest scale of x_adv − x that is still misclassified "
             "(per-image median).", ""]
    return "\n".join(lines)


SECTIONS = ("linearisation", "layouts", "faces_box", "box_steps")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 digits images, 1 repeat (smoke test)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="comma list of " + ",".join(SECTIONS))
    args = ap.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    torch.set_num_threads(args.threads)
    info = H.machine_info(args.threads)
    t0 = time.perf_counter()
    limit = 8 if args.quick else None
    repeats = 1 if args.quick else args.repeats
    todo = CASES[:1] if args.quick else CASES
    if not {"linearisation", "layouts", "faces_box"} & set(sections):
        todo = []  # box_steps loads its own samples
    cases = {}
    for c in todo:
        loaded = _load(c, limit)
        if loaded is None:
            print(f"  skip {c[0]}: ../shared missing", flush=True)
            continue
        cases[c[0]] = loaded
    payload: dict[str, Any] = {
        "suite": "deepfool_variants",
        "config": {"deepfool": DF, "repeats": repeats, "quick": args.quick,
                   "cases": list(cases)},
        "linearisation": linearisation(cases, print) if "linearisation" in sections else [],
        "layouts": layouts(cases, repeats, print) if "layouts" in sections else [],
        "faces_box": faces_and_box(cases, print) if "faces_box" in sections else [],
        "box_steps": box_steps(args.quick, print) if "box_steps" in sections else [],
    }
    info["suite_seconds"] = round(time.perf_counter() - t0, 1)
    info["loadavg_end"] = H.loadavg()
    payload["machine"] = info
    # a subset of the sections is written beside the full run's files, not over them
    name = ("deepfool_variants" if set(sections) == set(SECTIONS)
            else "deepfool_variants_" + "_".join(sections))
    jp, mp = H.write_outputs(Path(args.out), name, payload, markdown(payload))
    print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
