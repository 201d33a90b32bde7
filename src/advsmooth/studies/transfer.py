"""Transferability study of "Exploring and Enhancing the Transferability of Adversarial Examples"
(smoothed-gradient attacks, sg-IGSM): analogues of its Tables 1–5 and Figures 1, 3–7, as steps of
the experiment runner (task ``transfer_study``; also ``advsmooth transfer``).

The study is a :class:`TransferStudySettings` and the :func:`plan` of its steps. Each step is a
function of JSON settings that returns table rows (with a ``part`` field naming the table or
figure) and tensors kept as store artefacts: the trained FC nets (``state_dict``), the evaluation
set, every transfer matrix, the adversarial examples of Figure 5, the decision-boundary maps of
Figure 3b / 9 and the saliency maps of Figure 6. The report draws every figure from those rows
and artefacts (:mod:`advsmooth.report`); nothing here writes files.

Presets
-------
``"digits"`` (embedded data, no ``../shared`` needed). Models: the zoo models ``digits-lenet``,
``digits-resnet20``, ``digits-fc`` (MLP 300-100) and fully connected nets of depth
D ∈ {0, 2, 4, 8} and width 500 (``fc-d0`` … ``fc-d8``, trained by a step of their own through
``models.create`` + ``defenses.train``). Evaluation set: a seeded random subset of ``n`` (default
200) digits test images that every model classifies correctly. Budgets are the paper's MNIST
value ε = 40/255 (its Table 2a) with its ImageNet ratios carried over (α = ε/3 for T = 5,
α = ε/15 for T = 100, σ = ε). Parts (``part`` of the rows):

* ``table1_{fgsm,igsm,sg_igsm}`` — 7×7 top-1 transfer matrices: FGSM; IGSM T = 5; sg-IGSM T = 5,
  m = 20 (Table 1);
* ``table2a_fgsm_fc_depth`` — FGSM among the FC nets of depth 0/2/4/8 (Table 2a);
* ``table3_{igsm_t100,sg_igsm_t5_m20}`` — equal budget of 100 gradient evaluations per image:
  IGSM T = 100 vs sg-IGSM T = 5, m = 20 (Table 3);
* ``table4_{igsm,sg_igsm}_targeted_ensembles`` — targeted attacks from ensembles (mean logits),
  ε = 56/255, α = 0.75 ε, T = 20, top-1 and top-5 (Tables 4/7; ensemble members white-box);
* ``table5_{migsm,sg_igsm,sg_migsm}`` — momentum variants, μ = 1, T = 5 (Table 5);
* ``fig1`` — source test error and number of parameters vs IGSM transfer to ``digits-resnet20``;
* ``fig3a`` — cos(G_A^(m), g_B) vs m; ``fig3b`` / ``fig9`` — decision-boundary maps of every model
  in the (Ĝ, ĥ) plane of ``digits-lenet`` (unit and sign directions);
* ``fig4a`` / ``fig4b`` — sg-FGSM transfer success vs ε for several m, and vs σ at m = 30;
* ``fig5`` — destruction rates of FGSM, IGSM T = 10/30, sg-FGSM, sg-IGSM T = 10/30 (source
  ``digits-lenet``, target ``digits-resnet20``) under rotation, noise, blur and JPEG;
* ``fig6`` — the smoothed gradient G^(m) of ``digits-lenet`` for m ∈ {1, 5, 20, 50, 200} against
  the plain gradient g on the first 20 evaluation images: mean cos(G^(m), g), mean
  cos(G^(m), G^(200)) and the mean relative total variation of the SmoothGrad-style saliency
  |G^(m)| (roughness; falls as m grows). σ = 0.10 in pixel units [0, 1]; G^(m) is exactly
  ``SmoothedGradient(0.10, m)``'s gradient with a fresh ``make_generator(seed)`` per m;
* ``fig7`` — targeted IGSM vs sg-IGSM (m = 20, σ = 40/255) from the two Table 4 ensembles,
  ε = 56/255: mean top-1/top-5 targeted success over the ensembles and the held-out targets
  ``digits-resnet20``, ``fc-d0``, ``fc-d8`` (the models in neither ensemble) vs
  α ∈ ε·{0.25, 0.5, 0.75, 1} at T = 20 and vs T ∈ {5, 10, 20, 40} at α = 0.75 ε, on the first
  100 evaluation images (``fig7_n``).

``"cifar10"`` (needs the shared CIFAR-10 test set and ResNet checkpoints, e.g. ``../shared``):

* ``table2b_fgsm_eps10`` — FGSM ε = 10/255 transfer matrix among ResNet-20/32/44/56 (Table 2b) on
  ``n`` (default 500) images correctly classified by all four;
* ``table3_{igsm_t100,sg_igsm_t5_m20}`` — IGSM (T = 100, α = 1/255) vs sg-IGSM (T = 5,
  α = 5/255, m = 20, σ = 15/255), ε = 15/255, equal budget of 100 gradient evaluations per
  image, on a seeded subset of ``budget_n`` (default 64) of those images, from the sources
  ``budget_sources`` (default ResNet-20 only) to all four.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._tensors import frozen_model
from .._utils import check_choice, check_int_at_least, make_generator, warn_caller
from ..attacks import FGSM, IGSM, MIFGSM, AttackObjective, PlainGradient, SmoothedGradient
from ..attacks.base import Attack
from ..experiments.artefacts import Step, StepOutput, register_step
from ..metrics.transfer import (
    TransferMatrix,
    correct_by_all,
    decision_boundary_map,
    destruction_curve,
    gradient_similarity,
    transfer_matrix,
)
from ..metrics.transforms import default_strengths

__all__ = ["TransferStudySettings", "plan", "PRESETS", "DIGITS_PARTS", "digits_fc", "FC_DEPTHS",
           "fig6_gradients"]

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
DIGITS_ZOO = ("digits-lenet", "digits-resnet20", "digits-fc")
DIGITS_MODELS = (*DIGITS_ZOO, *(f"fc-d{d}" for d in FC_DEPTHS))
CIFAR_MODELS = tuple(f"cifar10-resnet{d}" for d in (20, 32, 44, 56))
#: the source ensembles (mean logits) of the targeted Table 4 and of Figure 7
ENSEMBLES = {"ens{lenet+fc-d2}": ("digits-lenet", "fc-d2"),
             "ens{lenet+fc+fc-d4}": ("digits-lenet", "digits-fc", "fc-d4")}
EPS = 40 / 255
EPS_TARGETED = 56 / 255


# ----------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TransferStudySettings:
    """Settings of the transferability study.

    Attributes:
        preset: ``"digits"`` (embedded data and models) or ``"cifar10"`` (shared data/models).
        n: evaluation images correct for every model (digits default 200, cifar10 default 500).
        seed: seeds the image subset, the attack noise and the targeted labels.
        parts: digits only — sections to run: ``"tables"`` (Tables 1–5 and Figure 1),
            ``"fig3"``, ``"fig4"``, ``"fig5"``, ``"fig6"``, ``"fig7"`` (default: all).
        budget_n, budget_sources: cifar10 only — images and sources of the equal-budget table.
        fig6_ms: digits Figure 6 — noise samples m of the smoothed gradients (the largest is
            the reference of ``cos_ref``).
        fig7_alphas, fig7_steps: digits Figure 7 — step sizes (× ε) swept at T = 20 and
            iteration counts swept at α = 0.75 ε.
        fig7_n: digits Figure 7 — attack only the first ``fig7_n`` images of the evaluation set
            (``None``: all of them).
    """

    preset: str = "digits"
    n: int | None = None
    seed: int = 0
    parts: tuple[str, ...] = DIGITS_PARTS
    budget_n: int = 64
    budget_sources: tuple[str, ...] = ("cifar10-resnet20",)
    fig6_ms: tuple[int, ...] = FIG6_MS
    fig7_alphas: tuple[float, ...] = FIG7_ALPHAS
    fig7_steps: tuple[int, ...] = FIG7_STEPS
    fig7_n: int | None = FIG7_N

    def __post_init__(self) -> None:
        check_choice("preset", self.preset, PRESETS)
        for key in ("parts", "budget_sources", "fig6_ms", "fig7_alphas", "fig7_steps"):
            v = getattr(self, key)
            if isinstance(v, str) or not isinstance(v, Sequence) or not v:
                raise ValueError(f"{key} must be a non-empty list, got {v!r}")
            object.__setattr__(self, key, tuple(v))
        if self.n is not None:
            check_int_at_least("n", self.n, 1)
        check_int_at_least("seed", self.seed, 0)
        check_int_at_least("budget_n", self.budget_n, 1)
        for part in self.parts:
            check_choice("parts entry", part, DIGITS_PARTS)
        for s in self.budget_sources:
            if self.preset == "cifar10" and s not in CIFAR_MODELS:
                raise ValueError(f"budget source {s!r} must be one of {list(CIFAR_MODELS)}")
        for m in self.fig6_ms:
            check_int_at_least("fig6_ms entry", m, 1)
        for t in self.fig7_steps:
            check_int_at_least("fig7_steps entry", t, 1)
        for a in self.fig7_alphas:
            if isinstance(a, bool) or not (isinstance(a, int | float) and math.isfinite(a)
                                           and a > 0):
                raise ValueError(f"fig7_alphas entries must be positive numbers, got {a!r}")
        if self.fig7_n is not None:
            check_int_at_least("fig7_n", self.fig7_n, 1)

    @classmethod
    def fields(cls) -> list[str]:
        """The names of the settings (the study task's parameters)."""
        return [f.name for f in dataclasses.fields(cls)]

    @property
    def n_eval(self) -> int:
        """The size of the evaluation set (``n`` or the preset's default)."""
        return self.n if self.n is not None else (200 if self.preset == "digits" else 500)

    @property
    def core(self) -> dict[str, Any]:
        """What every step depends on: the preset, the evaluation set and the seed."""
        return {"preset": self.preset, "n": self.n_eval, "seed": self.seed}


def _core(st: dict[str, Any]) -> TransferStudySettings:
    c = st["core"]
    return TransferStudySettings(preset=c["preset"], n=c["n"], seed=c["seed"])


# ----------------------------------------------------------------------------------------------
# models and the evaluation set
# ----------------------------------------------------------------------------------------------

def _fc_net(depth: int, width: int) -> nn.Module:
    from .. import models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 + depth)
        return models.create("mlp", (1, 28, 28), 10, hidden=(width,) * depth)


def digits_fc(depth: int, *, width: int = FC_WIDTH,
              recipe: dict[str, Any] | None = None) -> nn.Module:
    """Fully connected digits classifier with ``depth`` hidden layers of ``width`` units (the
    paper's MNIST FC nets), trained on the embedded digits train split with ``recipe`` (default:
    Adam, 30 epochs, seeded); returns it in eval mode. The study keeps it as a store artefact
    (step ``transfer.fc_net``)."""
    from .. import data, defenses

    check_int_at_least("depth", depth, 0)
    net = _fc_net(depth, width)
    x, y = data.load("digits", split="train")
    r = _FC_RECIPE if recipe is None else recipe
    defenses.train(net, (x, y), epochs=r["epochs"], lr=r["lr"], batch_size=r["batch_size"],
                   optimizer=r["optimizer"], seed=r["seed"], show_progress=False)
    return net.eval()


def fc_step(depth: int) -> Step:
    """The step training the width-500 FC net of ``depth`` hidden layers."""
    return Step("transfer.fc_net", {"depth": depth, "width": FC_WIDTH, "recipe": _FC_RECIPE},
                rows=False)


@register_step("transfer.fc_net")
def _fc_net_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """Train one FC net; its ``state_dict`` is the artefact."""
    net = digits_fc(st["depth"], width=st["width"], recipe=st["recipe"])
    return StepOutput(tensors=dict(net.state_dict()))


def _models(preset: str, ctx: Any) -> dict[str, nn.Module]:
    """The preset's models by name, in table order (the FC nets from their artefacts)."""
    if preset == "cifar10":
        return {k: ctx.load_model(k) for k in CIFAR_MODELS}
    named = {k: ctx.load_model(k) for k in DIGITS_ZOO}
    for d in FC_DEPTHS:
        net = _fc_net(d, FC_WIDTH)
        net.load_state_dict(ctx.step(fc_step(d)).tensors)
        named[f"fc-d{d}"] = net.to(ctx.device).eval()
    return named


def _source(name: str, named: dict[str, nn.Module]) -> nn.Module:
    """A model by name; an :data:`ENSEMBLES` name is the ensemble of its members (the same model
    objects as the targets, so that members count as white-box)."""
    if name in ENSEMBLES:
        from ..models import Ensemble

        return Ensemble([named[k] for k in ENSEMBLES[name]])
    return named[name]


def _num_params(m: nn.Module) -> int:
    return int(sum(p.numel() for p in m.parameters()))


@torch.no_grad()
def _accuracy(m: nn.Module, x: Tensor, y: Tensor, bs: int = 500) -> float:
    pred = torch.cat([m(x[s:s + bs]).argmax(1) for s in range(0, x.shape[0], bs)])
    return float((pred == y).double().mean())


def _subset_correct(models_: Sequence[nn.Module], x: Tensor, y: Tensor, n: int | None,
                    seed: int, pool: int | None = None) -> tuple[Tensor, Tensor]:
    """Seeded random subset of ``n`` images correct for every model (candidates drawn from a
    seeded random pool of ``pool`` images first, to bound the cost on big test sets)."""
    from ..data import random_subset

    perm = random_subset(x.shape[0], pool, seed)
    xs, ys = x[perm], y[perm]
    ok = correct_by_all(list(models_), xs, ys)
    idx = torch.nonzero(ok).flatten()
    if n is not None:
        if idx.numel() < n:
            warn_caller(f"only {idx.numel()} of the {xs.shape[0]} candidate images are classified "
                        f"correctly by every model: the study uses those, not n={n}",
                        RuntimeWarning)
        idx = idx[:n]
    idx = idx.sort().values
    return xs[idx], ys[idx]


def eval_step(s: TransferStudySettings) -> Step:
    """The step choosing the evaluation set (and measuring the models, digits)."""
    extra = {"fc": _FC_RECIPE} if s.preset == "digits" else {}
    return Step("transfer.eval_set", {"core": s.core, **extra}, rows=False,
                after=tuple(fc_step(d) for d in FC_DEPTHS) if s.preset == "digits" else ())


@register_step("transfer.eval_set")
def _eval_set_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """The evaluation set (tensors ``x``, ``y``): a seeded random subset of ``n`` test images
    that every model classifies correctly; info: the models' test error (%) and size."""
    from .. import data

    s = _core(st)
    named = _models(s.preset, ctx)
    x_all, y_all = data.load(s.preset, split="test", root=ctx.data_root)
    x_all, y_all = x_all.to(ctx.device), y_all.to(ctx.device)
    info: dict[str, Any] = {}
    pool = None
    if s.preset == "digits":
        info["models"] = {k: {"test_error": 100 * (1 - _accuracy(m, x_all, y_all)),
                              "params": _num_params(m)} for k, m in named.items()}
    else:  # a seeded random pool (accuracy ≈ 81 % each → ≈ 70 % correct for all four)
        pool = min(x_all.shape[0], int(math.ceil(s.n_eval / 0.6)) + 32)
    x, y = _subset_correct(list(named.values()), x_all, y_all, s.n_eval, s.seed, pool=pool)
    return StepOutput(tensors={"x": x, "y": y}, info=info)


def _eval_set(s: TransferStudySettings, ctx: Any) -> tuple[Tensor, Tensor]:
    t = ctx.step(eval_step(s)).tensors
    return t["x"].to(ctx.device), t["y"].to(ctx.device)


# ----------------------------------------------------------------------------------------------
# transfer matrices (Tables 1–5, 2b)
# ----------------------------------------------------------------------------------------------

_ATTACK_CLASSES: dict[str, type[Attack]] = {"FGSM": FGSM, "IGSM": IGSM, "MIFGSM": MIFGSM}


def _atk(cls: str, sg: tuple[float, int, int] | None = None, **kw: Any) -> dict[str, Any]:
    """The JSON description of an attack: class name, keyword arguments and, for the sg
    variants, the smoothed gradient's ``(sigma, samples, chunk_size)``."""
    return {"cls": cls, **kw, **({"sg": list(sg)} if sg is not None else {})}


def _attack(a: dict[str, Any]) -> Attack:
    """The attack of an :func:`_atk` description."""
    kw = dict(a)
    cls = _ATTACK_CLASSES[kw.pop("cls")]
    sg = kw.pop("sg", None)
    if sg is not None:
        kw["gradient"] = SmoothedGradient(float(sg[0]), int(sg[1]), chunk_size=int(sg[2]))
    return cls(**kw)


def _tm_kw(s: TransferStudySettings, ctx: Any) -> dict[str, Any]:
    return {"seed": s.seed, "batch_size": 100 if s.preset == "digits" else 50,
            "progress": ctx.progress}


def matrix_step(s: TransferStudySettings, part: str, sources: Sequence[str],
                targets: Sequence[str], attack: dict[str, Any], *, targeted: bool = False,
                budget_subset: bool = False) -> Step:
    """The step of one transfer matrix (rows ``part, source, target, top1, top5, white_box,
    grad_evals``); ``budget_subset``: on the seeded ``budget_n`` subset of the evaluation set."""
    st = {"core": s.core, "part": part, "sources": list(sources), "targets": list(targets),
          "attack": attack, "targeted": targeted}
    if budget_subset:
        st["budget_n"] = s.budget_n
    return Step("transfer.matrix", st, after=(eval_step(s),))


def _matrix_rows(part: str, tm: TransferMatrix) -> list[dict[str, Any]]:
    rows = []
    for i, src in enumerate(tm.sources):
        for j, tgt in enumerate(tm.targets):
            # rates in % (rounded off the float noise of k/n·100, e.g. 55.000…01)
            rows.append({"part": part, "source": src, "target": tgt,
                         "top1": round(float(tm.top1[i, j]) * 100, 9),
                         "top5": round(float(tm.top5[i, j]) * 100, 9),
                         "white_box": bool(tm.white_box[i, j]),
                         "grad_evals": float(tm.grad_evals[i])})
    return rows


@register_step("transfer.matrix")
def _matrix_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """One transfer matrix: rows per (source, target) and the matrices as tensors."""
    s = _core(st)
    named = _models(s.preset, ctx)
    x, y = _eval_set(s, ctx)
    if "budget_n" in st:  # the equal-budget tables: a seeded subset of the evaluation set
        from ..data import random_subset

        pick = random_subset(x.shape[0], min(int(st["budget_n"]), x.shape[0]), s.seed + 1,
                             sort=True)
        x, y = x[pick], y[pick]
    tm = transfer_matrix([(k, _source(k, named)) for k in st["sources"]],
                         [(k, named[k]) for k in st["targets"]], _attack(st["attack"]), (x, y),
                         targeted=bool(st["targeted"]), **_tm_kw(s, ctx))
    return StepOutput(rows=_matrix_rows(st["part"], tm),
                      tensors={"top1": torch.from_numpy(tm.top1),
                               "top5": torch.from_numpy(tm.top5),
                               "white_box": torch.from_numpy(tm.white_box),
                               "grad_evals": torch.from_numpy(tm.grad_evals)},
                      info={"n": tm.n, "attack": tm.attack})


def _digits_tables(s: TransferStudySettings) -> list[Step]:
    """Tables 1–5 (digits)."""
    eps, eps_t, sg = EPS, EPS_TARGETED, (EPS, 20, 10)
    every, fcs = DIGITS_MODELS, [f"fc-d{d}" for d in FC_DEPTHS]
    srcs3 = DIGITS_ZOO
    steps = [matrix_step(s, f"table1_{key}", every, every, a) for key, a in (
        ("fgsm", _atk("FGSM", eps=eps)), ("igsm", _atk("IGSM", eps=eps, alpha=eps / 3, steps=5)),
        ("sg_igsm", _atk("IGSM", sg, eps=eps, alpha=eps / 3, steps=5)))]
    steps.append(matrix_step(s, "table2a_fgsm_fc_depth", fcs, fcs, _atk("FGSM", eps=eps)))
    steps.append(matrix_step(s, "table3_igsm_t100", srcs3, every,
                             _atk("IGSM", eps=eps, alpha=eps / 15, budget=100)))
    steps.append(matrix_step(s, "table3_sg_igsm_t5_m20", srcs3, every,
                             _atk("IGSM", sg, eps=eps, alpha=eps / 3, budget=100)))
    steps += [matrix_step(s, f"table4_{key}_targeted_ensembles", list(ENSEMBLES), every, a,
                          targeted=True) for key, a in (
        ("igsm", _atk("IGSM", eps=eps_t, alpha=0.75 * eps_t, steps=20)),
        ("sg_igsm", _atk("IGSM", sg, eps=eps_t, alpha=0.75 * eps_t, steps=20)))]
    steps += [matrix_step(s, f"table5_{key}", srcs3, srcs3, a) for key, a in (
        ("migsm", _atk("MIFGSM", eps=eps, alpha=eps / 3, steps=5, decay=1.0)),
        ("sg_igsm", _atk("IGSM", sg, eps=eps, alpha=eps / 3, steps=5)),
        ("sg_migsm", _atk("MIFGSM", sg, eps=eps, alpha=eps / 3, steps=5, decay=1.0)))]
    return steps


def _cifar_tables(s: TransferStudySettings) -> list[Step]:
    """Tables 2b and 3 (CIFAR-10 ResNets)."""
    eps = 15 / 255
    return [matrix_step(s, "table2b_fgsm_eps10", CIFAR_MODELS, CIFAR_MODELS,
                        _atk("FGSM", eps=10 / 255)),
            matrix_step(s, "table3_igsm_t100", s.budget_sources, CIFAR_MODELS,
                        _atk("IGSM", eps=eps, alpha=1 / 255, budget=100), budget_subset=True),
            matrix_step(s, "table3_sg_igsm_t5_m20", s.budget_sources, CIFAR_MODELS,
                        _atk("IGSM", (15 / 255, 20, 5), eps=eps, alpha=5 / 255, budget=100),
                        budget_subset=True)]


# ----------------------------------------------------------------------------------------------
# Figures 1, 3, 4
# ----------------------------------------------------------------------------------------------

@register_step("transfer.fig1")
def _fig1_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """Figure 1 rows: each source's test error (%), parameters and IGSM (T = 5) transfer success
    (%) to ``digits-resnet20`` (Table 1)."""
    s = _core(st)
    info = ctx.step(eval_step(s)).info["models"]
    top1 = ctx.step(Step("transfer.matrix", st["matrix"])).tensors["top1"]
    names, target = st["matrix"]["sources"], st["target"]
    j = st["matrix"]["targets"].index(target)
    return StepOutput(rows=[{"part": "fig1", "source": k,
                             "test_error": float(info[k]["test_error"]),
                             "params": float(info[k]["params"]),
                             "igsm_success": float(top1[i, j]) * 100}
                            for i, k in enumerate(names) if k != target],
                      info={"target": target})


def _fig1(s: TransferStudySettings, table1_igsm: Step) -> Step:
    return Step("transfer.fig1", {"core": s.core, "matrix": dict(table1_igsm.settings),
                                  "target": "digits-resnet20"},
                after=(table1_igsm, eval_step(s)))


@register_step("transfer.fig3a")
def _fig3a_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """Figure 3a rows: mean cos(G_A^(m), g_B) vs m for two model pairs (first 20 images)."""
    s = _core(st)
    named = _models(s.preset, ctx)
    x, y = _eval_set(s, ctx)
    rows = []
    for label, (a, b) in st["pairs"].items():
        v = gradient_similarity(named[a], named[b], x[:20], y[:20], sigma=EPS, ms=st["ms"],
                                seed=s.seed)
        rows += [{"part": "fig3a", "pair": label, "m": int(m), "cos": float(c),
                  "baseline": float(v.baseline)} for m, c in zip(v.ms, v.mean.tolist())]
    return StepOutput(rows=rows)


@register_step("transfer.boundary")
def _boundary_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """Figure 3b / 9: the decision-boundary map of every model in the plane of
    ``digits-lenet``'s smoothed gradient around the first evaluation image. The unit directions
    of Fig. 3b span ±ε·√d in ℓ2 (the ℓ2 length of a corner of the ℓ∞ ε-ball, ≈ 3× the digits
    models' DeepFool distances), the sign directions of Fig. 9 the ℓ∞ ball ±ε itself. Tensors:
    ``labels`` (models × R × R predicted classes), ``u``, ``v``; rows: the fraction of the map
    each model labels with the true class."""
    s = _core(st)
    named = _models(s.preset, ctx)
    x, y = _eval_set(s, ctx)
    sign = bool(st["sign"])
    dbm = decision_boundary_map(named["digits-lenet"], list(named.items()), x[0], int(y[0]),
                                sigma=EPS, samples=200,
                                extent=EPS if sign else EPS * math.sqrt(x[0].numel()),
                                resolution=61, sign=sign, seed=s.seed)
    part = "fig9" if sign else "fig3b"
    names = list(dbm.labels)
    return StepOutput(
        rows=[{"part": part, "model": k, "fraction_true_class": float((v == dbm.y).mean())}
              for k, v in dbm.labels.items()],
        tensors={"labels": torch.from_numpy(np.stack([dbm.labels[k] for k in names])),
                 "u": torch.from_numpy(np.asarray(dbm.u)),
                 "v": torch.from_numpy(np.asarray(dbm.v))},
        info={"models": names, "y": int(dbm.y), "sign": sign, "cos_G_g": float(dbm.cos_g_h),
              "source": "digits-lenet"})


def _fig3(s: TransferStudySettings) -> list[Step]:
    after = (eval_step(s),)
    pairs = {"lenet→fc": ["digits-lenet", "digits-fc"],
             "resnet20→lenet": ["digits-resnet20", "digits-lenet"]}
    return [Step("transfer.fig3a", {"core": s.core, "pairs": pairs,
                                    "ms": [1, 2, 5, 10, 20, 50, 100, 200]}, after=after),
            *(Step("transfer.boundary", {"core": s.core, "sign": sign}, after=after)
              for sign in (False, True))]


@register_step("transfer.fig4")
def _fig4_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """Figure 4 rows: top-1 transfer success (%) of sg-FGSM from ``digits-lenet`` to
    ``digits-resnet20`` and ``digits-fc``, vs ε for several m (4a) or vs σ at m = 30 (4b)."""
    s = _core(st)
    named = _models(s.preset, ctx)
    data = _eval_set(s, ctx)
    src = {"digits-lenet": named["digits-lenet"]}
    tgt = {k: named[k] for k in ("digits-resnet20", "digits-fc")}
    rows = []
    for curve, m, grid in st["curves"]:
        for v in grid:  # 4a: v = ε·255 (σ = 40/255); 4b: v = σ·255 (ε = 24/255)
            e, sigma = (v, EPS) if st["part"] == "fig4a" else (24, v / 255)
            atk = _attack(_atk("FGSM", (sigma, m, 10) if m else None, eps=e / 255))
            tm = transfer_matrix(src, tgt, atk, data, **_tm_kw(s, ctx))
            rows.append({"part": st["part"], "curve": curve, st["x"]: float(v),
                         "success": float(tm.top1.mean()) * 100})
    return StepOutput(rows=rows)


def _fig4(s: TransferStudySettings) -> list[Step]:
    eps_grid = [8, 16, 24, 32, 40, 48]
    curves_a = [["FGSM" if m == 0 else f"sg-FGSM m={m}", m, eps_grid] for m in (0, 5, 20, 50)]
    curves_b = [["sg-FGSM m=30, ε=24/255", 30, [0, 8, 16, 24, 32, 40, 56, 80]]]
    return [Step("transfer.fig4", {"core": s.core, "part": part, "x": x, "curves": curves},
                 after=(eval_step(s),))
            for part, x, curves in (("fig4a", "eps_255", curves_a),
                                    ("fig4b", "sigma_255", curves_b))]


# ----------------------------------------------------------------------------------------------
# Figure 5: destruction rates
# ----------------------------------------------------------------------------------------------

def _fig5_attacks() -> dict[str, dict[str, Any]]:
    eps, sg = EPS, (EPS, 20, 10)
    return {"FGSM": _atk("FGSM", eps=eps),
            "IGSM T=10": _atk("IGSM", eps=eps, alpha=eps / 3, steps=10),
            "IGSM T=30": _atk("IGSM", eps=eps, alpha=eps / 3, steps=30),
            "sg-FGSM": _atk("FGSM", sg, eps=eps),
            "sg-IGSM T=10": _atk("IGSM", sg, eps=eps, alpha=eps / 3, steps=10),
            "sg-IGSM T=30": _atk("IGSM", sg, eps=eps, alpha=eps / 3, steps=30)}


@register_step("transfer.fig5_adv")
def _fig5_adv_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """Adversarial examples of one Figure 5 attack crafted on ``digits-lenet`` (tensor
    ``x_adv``; info: their top-1 transfer success to ``digits-resnet20``)."""
    s = _core(st)
    named = _models(s.preset, ctx)
    tm = transfer_matrix({"digits-lenet": named["digits-lenet"]},
                         {"digits-resnet20": named["digits-resnet20"]}, _attack(st["attack"]),
                         _eval_set(s, ctx), keep_adv=True, **_tm_kw(s, ctx))
    return StepOutput(tensors={"x_adv": tm.adv["digits-lenet"]},
                      info={"transfer_top1": float(tm.top1[0, 0])})


@register_step("transfer.fig5")
def _fig5_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """Figure 5 rows: the destruction rate (fraction of transferred examples that the transform
    turns back to the true class on ``digits-resnet20``) per transform, strength and attack."""
    s = _core(st)
    target = _models(s.preset, ctx)["digits-resnet20"]
    x, y = _eval_set(s, ctx)
    advs = {name: ctx.step(Step("transfer.fig5_adv", a)).tensors["x_adv"].to(ctx.device)
            for name, a in st["attacks"].items()}
    rows = []
    for kind in ("rotation", "noise", "blur", "jpeg"):
        strengths = default_strengths(kind)
        for name, xa in advs.items():
            rates = destruction_curve(target, x, xa, y, kind, strengths, seed=s.seed)
            rows += [{"part": "fig5", "transform": kind, "strength": float(v), "attack": name,
                      "rate": float(r)} for v, r in zip(strengths, rates)]
    return StepOutput(rows=rows)


def _fig5(s: TransferStudySettings) -> list[Step]:
    adv = {name: {"core": s.core, "attack": a} for name, a in _fig5_attacks().items()}
    return [Step("transfer.fig5", {"core": s.core, "attacks": adv},
                 after=tuple(Step("transfer.fig5_adv", a, rows=False) for a in adv.values()))]


# ----------------------------------------------------------------------------------------------
# Figure 6: saliency of the smoothed gradient
# ----------------------------------------------------------------------------------------------

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


@register_step("transfer.fig6")
def _fig6_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """Figure 6: the saliency of the smoothed gradient G^(m) of ``digits-lenet`` vs m on the
    first ``FIG6_IMAGES`` evaluation images. Rows (``m = 0``: the plain gradient g): mean
    cos(G^(m), g), mean cos(G^(m), G^(max m)), mean relative total variation of |G^(m)|.
    Tensors (the first ``FIG6_SHOWN`` images, drawn by the report): ``image`` (channel mean),
    ``plain`` (saliency of g) and ``m<m>`` (saliency of G^(m))."""
    s = _core(st)
    model = _models(s.preset, ctx)["digits-lenet"]
    x, y = _eval_set(s, ctx)
    ms = sorted({int(m) for m in st["ms"]})
    xs, ys = x[:FIG6_IMAGES], y[:FIG6_IMAGES]
    g, sg = fig6_gradients(model, xs, ys, ms, sigma=FIG6_SIGMA, seed=s.seed)
    ref = sg[ms[-1]]
    rows = [{"part": "fig6", "m": 0, "cos_plain": 1.0, "cos_ref": float(_cos_rows(g, ref).mean()),
             "rel_tv": float(_relative_tv(_saliency(g)).mean())}]
    rows += [{"part": "fig6", "m": m, "cos_plain": float(_cos_rows(sg[m], g).mean()),
              "cos_ref": float(_cos_rows(sg[m], ref).mean()),
              "rel_tv": float(_relative_tv(_saliency(sg[m])).mean())} for m in ms]
    k = min(FIG6_SHOWN, xs.shape[0])
    tensors = {"image": xs[:k].mean(1), "plain": _saliency(g[:k]),
               **{f"m{m}": _saliency(sg[m][:k]) for m in ms}}
    return StepOutput(rows=rows, tensors=tensors,
                      info={"source": "digits-lenet", "sigma": FIG6_SIGMA, "ms": ms,
                            "n_images": int(xs.shape[0]), "labels": ys[:k].tolist()})


# ----------------------------------------------------------------------------------------------
# Figure 7: targeted ensembles vs step size and iterations
# ----------------------------------------------------------------------------------------------

@register_step("transfer.fig7_point")
def _fig7_point_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """One point of Figure 7: targeted IGSM or sg-IGSM (``method``) with α = ``alpha_eps``·ε and
    T = ``steps`` from the Table 4 ensembles; info: mean top-1/top-5 targeted success (%) over
    the ensembles and the held-out targets, and top-1 per ensemble."""
    s = _core(st)
    named = _models(s.preset, ctx)
    x, y = _eval_set(s, ctx)
    if st["n"] is not None:
        x, y = x[:st["n"]], y[:st["n"]]
    # chunk_size=1 (100-image forwards) is the fastest here. The noise is drawn up front, so
    # only the model's batch-size-dependent float rounding could differ from Table 4's
    # chunk_size=10; on the default 100 images both give the same numbers.
    sg = (40 / 255, 20, 1) if st["method"] == "sg-IGSM" else None
    atk = _atk("IGSM", sg, eps=EPS_TARGETED, alpha=st["alpha_eps"] * EPS_TARGETED,
               steps=st["steps"])
    tm = transfer_matrix([(k, _source(k, named)) for k in ENSEMBLES],
                         [(k, named[k]) for k in FIG7_TARGETS], _attack(atk), (x, y),
                         targeted=True, **_tm_kw(s, ctx))
    return StepOutput(info={"top1": float(tm.top1.mean()) * 100,
                            "top5": float(tm.top5.mean()) * 100,
                            "top1_per_ensemble": [float(v) * 100 for v in tm.top1.mean(1)],
                            "n": tm.n})


@register_step("transfer.fig7")
def _fig7_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """Figure 7 rows: per sweep (``alpha``: α at T = 20; ``steps``: T at α = 0.75 ε) and method,
    the mean targeted top-1/top-5 success (%) of each point."""
    rows = []
    for sweep, pts in st["sweeps"].items():
        for method in ("IGSM", "sg-IGSM"):
            for a, t in pts:
                p = ctx.step(_fig7_point(st["core"], st["n"], method, a, t)).info
                rows.append({"part": "fig7", "sweep": sweep, "method": method,
                             "alpha_eps": float(a), "steps": int(t),
                             "top1": round(float(p["top1"]), 9),
                             "top5": round(float(p["top5"]), 9)})
    return StepOutput(rows=rows)


def _fig7_point(core: dict[str, Any], n: int | None, method: str, a: float, t: int) -> Step:
    return Step("transfer.fig7_point", {"core": core, "n": n, "method": method,
                                        "alpha_eps": float(a), "steps": int(t)}, rows=False)


def _fig7(s: TransferStudySettings) -> list[Step]:
    sweeps = {"alpha": [[float(a), FIG7_T_REF] for a in s.fig7_alphas],
              "steps": [[FIG7_ALPHA_REF, int(t)] for t in s.fig7_steps]}
    points = {p.key: p for pts in sweeps.values() for a, t in pts
              for p in (_fig7_point(s.core, s.fig7_n, m, a, t) for m in ("IGSM", "sg-IGSM"))}
    return [Step("transfer.fig7", {"core": s.core, "n": s.fig7_n, "sweeps": sweeps},
                 after=tuple(points.values()))]


# ----------------------------------------------------------------------------------------------
# the plan
# ----------------------------------------------------------------------------------------------

def plan(s: TransferStudySettings) -> list[Step]:
    """The steps of the study, in the order of its rows (see the module docstring)."""
    if s.preset == "cifar10":
        return _cifar_tables(s)
    steps: list[Step] = []
    if "tables" in s.parts:
        tables = _digits_tables(s)
        steps += [*tables, _fig1(s, tables[1])]
    if "fig3" in s.parts:
        steps += _fig3(s)
    if "fig4" in s.parts:
        steps += _fig4(s)
    if "fig5" in s.parts:
        steps += _fig5(s)
    if "fig6" in s.parts:
        steps.append(Step("transfer.fig6", {"core": s.core, "ms": sorted(set(s.fig6_ms))},
                          after=(eval_step(s),)))
    if "fig7" in s.parts:
        steps += _fig7(s)
    return steps
