"""Gradient-masking sanity checks for a robustness evaluation (Athalye et al. 2018; Carlini et
al. 2019; AutoAttack's flags for randomised defences).

:func:`evaluate_defense` runs a checklist of cheap attacks against ``model`` on a few samples and
returns a :class:`DefenseReport`: one :class:`Check` per item with a status (``"pass"``,
``"warn"``, ``"fail"`` or ``"skip"``), the measured numbers, and — when it does not pass — the
likely cause and a remedy. A robustness number is only worth reporting when no check fails.

The checklist (every success rate is measured on the samples the model classifies correctly):

``unbounded``
    DeepFool (no ε bound) and ℓ∞ PGD with ε = 1 (the whole pixel box, no random start) must reach
    ~100 % success. A model whose *unbounded* attack fails has gradients that do not point to the
    decision boundary: masked (zero, vanishing, shattered or random) gradients.
``eps_monotone``
    PGD success must not decrease as ε grows (within a tolerance).
``iterative_vs_single``
    PGD (iterative) must be at least as strong as FGSM (one step) at every ε.
``whitebox_vs_transfer``
    With a ``surrogate``: white-box PGD must be at least as strong as PGD examples crafted on the
    surrogate and transferred.
``gradient_vs_noise``
    PGD must beat random ±ε sign noise of the same ℓ∞ norm at every ε.
``randomness``
    For randomised models (two forwards of the same input differ, or a ``SmoothedClassifier``):
    the spread of the clean predictions across draws is reported, and PGD with an expectation
    over the randomness (EPGD/EOT, ``ExpectationGradient``) must not be stronger than the
    single-draw PGD of the other checks by more than the tolerance — else single-draw numbers
    over-state the robustness.
``gradient_free``
    NAttack (score-based, no gradients) must not beat white-box PGD at the same ε.

A failing check is evidence of gradient masking (or of a too weak attack configuration); a
passing checklist is necessary, not sufficient, for a trustworthy evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ._tensors import check_images, check_labels, frozen_model, predict
from ._utils import check_choice, check_int_at_least, check_positive, make_generator, progress

__all__ = ["Check", "DefenseReport", "DefenseCheckSettings", "evaluate_defense", "is_randomized",
           "STATUSES"]

STATUSES = ("pass", "warn", "fail", "skip")


@dataclass
class Check:
    """One item of the checklist.

    Attributes:
        name: short identifier (``"unbounded"``, ``"eps_monotone"``, ...).
        status: ``"pass"``, ``"warn"``, ``"fail"`` or ``"skip"``.
        evidence: the measured numbers (success rates in ``[0, 1]``, ε values, ...).
        message: one line saying what was measured.
        cause: the likely cause when the check does not pass (else empty).
        remedy: what to do about it (else empty).
    """

    name: str
    status: str
    evidence: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    cause: str = ""
    remedy: str = ""

    def __post_init__(self) -> None:
        check_choice("status", self.status, STATUSES)


@dataclass
class DefenseReport:
    """The outcome of :func:`evaluate_defense`.

    Attributes:
        checks: the checks, in the order they ran.
        n: samples evaluated; n_correct: of them classified correctly (the attacked ones).
        clean_accuracy: accuracy on the ``n`` samples (mean over draws for randomised models).
        randomized: whether the model was treated as randomised.
        eps_grid: the ℓ∞ radii used.
    """

    checks: list[Check]
    n: int
    n_correct: int
    clean_accuracy: float
    randomized: bool
    eps_grid: tuple[float, ...]

    @property
    def inconclusive(self) -> bool:
        """True when no check could run (every one skipped: e.g. no correctly classified
        sample to attack)."""
        return all(c.status == "skip" for c in self.checks)

    @property
    def passed(self) -> bool:
        """True when at least one check ran and none failed (warnings allowed)."""
        return not self.inconclusive and not any(c.status == "fail" for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        """The failing checks."""
        return [c for c in self.checks if c.status == "fail"]

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; have {[c.name for c in self.checks]}")

    @property
    def verdict(self) -> str:
        """One line: the overall verdict."""
        if self.inconclusive:
            why = sorted({c.message for c in self.checks if c.message})
            return ("INCONCLUSIVE: no check could run" + (f" ({'; '.join(why)})" if why else "")
                    + " — evaluate more samples or a model that classifies some correctly")
        if self.failed:
            names = ", ".join(c.name for c in self.failed)
            return f"GRADIENT MASKING LIKELY: {len(self.failed)} check(s) failed ({names})"
        warns = [c.name for c in self.checks if c.status == "warn"]
        if warns:
            return f"no check failed; {len(warns)} warning(s) ({', '.join(warns)})"
        return "no evidence of gradient masking (every check passed)"

    def table(self) -> str:
        """The verdict table as plain text (check, status, evidence; cause/remedy when failing)."""
        rows = [(c.name, c.status.upper(), c.message) for c in self.checks]
        w0 = max([len("check")] + [len(r[0]) for r in rows])
        w1 = max([len("status")] + [len(r[1]) for r in rows])
        lines = [f"{'check':<{w0}}  {'status':<{w1}}  evidence", "-" * (w0 + w1 + 40)]
        for c, (a, b, m) in zip(self.checks, rows):
            lines.append(f"{a:<{w0}}  {b:<{w1}}  {m}")
            if c.status in ("fail", "warn") and c.cause:
                lines.append(f"{'':<{w0}}  {'':<{w1}}  cause: {c.cause}")
                lines.append(f"{'':<{w0}}  {'':<{w1}}  remedy: {c.remedy}")
        head = (f"n={self.n} samples, {self.n_correct} correctly classified "
                f"(clean accuracy {self.clean_accuracy:.3f}); "
                f"{'randomised' if self.randomized else 'deterministic'} model")
        return "\n".join([head, *lines, "", f"verdict: {self.verdict}"])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dictionary of the report."""
        return {
            "n": self.n, "n_correct": self.n_correct, "clean_accuracy": self.clean_accuracy,
            "randomized": self.randomized, "eps_grid": list(self.eps_grid),
            "passed": self.passed, "inconclusive": self.inconclusive, "verdict": self.verdict,
            "checks": [{"name": c.name, "status": c.status, "evidence": c.evidence,
                        "message": c.message, "cause": c.cause, "remedy": c.remedy}
                       for c in self.checks],
        }


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def _is_smoothed(model: nn.Module) -> bool:
    from .defenses.smoothing import SmoothedClassifier

    return isinstance(model, SmoothedClassifier)


@torch.no_grad()
def is_randomized(model: nn.Module, x: Tensor) -> bool:
    """Whether two forward passes of ``model`` on the same input ``x`` differ (eval mode).

    The model's training flags are restored afterwards. The global RNG is saved and restored, so
    models that draw from it do not shift the caller's random stream.
    """
    if _is_smoothed(model):
        return True
    state = torch.random.get_rng_state()
    try:
        with frozen_model(model), torch.no_grad():
            a, b = model(x), model(x)
    finally:
        torch.random.set_rng_state(state)
    return not torch.equal(a, b)


def _error(model: nn.Module, x: Tensor, y: Tensor, draws: int) -> Tensor:
    """Per-sample misclassification rate over ``draws`` forward passes, shape ``(N,)``."""
    with frozen_model(model), torch.no_grad():
        wrong = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for _ in range(draws):
            wrong += (predict(model(x)) != y).double()
    return wrong / draws


def _rate(t: Tensor) -> float:
    return float(t.mean()) if t.numel() else float("nan")


def _fmt(v: float) -> str:
    return "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.2f}"


def _noise_attack(x: Tensor, eps: float, generator: torch.Generator) -> Tensor:
    """Random ±ε sign noise (a corner of the ℓ∞ ball), clamped to the box."""
    s = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
    return (x + eps * s).clamp(0, 1)


# ----------------------------------------------------------------------------------------------
# the checklist
# ----------------------------------------------------------------------------------------------

def _not_beaten(name: str, other: list[float], ref: list[float], tol: float,
                evidence: dict[str, Any], other_label: str, ref_label: str, cause: str,
                remedy: str) -> Check:
    """``fail`` when ``other`` succeeds more than ``ref`` (+ ``tol``) at any ε, else ``pass``."""
    msg = (f"{other_label} " + " ".join(_fmt(v) for v in other) + f" vs {ref_label} "
           + " ".join(_fmt(v) for v in ref))
    if any(o > r + tol for o, r in zip(other, ref, strict=True)):
        return Check(name, "fail", evidence, msg, cause, remedy)
    return Check(name, "pass", evidence, msg)


# One field per knob of the checklist (the keywords of :func:`evaluate_defense` and the options of
# ``advsmooth check-defense``), so the constructor has more than 12 parameters; all have defaults.
@dataclass(frozen=True)
class DefenseCheckSettings:
    """Settings of the gradient-masking checklist (see :func:`evaluate_defense` for each)."""

    eps_grid: tuple[float, ...] = (4 / 255, 8 / 255, 16 / 255, 32 / 255, 64 / 255)
    randomized: bool | None = None
    n: int = 64
    seed: int = 0
    steps: int = 20
    deepfool_iter: int = 50
    epgd_samples: int = 8
    draws: int = 8
    nattack_population: int = 40
    nattack_iter: int = 40
    success_threshold: float = 0.95
    tolerance: float | None = None
    nattack: bool = True
    progress_bar: bool = True

    def __post_init__(self) -> None:
        check_int_at_least("n", self.n, 1)
        check_int_at_least("steps", self.steps, 1)
        check_int_at_least("deepfool_iter", self.deepfool_iter, 1)
        check_int_at_least("epgd_samples", self.epgd_samples, 1)
        check_int_at_least("draws", self.draws, 1)
        check_int_at_least("nattack_population", self.nattack_population, 2)
        check_int_at_least("nattack_iter", self.nattack_iter, 1)
        check_positive("success_threshold", self.success_threshold)
        if self.success_threshold > 1:
            raise ValueError(f"success_threshold must be in (0, 1], got {self.success_threshold}")
        grid = tuple(float(e) for e in self.eps_grid)
        if not grid or any(not (0 < e <= 1) or math.isnan(e) for e in grid):
            raise ValueError(f"eps_grid must be a non-empty list of radii in (0, 1], got {grid}")
        if list(grid) != sorted(grid):
            raise ValueError(f"eps_grid must be increasing, got {grid}")
        object.__setattr__(self, "eps_grid", grid)


@dataclass
class _Run:
    """The state the checks share: the model, the attacked (correctly classified) samples
    ``xa, ya``, the evaluation draws ``nd``, the slack ``tol``, the gradient estimators of a
    single draw and of the expectation, and the noise generator."""

    model: nn.Module
    s: DefenseCheckSettings
    xa: Tensor
    ya: Tensor
    smoothed: bool
    rnd: bool
    nd: int
    tol: float
    single: Any
    epgd: Any
    gen: torch.Generator

    def success(self, x_adv: Tensor) -> float:
        """Mean misclassification rate of ``x_adv`` over the evaluation draws."""
        return _rate(_error(self.model, x_adv, self.ya, self.nd))

    def pgd(self, eps: float, *, gradient: Any = None, random_start: bool = True,
            target_model: nn.Module | None = None, s: int = 0) -> Tensor:
        """PGD examples of radius ``eps`` (seed ``seed + s``) on the model or ``target_model``."""
        from .attacks import PGD

        atk = PGD(eps=eps, steps=self.s.steps, random_start=random_start, gradient=gradient,
                  seed=self.s.seed + s)
        return atk(target_model if target_model is not None else self.model, self.xa,
                   self.ya).x_adv


def _check_gradient_norm(r: _Run) -> Check:
    """Zero or vanishing input gradients of the cross-entropy (of the base model)."""
    base = r.model.base if r.smoothed else r.model
    with frozen_model(base):
        xg = r.xa.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(base(xg), r.ya, reduction="sum")
        (g,) = torch.autograd.grad(loss, xg)
    gn = g.flatten(1).abs().amax(dim=1)
    zero = float((gn == 0).double().mean())
    tiny = float((gn < 1e-8).double().mean())
    ev0 = {"zero_gradient_fraction": zero, "vanishing_gradient_fraction": tiny,
           "median_grad_linf": float(gn.double().median())}
    msg0 = (f"input gradient of CE: {zero:.2f} exactly zero, {tiny:.2f} below 1e-8, "
            f"median |g|_inf {float(gn.double().median()):.3g}")
    if tiny > 0.5:
        return Check(
            "gradient_norm", "fail", ev0, msg0,
            "the loss gradient vanishes at the inputs: non-differentiable steps (rounding, "
            "argmax) or a saturated softmax / temperature on the output",
            "remove the step or approximate it by the identity in the backward pass (BPDA); "
            "attack the logits, not probabilities; use the margin loss")
    if tiny > 0:
        return Check("gradient_norm", "warn", ev0, msg0, "some inputs have vanishing gradients",
                     "check for saturation; use the margin loss")
    return Check("gradient_norm", "pass", ev0, msg0)


def _check_unbounded(r: _Run) -> Check:
    """DeepFool and ℓ∞ PGD with ε = 1 must (nearly) always succeed."""
    from .attacks import DeepFool

    ev: dict[str, Any] = {}
    if r.smoothed:
        ev["deepfool"] = float("nan")
    else:
        # DeepFool's minimal perturbation may leave the box by a little: evaluated as given
        res = DeepFool(max_iter=r.s.deepfool_iter, overshoot=0.02)(r.model, r.xa, r.ya)
        ev["deepfool"] = r.success(res.x_adv)
    ev["pgd_eps1"] = r.success(r.pgd(1.0, gradient=r.single if not r.rnd else r.epgd,
                                     random_start=False))
    best = max(v for v in ev.values() if not math.isnan(v))
    msg = ", ".join(f"{k_} success {_fmt(v)}" for k_, v in ev.items() if not math.isnan(v))
    thr = r.s.success_threshold
    if best >= thr:
        worst = min(v for v in ev.values() if not math.isnan(v))
        if worst >= thr:
            return Check("unbounded", "pass", ev, msg)
        return Check("unbounded", "warn", ev, msg,
                     "one unbounded attack stalls (few iterations or a non-smooth model)",
                     "raise max_iter / steps; the other attack succeeds")
    return Check(
        "unbounded", "fail", ev, msg + f" (< {thr:.2f})",
        "gradients are masked: zero or vanishing gradients (non-differentiable "
        "preprocessing such as quantisation, saturated softmax/temperature), or random",
        "attack through a differentiable approximation (BPDA), use logits instead of "
        "probabilities / margin loss, EOT for randomness; or use a gradient-free attack")


def _eps_sweep(r: _Run) -> dict[str, list[float]]:
    """Success of PGD, FGSM and random sign noise at every ε of the grid."""
    from .attacks import FGSM

    grad_sweep = r.epgd if r.rnd and r.smoothed else r.single
    pgd_s, fgsm_s, noise_s = [], [], []
    for i, eps in enumerate(r.s.eps_grid):
        pgd_s.append(r.success(r.pgd(eps, gradient=grad_sweep, s=i)))
        fg = FGSM(eps=eps, gradient=grad_sweep, seed=r.s.seed + i)(r.model, r.xa, r.ya).x_adv
        fgsm_s.append(r.success(fg))
        noise_s.append(r.success(_noise_attack(r.xa, eps, r.gen)))
    return {"eps": list(r.s.eps_grid), "pgd": pgd_s, "fgsm": fgsm_s, "noise": noise_s}


def _sweep_checks(r: _Run, sweep: dict[str, list[float]]) -> list[Check]:
    """ε-monotonicity, PGD vs FGSM and PGD vs noise over the sweep."""
    pgd_s, grid, tol = sweep["pgd"], r.s.eps_grid, r.tol
    pgd_str = " ".join(_fmt(v) for v in pgd_s)
    drops = [pgd_s[i] - pgd_s[i + 1] for i in range(len(grid) - 1)]
    if drops and max(drops) > tol:
        mono = Check(
            "eps_monotone", "fail", sweep, f"PGD success over eps: {pgd_str} (decreases)",
            "success falls as ε grows: the attack follows masked or noisy gradients",
            "more steps / restarts, EOT for randomness, check the loss for saturation")
    elif len(grid) > 1 and pgd_s[-1] <= pgd_s[0] and pgd_s[-1] < r.s.success_threshold:
        mono = Check(
            "eps_monotone", "warn", sweep, f"PGD success over eps: {pgd_str} (flat)",
            "success does not grow with ε: gradients may carry no information",
            "check with larger ε and the unbounded attacks")
    else:
        mono = Check("eps_monotone", "pass", sweep, f"PGD success over eps: {pgd_str}")
    return [mono, _not_beaten(
        "iterative_vs_single", sweep["fgsm"], pgd_s, tol, sweep, "FGSM", "PGD",
        "a single step beats the iterative attack: the loss surface is shattered or "
        "the iterations follow masked gradients",
        "more iterations / smaller steps, restarts, BPDA or EOT"), _not_beaten(
        "gradient_vs_noise", sweep["noise"], pgd_s, tol, sweep, "noise", "PGD",
        "random noise of the same norm beats the gradient attack: gradients are masked",
        "fix the gradient path (BPDA / logits / EOT) or use a gradient-free attack")]


def _check_transfer(r: _Run, surrogate: nn.Module | None, pgd_s: list[float]) -> Check:
    """White-box PGD must beat PGD examples transferred from ``surrogate``."""
    if surrogate is None:
        return Check("whitebox_vs_transfer", "skip", {}, "no surrogate given (--surrogate)")
    grid = r.s.eps_grid
    tr = [r.success(r.pgd(eps, target_model=surrogate, s=i)) for i, eps in enumerate(grid)]
    ev = {"eps": list(grid), "pgd": pgd_s, "transfer": tr}
    return _not_beaten(
        "whitebox_vs_transfer", tr, pgd_s, r.tol, ev, "transfer", "white-box",
        "examples from another model transfer better than white-box ones: the "
        "model's own gradients are masked",
        "attack through the surrogate's gradients (transfer) or fix the gradient path")


def _check_randomness(r: _Run, x: Tensor, y: Tensor) -> Check:
    """For a randomised model: the spread of its predictions, and EPGD must not beat
    single-draw PGD."""
    if not r.rnd:
        return Check("randomness", "skip", {"randomized": False},
                     "deterministic: two forwards of the same input agree")
    draws, grid = r.s.draws, r.s.eps_grid
    with frozen_model(r.model), torch.no_grad():
        preds = torch.stack([predict(r.model(x)) for _ in range(draws)])  # draws × N
    mode = preds.mode(dim=0).values
    agree = (preds == mode).double().mean(dim=0)
    accs = (preds == y).double().mean(dim=1)
    eps = grid[len(grid) // 2]
    single_s = r.success(r.pgd(eps, gradient=r.single, s=100))
    epgd_s = r.success(r.pgd(eps, gradient=r.epgd, s=100))
    m = r.s.epgd_samples
    ev = {"eps": eps, "single_draw_pgd": single_s, "epgd": epgd_s,
          "epgd_samples": m, "draws": draws,
          "prediction_agreement": float(agree.mean()),
          "accuracy_min": float(accs.min()), "accuracy_max": float(accs.max())}
    msg = (f"eps {eps:.4g}: single-draw PGD {_fmt(single_s)} vs EPGD(M={m}) "
           f"{_fmt(epgd_s)}; predictions agree {float(agree.mean()):.3f} across {draws} "
           f"draws, accuracy {float(accs.min()):.3f}..{float(accs.max()):.3f}")
    if epgd_s > single_s + r.tol:
        return Check(
            "randomness", "fail", ev, msg,
            "single-draw gradients of a randomised model are noisy: single-draw attacks "
            "over-state its robustness",
            "report the expectation attack (PGD with ExpectationGradient / EOT) and "
            "evaluate with several draws")
    return Check("randomness", "pass", ev, msg)


def _check_gradient_free(r: _Run, pgd_s: list[float]) -> Check:
    """NAttack (no gradients) must not beat white-box PGD at the largest ε."""
    from .attacks import NAttack

    if not r.s.nattack:
        return Check("gradient_free", "skip", {}, "disabled")
    eps, s = r.s.eps_grid[-1], r.s
    na = NAttack(eps=eps, population=s.nattack_population, max_iter=s.nattack_iter, seed=s.seed)
    na_s = r.success(na(r.model, r.xa, r.ya).x_adv)
    ev = {"eps": eps, "nattack": na_s, "pgd": pgd_s[-1],
          "population": s.nattack_population, "max_iter": s.nattack_iter}
    msg = f"eps {eps:.4g}: NAttack {_fmt(na_s)} vs PGD {_fmt(pgd_s[-1])}"
    if na_s > pgd_s[-1] + r.tol:
        return Check(
            "gradient_free", "fail", ev, msg,
            "a gradient-free attack beats the white-box gradient attack: gradients are "
            "masked",
            "report the gradient-free number (or the stronger of both); fix the gradient path")
    return Check("gradient_free", "pass", ev, msg)


def _inputs(model: nn.Module, data: Any, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` samples of ``data`` = ``(x, y)``, checked (``TypeError``/``ValueError``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError("data must be a pair (x, y) of tensors")
    x, y = data
    check_images(x)
    if x.shape[0] == 0:
        raise ValueError("data holds no samples")
    x = x[:n].detach()
    with torch.no_grad(), frozen_model(model):
        k = model(x[:1]).shape[-1]
    return x, check_labels(y[:n] if isinstance(y, Tensor) else list(y)[:n], x.shape[0], k,
                           x.device)


def evaluate_defense(
    model: nn.Module,
    data: tuple[Tensor, Tensor] | Sequence[Tensor],
    *,
    surrogate: nn.Module | None = None,
    **settings: Any,
) -> DefenseReport:
    """Run the gradient-masking checklist (module docstring) on ``model``.

    Args:
        model: classifier ``N×C×H×W`` pixels in ``[0, 1]`` → ``N×K`` scores; may be randomised
            (noise injection) or a :class:`~advsmooth.defenses.SmoothedClassifier`.
        data: ``(x, y)``: images ``N×C×H×W`` in ``[0, 1]`` and integer labels ``(N,)``.
        surrogate: optional model for the white-box-vs-transfer check.
        settings: the fields of :class:`DefenseCheckSettings`:
            ``eps_grid`` — increasing ℓ∞ radii (pixel units, in ``(0, 1]``) for the ε-sweep;
            ``randomized`` — treat the model as randomised (``None``: detect by two forwards);
            ``n`` — number of samples (the first ``n`` of ``data``);
            ``seed`` — seed of every random component (same seed → same report for
            deterministic models); ``steps`` — PGD iterations (step size ``2.5·ε/steps``);
            ``deepfool_iter`` — DeepFool iteration cap; ``epgd_samples`` — copies ``M`` of the
            EPGD/EOT gradient (randomised models only); ``draws`` — forward passes per
            evaluation for randomised models (success = mean error);
            ``nattack_population``, ``nattack_iter`` — NAttack budget (small by default);
            ``success_threshold`` — success an unbounded attack must reach (default 0.95);
            ``tolerance`` — slack for the comparisons (default ``max(0.05, 2 / n_correct)``);
            ``nattack`` — run the gradient-free cross-check; ``progress_bar`` — a bar over the
            checks on a terminal (never in a log, a pipe or CI).

    Returns:
        A :class:`DefenseReport` (``report.table()`` prints the verdict table).
    """
    from .attacks import ExpectationGradient

    s = DefenseCheckSettings(**settings)
    x, y = _inputs(model, data, s.n)
    smoothed = _is_smoothed(model)
    rnd = is_randomized(model, x) if s.randomized is None else bool(s.randomized)
    nd = s.draws if rnd else 1
    # attacked set: correctly classified (on every draw for randomised models)
    err0 = _error(model, x, y, nd)
    correct = err0 == 0
    xa, ya = x[correct], y[correct]
    nc = int(xa.shape[0])
    report = DefenseReport(checks=[], n=int(x.shape[0]), n_correct=nc,
                           clean_accuracy=float(1 - err0.mean()), randomized=rnd,
                           eps_grid=s.eps_grid)
    if nc == 0:
        report.checks.append(Check("unbounded", "skip", {},
                                   "no correctly classified sample to attack", "", ""))
        return report
    # gradient estimators: single draw / expectation
    r = _Run(model, s, xa, ya, smoothed, rnd, nd,
             tol=s.tolerance if s.tolerance is not None else max(0.05, 2.0 / max(nc, 1)),
             single=ExpectationGradient(sigma=None, samples=1) if smoothed else None,
             epgd=(ExpectationGradient(sigma=None, samples=s.epgd_samples) if smoothed else
                   ExpectationGradient(sigma=0.0, samples=s.epgd_samples,
                                       variant="expected_loss", chunk_size=1)),
             gen=make_generator(s.seed, x.device))
    bar = progress(total=6, desc="check-defense", enabled=s.progress_bar, unit="check")

    def done(checks: list[Check]) -> None:
        report.checks.extend(checks)
        bar.update(1)
    done([_check_gradient_norm(r)])
    done([_check_unbounded(r)])
    sweep = _eps_sweep(r)
    done(_sweep_checks(r, sweep))
    done([_check_transfer(r, surrogate, sweep["pgd"])])
    done([_check_randomness(r, x, y)])
    done([_check_gradient_free(r, sweep["pgd"])])
    bar.close()
    return report
