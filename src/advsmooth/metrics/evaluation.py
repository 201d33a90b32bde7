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
``apgd-ce``, ``apgd-t``
    APGD with cross-entropy, then APGD with the targeted DLR loss against the ``apgd_targets``
    most likely wrong classes (:class:`~advsmooth.attacks.APGD`).
``square``
    The Square attack (:class:`~advsmooth.attacks.Square`, ℓ∞ only): score-based, no gradient,
    so it finds what gradient masking hides.

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
    the gradient-free Square attack fooled ≥ ``gap_points`` points of samples every gradient
    attack missed (masked, shattered or zero gradients);
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

from .._tensors import check_images, check_labels, frozen_model, predict
from ..attacks.apgd import APGD
from ..attacks.base import Attack, run_batched
from ..attacks.deepfool import DeepFool
from ..attacks.grid import check_eps_list
from ..attacks.iterative import PGD, normalize_norm, project_l2, project_linf
from ..attacks.smoothfool import SmoothFool
from ..attacks.smoothing_gradients import ExpectationGradient
from ..attacks.square import Square
from ..checks import is_randomized

__all__ = ["evaluate", "RobustnessReport", "Flag", "STAGES", "stage_names"]

#: the stages of ``stages="standard"`` in order (ℓ2 leaves out ``square``)
STAGES = ("pgd-ce", "deepfool", "apgd-ce", "apgd-t", "square")


def stage_names(norm: str | float, stages: str | Sequence[str] = "standard") -> list[str]:
    """The stage list for ``norm``: ``"standard"`` (all that apply), ``"fast"`` (PGD-CE,
    DeepFool, APGD-CE) or an explicit list of names from :data:`STAGES`."""
    nrm = normalize_norm(norm)
    if isinstance(stages, str):
        if stages == "standard":
            names = list(STAGES)
        elif stages == "fast":
            names = ["pgd-ce", "deepfool", "apgd-ce"]
        else:
            raise ValueError(f"stages must be 'standard', 'fast' or a list of {STAGES}, "
                             f"got {stages!r}")
        if nrm == "2":
            names = [s for s in names if s != "square"]
        return names
    names = list(stages)
    for s in names:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r}; stages are {', '.join(STAGES)}")
    if nrm == "2" and "square" in names:
        raise ValueError("the square stage supports norm='inf' only")
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
        pgd_robust_accuracy: ε → the same for PGD-CE alone (over the grid).
        stages: one row per (ε, stage): ``eps``, ``stage``, ``attacked`` (samples it attacked),
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
    pgd_robust_accuracy: dict[float, float]
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
            rows.append(f"| {_fmt_eps(e)} | {self.robust_accuracy[e]:.1%} | "
                        f"{self.pgd_robust_accuracy[e]:.1%} | {bound} |")
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
        with frozen_model(self.model), torch.no_grad():
            for _ in range(k):
                for i in range(0, x.shape[0], self.bs):
                    votes[i:i + self.bs] += (predict(self.model(x[i:i + self.bs]))
                                             != y[i:i + self.bs]).long()
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
    square_queries: int = 1000,
    square_p_init: float = 0.8,
    deepfool: bool = True,
    smoothness: Sequence[float] | None = None,
    smoothness_n: int = 32,
    randomized: bool | None = None,
    eot_samples: int = 8,
    draws: int = 5,
    gap_points: float = 1.0,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = False,
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
        square_queries / square_p_init: Square attack budget and initial square fraction.
        deepfool: compute the DeepFool distribution (and use it as a stage if listed).
        smoothness: σg values of the SmoothFool profile (``None``: none), on the first
            ``smoothness_n`` correctly classified samples.
        randomized: force (True/False) or detect (``None``) a randomised model.
        eot_samples: copies per gradient of the EOT estimator for a randomised model.
        draws: forward passes whose majority decides a randomised model's verdict.
        gap_points: percentage points of the ``pgd_gap`` / ``blackbox_beats_whitebox`` flags.
        batch_size: images per attack call. seed: seeds every random choice (per ε and stage).
        progress: print a line per (ε, stage).
        keep_images: keep, per ε, the image that fooled each sample (``report.images``) so that
            the verdicts can be checked independently.

    Returns:
        A :class:`RobustnessReport`.
    """
    t_start = time.perf_counter()
    check_images(x)
    nrm = normalize_norm(norm)
    radii = check_eps_list([eps] if isinstance(eps, (int, float)) else eps)
    names = stage_names(nrm, stages)
    n = x.shape[0]
    if n == 0:
        raise ValueError("x holds no samples")
    x = x.detach()
    with frozen_model(model), torch.no_grad():
        z0 = torch.cat([model(x[i:i + batch_size]) for i in range(0, n, batch_size)])
    labels = check_labels(y, n, int(z0.shape[1]) if z0.ndim == 2 else None, x.device)
    rnd = is_randomized(model, x[: min(n, 8)]) if randomized is None else bool(randomized)
    judge = _Judge(model, rnd, draws, batch_size)
    correct = ~judge.wrong(x, labels)
    gradient = None
    if rnd:
        from ..defenses.smoothing import SmoothedClassifier

        gradient = (ExpectationGradient(sigma=None, samples=eot_samples)
                    if isinstance(model, SmoothedClassifier) else
                    ExpectationGradient(sigma=0.0, samples=eot_samples, variant="expected_loss",
                                        chunk_size=1))
    flags: list[Flag] = []

    # DeepFool once: the minimal-perturbation distribution (and a free stage)
    df_info: dict[str, Any] = {}
    df_adv: Tensor | None = None
    df_norm = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
    if rnd and "deepfool" in names:
        # DeepFool's linearisation of a randomised (or vote-based) classifier means nothing
        names = [s for s in names if s != "deepfool"]
    if (deepfool or "deepfool" in names) and not rnd:
        idx = torch.nonzero(correct).flatten()
        if idx.numel():
            t0 = time.perf_counter()
            dfa = DeepFool(norm=2 if nrm == "2" else "inf", clip=True, max_iter=50)
            res = run_batched(dfa, model, x[idx], labels[idx], batch_size=batch_size,
                              progress_bar=False)
            ok = judge.wrong(res.x_adv, labels[idx]) if rnd else res.success
            df_adv = x.clone()
            df_adv[idx] = res.x_adv
            r = _pnorm(res.x_adv - res.x, nrm)
            df_norm[idx[ok]] = r[ok]
            l2 = _pnorm(res.x_adv - res.x, "2")
            rho = (l2 / _pnorm(res.x, "2").clamp_min(1e-12))[ok]
            df_info = {
                "success_rate": float(ok.double().mean()),
                "median_norm": float(r[ok].median()) if ok.any() else math.nan,
                "rho_adv": float(rho.mean()) if ok.any() else math.nan,
                "grad_evals": float(res.grad_evals.double().mean()),
                "seconds": time.perf_counter() - t0,
                "fraction_within": {e: float((df_norm <= e).double().sum() / n) for e in radii},
            }
            flags.append(Flag("deepfool_unbounded", df_info["success_rate"] < 0.95,
                              f"unbounded DeepFool fooled {df_info['success_rate']:.1%} of the "
                              "correctly classified samples"))
    # zero input gradients (one gradient per correctly classified sample)
    flags.append(_zero_gradient_flag(model, x, labels, correct, batch_size, rnd))

    # the cascade over the grid
    fooled = ~correct                     # fooled at the current ε or a smaller one
    pgd_fooled = ~correct                 # by PGD-CE alone
    gradient_fooled = ~correct            # by any gradient stage (for the black-box flag)
    robust_rows, by_rows, stage_rows = [], [], []
    fooled_by = torch.full((n,), -2, dtype=torch.long, device=x.device)
    fooled_by[correct] = -1
    pgd_acc: dict[float, float] = {}
    adv = x.clone() if keep_images else x
    snapshots: list[Tensor] = []
    square_only = 0
    for ie, e in enumerate(radii):
        for si, name in enumerate(names):
            todo = ~pgd_fooled if name == "pgd-ce" else ~fooled
            todo &= correct
            rows = torch.nonzero(todo).flatten()
            t0 = time.perf_counter()
            ge = fe = 0.0
            new = torch.zeros(n, dtype=torch.bool, device=x.device)
            found = x.clone() if keep_images else None
            if rows.numel():
                if name == "deepfool":
                    if df_adv is not None:
                        cand = _project(nrm, x[rows], df_adv[rows], e)
                        hit = judge.wrong(cand, labels[rows])
                        new[rows[hit]] = True
                        if keep_images:
                            found[rows[hit]] = cand[hit]
                        fe = float(rows.numel())
                else:
                    atk = _make(name, nrm, e, pgd_steps, apgd_steps, apgd_restarts, apgd_targets,
                                square_queries, square_p_init, gradient,
                                seed + 1009 * ie + 17 * si)
                    gen = torch.Generator(device=x.device).manual_seed(seed + 1009 * ie + 17 * si)
                    res = run_batched(atk, model, x[rows], labels[rows], batch_size=batch_size,
                                      progress_bar=False, generator=gen)
                    _check_feasible(nrm, x[rows], res.x_adv, e)
                    hit = res.success & ~res.skipped
                    if rnd and bool(hit.any()):
                        hit[hit.clone()] = judge.wrong(res.x_adv[hit], labels[rows][hit])
                    new[rows[hit]] = True
                    if keep_images:
                        found[rows[hit]] = res.x_adv[hit]
                    ge, fe = float(res.grad_evals.sum()), float(res.forward_evals.sum())
            if name == "pgd-ce":
                pgd_fooled |= new
                pgd_acc[e] = float((~pgd_fooled).double().mean())
            elif name != "square":
                gradient_fooled |= new
            newly = new & ~fooled
            if found is not None:
                adv[newly] = found[newly]
            if name == "square" and ie == len(radii) - 1:
                square_only = int((newly & ~gradient_fooled).sum())
            fooled_by[newly] = si
            fooled |= new
            stage_rows.append({"eps": e, "stage": name, "attacked": int(rows.numel()),
                               "fooled": int(newly.sum()),
                               "robust_accuracy": float((~fooled).double().mean()),
                               "seconds": time.perf_counter() - t0,
                               "grad_evals": ge, "forward_evals": fe})
            if progress:
                print(f"eps {_fmt_eps(e)} {name}: attacked {rows.numel()}, fooled "
                      f"{int(newly.sum())}, robust {float((~fooled).double().mean()):.1%}",
                      flush=True)
        if "pgd-ce" not in names:
            pgd_acc[e] = math.nan
        robust_rows.append(~fooled)
        by_rows.append(fooled_by.clone())
        if keep_images:
            snapshots.append(adv.clone())
    robust = torch.stack(robust_rows)
    acc = {e: float(robust[i].double().mean()) for i, e in enumerate(radii)}

    # flags
    if "pgd-ce" in names and len(names) > 1:
        gaps = {e: 100 * (pgd_acc[e] - acc[e]) for e in radii}
        worst = max(gaps, key=lambda k: gaps[k])
        flags.append(Flag("pgd_gap", gaps[worst] >= gap_points,
                          f"PGD-CE alone reports {pgd_acc[worst]:.1%} robust at ε = "
                          f"{_fmt_eps(worst)}, the cascade {acc[worst]:.1%} "
                          f"({gaps[worst]:.1f} points)"))
    if "square" in names:
        pts = 100 * square_only / n
        flags.append(Flag("blackbox_beats_whitebox", pts >= gap_points,
                          f"at ε = {_fmt_eps(radii[-1])} the gradient-free Square attack fooled "
                          f"{square_only} sample(s) ({pts:.1f} points) that every gradient "
                          "attack missed"))
    flags.append(Flag("randomized", rnd,
                      "two forward passes differ: EOT gradients, majority-of-"
                      f"{draws} verdicts" if rnd else "the model is deterministic"))

    smooth_rows = _smoothness(model, x, labels, correct, smoothness, smoothness_n, seed) \
        if smoothness else []
    config = {"stages": names, "pgd_steps": pgd_steps, "apgd_steps": apgd_steps,
              "apgd_restarts": apgd_restarts, "apgd_targets": apgd_targets,
              "square_queries": square_queries, "square_p_init": square_p_init,
              "eot_samples": eot_samples, "draws": draws, "gap_points": gap_points,
              "seed": seed, "batch_size": batch_size}
    return RobustnessReport(
        norm=nrm, eps=radii, n=n, clean_accuracy=float(correct.double().mean()),
        robust_accuracy=acc, pgd_robust_accuracy=pgd_acc, stage_list=names, stages=stage_rows,
        robust=robust, fooled_by=torch.stack(by_rows), deepfool=df_info,
        images=torch.stack(snapshots) if keep_images else None,
        smoothness=smooth_rows, flags=flags, randomized=rnd,
        seconds=time.perf_counter() - t_start, config=config)


def _make(name: str, norm: str, eps: float, pgd_steps: int, apgd_steps: int, restarts: int,
          targets: int, queries: int, p_init: float, gradient: Any, seed: int) -> Attack:
    if name == "pgd-ce":
        return PGD(eps=eps, steps=pgd_steps, norm=norm, random_start=True, early_stop=True,
                   gradient=gradient, seed=seed)
    if name == "apgd-ce":
        return APGD(eps=eps, norm=norm, steps=apgd_steps, restarts=restarts, loss="ce",
                    gradient=gradient, seed=seed)
    if name == "apgd-t":
        return APGD(eps=eps, norm=norm, steps=apgd_steps, restarts=restarts, loss="dlr",
                    targets=targets, gradient=gradient, seed=seed)
    return Square(eps=eps, queries=queries, p_init=p_init, seed=seed)


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
