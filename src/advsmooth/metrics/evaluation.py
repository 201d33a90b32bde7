"""``evaluate``: how robust is this model? Robust accuracy over an ε grid, and more than one number.

One call runs a cascade of attacks per sample, cheap to strong, and a sample leaves the cascade as
soon as one attack misclassifies it (the worst case over attacks, as AutoAttack does: Croce &
Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", arXiv:2003.01690). The ε grid is walked in ascending order: the balls
are nested, so an image that fools the model at ε fools it at every larger ε, and only the
survivors are attacked at the next ε (robust accuracy is non-increasing in ε by construction).

Stages (``stages="standard"``; each one attacks the samples still robust at that ε):

``pgd-ce``
    PGD with cross-entropy (Madry et al.), random start, ``pgd_steps`` steps, α = 2.5ε/steps.
    It attacks every sample PGD itself has not fooled at a smaller ε, so the report also holds
    plain PGD-CE's robust accuracy, for the gradient-masking check below.
``deepfool``
    The DeepFool minimal perturbation (Moosavi-Dezfooli et al., "DeepFool: a simple and accurate
    method to fool deep neural networks", arXiv:1511.04599), computed once, projected onto the
    ε-ball; free apart from one verifying forward.
``fab-t`` (ℓ2 only in ``"standard"``)
    FAB-T (:class:`~advsmooth.attacks.FAB`; Croce & Hein, "Minimally distorted adversarial
    examples with a fast adaptive boundary attack", arXiv:1907.02044): DeepFool-like projections
    onto the face of each of the ``fab_targets`` most likely wrong classes, biased towards the
    original image, ``fab_steps`` steps; a sample stops at its first adversarial within ε. At ℓ2
    it finds what APGD misses on a model trained against ℓ∞ PGD (the MNIST LeNet of
    ``benchmarks/README.md``: every one of the first 100 images fooled within ε = 2, where the
    other stages leave 24 %); at ℓ∞ it fooled none of the images the other stages missed there,
    at 0.1 s per image, so ``"standard"`` leaves it out at ℓ∞ (name it to run it).
``apgd-ce``, ``apgd-t``
    APGD with cross-entropy, then APGD with the targeted DLR loss against the ``apgd_targets``
    most likely wrong classes (:class:`~advsmooth.attacks.APGD`).
``square``
    The Square attack (:class:`~advsmooth.attacks.Square`, ℓ∞ or ℓ2): score-based random
    search, no gradient, so it finds what gradient masking hides. It attacks the survivors in
    groups of 128 (``batch_size`` when larger): those DeepFool could not fool first (their
    gradients may mislead), then the nearest by DeepFool's distance. Until Square has fooled a
    sample (at this ε or a smaller one) it stops after a group in which it fooled nobody; once it
    has, it attacks every survivor, as AutoAttack does (``square_all=True``: always). On the
    undefended MNIST LeNet of ``benchmarks/README.md`` attacking all 917 survivors of ε = 0.05
    took 227 s (40 % of the grid's time) and fooled none; on the PGD-trained one Square fools
    samples every gradient stage misses, and then attacks them all.

Besides robust accuracy per ε the report holds: the DeepFool minimal-perturbation distribution
(median ‖r‖, ρ_adv, the fraction of samples with ‖r‖ ≤ ε — an upper bound on robust accuracy
that costs a few gradients per image), an optional SmoothFool smoothness profile (fooling rate vs
σg; Dabouei et al., "SmoothFool: an efficient framework for computing smooth adversarial
perturbations", arXiv:1910.03624) and gradient-masking flags:

``pgd_gap``
    plain PGD-CE's robust accuracy exceeds the cascade's by ≥ ``gap_points`` points at some ε
    (a saturated cross-entropy or masked gradients: PGD numbers alone would overstate
    robustness);
``blackbox_beats_whitebox``
    at some ε the gradient-free Square attack fooled ≥ ``gap_points`` points of samples every
    gradient attack missed (masked, shattered or zero gradients);
``zero_gradients``
    more than 10 % of the correctly classified samples have an exactly zero input gradient;
``deepfool_unbounded``
    unbounded DeepFool fooled fewer than 95 % of the correctly classified samples;
``randomized``
    two forward passes of the same input differ (noise injection, ``SmoothedClassifier``): the
    gradient stages then use an expectation over the randomness (EOT / EPGD,
    :class:`~advsmooth.attacks.ExpectationGradient`), a sample counts as fooled only if
    the majority of ``draws`` forward passes misclassify its image, and DeepFool (whose
    linearisation of a random or vote-based classifier means nothing) is left out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._tensors import check_images, check_labels, check_model_compat, frozen_model, predict
from .._utils import check_bool, check_int_at_least, did_you_mean
from .._utils import progress as _bar
from ..attacks.apgd import APGD
from ..attacks.base import Attack, run_batched
from ..attacks.deepfool import DeepFool
from ..attacks.execution import forward_in_chunks
from ..attacks.fab import FAB
from ..attacks.grid import check_eps_list
from ..attacks.iterative import PGD, normalize_norm, project_l2, project_linf
from ..attacks.smoothfool import SmoothFool
from ..attacks.smoothing_gradients import ExpectationGradient
from ..attacks.square import Square
from ..checks import is_randomized

__all__ = ["evaluate", "RobustnessReport", "Flag", "STAGES", "stage_names"]

#: every stage, in cascade order (``stages="standard"`` at ℓ∞ leaves out ``fab-t``)
STAGES = ("pgd-ce", "deepfool", "fab-t", "apgd-ce", "apgd-t", "square")
#: survivors per group of the Square stage's early stop (see the module docstring): a group
#: that fools nobody ends the stage, so the group must not shrink with a small ``batch_size``
SQUARE_GROUP = 128


def stage_names(norm: str | float, stages: str | Sequence[str] = "standard") -> list[str]:
    """The stage list for ``norm`` (``"inf"`` or ``2``): ``"standard"`` (all of :data:`STAGES`;
    at ℓ∞ all but ``fab-t``), ``"fast"`` (PGD-CE, DeepFool, APGD-CE) or an explicit list of
    names from :data:`STAGES` (run in the order given)."""
    nrm = normalize_norm(norm)  # a bad norm fails here
    if isinstance(stages, str):
        if stages == "standard":
            names = [s for s in STAGES if nrm == "2" or s != "fab-t"]
        elif stages == "fast":
            names = ["pgd-ce", "deepfool", "apgd-ce"]
        else:
            raise ValueError(f"stages must be 'standard', 'fast' or a list of {STAGES}, "
                             f"got {stages!r}")
        return names
    names = list(stages)
    for s in names:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r}; stages are {', '.join(STAGES)}"
                             f"{did_you_mean(s, STAGES)}")
    if not names:
        raise ValueError("stages must name at least one stage")
    return names


@dataclass
class Flag:
    """One gradient-masking check: ``raised`` is True when the evidence was found."""

    name: str
    raised: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "raised": self.raised, "detail": self.detail}


@dataclass
class RobustnessReport:
    """What :func:`evaluate` found. Fractions are over all ``n`` samples.

    Attributes:
        norm: ``"inf"`` or ``"2"``; ``eps``: the radii (ascending, pixel units).
        n: samples; ``clean_accuracy``: fraction classified correctly.
        robust_accuracy: ε → fraction classified correctly and not fooled by any stage.
        pgd_robust_accuracy: ε → the same for PGD-CE alone (over the grid); ``None`` where the
            stages did not include ``"pgd-ce"``.
        stages: one row per (ε, stage): ``eps``, ``stage``, ``attacked`` (samples it attacked),
            ``not_attacked`` (survivors the Square stage left after a group that fooled nobody,
            before it had fooled any sample),
            ``fooled`` (samples it fooled that no earlier stage had), ``robust_accuracy`` after
            it, ``seconds``, ``grad_evals`` and ``forward_evals`` (totals over its samples).
        robust: ``(len(eps), n)`` bool per sample; ``fooled_by``: ``(len(eps), n)`` int, the
            index into ``stage_list`` of the stage that fooled the sample first (``-1``:
            robust, ``-2``: misclassified clean).
        deepfool: ``median_norm``, ``rho_adv``, ``success_rate`` and ``fraction_within``
            (ε → fraction of all samples correctly classified whose DeepFool ‖r‖ ≤ ε), or empty.
        smoothness: rows ``sigma``, ``fooling_rate``, ``median_l2``, ``n`` (SmoothFool), or empty.
        flags: the gradient-masking checks (:class:`Flag`).
        randomized: whether the model was found randomised (EOT used).
        seconds: wall time of the whole evaluation; ``config``: the settings used.
    """

    norm: str
    eps: list[float]
    n: int
    clean_accuracy: float
    robust_accuracy: dict[float, float]
    pgd_robust_accuracy: dict[float, float | None]
    stage_list: list[str]
    stages: list[dict[str, Any]]
    robust: Tensor
    fooled_by: Tensor
    deepfool: dict[str, Any] = field(default_factory=dict)
    smoothness: list[dict[str, Any]] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    randomized: bool = False
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    #: ``(len(eps), N, C, H, W)`` the image that fooled each sample first (``x`` itself where
    #: robust), with ``keep_images=True``; not serialised
    images: Tensor | None = field(default=None, repr=False)

    @property
    def masking_suspected(self) -> bool:
        """Whether any gradient-masking flag other than ``randomized`` was raised."""
        return any(f.raised for f in self.flags if f.name != "randomized")

    def table(self) -> str:
        """A Markdown table: one row per ε (robust accuracy, PGD-CE alone, DeepFool bound)."""
        head = ("| ε | robust accuracy | PGD-CE alone | DeepFool ‖r‖ > ε (upper bound) |\n"
                "| --- | --- | --- | --- |")
        rows = []
        within = self.deepfool.get("fraction_within", {})
        for e in self.eps:
            bound = (f"{self.clean_accuracy - within[e]:.1%}" if e in within else "—")
            pgd = self.pgd_robust_accuracy[e]
            rows.append(f"| {_fmt_eps(e)} | {self.robust_accuracy[e]:.1%} | "
                        f"{'—' if pgd is None else f'{pgd:.1%}'} | {bound} |")
        return "\n".join([head, *rows])

    def summary(self) -> str:
        """A few lines for a terminal: clean accuracy, the table, flags."""
        lines = [f"{self.n} samples, norm {'ℓ∞' if self.norm == 'inf' else 'ℓ2'}, clean accuracy "
                 f"{self.clean_accuracy:.1%}, {self.seconds:.1f} s"
                 + (" (randomised model: EOT)" if self.randomized else ""), "", self.table(), ""]
        raised = [f for f in self.flags if f.raised]
        if raised:
            lines += [f"flag {f.name}: {f.detail}" for f in raised]
        else:
            lines.append("no gradient-masking flag raised")
        left = [(s["eps"], s["not_attacked"]) for s in self.stages if s.get("not_attacked")]
        if left:
            lines.append("Square left survivors unattacked after a group of the nearest fooled "
                         "nobody: " + ", ".join(f"{k} at ε = {_fmt_eps(e)}" for e, k in left)
                         + " (square_all=True attacks them all)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (per-sample tensors as lists)."""
        return {
            "norm": self.norm, "eps": self.eps, "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": [self.robust_accuracy[e] for e in self.eps],
            "pgd_robust_accuracy": [self.pgd_robust_accuracy[e] for e in self.eps],
            "stage_list": self.stage_list, "stages": self.stages,
            "robust": self.robust.int().tolist(), "fooled_by": self.fooled_by.tolist(),
            "deepfool": {**{k: v for k, v in self.deepfool.items() if k != "fraction_within"},
                         "fraction_within": [self.deepfool["fraction_within"][e]
                                             for e in self.eps]} if self.deepfool else {},
            "smoothness": self.smoothness, "flags": [f.to_dict() for f in self.flags],
            "randomized": self.randomized, "masking_suspected": self.masking_suspected,
            "seconds": self.seconds, "config": self.config,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RobustnessReport:
        """Inverse of :meth:`to_dict`."""
        eps = [float(e) for e in d["eps"]]
        df = dict(d.get("deepfool") or {})
        if df:
            df["fraction_within"] = dict(zip(eps, df["fraction_within"], strict=True))
        return cls(
            norm=d["norm"], eps=eps, n=int(d["n"]), clean_accuracy=float(d["clean_accuracy"]),
            robust_accuracy=dict(zip(eps, d["robust_accuracy"], strict=True)),
            pgd_robust_accuracy=dict(zip(eps, d["pgd_robust_accuracy"], strict=True)),
            stage_list=list(d["stage_list"]), stages=list(d["stages"]),
            robust=torch.tensor(d["robust"], dtype=torch.bool).reshape(len(eps), -1),
            fooled_by=torch.tensor(d["fooled_by"], dtype=torch.long).reshape(len(eps), -1),
            deepfool=df, smoothness=list(d.get("smoothness") or []),
            flags=[Flag(**f) for f in d.get("flags", [])], randomized=bool(d["randomized"]),
            seconds=float(d.get("seconds", 0.0)), config=dict(d.get("config") or {}))


def _fmt_eps(e: float) -> str:
    """``0.3`` → ``"0.3"``; ``8/255`` → ``"8/255"`` (a multiple of 1/255 with no short decimal)."""
    k = e * 255
    if float(f"{e:.6g}") != e and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{e:.4g}"


# ----------------------------------------------------------------------------------------------
# the evaluation
# ----------------------------------------------------------------------------------------------

class _Judge:
    """Decides whether images fool the model: one forward, or the majority of ``draws``
    forwards for a randomised model. Counts its forwards."""

    def __init__(self, model: nn.Module, randomized: bool, draws: int, batch_size: int) -> None:
        self.model, self.randomized, self.draws, self.bs = model, randomized, draws, batch_size
        self.forwards = 0

    @torch.no_grad()
    def wrong(self, x: Tensor, y: Tensor) -> Tensor:
        k = self.draws if self.randomized else 1
        votes = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if x.shape[0] == 0:
            return votes.bool()
        with frozen_model(self.model), torch.no_grad():
            for _ in range(k):
                votes += (predict(forward_in_chunks(self.model, x, self.bs)) != y).long()
        self.forwards += k * x.shape[0]
        return 2 * votes > k


def _project(norm: str, x: Tensor, x_adv: Tensor, eps: float) -> Tensor:
    return project_linf(x, x_adv, eps) if norm == "inf" else project_l2(x, x_adv, eps)


def _pnorm(r: Tensor, norm: str) -> Tensor:
    r = r.flatten(1).double()
    return r.abs().amax(1) if norm == "inf" else r.norm(dim=1)


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor | Sequence[int],
    *,
    norm: str | float = "inf",
    eps: float | Sequence[float],
    stages: str | Sequence[str] = "standard",
    pgd_steps: int = 20,
    apgd_steps: int = 100,
    apgd_restarts: int = 1,
    apgd_targets: int = 3,
    fab_steps: int = 100,
    fab_targets: int = 3,
    square_queries: int = 2000,
    square_p_init: float = 0.8,
    square_all: bool = False,
    deepfool: bool = True,
    smoothness: Sequence[float] | None = None,
    smoothness_n: int = 32,
    randomized: bool | None = None,
    eot_samples: int = 8,
    draws: int = 5,
    gap_points: float = 1.0,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
    progress_bar: bool = True,
    keep_images: bool = False,
) -> RobustnessReport:
    """Evaluate the robustness of ``model`` on ``(x, y)`` over the radii ``eps``.

    Args:
        model: classifier on ``N×C×H×W`` pixels in ``[0, 1]`` returning ``N×K`` logits.
        x: images ``N×C×H×W`` in ``[0, 1]``; ``y``: labels ``(N,)``.
        norm: ``"inf"`` or ``2``.
        eps: one radius or a list (pixel units; any order).
        stages: ``"standard"``, ``"fast"`` or a list of stage names (see the module docstring).
        pgd_steps: PGD-CE steps. apgd_steps / apgd_restarts: APGD iterations / restarts per run.
        apgd_targets: target classes of the targeted DLR stage.
        fab_steps / fab_targets: FAB-T steps per target / target classes.
        square_queries / square_p_init: Square attack budget and initial square fraction.
        square_all: Square attacks every survivor (default: nearest first by DeepFool, in
            batches, until one fools nobody, unless Square fooled a sample: module docstring).
        deepfool: compute the DeepFool distribution (and use it as a stage if listed).
        smoothness: σg values of the SmoothFool profile (``None``: none), on the first
            ``smoothness_n`` correctly classified samples.
        randomized: force (True/False) or detect (``None``) a randomised model.
        eot_samples: copies per gradient of the EOT estimator for a randomised model.
        draws: forward passes whose majority decides a randomised model's verdict.
        gap_points: percentage points of the ``pgd_gap`` / ``blackbox_beats_whitebox`` flags.
        batch_size: images per attack call (128: passes over at most 128 images keep the
            activations in the CPU cache). seed: seeds every random choice (per ε and stage).
        progress: print a line per (ε, stage). progress_bar: a bar over the (ε, stage) pairs
            on a terminal (never in a log, a pipe or CI, nor with ``$ADVSMOOTH_NO_PROGRESS``).
        keep_images: keep, per ε, the image that fooled each sample (``report.images``) so that
            the verdicts can be checked independently.

    Returns:
        A :class:`RobustnessReport`.
    """
    t_start = time.perf_counter()
    _check_inputs(model, x, y, batch_size)
    nrm = normalize_norm(norm)
    radii = check_eps_list([eps] if isinstance(eps, (int, float)) else eps)
    cfg = _Settings(norm=nrm, radii=radii, pgd_steps=pgd_steps, apgd_steps=apgd_steps,
                    apgd_restarts=apgd_restarts, apgd_targets=apgd_targets,
                    fab_steps=fab_steps, fab_targets=fab_targets,
                    square_queries=square_queries, square_p_init=square_p_init,
                    square_all=check_bool("square_all", square_all), eot_samples=eot_samples,
                    draws=draws, gap_points=gap_points, batch_size=batch_size, seed=seed,
                    progress=progress, progress_bar=check_bool("progress_bar", progress_bar),
                    keep_images=keep_images)
    run = _Cascade(model, x.detach(), y, stage_names(nrm, stages), cfg, randomized)
    run.start(deepfool, smoothness)
    for e in radii:
        run.walk_radius(e)
    return run.report(smoothness, smoothness_n, t_start)


def _check_inputs(model: nn.Module, x: Tensor, y: Any, batch_size: Any) -> None:
    """One clear ``ValueError``/``TypeError`` for inputs :func:`evaluate` cannot use."""
    check_images(x)
    if x.shape[0] == 0:
        raise ValueError("x holds no samples")
    check_model_compat(model, x)
    if y is None:
        raise ValueError("evaluate needs the true labels y: robust accuracy counts the samples "
                         "classified correctly under attack")
    check_int_at_least("batch_size", batch_size, 1)


@dataclass(frozen=True)
class _Settings:
    """The knobs of one :func:`evaluate` call (its arguments, ``norm`` normalised and ``radii``
    sorted ascending)."""

    norm: str
    radii: list[float]
    pgd_steps: int
    apgd_steps: int
    apgd_restarts: int
    apgd_targets: int
    fab_steps: int
    fab_targets: int
    square_queries: int
    square_p_init: float
    square_all: bool
    eot_samples: int
    draws: int
    gap_points: float
    batch_size: int
    seed: int
    progress: bool
    progress_bar: bool
    keep_images: bool

    def config(self, names: list[str]) -> dict[str, Any]:
        """The ``RobustnessReport.config`` dict."""
        return {"stages": names, "pgd_steps": self.pgd_steps, "apgd_steps": self.apgd_steps,
                "apgd_restarts": self.apgd_restarts, "apgd_targets": self.apgd_targets,
                "fab_steps": self.fab_steps, "fab_targets": self.fab_targets,
                "square_queries": self.square_queries, "square_p_init": self.square_p_init,
                "square_all": self.square_all, "eot_samples": self.eot_samples, "draws": self.draws,
                "gap_points": self.gap_points, "seed": self.seed,
                "batch_size": self.batch_size}

    def stage_seed(self, e: float, name: str) -> int:
        """The seed of stage ``name`` at radius ``e``: from the radius's value and the stage's
        name, not their positions, so that adding a radius to the grid or a stage to the list
        changes no other stage's random choices."""
        return self.seed + 1009 * round(e * 2**20) + 17 * STAGES.index(name)


class _Cascade:
    """The state of one :func:`evaluate` call: the clean pass, the DeepFool distribution, the
    cascade walked radius by radius (a sample leaves at its first success) and the flags.

    Per-sample bool tensors ``(N,)``: ``correct`` (clean), ``fooled`` (at the current ε or a
    smaller one), ``pgd_fooled`` (by PGD-CE alone) and ``gradient_fooled`` (by any gradient
    stage, for the black-box flag).
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor | Sequence[int], names: list[str],
                 cfg: _Settings, randomized: bool | None) -> None:
        self.model, self.x, self.cfg = model, x, cfg
        n = self.n = x.shape[0]
        bs = cfg.batch_size
        with frozen_model(model), torch.no_grad():
            z0 = forward_in_chunks(model, x, bs)
        self.labels = check_labels(y, n, int(z0.shape[1]) if z0.ndim == 2 else None, x.device)
        rnd = is_randomized(model, x[: min(n, 8)]) if randomized is None else bool(randomized)
        self.rnd = rnd
        self.judge = _Judge(model, rnd, cfg.draws, bs)
        self.correct = ~self.judge.wrong(x, self.labels)
        self.gradient = _eot_gradient(model, cfg.eot_samples) if rnd else None
        # DeepFool's and FAB's linearisation of a randomised (or vote-based) classifier means
        # nothing
        self.names = [s for s in names if s not in ("deepfool", "fab-t")] if rnd else names
        if z0.ndim == 1 or z0.shape[1] < 3:  # two classes: APGD-T's DLR loss has no gradient,
            self.names = [s for s in self.names if s != "apgd-t"]  # and APGD-CE covers it
        if not self.names:
            raise ValueError(f"no stage of {names} applies to this model (DeepFool and FAB-T "
                             "need a deterministic model, APGD-T three classes or more)")
        self.flags: list[Flag] = []
        self.bar = _bar(total=len(cfg.radii) * len(self.names), desc="evaluate",
                        enabled=cfg.progress_bar, unit="stage")
        self.df_info: dict[str, Any] = {}
        self.df_adv: Tensor | None = None
        self.df_norm: Tensor | None = None  # (N,) DeepFool's ‖r‖ (∞: not fooled or not run)
        self.fooled = ~self.correct
        self.pgd_fooled = ~self.correct
        self.gradient_fooled = ~self.correct
        self.fooled_by = torch.full((n,), -2, dtype=torch.long, device=x.device)
        self.fooled_by[self.correct] = -1
        self.pgd_acc: dict[float, float | None] = {}
        self.adv = x.clone() if cfg.keep_images else x
        self.snapshots: list[Tensor] = []
        self.robust_rows: list[Tensor] = []
        self.by_rows: list[Tensor] = []
        self.stage_rows: list[dict[str, Any]] = []
        self.square_only, self.square_only_eps = 0, cfg.radii[-1]
        self.square_found = False  # Square fooled a sample (at some ε so far)

    def start(self, deepfool: bool, smoothness: Sequence[float] | None) -> None:
        """Before the first radius: the DeepFool distribution and the zero-gradient flag (and a
        SmoothFool profile of a randomised model refused before any attack)."""
        if smoothness and self.rnd:
            raise ValueError("smoothness (the SmoothFool profile) needs a deterministic model; "
                             "this one is randomised: evaluate its base model for the profile")
        self.deepfool_distribution(deepfool)
        self.flags.append(_zero_gradient_flag(self.model, self.x, self.labels, self.correct,
                                              self.cfg.batch_size, self.rnd))

    def deepfool_distribution(self, wanted: bool) -> None:
        """DeepFool once on the correctly classified samples: the minimal-perturbation
        distribution (``df_info``), the ``deepfool_unbounded`` flag and the images of the
        ``deepfool`` stage (``df_adv``)."""
        if not (wanted or "deepfool" in self.names) or self.rnd:
            return
        idx = torch.nonzero(self.correct).flatten()
        if not idx.numel():
            return
        x, n, nrm, radii = self.x, self.n, self.cfg.norm, self.cfg.radii
        t0 = time.perf_counter()
        dfa = DeepFool(norm=2 if nrm == "2" else "inf", clip=True, max_iter=50)
        res = run_batched(dfa, self.model, x[idx], self.labels[idx],
                          batch_size=self.cfg.batch_size, progress_bar=False)
        ok = res.success
        self.df_adv = x.clone()
        self.df_adv[idx] = res.x_adv
        r = _pnorm(res.x_adv - res.x, nrm)
        df_norm = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
        df_norm[idx[ok]] = r[ok]
        self.df_norm = df_norm
        l2 = _pnorm(res.x_adv - res.x, "2")
        rho = (l2 / _pnorm(res.x, "2").clamp_min(1e-12))[ok]
        self.df_info = {
            "success_rate": float(ok.double().mean()),
            "median_norm": float(r[ok].median()) if ok.any() else math.nan,
            "rho_adv": float(rho.mean()) if ok.any() else math.nan,
            "grad_evals": float(res.grad_evals.double().mean()),
            "seconds": time.perf_counter() - t0,
            "fraction_within": {e: float((df_norm <= e).double().sum() / n) for e in radii},
        }
        rate = self.df_info["success_rate"]
        self.flags.append(Flag("deepfool_unbounded", rate < 0.95,
                               f"unbounded DeepFool fooled {rate:.1%} of the correctly "
                               "classified samples"))

    def walk_radius(self, e: float) -> None:
        """Run every stage at radius ``e`` on the samples still robust, then record the
        per-sample verdicts at ``e``."""
        for si, name in enumerate(self.names):
            self._stage(e, si, name)
        if "pgd-ce" not in self.names:
            self.pgd_acc[e] = None  # not run: "—" in tables, null in JSON
        self.robust_rows.append(~self.fooled)
        self.by_rows.append(self.fooled_by.clone())
        if self.cfg.keep_images:
            self.snapshots.append(self.adv.clone())

    def _stage(self, e: float, si: int, name: str) -> None:
        """One stage of the cascade at radius ``e``; books what it fooled."""
        todo = ~self.pgd_fooled if name == "pgd-ce" else ~self.fooled
        todo &= self.correct
        rows = torch.nonzero(todo).flatten()
        t0 = time.perf_counter()
        ge = fe = 0.0
        attacked = rows.numel()
        new = torch.zeros(self.n, dtype=torch.bool, device=self.x.device)
        found = self.x.clone() if self.cfg.keep_images else None
        if rows.numel():
            if name == "deepfool":
                hit, images, fe = self._deepfool_stage(rows, e)
            elif name == "square":
                hit, images, ge, fe, attacked = self._square_stage(rows, e,
                                                                   self.cfg.stage_seed(e, name))
            else:
                hit, images, ge, fe = self._attack_stage(rows, e, name,
                                                         self.cfg.stage_seed(e, name))
            new[rows[hit]] = True
            if found is not None:
                found[rows[hit]] = images[hit]
        if name == "pgd-ce":
            self.pgd_fooled |= new
            self.pgd_acc[e] = float((~self.pgd_fooled).double().mean())
        elif name != "square":
            self.gradient_fooled |= new
        newly = new & ~self.fooled
        if found is not None:
            self.adv[newly] = found[newly]
        if name == "square":  # the ε where Square alone fooled the most
            only = int((newly & ~self.gradient_fooled).sum())
            if only > self.square_only:
                self.square_only, self.square_only_eps = only, e
        self.fooled_by[newly] = si
        self.fooled |= new
        acc = float((~self.fooled).double().mean())
        self.stage_rows.append({"eps": e, "stage": name, "attacked": int(attacked),
                                "not_attacked": int(rows.numel() - attacked),
                                "fooled": int(newly.sum()), "robust_accuracy": acc,
                                "seconds": time.perf_counter() - t0,
                                "grad_evals": ge, "forward_evals": fe})
        if self.cfg.progress:
            print(f"eps {_fmt_eps(e)} {name}: attacked {attacked}, fooled "
                  f"{int(newly.sum())}, robust {acc:.1%}", flush=True)
        self.bar.update(1)
        self.bar.set_postfix(eps=_fmt_eps(e), stage=name, robust=f"{acc:.1%}", refresh=False)

    def _deepfool_stage(self, rows: Tensor, e: float) -> tuple[Tensor, Tensor, float]:
        """DeepFool's image projected onto the ε-ball: ``(hit, images, forwards)``."""
        if self.df_adv is None:
            return torch.zeros_like(rows, dtype=torch.bool), self.x[rows], 0.0
        cand = _project(self.cfg.norm, self.x[rows], self.df_adv[rows], e)
        return self.judge.wrong(cand, self.labels[rows]), cand, float(rows.numel())

    def _square_stage(self, rows: Tensor, e: float,
                      seed: int) -> tuple[Tensor, Tensor, float, float, int]:
        """Square on ``rows`` in groups of ``SQUARE_GROUP`` (or ``batch_size``): samples DeepFool
        could not fool first, then by DeepFool's distance, stopping after a group in which it
        fools nobody as long as Square has fooled no sample (every row at once with
        ``square_all``, once Square has fooled a sample, or without the DeepFool distribution):
        ``(hit, images, gradients, forwards, samples attacked)``."""
        bs = max(self.cfg.batch_size, SQUARE_GROUP)
        if self.cfg.square_all or self.square_found or self.df_norm is None \
                or rows.numel() <= bs:  # one call on every row, in their order
            order, bs = torch.arange(rows.numel(), device=rows.device), rows.numel()
        else:
            key = self.df_norm[rows].clone()
            key[~torch.isfinite(key)] = -1.0
            order = torch.sort(key, stable=True).indices
        hit = torch.zeros(rows.numel(), dtype=torch.bool, device=rows.device)
        images = self.x[rows].clone()
        ge = fe = 0.0
        attacked = 0
        for b, start in enumerate(range(0, rows.numel(), bs)):
            part = order[start:start + bs]
            h, im, g, f = self._attack_stage(rows[part], e, "square", seed + 7919 * b)
            hit[part], images[part] = h, im
            ge, fe, attacked = ge + g, fe + f, attacked + part.numel()
            if not bool(h.any()) and not self.square_found:
                break
            self.square_found |= bool(h.any())
        return hit, images, ge, fe, attacked

    def _attack_stage(self, rows: Tensor, e: float, name: str,
                      seed: int) -> tuple[Tensor, Tensor, float, float]:
        """Attack ``rows`` with stage ``name``: ``(hit, images, gradients, forwards)``."""
        x, labels, cfg = self.x[rows], self.labels[rows], self.cfg
        atk = _make(name, cfg, e, self.gradient, seed)
        gen = torch.Generator(device=x.device).manual_seed(seed)
        res = run_batched(atk, self.model, x, labels, batch_size=cfg.batch_size,
                          progress_bar=False, generator=gen)
        _check_feasible(cfg.norm, x, res.x_adv, e)
        hit = res.success & ~res.skipped
        if self.rnd and bool(hit.any()):
            hit[hit.clone()] = self.judge.wrong(res.x_adv[hit], labels[hit])
        return hit, res.x_adv, float(res.grad_evals.sum()), float(res.forward_evals.sum())

    def _masking_flags(self, acc: dict[float, float]) -> None:
        """The ``pgd_gap``, ``blackbox_beats_whitebox`` and ``randomized`` flags."""
        radii, names, gap_points = self.cfg.radii, self.names, self.cfg.gap_points
        if "pgd-ce" in names and len(names) > 1:
            gaps = {e: 100 * (self.pgd_acc[e] - acc[e]) for e in radii}
            worst = max(gaps, key=lambda k: gaps[k])
            self.flags.append(Flag("pgd_gap", gaps[worst] >= gap_points,
                                   f"PGD-CE alone reports {self.pgd_acc[worst]:.1%} robust at "
                                   f"ε = {_fmt_eps(worst)}, the cascade {acc[worst]:.1%} "
                                   f"({gaps[worst]:.1f} points)"))
        if "square" in names:
            pts = 100 * self.square_only / self.n
            self.flags.append(Flag("blackbox_beats_whitebox", pts >= gap_points,
                                   f"at ε = {_fmt_eps(self.square_only_eps)} the gradient-free "
                                   f"Square attack fooled {self.square_only} sample(s) "
                                   f"({pts:.1f} points) that every gradient attack missed"))
        self.flags.append(Flag("randomized", self.rnd,
                               "two forward passes differ: EOT gradients, majority-of-"
                               f"{self.cfg.draws} verdicts" if self.rnd
                               else "the model is deterministic"))

    def report(self, smoothness: Sequence[float] | None, smoothness_n: int,
               t_start: float) -> RobustnessReport:
        """The flags, the optional SmoothFool profile and the report."""
        self.bar.close()
        radii = self.cfg.radii
        robust = torch.stack(self.robust_rows)
        acc = {e: float(robust[i].double().mean()) for i, e in enumerate(radii)}
        self._masking_flags(acc)
        smooth_rows = _smoothness(self.model, self.x, self.labels, self.correct, smoothness,
                                  smoothness_n, self.cfg.seed) if smoothness else []
        return RobustnessReport(
            norm=self.cfg.norm, eps=radii, n=self.n,
            clean_accuracy=float(self.correct.double().mean()), robust_accuracy=acc,
            pgd_robust_accuracy=self.pgd_acc, stage_list=self.names, stages=self.stage_rows,
            robust=robust, fooled_by=torch.stack(self.by_rows), deepfool=self.df_info,
            images=torch.stack(self.snapshots) if self.cfg.keep_images else None,
            smoothness=smooth_rows, flags=self.flags, randomized=self.rnd,
            seconds=time.perf_counter() - t_start, config=self.cfg.config(self.names))


def _eot_gradient(model: nn.Module, eot_samples: int) -> ExpectationGradient:
    """The EOT gradient of a randomised model: through the base model of a
    ``SmoothedClassifier``, the expected loss otherwise."""
    from ..defenses.smoothing import SmoothedClassifier

    if isinstance(model, SmoothedClassifier):
        return ExpectationGradient(sigma=None, samples=eot_samples)
    return ExpectationGradient(sigma=0.0, samples=eot_samples, variant="expected_loss",
                               chunk_size=1)


def _make(name: str, cfg: _Settings, eps: float, gradient: Any, seed: int) -> Attack:
    if name == "pgd-ce":
        return PGD(eps=eps, steps=cfg.pgd_steps, norm=cfg.norm, random_start=True,
                   early_stop=True, gradient=gradient, seed=seed)
    if name == "apgd-ce":
        return APGD(eps=eps, norm=cfg.norm, steps=cfg.apgd_steps, restarts=cfg.apgd_restarts,
                    loss="ce", gradient=gradient, seed=seed)
    if name == "apgd-t":
        return APGD(eps=eps, norm=cfg.norm, steps=cfg.apgd_steps, restarts=cfg.apgd_restarts,
                    loss="dlr", targets=cfg.apgd_targets, gradient=gradient, seed=seed)
    if name == "fab-t":
        return FAB(eps=eps, norm=cfg.norm, steps=cfg.fab_steps, targets=cfg.fab_targets,
                   seed=seed)
    return Square(eps=eps, norm=cfg.norm, queries=cfg.square_queries, p_init=cfg.square_p_init,
                  seed=seed)


def _check_feasible(norm: str, x: Tensor, x_adv: Tensor, eps: float) -> None:
    """Every stage's images must lie in the ε-ball and the box (a bug otherwise)."""
    if x.numel() == 0:
        return
    r = _pnorm(x_adv - x, norm)
    e32 = float(torch.tensor(eps, dtype=x.dtype))
    if bool((r > max(eps, e32) * (1 + 1e-6)).any()) or float(x_adv.min()) < 0 or \
            float(x_adv.max()) > 1:
        raise AssertionError(f"an attack left the ε = {eps} ball or the [0, 1] box "
                             f"(max norm {float(r.max())})")


def _zero_gradient_flag(model: nn.Module, x: Tensor, y: Tensor, correct: Tensor,
                        batch_size: int, randomized: bool) -> Flag:
    idx = torch.nonzero(correct).flatten()
    if idx.numel() == 0:
        return Flag("zero_gradients", False, "no correctly classified sample")
    base = getattr(model, "base", model) if randomized else model
    zero = 0
    with frozen_model(base):
        for i in range(0, idx.numel(), batch_size):
            b = idx[i:i + batch_size]
            xv = x[b].clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(base(xv), y[b], reduction="sum")
            (g,) = torch.autograd.grad(loss, xv)
            zero += int((g.flatten(1).abs().amax(1) == 0).sum())
    frac = zero / idx.numel()
    return Flag("zero_gradients", frac > 0.10,
                f"{frac:.1%} of the correctly classified samples have an exactly zero "
                "cross-entropy input gradient")


def _smoothness(model: nn.Module, x: Tensor, y: Tensor, correct: Tensor,
                sigmas: Sequence[float], n_max: int, seed: int) -> list[dict[str, Any]]:
    idx = torch.nonzero(correct).flatten()[:n_max]
    rows = []
    for s in sigmas:
        if idx.numel() == 0:
            break
        res = SmoothFool(sigma=float(s), seed=seed)(model, x[idx], y[idx])
        ok = res.success & ~res.skipped
        rows.append({"sigma": float(s), "fooling_rate": float(ok.double().mean()),
                     "median_l2": float(res.norms(2)[ok].median()) if ok.any() else math.nan,
                     "n": int(idx.numel())})
    return rows
