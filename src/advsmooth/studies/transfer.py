"""Transferability study (seed 001, "Exploring and Enhancing the Transferability of Adversarial
Examples"): analogues of its Tables 1–5 and Figures 1, 3–7 (ALGORITHMS.md §18.2).

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
* ``fig5_destruction_{rotation,noise,blur,jpeg}.png`` (+ ``fig5_destruction.{md,csv}``) —
  destruction rates of FGSM, IGSM T = 10/30, sg-FGSM, sg-IGSM T = 10/30 (source
  ``digits-lenet``, target ``digits-resnet20``; Figure 5);
* ``fig6_smoothed_gradient_saliency.png`` — SmoothGrad-style saliency |G^(m)| (summed over
  channels, each panel scaled to its maximum) of the smoothed gradient of ``digits-lenet`` for
  m ∈ {1, 5, 20, 50, 200} next to the plain gradient, on the first 4 evaluation images (Figure 6).
  σ = 0.10 in pixel units [0, 1] (the paper: 0.10 in normalised units); G^(m) is exactly
  ``SmoothedGradient(0.10, m)``'s gradient with a fresh ``make_generator(seed)`` per m. Numbers
  (``results["fig6"]``, on the first 20 images): mean cos(G^(m), g), mean cos(G^(m), G^(200))
  and the mean relative total variation of |G^(m)| (roughness; falls as m grows);
* ``fig7_targeted_ensembles_vs_{alpha,steps}.png`` (+ ``fig7_targeted_ensembles.{md,csv}``) —
  targeted IGSM vs sg-IGSM (m = 20, σ = 40/255) from the two Table 4 ensembles, ε = 56/255:
  mean top-1 targeted success over the ensembles and the held-out targets ``digits-resnet20``,
  ``fc-d0``, ``fc-d8`` (the models in neither ensemble) vs α ∈ ε·{0.25, 0.5, 0.75, 1} at T = 20
  and vs T ∈ {5, 10, 20, 40} at α = 0.75 ε, on the first 100 evaluation images (``fig7_n``;
  ≈ 3 minutes on one CPU thread); top-5 (near-trivial with 10 classes) in ``results["fig7"]``
  (Figure 7).

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
from ..attacks import FGSM, IGSM, MIFGSM, AttackObjective, PlainGradient, SmoothedGradient
from ..attacks.base import Attack, frozen_model
from ..metrics.transfer import (
    TransferMatrix,
    correct_by_all,
    decision_boundary_map,
    destruction_curve,
    gradient_similarity,
    transfer_matrix,
)
from ..metrics.transforms import default_strengths

__all__ = ["run_transfer_study", "PRESETS", "digits_fc", "FC_DEPTHS", "fig6_gradients"]

PRESETS = ("digits", "cifar10")
DIGITS_PARTS = ("tables", "fig3", "fig4", "fig5", "fig6", "fig7")
#: Figure 6: noise samples m of the smoothed gradients shown, noise std (pixels), images whose
#: numbers are averaged (the first of them are drawn)
FIG6_MS = (1, 5, 20, 50, 200)
FIG6_SIGMA = 0.10
FIG6_IMAGES = 20
FIG6_SHOWN = 4
#: Figure 7: step sizes (× ε) swept at T = FIG7_T_REF, iterations swept at α = FIG7_ALPHA_REF·ε
FIG7_ALPHAS = (0.25, 0.5, 0.75, 1.0)
FIG7_STEPS = (5, 10, 20, 40)
FIG7_ALPHA_REF = 0.75
FIG7_T_REF = 20
#: Figure 7: black-box targets, the models in none of the Table 4 ensembles
FIG7_TARGETS = ("digits-resnet20", "fc-d0", "fc-d8")
#: Figure 7: images attacked (the first of the evaluation set; None: all)
FIG7_N: int | None = 100
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

def _table4_ensembles(named: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The source ensembles (mean logits) of the targeted Table 4 and of Figure 7."""
    from ..models import Ensemble

    return {
        "ens{lenet+fc-d2}": Ensemble([named["digits-lenet"], named["fc-d2"]]),
        "ens{lenet+fc+fc-d4}": Ensemble([named["digits-lenet"], named["digits-fc"],
                                         named["fc-d4"]]),
    }


def _digits(out: Path, n: int | None, seed: int, w: _Writer, progress: bool,
            parts: set[str], opts: dict[str, Any]) -> dict[str, Any]:
    from .. import data, models

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
        ens = _table4_ensembles(named)
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
    if "fig6" in parts:
        results["fig6"] = _fig6(out, named["digits-lenet"], x, y, seed, w, plots,
                                opts["fig6_ms"])
    if "fig7" in parts:
        n7 = opts["fig7_n"]
        data7 = data_xy if n7 is None else (x[:n7], y[:n7])
        results["fig7"] = _fig7(out, named, data7, w, plots, tm_kw, opts["fig7_alphas"],
                                opts["fig7_steps"])
    return results


def _saliency(g: Tensor) -> Tensor:
    """SmoothGrad-style saliency map of input gradients ``(N, C, H, W)``: ``|g|`` summed over
    channels, ``(N, H, W)``."""
    return g.abs().sum(1)


def _relative_tv(s: Tensor) -> Tensor:
    """Roughness of saliency maps ``(N, H, W)``: anisotropic total variation
    ``Σ|s[i+1,j] − s[i,j]| + Σ|s[i,j+1] − s[i,j]|`` divided by ``Σ s`` (scale-free; 0 for a
    constant map, large for pixel noise), ``(N,)``."""
    s = s.double()
    tv = ((s[:, 1:, :] - s[:, :-1, :]).abs().sum((1, 2))
          + (s[:, :, 1:] - s[:, :, :-1]).abs().sum((1, 2)))
    return tv / s.sum((1, 2)).clamp_min(1e-300)


def _cos_rows(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)


def fig6_gradients(model: nn.Module, x: Tensor, y: Tensor, ms: Sequence[int], *,
                   sigma: float = FIG6_SIGMA, seed: int = 0) -> tuple[Tensor, dict[int, Tensor]]:
    """The plain gradient ``g = ∇ℓ(x)`` and the smoothed gradients ``G^(m)`` of Figure 6.

    ``ℓ`` = cross-entropy w.r.t. the true label ``y``, gradients w.r.t. the pixels. ``G^(m)`` is
    exactly the gradient of :class:`~advsmooth.attacks.SmoothedGradient` ``(sigma, m)`` — the
    first step of an sg-attack — with a fresh generator ``make_generator(seed)`` for every ``m``
    (noise ``sigma·randn((m, N, C, H, W))``, no clamping). Returns ``(g, {m: G^(m)})``.
    """
    obj = AttackObjective.for_model(model, "ce", y)
    with frozen_model(model):
        g = PlainGradient().estimate(model, x, obj).grad
        sg = {int(m): SmoothedGradient(sigma, int(m), chunk_size=25).estimate(
            model, x, obj, generator=make_generator(seed, x.device)).grad for m in ms}
    return g, sg


def _fig6(out: Path, model: nn.Module, x: Tensor, y: Tensor, seed: int, w: _Writer, plots: Any,
          ms: Sequence[int]) -> dict[str, Any]:
    """Figure 6: saliency of the smoothed gradient G^(m) of digits-lenet vs m."""
    ms = sorted({int(m) for m in ms})
    xs, ys = x[:FIG6_IMAGES], y[:FIG6_IMAGES]
    g, sg = fig6_gradients(model, xs, ys, ms, sigma=FIG6_SIGMA, seed=seed)
    ref = sg[ms[-1]]
    res: dict[str, Any] = {
        "source": "digits-lenet", "sigma": FIG6_SIGMA, "ms": ms, "n_images": int(xs.shape[0]),
        "n_shown": int(min(FIG6_SHOWN, xs.shape[0])), "labels": ys.tolist(),
        "plain": {"rel_tv": float(_relative_tv(_saliency(g)).mean()),
                  "cos_ref": float(_cos_rows(g, ref).mean())},
        "cos_plain": [float(_cos_rows(sg[m], g).mean()) for m in ms],
        "cos_ref": [float(_cos_rows(sg[m], ref).mean()) for m in ms],
        "rel_tv": [float(_relative_tv(_saliency(sg[m])).mean()) for m in ms],
    }
    w.log(f"[{time.perf_counter() - w.t0:7.1f}s] fig6: relative TV of |G^(m)| "
          + ", ".join(f"m={m} {v:.3f}" for m, v in zip(ms, res["rel_tv"]))
          + f" (plain {res['plain']['rel_tv']:.3f})")
    if plots:
        p = out / "fig6_smoothed_gradient_saliency.png"
        k = res["n_shown"]
        cols = [("image", xs[:k].mean(1)), ("plain gradient $g$", _saliency(g[:k]))] + [
            (f"$G^{{({m})}}$", _saliency(sg[m][:k])) for m in ms]
        _plot_saliency_grid(plots, cols, ys[:k].tolist(), p,
                            title=f"digits-lenet: saliency |G^(m)| of the smoothed gradient, "
                                  f"σ = {FIG6_SIGMA:g} (pixels); each panel scaled to its maximum")
        w.figure("fig6_smoothed_gradient_saliency", p)
    return res


def _plot_saliency_grid(plots: Any, cols: Sequence[tuple[str, Tensor]], labels: Sequence[int],
                        path: Path, *, title: str) -> None:
    plt = plots._plt()
    rows = len(labels)
    fig, axes = plt.subplots(rows, len(cols), figsize=(1.45 * len(cols), 1.5 * rows + 0.5),
                             squeeze=False)
    for j, (name, maps) in enumerate(cols):
        for i in range(rows):
            ax = axes[i][j]
            im = maps[i].detach().double().cpu().numpy()
            if j > 0:  # saliency: each panel normalised to [0, 1]
                im = im / max(float(im.max()), 1e-300)
            ax.imshow(im, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"label {labels[i]}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _fig7(out: Path, named: dict[str, nn.Module], data7: tuple[Tensor, Tensor], w: _Writer,
          plots: Any, tm_kw: dict[str, Any], alphas: Sequence[float],
          steps: Sequence[int]) -> dict[str, Any]:
    """Figure 7: targeted IGSM vs sg-IGSM from the Table 4 ensembles, mean top-1/top-5 targeted
    success on the held-out models vs α (T = 20) and vs T (α = 0.75 ε)."""
    eps_t, sigma, m = 56 / 255, 40 / 255, 20
    ens = _table4_ensembles(named)
    targets = [(k, named[k]) for k in FIG7_TARGETS]
    cache: dict[tuple[str, float, int], tuple[float, float, list[float]]] = {}

    def point(method: str, a: float, t: int) -> tuple[float, float, list[float]]:
        key = (method, float(a), int(t))
        if key not in cache:
            # chunk_size=1 (100-image forwards) is the fastest here. The noise is drawn up
            # front, so only the model's batch-size-dependent float rounding could differ from
            # Table 4's chunk_size=10; on the default 100 images both give the same numbers.
            grad = SmoothedGradient(sigma, m, chunk_size=1) if method == "sg-IGSM" else None
            tm = transfer_matrix(list(ens.items()), targets,
                                 IGSM(eps=eps_t, alpha=a * eps_t, steps=t, gradient=grad), data7,
                                 targeted=True, **tm_kw)
            cache[key] = (float(tm.top1.mean()) * 100, float(tm.top5.mean()) * 100,
                          [float(v) * 100 for v in tm.top1.mean(1)])
            n_used[0] = tm.n
        return cache[key]

    n_used = [0]
    methods = ("IGSM", "sg-IGSM")
    sweeps = {"alpha": [(float(a), FIG7_T_REF) for a in alphas],
              "steps": [(FIG7_ALPHA_REF, int(t)) for t in steps]}
    res: dict[str, Any] = {
        "eps_255": 56, "sigma_255": 40, "m": m, "ensembles": list(ens), "targets":
        list(FIG7_TARGETS), "alpha_ref": FIG7_ALPHA_REF, "steps_ref": FIG7_T_REF}
    for sweep, pts in sweeps.items():
        e: dict[str, Any] = {"alpha_eps": [a for a, _ in pts], "steps": [t for _, t in pts],
                             "top1": {}, "top5": {}, "top1_per_ensemble": {}}
        for meth in methods:
            vals = [point(meth, a, t) for a, t in pts]
            e["top1"][meth] = [v[0] for v in vals]
            e["top5"][meth] = [v[1] for v in vals]
            e["top1_per_ensemble"][meth] = [v[2] for v in vals]
        res[sweep] = e
    res["n"] = n_used[0]
    w.log(f"[{time.perf_counter() - w.t0:7.1f}s] fig7: targeted top-1 (%) vs α "
          + "; ".join(f"{meth} " + " ".join(f"{v:.1f}" for v in res["alpha"]["top1"][meth])
                      for meth in methods))
    if plots:
        tgt_names = "{" + ", ".join(FIG7_TARGETS) + "}"
        a = res["alpha"]
        p = out / "fig7_targeted_ensembles_vs_alpha.png"
        plots.plot_success_curves(a["alpha_eps"], a["top1"], xlabel="step size α (× ε)",
                                  ylabel="targeted top-1 success (%)", path=p,
                                  title=f"digits: targeted, ensembles → {tgt_names}\n"
                                        f"ε = 56/255, T = {FIG7_T_REF}, sg: m = 20, σ = 40/255")
        w.figure("fig7_targeted_ensembles_vs_alpha", p)
        s = res["steps"]
        p = out / "fig7_targeted_ensembles_vs_steps.png"
        plots.plot_success_curves(s["steps"], s["top1"], xlabel="iterations T",
                                  ylabel="targeted top-1 success (%)", path=p,
                                  title=f"digits: targeted, ensembles → {tgt_names}\n"
                                        f"ε = 56/255, α = {FIG7_ALPHA_REF:g}ε, sg: m = 20, "
                                        "σ = 40/255")
        w.figure("fig7_targeted_ensembles_vs_steps", p)
    _fig7_table(out, res, w)
    return res


def _fig7_table(out: Path, res: dict[str, Any], w: _Writer) -> None:
    methods = list(res["alpha"]["top1"])
    lines = ["| sweep | α (×ε) | T | " + " | ".join(f"{m} top-1" for m in methods) + " | "
             + " | ".join(f"{m} top-5" for m in methods) + " |",
             "|---" * (3 + 2 * len(methods)) + "|"]
    csv_lines = ["sweep,alpha_eps,steps,method,top1,top5"]
    for sweep in ("alpha", "steps"):
        e = res[sweep]
        for i, (a, t) in enumerate(zip(e["alpha_eps"], e["steps"])):
            lines.append(f"| {sweep} | {a:g} | {t} | "
                         + " | ".join(f"{e['top1'][m][i]:.1f}" for m in methods) + " | "
                         + " | ".join(f"{e['top5'][m][i]:.1f}" for m in methods) + " |")
            for m in methods:
                csv_lines.append(f"{sweep},{a:.6g},{t},{m},{e['top1'][m][i]:.6f},"
                                 f"{e['top5'][m][i]:.6f}")
    md = ("**Figure 7 analogue: targeted IGSM vs sg-IGSM (m = 20, σ = 40/255) from the Table 4 "
          "ensembles, ε = 56/255; mean targeted success (%) over the ensembles and the held-out "
          f"targets {', '.join(res['targets'])}** (n = {res['n']})\n\n" + "\n".join(lines) + "\n")
    _write_text(out / "fig7_targeted_ensembles.md", md)
    _write_text(out / "fig7_targeted_ensembles.csv", "\n".join(csv_lines) + "\n")
    w.md.append("### fig7_targeted_ensembles\n\n" + md)


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
                       fig6_ms: Sequence[int] = FIG6_MS,
                       fig7_alphas: Sequence[float] = FIG7_ALPHAS,
                       fig7_steps: Sequence[int] = FIG7_STEPS,
                       fig7_n: int | None = FIG7_N,
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
            ``"fig3"``, ``"fig4"``, ``"fig5"``, ``"fig6"``, ``"fig7"`` (default: all).
        fig6_ms: digits Figure 6 — noise samples m of the smoothed gradients (the largest is
            the reference of ``cos_ref``).
        fig7_alphas, fig7_steps: digits Figure 7 — step sizes (× ε) swept at T = 20 and
            iteration counts swept at α = 0.75 ε.
        fig7_n: digits Figure 7 — attack only the first ``fig7_n`` images of the evaluation set
            (``None``: all of them).
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
    if not fig6_ms or not fig7_alphas or not fig7_steps:
        raise ValueError("fig6_ms, fig7_alphas and fig7_steps must be non-empty")
    for m in fig6_ms:
        check_int_at_least("fig6_ms entry", m, 1)
    for t in fig7_steps:
        check_int_at_least("fig7_steps entry", t, 1)
    for a in fig7_alphas:
        if not (isinstance(a, (int, float)) and math.isfinite(a) and a > 0):
            raise ValueError(f"fig7_alphas entries must be positive numbers, got {a!r}")
    if fig7_n is not None:
        check_int_at_least("fig7_n", fig7_n, 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if log is None:
        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)
    w = _Writer(out, log)
    t0 = time.perf_counter()
    if preset == "digits":
        results = _digits(out, n, seed, w, progress, set(parts), {
            "fig6_ms": tuple(fig6_ms), "fig7_alphas": tuple(fig7_alphas),
            "fig7_steps": tuple(fig7_steps), "fig7_n": fig7_n})
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
    * ``fig5``: ``transform``, ``strength``, ``attack``, ``rate`` (destruction rate, fraction);
    * ``fig6``: ``m`` (``0`` = the plain gradient), ``cos_plain`` (mean cos(G^(m), g)),
      ``cos_ref`` (mean cos(G^(m), G^(max m))), ``rel_tv`` (mean relative total variation of the
      saliency |G^(m)|);
    * ``fig7``: ``sweep`` (``"alpha"`` or ``"steps"``), ``method`` (``"IGSM"`` / ``"sg-IGSM"``),
      ``alpha_eps`` (α/ε), ``steps`` (T), ``top1``, ``top5`` (mean targeted success, %).
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
    f6 = res.get("fig6")
    if f6:
        rows.append({"part": "fig6", "m": 0, "cos_plain": 1.0,
                     "cos_ref": float(f6["plain"]["cos_ref"]),
                     "rel_tv": float(f6["plain"]["rel_tv"])})
        rows += [{"part": "fig6", "m": int(m), "cos_plain": float(c), "cos_ref": float(r),
                  "rel_tv": float(t)}
                 for m, c, r, t in zip(f6["ms"], f6["cos_plain"], f6["cos_ref"], f6["rel_tv"])]
    f7 = res.get("fig7")
    if f7:
        for sweep in ("alpha", "steps"):
            e = f7[sweep]
            for method, vals in e["top1"].items():
                rows += [{"part": "fig7", "sweep": sweep, "method": method,
                          "alpha_eps": float(a), "steps": int(t), "top1": round(float(v1), 9),
                          "top5": round(float(v5), 9)}
                         for a, t, v1, v5 in zip(e["alpha_eps"], e["steps"], vals,
                                                 e["top5"][method])]
    return rows


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Tensor):
        return o.tolist()
    return str(o)
