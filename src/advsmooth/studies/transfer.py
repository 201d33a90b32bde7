"""Transferability study (seed 001, "Exploring and Enhancing the Transferability of Adversarial
Examples"): analogues of its Tables 1–5 and Figures 1, 3–5 (ALGORITHMS.md §18.2).

Entry point: :func:`run_transfer_study` ``(preset, out_dir, n, seed) -> dict`` (also the
``advsmooth transfer`` command). Everything is written into ``out_dir``: one Markdown and one CSV
file per table, PNG figures, ``results.json`` (all numbers) and ``summary.md`` (all tables).

Presets
-------
``"digits"`` (embedded data, no ``../shared`` needed). Models: the zoo models ``digits-lenet``,
``digits-resnet20``, ``digits-fc`` (MLP 300-100) and fully connected nets of depth
D ∈ {0, 2, 4, 8} and width 500 (``fc-d0`` … ``fc-d8``; trained here through
``models.create`` + ``defenses.train`` and cached under ``cache_dir()/studies``). Evaluation set:
a seeded random subset of ``n`` (default 200) digits test images that every model classifies
correctly. Budgets are the seed's MNIST value ε = 40/255 (Table 2a) with the seed's ImageNet
ratios carried over (α = ε/3 for T = 5, α = ε/15 for T = 100, σ = ε):

* ``table1_{fgsm,igsm,sg_igsm}`` — 7×7 top-1 transfer matrices: FGSM; IGSM T = 5; sg-IGSM T = 5,
  m = 20 (Table 1);
* ``table2a_fgsm_fc_depth`` — FGSM among the FC nets of depth 0/2/4/8 (Table 2a);
* ``table3_{igsm_t100,sg_igsm_t5_m20}`` — equal budget of 100 gradient evaluations per image:
  IGSM T = 100 vs sg-IGSM T = 5, m = 20 (Table 3);
* ``table4_{igsm,sg_igsm}_targeted_ens*`` — targeted attacks from ensembles (mean logits),
  ε = 56/255, α = 0.75 ε, T = 20, top-1 and top-5 (Tables 4/7; ensemble members marked
  white-box);
* ``table5_{migsm,sg_igsm,sg_migsm}`` — momentum variants, μ = 1, T = 5 (Table 5);
* ``fig1_model_factors.png`` — source error vs #params coloured by IGSM transfer to
  ``digits-resnet20`` (Figure 1);
* ``fig3a_gradient_similarity.png`` — cos(G_A^(m), g_B) vs m (Figure 3a);
* ``fig3b_decision_boundary.png`` (+ ``fig9_…_sign.png``) — decision-boundary maps of every model
  in the (Ĝ, ĥ) plane of ``digits-lenet`` (Figures 3b / 9);
* ``fig4a_sg_fgsm_vs_eps.png`` / ``fig4b_sg_fgsm_vs_sigma.png`` — sg-FGSM transfer success vs ε for
  several m, and vs σ at m = 30 (Figure 4);
* ``fig5_destruction_{rotation,noise,blur,jpeg}.png`` — destruction rates of FGSM, IGSM T = 10/30,
  sg-FGSM, sg-IGSM T = 10/30 (source ``digits-lenet``, target ``digits-resnet20``; Figure 5).

``"cifar10"`` (needs the shared CIFAR-10 test set and ResNet checkpoints, e.g. ``../shared``):

* ``table2b_fgsm_eps10`` — FGSM ε = 10/255 transfer matrix among ResNet-20/32/44/56 (Table 2b) on
  ``n`` (default 500) images correctly classified by all four;
* ``table3_{igsm_t100,sg_igsm_t5_m20}`` — IGSM (T = 100, α = 1/255) vs sg-IGSM (T = 5,
  α = 5/255, m = 20, σ = 15/255), ε = 15/255, equal budget of 100 gradient evaluations per
  image, on a seeded subset of ``budget_n`` (default 64) of those images, from the sources
  ``budget_sources`` (default ResNet-20 only, sized for ≈10 minutes on 2 CPU cores) to all four.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._utils import atomic_path, cache_dir, check_choice, check_int_at_least, make_generator
from ..attacks import FGSM, IGSM, MIFGSM, SmoothedGradient
from ..attacks.base import Attack
from ..metrics.transfer import (
    TransferMatrix,
    correct_by_all,
    decision_boundary_map,
    destruction_curve,
    gradient_similarity,
    transfer_matrix,
)
from ..metrics.transforms import default_strengths

__all__ = ["run_transfer_study", "PRESETS", "digits_fc", "FC_DEPTHS"]

PRESETS = ("digits", "cifar10")
DIGITS_PARTS = ("tables", "fig3", "fig4", "fig5")
FC_DEPTHS = (0, 2, 4, 8)
FC_WIDTH = 500
_FC_RECIPE = {"epochs": 30, "lr": 1e-3, "batch_size": 64, "optimizer": "adam", "seed": 0,
              "version": 1}


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------

def digits_fc(depth: int, *, width: int = FC_WIDTH, retrain: bool = False,
              verbose: bool = False) -> nn.Module:
    """Fully connected digits classifier with ``depth`` hidden layers of ``width`` units (the
    seed's MNIST FC nets), trained on the embedded digits train split on first use and cached
    under ``cache_dir()/studies``. Returns the model in eval mode."""
    from .. import data, defenses

    check_int_at_least("depth", depth, 0)
    path = cache_dir() / "studies" / f"digits-fc-d{depth}-w{width}.pt"
    net = _fc_net(depth, width)
    if path.exists() and not retrain:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("recipe") == _FC_RECIPE:
            net.load_state_dict(blob["state_dict"])
            return net.eval()
    if verbose:
        print(f"training digits FC depth {depth} width {width} (cached at {path})",
              file=sys.stderr)
    x, y = data.load("digits", split="train")
    r = _FC_RECIPE
    defenses.train(net, (x, y), epochs=r["epochs"], lr=r["lr"], batch_size=r["batch_size"],
                   optimizer=r["optimizer"], seed=r["seed"], show_progress=False)
    with atomic_path(path) as tmp:
        torch.save({"state_dict": net.state_dict(), "recipe": dict(_FC_RECIPE)}, tmp)
    return net.eval()


def _fc_net(depth: int, width: int) -> nn.Module:
    from .. import models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 + depth)
        return models.create("mlp", (1, 28, 28), 10, hidden=(width,) * depth)


def _num_params(m: nn.Module) -> int:
    return int(sum(p.numel() for p in m.parameters()))


@torch.no_grad()
def _accuracy(m: nn.Module, x: Tensor, y: Tensor, bs: int = 500) -> float:
    was = m.training
    m.eval()
    try:
        pred = torch.cat([m(x[s:s + bs]).argmax(1) for s in range(0, x.shape[0], bs)])
    finally:
        m.train(was)
    return float((pred == y).double().mean())


# ----------------------------------------------------------------------------------------------
# output helpers
# ----------------------------------------------------------------------------------------------

def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class _Writer:
    def __init__(self, out: Path, log: Callable[[str], None]) -> None:
        self.out = out
        self.log = log
        self.tables: dict[str, Any] = {}
        self.figures: dict[str, str] = {}
        self.md: list[str] = []
        self.t0 = time.perf_counter()

    def table(self, key: str, tm: TransferMatrix, title: str, metrics: Sequence[str] = ("top1",),
              extra: dict[str, Any] | None = None) -> None:
        parts = [tm.to_markdown(m, title=f"{title} — {m}") for m in metrics]
        md = "\n".join(parts)
        _write_text(self.out / f"{key}.md", md)
        _write_text(self.out / f"{key}.csv", tm.to_csv())
        entry = tm.to_dict()
        entry["title"] = title
        entry["black_box_mean_top1"] = tm.black_box_mean("top1").tolist()
        entry["black_box_mean_top5"] = tm.black_box_mean("top5").tolist()
        if extra:
            entry.update(extra)
        self.tables[key] = entry
        self.md.append(f"### {key}\n\n{md}")
        self.log(f"[{time.perf_counter() - self.t0:7.1f}s] {key}: n={tm.n}, "
                 f"black-box mean top-1 = {np.nanmean(tm.black_box_mean('top1')) * 100:.1f} %")

    def figure(self, key: str, path: Path) -> None:
        self.figures[key] = str(path)
        self.md.append(f"### {key}\n\n![{key}]({path.name})\n")
        self.log(f"[{time.perf_counter() - self.t0:7.1f}s] {key}: {path.name}")


def _plots() -> Any:
    try:
        from ..report import transfer_plots
        transfer_plots._plt()
        return transfer_plots
    except ImportError:  # matplotlib missing: tables only
        return None


def _subset_correct(models_: Sequence[nn.Module], x: Tensor, y: Tensor, n: int | None,
                    seed: int, pool: int | None = None) -> tuple[Tensor, Tensor]:
    """Seeded random subset of ``n`` images correct for every model (candidates drawn from a
    seeded random pool of ``pool`` images first, to bound the cost on big test sets)."""
    gen = make_generator(seed, "cpu")
    perm = torch.randperm(x.shape[0], generator=gen)
    if pool is not None:
        perm = perm[:pool]
    xs, ys = x[perm], y[perm]
    ok = correct_by_all(list(models_), xs, ys)
    idx = torch.nonzero(ok).flatten()
    if n is not None:
        idx = idx[:n]
    idx = idx.sort().values
    return xs[idx], ys[idx]


# ----------------------------------------------------------------------------------------------
# presets
# ----------------------------------------------------------------------------------------------

def _digits(out: Path, n: int | None, seed: int, w: _Writer, progress: bool,
            parts: set[str]) -> dict[str, Any]:
    from .. import data, models
    from ..models import Ensemble

    log = w.log
    named: dict[str, nn.Module] = {}
    for name in ("digits-lenet", "digits-resnet20", "digits-fc"):
        named[name] = models.load(name, verbose=False)
    for d in FC_DEPTHS:
        named[f"fc-d{d}"] = digits_fc(d, verbose=True)
    x_test, y_test = data.load("digits", split="test")
    info = {name: {"test_error": 100 * (1 - _accuracy(m, x_test, y_test)),
                   "params": _num_params(m)} for name, m in named.items()}
    log(f"[{time.perf_counter() - w.t0:7.1f}s] models ready: " + ", ".join(
        f"{k} err {v['test_error']:.1f}%" for k, v in info.items()))
    n = 200 if n is None else n
    x, y = _subset_correct(list(named.values()), x_test, y_test, n, seed)
    data_xy = (x, y)
    eps = 40 / 255
    sg = SmoothedGradient(sigma=eps, samples=20, chunk_size=10)
    tm_kw: dict[str, Any] = dict(seed=seed, batch_size=100, progress=progress)
    all_models = list(named.items())

    def run(key: str, title: str, sources: Any, targets: Any, atk: Attack,
            metrics: Sequence[str] = ("top1",), **kw: Any) -> TransferMatrix:
        tm = transfer_matrix(sources, targets, atk, data_xy, **tm_kw, **kw)
        w.table(key, tm, title, metrics)
        return tm

    if "tables" in parts:
        # Table 1 analogue
        t1 = {}
        for key, atk in (("fgsm", FGSM(eps=eps)),
                         ("igsm", IGSM(eps=eps, alpha=eps / 3, steps=5)),
                         ("sg_igsm", IGSM(eps=eps, alpha=eps / 3, steps=5, gradient=sg))):
            t1[key] = run(f"table1_{key}", f"Table 1 analogue: {key} (ε=40/255) top-1 transfer",
                          all_models, all_models, atk)
        # Table 2(a): FGSM across FC depth
        fcs = [(f"fc-d{d}", named[f"fc-d{d}"]) for d in FC_DEPTHS]
        run("table2a_fgsm_fc_depth", "Table 2(a) analogue: FGSM ε=40/255 among FC nets of depth "
            "0/2/4/8 (width 500)", fcs, fcs, FGSM(eps=eps))
        # Table 3: equal budget
        srcs3 = [(k, named[k]) for k in ("digits-lenet", "digits-resnet20", "digits-fc")]
        run("table3_igsm_t100", "Table 3 analogue: IGSM T=100, α=ε/15 (100 gradients/image)",
            srcs3, all_models, IGSM(eps=eps, alpha=eps / 15, budget=100))
        run("table3_sg_igsm_t5_m20", "Table 3 analogue: sg-IGSM T=5, m=20, α=ε/3, σ=ε "
            "(100 gradients/image)", srcs3, all_models,
            IGSM(eps=eps, alpha=eps / 3, budget=100, gradient=sg))
        # Table 4: targeted ensembles
        eps_t = 56 / 255
        ens = {
            "ens{lenet+fc-d2}": Ensemble([named["digits-lenet"], named["fc-d2"]]),
            "ens{lenet+fc+fc-d4}": Ensemble([named["digits-lenet"], named["digits-fc"],
                                             named["fc-d4"]]),
        }
        for key, atk in (("igsm", IGSM(eps=eps_t, alpha=0.75 * eps_t, steps=20)),
                         ("sg_igsm", IGSM(eps=eps_t, alpha=0.75 * eps_t, steps=20,
                                          gradient=SmoothedGradient(eps, 20, chunk_size=10)))):
            run(f"table4_{key}_targeted_ensembles",
                f"Table 4/7 analogue: targeted {key} from ensembles (mean logits), ε=56/255, "
                "α=0.75ε, T=20", list(ens.items()), all_models, atk, metrics=("top1", "top5"),
                targeted=True)
        # Table 5: momentum
        srcs5 = srcs3
        for key, atk in (("migsm", MIFGSM(eps=eps, alpha=eps / 3, steps=5, decay=1.0)),
                         ("sg_igsm", IGSM(eps=eps, alpha=eps / 3, steps=5, gradient=sg)),
                         ("sg_migsm", MIFGSM(eps=eps, alpha=eps / 3, steps=5, decay=1.0,
                                             gradient=sg))):
            run(f"table5_{key}", f"Table 5 analogue: {key}, μ=1, T=5, α=ε/3", srcs5, srcs5, atk)

    plots = _plots()
    results: dict[str, Any] = {"models": info, "eps": eps, "n": int(x.shape[0])}
    if "tables" in parts:
        # Figure 1: model factors (IGSM transfer to digits-resnet20 from Table 1)
        target = "digits-resnet20"
        tm = t1["igsm"]
        j = tm.targets.index(target)
        fac = [(s, info[s]["test_error"], info[s]["params"], float(tm.top1[i, j]) * 100)
               for i, s in enumerate(tm.sources) if s != target]
        results["fig1"] = [dict(zip(("source", "test_error", "params", "igsm_success"), f))
                           for f in fac]
        if plots:
            p = out / "fig1_model_factors.png"
            plots.plot_model_factors([f[0] for f in fac], [f[1] for f in fac], [f[2] for f in fac],
                                     [f[3] for f in fac], target=target, path=p,
                                     title=f"digits: IGSM (T=5) transfer to {target}")
            w.figure("fig1_model_factors", p)
    if "fig3" in parts:
        # Figure 3a: gradient similarity
        pairs = {"lenet→fc": ("digits-lenet", "digits-fc"),
                 "resnet20→lenet": ("digits-resnet20", "digits-lenet")}
        sims = {}
        for label, (a, b) in pairs.items():
            sims[label] = gradient_similarity(named[a], named[b], x[:20], y[:20], sigma=eps,
                                              ms=(1, 2, 5, 10, 20, 50, 100, 200), seed=seed)
        results["fig3a"] = {k: {"ms": v.ms, "cos": v.mean.tolist(), "baseline": v.baseline}
                            for k, v in sims.items()}
        if plots:
            p = out / "fig3a_gradient_similarity.png"
            plots.plot_gradient_similarity(sims, path=p,
                                           title="digits: cos(G_A^(m), g_B), σ=40/255")
            w.figure("fig3a_gradient_similarity", p)
        # Figure 3b / 9: decision boundaries. The unit directions of Fig. 3b span ±ε·√d in ℓ2
        # (the ℓ2 length of a corner of the ℓ∞ ε-ball, ≈ 3× the digits models' DeepFool
        # distances), the sign directions of Fig. 9 the ℓ∞ ball ±ε itself.
        l2_extent = eps * math.sqrt(x[0].numel())
        for sign, key in ((False, "fig3b_decision_boundary"),
                          (True, "fig9_decision_boundary_sign")):
            dbm = decision_boundary_map(named["digits-lenet"], all_models, x[0], int(y[0]),
                                        sigma=eps, samples=200,
                                        extent=eps if sign else l2_extent,
                                        resolution=61, sign=sign, seed=seed)
            results[key] = {"y": dbm.y, "cos_G_g": dbm.cos_g_h,
                            "fraction_true_class": {k: float((v == dbm.y).mean())
                                                    for k, v in dbm.labels.items()}}
            if plots:
                p = out / f"{key}.png"
                suffix = " (sign)" if sign else ""
                plots.plot_decision_boundary(dbm, path=p, title="digits: decision boundaries in "
                                             "the (G, h) plane of digits-lenet" + suffix)
                w.figure(key, p)
    if "fig4" in parts:
        # Figure 4: sg-FGSM vs eps for several m, vs sigma at m=30
        src = {"digits-lenet": named["digits-lenet"]}
        tg4 = {k: named[k] for k in ("digits-resnet20", "digits-fc")}
        eps_grid = [8, 16, 24, 32, 40, 48]
        curves_a: dict[str, list[float]] = {}
        for m in (0, 5, 20, 50):
            label = "FGSM" if m == 0 else f"sg-FGSM m={m}"
            vals = []
            for e in eps_grid:
                grad = None if m == 0 else SmoothedGradient(eps, m, chunk_size=10)
                tm4 = transfer_matrix(src, tg4, FGSM(eps=e / 255, gradient=grad), data_xy, **tm_kw)
                vals.append(float(tm4.top1.mean()) * 100)
            curves_a[label] = vals
        sig_grid = [0, 8, 16, 24, 32, 40, 56, 80]
        curves_b: dict[str, list[float]] = {"sg-FGSM m=30, ε=24/255": []}
        for s in sig_grid:
            tm4 = transfer_matrix(src, tg4, FGSM(eps=24 / 255, gradient=SmoothedGradient(
                s / 255, 30, chunk_size=10)), data_xy, **tm_kw)
            curves_b["sg-FGSM m=30, ε=24/255"].append(float(tm4.top1.mean()) * 100)
        results["fig4a"] = {"eps_255": eps_grid, "success": curves_a}
        results["fig4b"] = {"sigma_255": sig_grid, "success": curves_b}
        log(f"[{time.perf_counter() - w.t0:7.1f}s] fig4 sweeps done")
        if plots:
            p = out / "fig4a_sg_fgsm_vs_eps.png"
            plots.plot_success_curves(eps_grid, curves_a, xlabel="ε (×1/255)", path=p,
                                      title="digits: lenet → {resnet20, fc}, σ=40/255")
            w.figure("fig4a_sg_fgsm_vs_eps", p)
            p = out / "fig4b_sg_fgsm_vs_sigma.png"
            plots.plot_success_curves(sig_grid, curves_b, xlabel="σ (×1/255)", path=p,
                                      title="digits: lenet → {resnet20, fc}, m=30")
            w.figure("fig4b_sg_fgsm_vs_sigma", p)
    if "fig5" in parts:
        # Figure 5: destruction rates
        sgd = SmoothedGradient(eps, 20, chunk_size=10)
        attacks5 = {
            "FGSM": FGSM(eps=eps), "IGSM T=10": IGSM(eps=eps, alpha=eps / 3, steps=10),
            "IGSM T=30": IGSM(eps=eps, alpha=eps / 3, steps=30),
            "sg-FGSM": FGSM(eps=eps, gradient=sgd),
            "sg-IGSM T=10": IGSM(eps=eps, alpha=eps / 3, steps=10, gradient=sgd),
            "sg-IGSM T=30": IGSM(eps=eps, alpha=eps / 3, steps=30, gradient=sgd),
        }
        src_m, tgt_m = named["digits-lenet"], named["digits-resnet20"]
        advs = {}
        for name, atk in attacks5.items():
            tm5 = transfer_matrix({"digits-lenet": src_m}, {"digits-resnet20": tgt_m}, atk, data_xy,
                                  keep_adv=True, **tm_kw)
            advs[name] = (tm5.adv["digits-lenet"], float(tm5.top1[0, 0]))
        fig5: dict[str, Any] = {"transfer_top1": {k: v[1] for k, v in advs.items()}}
        for kind in ("rotation", "noise", "blur", "jpeg"):
            strengths = default_strengths(kind)
            curves = {name: destruction_curve(tgt_m, x, xa, y, kind, strengths, seed=seed)
                      for name, (xa, _) in advs.items()}
            fig5[kind] = {"strengths": strengths, "rates": curves}
            if plots:
                p = out / f"fig5_destruction_{kind}.png"
                plots.plot_destruction_curves(curves, strengths, kind, path=p,
                                              title=f"digits: lenet → resnet20, {kind}")
                w.figure(f"fig5_destruction_{kind}", p)
        results["fig5"] = fig5
        _destruction_table(out, fig5, w)
    return results


def _destruction_table(out: Path, fig5: dict[str, Any], w: _Writer) -> None:
    lines = ["| transform | strength | " + " | ".join(fig5["transfer_top1"]) + " |",
             "|---" * (len(fig5["transfer_top1"]) + 2) + "|"]
    csv_lines = ["transform,strength,attack,destruction_rate"]
    for kind in ("rotation", "noise", "blur", "jpeg"):
        e = fig5[kind]
        for i, s in enumerate(e["strengths"]):
            vals = [e["rates"][a][i] for a in fig5["transfer_top1"]]
            shown = s * 255 if kind == "noise" else s
            lines.append(f"| {kind} | {shown:g} | " + " | ".join(
                "nan" if math.isnan(v) else f"{100 * v:.1f}" for v in vals) + " |")
            for a, v in zip(fig5["transfer_top1"], vals):
                csv_lines.append(f"{kind},{s:.6g},{a},{v:.6f}")
    md = ("**Figure 5 analogue: destruction rates (%) on digits-resnet20 of examples crafted on "
          "digits-lenet** (noise strength ×1/255)\n\n" + "\n".join(lines) + "\n")
    _write_text(out / "fig5_destruction.md", md)
    _write_text(out / "fig5_destruction.csv", "\n".join(csv_lines) + "\n")
    w.md.append("### fig5_destruction\n\n" + md)


def _cifar(out: Path, n: int | None, seed: int, w: _Writer, progress: bool, budget_n: int,
           budget_sources: Sequence[str], models_dir: Any) -> dict[str, Any]:
    from .. import data, models

    names = [f"cifar10-resnet{d}" for d in (20, 32, 44, 56)]
    named = {k: models.load(k, models_dir=models_dir, verbose=False) for k in names}
    for s in budget_sources:
        if s not in named:
            raise ValueError(f"budget source {s!r} must be one of {names}")
    x_all, y_all = data.load("cifar10", split="test")
    n = 500 if n is None else n
    # candidates: a seeded random pool (accuracy ≈ 81 % each → ≈ 70 % correct for all four)
    x, y = _subset_correct(list(named.values()), x_all, y_all, n, seed,
                           pool=min(x_all.shape[0], int(math.ceil(n / 0.6)) + 32))
    w.log(f"[{time.perf_counter() - w.t0:7.1f}s] evaluation set: {x.shape[0]} images correct "
          "for all four ResNets")
    tm_kw: dict[str, Any] = dict(seed=seed, batch_size=50, progress=progress)
    all_models = list(named.items())
    t2b = transfer_matrix(all_models, all_models, FGSM(eps=10 / 255), (x, y), **tm_kw)
    w.table("table2b_fgsm_eps10", t2b, "Table 2(b) analogue: FGSM ε=10/255 transfer "
            "among CIFAR-10 ResNets", metrics=("top1", "top5"))
    if budget_n > x.shape[0]:
        w.log(f"warning: budget_n={budget_n} exceeds the {x.shape[0]} images of the evaluation "
              f"set; the equal-budget tables use all {x.shape[0]} (raise n for more)")
    gen = make_generator(seed + 1, "cpu")
    pick = torch.randperm(x.shape[0], generator=gen)[:budget_n].sort().values
    xb, yb = x[pick], y[pick]
    srcs = [(s, named[s]) for s in budget_sources]
    eps = 15 / 255
    res: dict[str, Any] = {"n_fgsm": int(x.shape[0]), "n_budget": int(xb.shape[0]),
                           "budget_sources": list(budget_sources)}
    tms = {}
    for key, atk in (
            ("table3_igsm_t100", IGSM(eps=eps, alpha=1 / 255, budget=100)),
            ("table3_sg_igsm_t5_m20", IGSM(eps=eps, alpha=5 / 255, budget=100,
                                          gradient=SmoothedGradient(15 / 255, 20,
                                                                    chunk_size=5)))):
        tm = transfer_matrix(srcs, all_models, atk, (xb, yb), **tm_kw)
        tms[key] = tm
        w.table(key, tm, f"Table 3 analogue (CIFAR-10): {atk!r}, ε=15/255, 100 gradient "
                "evaluations per image", metrics=("top1", "top5"))
    a, b = tms["table3_igsm_t100"], tms["table3_sg_igsm_t5_m20"]
    res["equal_budget_black_box_mean_top1"] = {
        "igsm_t100": a.black_box_mean("top1").tolist(),
        "sg_igsm_t5_m20": b.black_box_mean("top1").tolist()}
    plots = _plots()
    if plots:
        for key, tm in (("table2b_fgsm_eps10", t2b), *tms.items()):
            p = out / f"{key}.png"
            plots.plot_transfer_matrix(tm, path=p)
            w.figure(f"{key}_heatmap", p)
    return res


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------

def run_transfer_study(preset: str = "digits", out_dir: str | Path = "transfer-study",
                       n: int | None = None, seed: int = 0, *, progress: bool = False,
                       budget_n: int = 64,
                       budget_sources: Sequence[str] = ("cifar10-resnet20",),
                       models_dir: Any = None,
                       parts: Sequence[str] = DIGITS_PARTS,
                       log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the transferability study ``preset`` and write its tables and figures to ``out_dir``.

    Args:
        preset: ``"digits"`` (embedded data and models) or ``"cifar10"`` (shared data/models).
        out_dir: output folder (created).
        n: evaluation images correct for every model (digits default 200, cifar10 default 500).
        seed: seeds the image subset, the attack noise and the targeted labels.
        progress: progress bars.
        budget_n, budget_sources: cifar10 only — images and sources of the equal-budget table.
        models_dir: folder of the pretrained checkpoints (cifar10; default search of
            :func:`advsmooth.models.load`).
        parts: digits only — sections to run: ``"tables"`` (Tables 1–5 and Figure 1),
            ``"fig3"``, ``"fig4"``, ``"fig5"`` (default: all).
        log: progress-line printer (default: stderr).

    Returns:
        ``{"preset", "n", "seed", "seconds", "tables": {key: matrix dict}, "figures":
        {key: png path}, "results": {...}, "summary": path}`` (also saved as ``results.json``).
    """
    check_choice("preset", preset, PRESETS)
    if n is not None:
        check_int_at_least("n", n, 1)
    check_int_at_least("budget_n", budget_n, 1)
    for part in parts:
        check_choice("part", part, DIGITS_PARTS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if log is None:
        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)
    w = _Writer(out, log)
    t0 = time.perf_counter()
    if preset == "digits":
        results = _digits(out, n, seed, w, progress, set(parts))
    else:
        results = _cifar(out, n, seed, w, progress, budget_n, budget_sources, models_dir)
    seconds = time.perf_counter() - t0
    from .. import __version__

    header = (f"# Transferability study — preset `{preset}`\n\n"
              f"seed {seed}; advsmooth {__version__}, torch {torch.__version__}; "
              f"{seconds:.0f} s on {torch.get_num_threads()} CPU thread(s)\n\n")
    summary = out / "summary.md"
    _write_text(summary, header + "\n".join(w.md))
    report = {"preset": preset, "n": results.get("n", results.get("n_fgsm")), "seed": seed,
              "seconds": seconds, "tables": w.tables, "figures": w.figures,
              "results": results, "summary": str(summary)}
    _write_text(out / "results.json", json.dumps(report, indent=1, default=_json_default))
    return report


def study_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The results of :func:`run_transfer_study` as flat rows for an experiment store, each
    with a ``part`` field (filter with ``where = { part = ... }`` in a spec's tables/plots):

    * every transfer table (``part`` = its key, e.g. ``"table1_igsm"``): ``source``, ``target``,
      ``top1``, ``top5`` (%), ``white_box``, ``grad_evals`` (per image, when recorded);
    * ``fig1``: ``source``, ``test_error``, ``params``, ``igsm_success`` (%);
    * ``fig3a``: ``pair``, ``m``, ``cos`` (and ``baseline``);
    * ``fig3b`` / ``fig9``: ``model``, ``fraction_true_class`` (of the decision-boundary map);
    * ``fig4a`` / ``fig4b``: ``curve``, ``eps_255`` or ``sigma_255``, ``success`` (%);
    * ``fig5``: ``transform``, ``strength``, ``attack``, ``rate`` (destruction rate, fraction).
    """
    rows: list[dict[str, Any]] = []
    for key, t in report.get("tables", {}).items():
        ge = t.get("grad_evals")
        for i, src in enumerate(t["sources"]):
            for j, tgt in enumerate(t["targets"]):
                row = {"part": key, "source": src, "target": tgt,
                       # rates in % (rounded off the float noise of k/n·100, e.g. 55.000…01)
                       "top1": round(float(t["top1"][i][j]) * 100, 9),
                       "top5": round(float(t["top5"][i][j]) * 100, 9),
                       "white_box": bool(t["white_box"][i][j])}
                if ge is not None and i < len(ge):
                    row["grad_evals"] = float(np.mean(ge[i])) if np.ndim(ge[i]) else float(ge[i])
                rows.append(row)
    res = report.get("results", {})
    for r in res.get("fig1", []):
        rows.append({"part": "fig1", **{k: (float(v) if isinstance(v, (int, float)) else v)
                                        for k, v in r.items()}})
    for pair, v in res.get("fig3a", {}).items():
        rows += [{"part": "fig3a", "pair": pair, "m": int(m), "cos": float(c),
                  "baseline": float(v["baseline"])} for m, c in zip(v["ms"], v["cos"])]
    for key, part in (("fig3b_decision_boundary", "fig3b"),
                      ("fig9_decision_boundary_sign", "fig9")):
        for model, frac in res.get(key, {}).get("fraction_true_class", {}).items():
            rows.append({"part": part, "model": model, "fraction_true_class": float(frac)})
    for part, xkey in (("fig4a", "eps_255"), ("fig4b", "sigma_255")):
        f = res.get(part)
        if f:
            for curve, vals in f["success"].items():
                rows += [{"part": part, "curve": curve, xkey: float(xv), "success": float(v)}
                         for xv, v in zip(f[xkey], vals)]
    f5 = res.get("fig5")
    if f5:
        for kind in ("rotation", "noise", "blur", "jpeg"):
            if kind in f5:
                for attack, rates in f5[kind]["rates"].items():
                    rows += [{"part": "fig5", "transform": kind, "strength": float(st),
                              "attack": attack, "rate": float(r)}
                             for st, r in zip(f5[kind]["strengths"], rates)]
    return rows


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Tensor):
        return o.tolist()
    return str(o)
