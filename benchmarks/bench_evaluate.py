"""Benchmark: ``advsmooth.evaluate`` against AutoAttack (torchattacks) — robust accuracy and time.

Usage (from the repository root, in the peers environment; installs nothing)::

    PYTHONPATH=src .venv-peers/bin/python benchmarks/bench_evaluate.py \
        --config mnist-lenet-pgd [--autoattack run|cached|skip] [--threads 2]

Per configuration (model, data, images, norm, ε grid, the ε AutoAttack is run at):

* **AutoAttack** "standard" (APGD-CE, APGD-T, FAB-T, Square; torchattacks 3.5.1, seed 0), one
  run per ε listed in ``aa_eps``; its robust accuracy, per-sample robust mask and wall time are
  saved to ``benchmarks/results/evaluate_autoattack_<config>.json`` and reused by later runs
  (``--autoattack cached``); ``run`` recomputes them in this process, side by side with advsmooth.
* **advsmooth.evaluate** over the whole ε grid in one call (ascending; fooled samples leave).
* **PGD-40** (random start, ℓ∞ α = ε/30, i.e. α = 0.01 at ε = 0.3; ℓ2 α = ε/8) at the
  largest AutoAttack ε, timed in the same process as each of the above: on a loaded machine the
  ratio of a method's time to PGD-40's time in the same process is comparable across processes.

Robust accuracy is judged by the shared evaluation function (:func:`_harness.evaluate`) on each
library's returned images, never by the library's own claim; every advsmooth ``x_adv`` is checked
against ε and ``[0, 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
os.environ.setdefault("ADVSMOOTH_NO_PROGRESS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import _harness as H  # noqa: E402
import torch  # noqa: E402

#: name -> model, dataset, images (first n), norm, ε grid, ε values AutoAttack is run at
CONFIGS: dict[str, dict[str, Any]] = {
    "mnist-lenet-pgd": {"model": "mnist-lenet-pgd", "data": "mnist", "n": 500, "norm": "inf",
                        "eps": [0.1, 0.2, 0.3, 0.4], "aa_eps": [0.3]},
    "mnist-lenet": {"model": "mnist-lenet", "data": "mnist", "n": 1000, "norm": "inf",
                    "eps": [0.05, 0.1, 0.2, 0.3], "aa_eps": [0.05, 0.1, 0.2, 0.3]},
    "cifar10-resnet20": {"model": "cifar10-resnet20", "data": "cifar10", "n": 500,
                         "norm": "inf", "eps": [1 / 255, 2 / 255, 4 / 255, 8 / 255],
                         "aa_eps": [1 / 255, 2 / 255, 4 / 255, 8 / 255]},
    "mnist-lenet-pgd-l2": {"model": "mnist-lenet-pgd", "data": "mnist", "n": 500, "norm": "2",
                           "eps": [2.0], "aa_eps": [2.0]},
    "cifar10-resnet20-l2": {"model": "cifar10-resnet20", "data": "cifar10", "n": 500,
                            "norm": "2", "eps": [0.5], "aa_eps": [0.5]},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def timed_cpu(fn: Any) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process — all threads —, result): on a shared,
    overloaded machine the CPU time is the fairer measure of the work done."""
    c0 = time.process_time()
    t, out = H.timed(fn)
    return t, time.process_time() - c0, out


def load_case(cfg: dict[str, Any]) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    import advsmooth as asm

    model = H.frozen(asm.models.load(cfg["model"]))
    kw = {"n": cfg["n"]} if cfg["data"] == "mnist" else {"sample": cfg["n"], "seed": 0}
    x, y = asm.data.load(cfg["data"], "test", **kw)
    return model, x, y


def pgd40(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
          norm: str) -> tuple[float, float]:
    """The reference PGD-40 (random start; ℓ∞ α = ε/30, ℓ2 α = ε/8): (seconds, robust acc)."""
    import advsmooth as asm

    alpha = eps / 30 if norm == "inf" else eps / 8
    atk = asm.attacks.PGD(eps=eps, alpha=alpha, steps=40, norm=norm, random_start=True)
    t, res = H.timed(lambda: asm.attacks.run_batched(atk, model, x, y, batch_size=500,
                                                      progress_bar=False))
    ok = H.evaluate(model, x, y, res.x_adv)["_ok"]
    return t, float((~ok).double().mean())


def run_autoattack(cfg: dict[str, Any], model: torch.nn.Module, x: torch.Tensor,
                   y: torch.Tensor) -> dict[str, Any]:
    import torchattacks

    out: dict[str, Any] = {"eps": {}}
    clean = H.predict(model, x) == y
    out["clean_accuracy"] = float(clean.double().mean())
    for eps in cfg["aa_eps"]:
        norm = "Linf" if cfg["norm"] == "inf" else "L2"
        aa = torchattacks.AutoAttack(model, norm=norm, eps=eps, version="standard",
                                     n_classes=10, seed=0)
        t, cpu, x_adv = timed_cpu(lambda aa=aa: torch.cat([aa(x[i:i + 500], y[i:i + 500])
                                                           for i in range(0, x.shape[0], 500)]))
        ev = H.evaluate(model, x, y, x_adv)
        robust = (~ev["_ok"]) & clean
        out["eps"][f"{eps:.6g}"] = {"robust_accuracy": float(robust.double().mean()),
                                    "seconds": t, "cpu_seconds": cpu,
                                    "robust_mask": robust.int().tolist()}
        log(f"  AutoAttack eps={eps:.4g}: robust {robust.double().mean():.1%} in {t:.1f} s "
            f"({cpu:.1f} CPU s)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/bench_evaluate.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="mnist-lenet-pgd")
    p.add_argument("--autoattack", choices=("run", "cached", "skip"), default="cached",
                   help="run AutoAttack here, reuse its saved result, or leave it out")
    p.add_argument("--only-autoattack", action="store_true",
                   help="stop after the AutoAttack part (with --autoattack run)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", choices=("both", "single", "grid"), default="both",
                   help="advsmooth at AutoAttack's largest eps alone, over the grid, or both")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = CONFIGS[args.config]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    aa_path = out_dir / f"evaluate_autoattack_{args.config}.json"
    model, x, y = load_case(cfg)
    log(f"{args.config}: {x.shape[0]} images, norm {cfg['norm']}, eps {cfg['eps']}")
    ref_eps = max(cfg["aa_eps"])
    if args.autoattack == "run":
        info = H.machine_info(args.threads)
        t_ref, acc_ref = pgd40(model, x, y, ref_eps, cfg["norm"])
        log(f"  PGD-40 reference: {t_ref:.1f} s, robust {acc_ref:.1%}")
        aa = run_autoattack(cfg, model, x, y)
        aa.update(config=args.config, pgd40_seconds=t_ref, pgd40_robust_accuracy=acc_ref,
                  machine=info, loadavg_end=H.loadavg())
        aa_path.write_text(json.dumps(aa, indent=1) + "\n")
        log(f"  wrote {aa_path}")
    if args.autoattack != "skip" and not aa_path.exists():
        log(f"  no saved AutoAttack result ({aa_path}); run with --autoattack run")
        return 1
    if args.only_autoattack:
        return 0
    return _advsmooth_part(args, cfg, model, x, y, aa_path, ref_eps)


def _advsmooth_part(args: argparse.Namespace, cfg: dict[str, Any], model: torch.nn.Module,
                    x: torch.Tensor, y: torch.Tensor, aa_path: Path, ref_eps: float) -> int:
    import advsmooth as asm

    info = H.machine_info(args.threads)
    t_before, acc_ref = pgd40(model, x, y, ref_eps, cfg["norm"])
    log(f"  PGD-40 reference: {t_before:.1f} s, robust {acc_ref:.1%}")
    clean = H.predict(model, x) == y
    runs: dict[str, Any] = {}
    for label, radii in (("single", [ref_eps]), ("grid", cfg["eps"])):
        if (label == "grid" and radii == [ref_eps]) or args.runs not in ("both", label):
            continue
        t, cpu, rep = timed_cpu(lambda radii=radii: asm.evaluate(
            model, x, y, norm=cfg["norm"], eps=radii, keep_images=True, seed=0))
        judged = {}
        for i, e in enumerate(rep.eps):
            assert rep.images is not None
            r = rep.images[i] - x
            size = (r.flatten(1).abs().amax(1) if cfg["norm"] == "inf"
                    else r.flatten(1).double().norm(dim=1))
            assert bool((size <= e + 1e-6).all()), "an image left the eps-ball"
            ok = H.evaluate(model, x, y, rep.images[i])["_ok"]
            robust = (~ok) & clean
            if not torch.equal(robust, rep.robust[i]):
                log(f"  WARNING: the shared judge disagrees with the report at eps={e:.4g}")
            judged[f"{e:.6g}"] = {"robust_accuracy": float(robust.double().mean()),
                                  "robust_mask": robust.int().tolist()}
        runs[label] = {"seconds": t, "cpu_seconds": cpu, "eps": judged,
                       "report": rep.to_dict()}
        log(f"  advsmooth.evaluate {label} ({', '.join(f'{e:.4g}' for e in rep.eps)}): "
            f"{t:.1f} s ({cpu:.1f} CPU s); robust "
            + ", ".join(f"{v['robust_accuracy']:.1%}" for v in judged.values()))
        log("    stages at the largest eps: " + "; ".join(
            f"{s['stage']} fooled {s['fooled']} in {s['seconds']:.1f} s"
            for s in rep.stages if s["eps"] == rep.eps[-1]))
        log("    flags raised: " + (", ".join(f.name for f in rep.flags if f.raised) or "none"))
        # partial results survive a run cut short (the grid takes longest)
        partial = Path(args.out) / f"evaluate_{args.config}.partial.json"
        partial.write_text(json.dumps({"config": args.config, "pgd40_seconds": [t_before],
                                       "advsmooth": runs}, indent=1) + "\n")
    t_after, _ = pgd40(model, x, y, ref_eps, cfg["norm"])
    log(f"  PGD-40 reference again: {t_after:.1f} s")
    payload: dict[str, Any] = {"config": args.config, "settings": cfg, "machine": info,
                               "loadavg_end": H.loadavg(), "pgd40_seconds": [t_before, t_after],
                               "pgd40_robust_accuracy": acc_ref, "advsmooth": runs}
    rows = []
    if aa_path.exists():
        aa = json.loads(aa_path.read_text())
        payload["autoattack"] = {k: v for k, v in aa.items() if k != "eps"}
        payload["autoattack"]["eps"] = {e: {k: v for k, v in d.items() if k != "robust_mask"}
                                        for e, d in aa["eps"].items()}
        pgd_aa = aa.get("pgd40_seconds")
        pgd_us = sum(payload["pgd40_seconds"]) / 2
        for e, d in aa["eps"].items():
            ours_single = runs["single"]["eps"].get(e) if "single" in runs else None
            ours_grid = (runs.get("grid") or runs["single"])["eps"].get(e)
            row: dict[str, Any] = {"eps": e, "autoattack": d["robust_accuracy"],
                                   "aa_seconds": d["seconds"]}
            for lab, ours in (("single", ours_single), ("grid", ours_grid)):
                if ours is None:
                    continue
                mine = torch.tensor(ours["robust_mask"], dtype=torch.bool)
                theirs = torch.tensor(d["robust_mask"], dtype=torch.bool)
                row[f"{lab}_acc"] = ours["robust_accuracy"]
                row[f"{lab}_missed"] = int((mine & ~theirs).sum())   # AA fooled, we did not
                row[f"{lab}_extra"] = int((~mine & theirs).sum())    # we fooled, AA did not
            if "single" not in runs:
                row["grid_seconds"] = runs["grid"]["seconds"]
                rows.append(row)
                continue
            row["single_seconds"] = runs["single"]["seconds"]
            row["grid_seconds"] = runs.get("grid", runs["single"])["seconds"]
            row["time_ratio"] = row["single_seconds"] / d["seconds"]
            if d.get("cpu_seconds"):
                row["aa_cpu_seconds"] = d["cpu_seconds"]
                row["single_cpu_seconds"] = runs["single"]["cpu_seconds"]
                row["cpu_ratio"] = row["single_cpu_seconds"] / d["cpu_seconds"]
            if pgd_aa:
                row["time_ratio_pgd_normalised"] = ((row["single_seconds"] / pgd_us)
                                                    / (d["seconds"] / pgd_aa))
            rows.append(row)
        payload["comparison"] = rows
    out = Path(args.out)
    stem = f"evaluate_{args.config}" + ("" if args.runs == "both" else f"_{args.runs}")
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / f"evaluate_{args.config}.partial.json").unlink(missing_ok=True)
    md = [f"## evaluate vs AutoAttack: {args.config}", "",
          H.md_table(rows, [("eps", "ε"), ("autoattack", "AutoAttack robust acc."),
                            ("single_acc", "evaluate (ε alone)"), ("grid_acc", "evaluate (grid)"),
                            ("single_missed", "AA fooled, evaluate not"),
                            ("aa_seconds", "AA s"), ("single_seconds", "evaluate s"),
                            ("grid_seconds", "grid s"), ("time_ratio", "time ratio"),
                            ("cpu_ratio", "CPU-time ratio"),
                            ("time_ratio_pgd_normalised", "ratio (PGD-normalised)")]), "",
          H.machine_md({**info, "loadavg_end": H.loadavg()})]
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    log("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
