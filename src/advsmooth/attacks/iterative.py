"""The iterative gradient engine: FGSM, IGSM (BIM), PGD (ℓ∞ / ℓ2), MI-FGSM and their sg- versions.

docs/algorithms.md, "Gradient-sign attacks and smoothed gradients". One loop
(:class:`IterativeAttack`) made of small pieces:

* a **gradient estimator** (:mod:`advsmooth.attacks.gradients`): :class:`PlainGradient` by
  default; ``gradient=SmoothedGradient(sigma=15/255, samples=20)`` gives sg-FGSM / sg-IGSM /
  sg-mIGSM (arXiv:1802.09707); smoothing-aware estimators (EPGD, SmoothAdv) plug in the same way;
* an **update rule** (:class:`UpdateRule`): the step direction from the gradient —
  :class:`SignUpdate` (ℓ∞), :class:`L2Update` (ℓ2-normalised), optionally wrapped in
  :class:`MomentumUpdate` (MI-FGSM: ``g ← μ g + ∇/‖∇‖₁``, or authors'-code-style raw accumulation);
* a **projection** onto the ε-ball around ``x`` and the box ``[0, 1]`` after every step, exact to
  the last bit in the input's dtype (see :func:`project_linf`, :func:`project_l2`).

Loss: ``loss="ce"`` (cross-entropy on logits, ascended; targeted: ``−CE`` w.r.t. the target),
``loss="margin"`` (CW logit margin) or ``loss="kl"`` (TRADES' KL divergence from the clean
prediction). Targeted attacks pass ``target=`` at call time.

How the loop runs — Python threads sharing a batch, the fast model copy, reusing the clean
forward's graph for the first step — is the execution layer's business
(:mod:`advsmooth.attacks.execution`, configured by ``execution=Execution(...)``); this module
holds only the algorithm. Calling an attack leaves already-misclassified inputs unchanged and
verifies its result; :meth:`IterativeAttack.perturb` runs the same iterations on every sample
with no verification, as adversarial training needs.

Cost accounting: each step costs the estimator's ``grad_evals_per_call`` gradient evaluations per
image (1 for the plain gradient, ``m`` for sg); ``AttackResult.grad_evals`` reports what was spent.

Equal-budget mode: ``budget=B`` fixes the total number of gradient evaluations per image instead of
the number of steps: ``steps = B // m`` where ``m = gradient.grad_evals_per_call`` (rule: as many
full steps as the budget allows; the remainder ``B mod m`` is not spent). Examples:
``IGSM(eps=15/255, alpha=1/255, budget=100)`` → T = 100 (plain gradient);
``IGSM(eps=15/255, alpha=5/255, budget=100, gradient=SmoothedGradient(15/255, 20))`` → T = 5,
m = 20 (sg transfer paper Table 3). The step size is not derived from the budget; give ``alpha``.

Early stopping (``early_stop=True``, default False as in the papers): a sample whose current iterate
already fools the model (untargeted) or hits the target is frozen and costs nothing more. With
the plain gradient the check reuses the logits of the gradient pass; otherwise it costs one
forward evaluation per active image per step.

Randomness (random start, sg noise) comes from the attack's generator (``seed=`` or
``generator=`` at call time). The sg noise of a step is drawn as one ``(m, N_active, C, H, W)``
tensor, so a sample's noise depends on its batch: stochastic attacks are reproducible for the
same batch and seed, not identical between a sample attacked alone and inside a batch.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from .._tensors import frozen_model, predict
from .._utils import check_int_at_least, check_model_output, check_nonnegative, make_generator
from .base import Attack, AttackContext, AttackOutput, CostCounter
from .execution import Execution, Plan, Share, clean_forward, run_shares
from .gradients import (
    LOSSES,
    AttackObjective,
    GradientEstimator,
    PlainGradient,
    _is_loss_ensemble,
)

__all__ = [
    "IterativeAttack",
    "FGSM",
    "IGSM",
    "BIM",
    "PGD",
    "MIFGSM",
    "UpdateRule",
    "SignUpdate",
    "L2Update",
    "MomentumUpdate",
    "linf_bounds",
    "project_linf",
    "project_l2",
    "normalize_norm",
    "sg_fgsm",
    "sg_igsm",
    "sg_mifgsm",
]


# ----------------------------------------------------------------------------------------------
# argument helpers
# ----------------------------------------------------------------------------------------------

def normalize_norm(norm: Any) -> str:
    """Map ``"inf"``/``"linf"``/``float("inf")`` → ``"inf"``; ``2``/``"2"``/``"l2"`` → ``"2"``."""
    if isinstance(norm, str):
        key = norm.lower()
        if key in ("inf", "linf", "l_inf"):
            return "inf"
        if key in ("2", "l2"):
            return "2"
    elif isinstance(norm, (int, float)) and not isinstance(norm, bool):
        if norm == float("inf"):
            return "inf"
        if norm == 2:
            return "2"
    raise ValueError(f"norm must be 'inf' or 2, got {norm!r}")


def _eps_floor(eps: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The largest value of ``dtype`` that is ``<= eps`` (a 0-dim tensor)."""
    t = torch.tensor(eps, dtype=dtype, device=device)
    if float(t) > eps:
        t = torch.nextafter(t, torch.tensor(-math.inf, dtype=dtype, device=device))
    return t


def _flat_norm(t: Tensor, p: float) -> Tensor:
    return torch.linalg.vector_norm(t.flatten(1), ord=p, dim=1)


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


# ----------------------------------------------------------------------------------------------
# projections (exact to the last bit)
# ----------------------------------------------------------------------------------------------

def linf_bounds(x: Tensor, eps: float | Tensor) -> tuple[Tensor, Tensor]:
    """Element-wise bounds ``(lo, hi)`` of ``{|x' − x|∞ ≤ ε} ∩ [0, 1]`` (same shape as ``x``).

    ``eps``: one radius, or one per sample (a tensor of shape ``(N,)``).
    ``lo ≤ x ≤ hi``, ``0 ≤ lo``, ``hi ≤ 1`` and ``|lo − x|, |hi − x| ≤ ε`` both in ``x``'s dtype
    and exactly (float64): a bound that rounding put outside the ball is moved one ulp towards
    ``x``. Every point between the bounds is therefore feasible to the last bit, and clamping to
    them is the exact projection onto the (box-shaped) feasible set.
    """
    if isinstance(eps, Tensor):
        exact = _bcast(eps.to(device=x.device, dtype=torch.float64), x)
        e = exact.to(x.dtype)
        e = torch.where(e.double() > exact, torch.nextafter(e, torch.full_like(e, -math.inf)), e)
        limit: float | Tensor = torch.minimum(exact, e.double())
    else:
        e = _eps_floor(eps, x.dtype, x.device)
        limit = min(eps, float(e))
    lo = _fix_linf(x, torch.clamp(x - e, min=0.0), e, limit)
    hi = _fix_linf(x, torch.clamp(x + e, max=1.0), e, limit)
    return lo, hi


def project_linf(x: Tensor, x_new: Tensor, eps: float,
                 bounds: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Project ``x_new`` onto ``{|x' − x|∞ ≤ ε} ∩ [0, 1]`` (element-wise clamp to the bounds of
    :func:`linf_bounds`; pass ``bounds`` to reuse them across steps).

    Guarantees, for every element, ``|x' − x| ≤ ε`` both when computed in ``x``'s dtype and when
    computed exactly in float64, and ``0 ≤ x' ≤ 1``.
    """
    lo, hi = linf_bounds(x, eps) if bounds is None else bounds
    return torch.minimum(torch.maximum(x_new, lo), hi)


def _linf_violations(x: Tensor, out: Tensor, e: Tensor, limit: float | Tensor) -> Tensor:
    """Elements of ``out`` farther than ``e`` from ``x`` in ``x``'s dtype, or farther than
    ``limit = min(ε, e)`` in exact (float64) arithmetic."""
    bad = (out - x).abs() > e
    if x.dtype != torch.float64:
        bad |= (out.double() - x.double()).abs() > limit
    return bad


def _fix_linf(x: Tensor, out: Tensor, e: Tensor, limit: float | Tensor) -> Tensor:
    for _ in range(4):
        bad = _linf_violations(x, out, e, limit)
        if not bool(bad.any()):
            return out
        out = torch.where(bad, torch.nextafter(out, x), out)
    bad = _linf_violations(x, out, e, limit)
    return torch.where(bad, x, out)  # cannot happen in practice; x itself is always feasible


def project_l2(x: Tensor, x_new: Tensor, eps: float) -> Tensor:
    """Project onto ``{‖x' − x‖₂ ≤ ε}`` (radial rescaling, per sample), then clamp to ``[0, 1]``.

    Guarantees ``‖x' − x‖₂ ≤ ε`` per sample when computed in ``x``'s dtype and in float64
    (violations due to rounding are removed by shrinking the offending samples slightly).
    """
    e = float(_eps_floor(eps, x.dtype, x.device))
    delta = x_new - x
    norm = _flat_norm(delta.double(), 2)
    factor = torch.where(norm > e, e / norm.clamp_min(1e-300), torch.ones_like(norm))
    delta = delta * _bcast(factor.to(x.dtype), delta)
    out = torch.clamp(x + delta, 0.0, 1.0)
    for k in range(8):
        d = out - x
        bad = (_flat_norm(d, 2) > e) | (_flat_norm(d.double(), 2) > e)
        if not bool(bad.any()):
            return out
        nrm = _flat_norm(d.double(), 2).clamp_min(1e-300)
        shrink = torch.where(bad, (e / nrm) * (1.0 - 2.0 ** (k - 40)), torch.ones_like(nrm))
        shrink = shrink.clamp(max=1.0)
        out = torch.clamp(x + d * _bcast(shrink.to(x.dtype), d), 0.0, 1.0)
    d = out - x
    bad = (_flat_norm(d, 2) > e) | (_flat_norm(d.double(), 2) > e)
    return torch.where(_bcast(bad, out), x, out)


# ----------------------------------------------------------------------------------------------
# update rules
# ----------------------------------------------------------------------------------------------

class UpdateRule:
    """Turns a gradient estimate into a step direction (to be multiplied by ``alpha``).

    ``start(x)`` is called once per attack call with the full batch of active samples;
    ``direction(grad, index, generator)`` receives the gradient of the samples ``index`` (positions
    in that batch) and returns their direction.
    """

    def start(self, x: Tensor) -> None:
        """Reset any state for a new attack on ``x`` ``(N, C, H, W)``."""

    def direction(self, grad: Tensor, index: Tensor, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SignUpdate(UpdateRule):
    """ℓ∞ steepest ascent: ``sign(g)`` (``sign(0) = 0``: zero-gradient pixels do not move)."""

    def direction(self, grad: Tensor, index: Tensor, generator: torch.Generator) -> Tensor:
        return grad.sign()


class L2Update(UpdateRule):
    """ℓ2 steepest ascent: ``g / ‖g‖₂`` per sample; a random unit direction where ``g = 0``."""

    def direction(self, grad: Tensor, index: Tensor, generator: torch.Generator) -> Tensor:
        norm = _flat_norm(grad, 2)
        zero = norm == 0
        if bool(zero.any()):
            rnd = torch.randn(grad.shape, generator=generator, device=grad.device, dtype=grad.dtype)
            grad = torch.where(_bcast(zero, grad), rnd, grad)
            norm = _flat_norm(grad, 2)
        return grad / _bcast(norm.clamp_min(1e-12), grad)


class MomentumUpdate(UpdateRule):
    """Momentum accumulation around an inner rule (MI-FGSM, Dong et al.).

    ``g_{t+1} = decay·g_t + ∇_t / ‖∇_t‖₁`` (per-sample ℓ1 over C, H, W, clamped ≥ 1e-12), direction
    ``inner(g_{t+1})``. ``normalize=None`` accumulates raw gradients (the smoothing authors' PGD,
    never zeroes ``x.grad``, docs/algorithms.md).
    """

    def __init__(self, decay: float = 1.0, inner: UpdateRule | None = None,
                 normalize: str | None = "l1") -> None:
        self.decay = check_nonnegative("decay", decay)
        if normalize not in ("l1", None):
            raise ValueError(f"normalize must be 'l1' or None, got {normalize!r}")
        self.normalize = normalize
        self.inner = inner if inner is not None else SignUpdate()
        self._buf: Tensor | None = None

    def start(self, x: Tensor) -> None:
        self._buf = torch.zeros_like(x)
        self.inner.start(x)

    def direction(self, grad: Tensor, index: Tensor, generator: torch.Generator) -> Tensor:
        assert self._buf is not None, "start() must be called first"
        if self.normalize == "l1":
            grad = grad / _bcast(_flat_norm(grad, 1).clamp_min(1e-12), grad)
        g = self.decay * self._buf[index] + grad
        self._buf[index] = g
        return self.inner.direction(g, index, generator)

    def __repr__(self) -> str:
        return (f"MomentumUpdate(decay={self.decay!r}, inner={self.inner!r}, "
                f"normalize={self.normalize!r})")


# ----------------------------------------------------------------------------------------------
# the engine
# ----------------------------------------------------------------------------------------------

class IterativeAttack(Attack):
    """Iterative gradient attack in an ε-ball (the common engine of FGSM/IGSM/PGD/MI-FGSM).

    Args:
        eps: radius of the ℓ∞ or ℓ2 ball (pixel units, ≥ 0).
        alpha: step size (pixel units, ≥ 0). ``None``: ``2.5·ε/steps`` (Madry et al.).
        steps: number of iterations T ≥ 1 (default 10; mutually exclusive with ``budget``).
        norm: ``"inf"`` (sign steps, ℓ∞ ball) or ``2`` (ℓ2-normalised steps, ℓ2 ball).
        random_start: start at a uniform random point of the ball (PGD) instead of ``x``.
        decay: momentum μ (MI-FGSM); ``None`` = no momentum.
        gradient: a :class:`~advsmooth.attacks.gradients.GradientEstimator` (default plain).
        loss: ``"ce"``, ``"margin"`` or ``"kl"`` (TRADES: KL divergence from the clean
            prediction; untargeted).
        early_stop: freeze samples as soon as they are adversarial.
        budget: total gradient evaluations per image; sets ``steps = budget // m``.
        accumulate_grad: accumulate raw gradients across steps (as the smoothed-inference
            authors' PGD does).
        seed: seed of the default generator (random start, sg noise).
        execution: how the attack runs (:class:`~advsmooth.attacks.execution.Execution`):
            Python threads that each run the loop on a share of the batch (auto on a CPU with
            the plain gradient and a plain-module model; per-sample work is independent, so
            results equal a single-threaded call up to float rounding of batch-size-dependent
            kernels, and the random start is drawn for the whole batch first; needs a
            deterministic gradient estimator), the fast model copy the gradient steps
            differentiate (Conv→BatchNorm folded, channels-last on a CPU; the clean prediction
            and the verification always use the model itself) and the input layout.
        threads, fast_model: shortcuts for the same fields of ``execution``.

    The ℓ∞ random start is ``x + U[−ε, ε]`` per pixel; the ℓ2 one is ``x + ε·u·n/‖n‖₂`` with
    ``n ~ N(0, I)``, ``u ~ U[0, 1]``; both projected onto the ball and the box.
    """

    # 15 parameters: the eleven hyper-parameters of the algorithms this engine covers (FGSM,
    # I-FGSM, PGD, MI-FGSM and their smoothed-gradient versions), the seed, and the execution
    # settings with their two shortcuts; each is a knob a user sets by its name
    def __init__(
        self,
        *,
        eps: float,
        alpha: float | None = None,
        steps: int | None = None,
        norm: str | float = "inf",
        random_start: bool = False,
        decay: float | None = None,
        gradient: GradientEstimator | None = None,
        loss: str = "ce",
        early_stop: bool = False,
        budget: int | None = None,
        accumulate_grad: bool = False,
        seed: int = 0,
        threads: int | None = None,
        fast_model: bool = True,
        execution: Execution | None = None,
    ) -> None:
        super().__init__(seed=seed)
        self.eps = check_nonnegative("eps", eps)
        self.norm = normalize_norm(norm)
        if gradient is None:
            gradient = PlainGradient()
        if not isinstance(gradient, GradientEstimator):
            raise TypeError(f"gradient must be a GradientEstimator (e.g. SmoothedGradient(...)), "
                            f"got {type(gradient).__name__}")
        self.gradient = gradient
        per_step = gradient.grad_evals_per_call
        if budget is not None:
            if steps is not None:
                raise ValueError("give either steps or budget, not both")
            check_int_at_least("budget", budget, 1)
            if budget < per_step:
                raise ValueError(f"budget={budget} is smaller than the cost of one step "
                                 f"({per_step} gradient evaluations per image with {gradient!r})")
            steps = budget // per_step
        elif steps is None:
            steps = 10
        self.steps = check_int_at_least("steps", steps, 1)
        self.budget = budget
        if alpha is None:
            alpha = 2.5 * self.eps / self.steps
        self.alpha = check_nonnegative("alpha", alpha)
        self.random_start = bool(random_start)
        if decay is not None:
            decay = check_nonnegative("decay", decay)
        if decay is not None and accumulate_grad:
            raise ValueError("decay (MI-FGSM momentum) and accumulate_grad are mutually exclusive")
        self.decay = decay
        self.accumulate_grad = bool(accumulate_grad)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        self.early_stop = bool(early_stop)
        self.stochastic = self.random_start or gradient.stochastic
        execution = execution if execution is not None else Execution()
        if not isinstance(execution, Execution):
            raise TypeError(f"execution must be an advsmooth.attacks.Execution, "
                            f"got {type(execution).__name__}")
        if threads is not None or fast_model is not True:
            execution = replace(execution, threads=execution.threads if threads is None
                                else threads, fast_model=execution.fast_model and fast_model)
        if execution.chunk is not None:
            raise ValueError("the iterative engine runs a batch in one pass per thread; give "
                             "chunk_size= to the gradient estimator instead of Execution(chunk=)")
        if execution.threads is not None and execution.threads > 1 and gradient.stochastic:
            raise ValueError(f"threads={execution.threads} needs a deterministic gradient "
                             f"estimator; {gradient!r} draws noise per batch (use threads=None "
                             "or 1)")
        self.execution = execution
        self._set_params(eps=self.eps, alpha=self.alpha, steps=self.steps, norm=self.norm)
        self._extra_params()

    def _extra_params(self) -> None:
        self._set_params(random_start=self.random_start, decay=self.decay,
                         gradient=self.gradient, loss=self.loss, early_stop=self.early_stop)
        if self.budget is not None:
            self._set_params(budget=self.budget)
        if self.accumulate_grad:
            self._set_params(accumulate_grad=True)
        self._set_params(**self.execution.changed())

    # -- pieces ---------------------------------------------------------------------------------
    def make_update(self) -> UpdateRule:
        """The update rule of this attack (a fresh object per call)."""
        inner: UpdateRule = SignUpdate() if self.norm == "inf" else L2Update()
        if self.decay is not None:
            return MomentumUpdate(self.decay, inner, normalize="l1")
        if self.accumulate_grad:
            return MomentumUpdate(1.0, inner, normalize=None)
        return inner

    def project(self, x: Tensor, x_new: Tensor,
                bounds: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Projection onto the ε-ball around ``x`` and the box ``[0, 1]`` (``bounds``: the
        :func:`linf_bounds` of ``x``, reused across the steps of an ℓ∞ attack)."""
        if self.norm == "inf":
            return project_linf(x, x_new, self.eps, bounds)
        return project_l2(x, x_new, self.eps)

    def initial_point(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Starting iterate: ``x`` or a random point of the ball (PGD)."""
        if not self.random_start or self.eps == 0:
            return x.clone()
        if self.norm == "inf":
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return self.project(x, x + (2 * u - 1) * self.eps)
        n = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        r = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        n = n / _bcast(_flat_norm(n, 2).clamp_min(1e-12), n)
        return self.project(x, x + _bcast(r * self.eps, n) * n)

    def objective(self, model: nn.Module, labels: Tensor, target: Tensor | None,
                  clean_logits: Tensor | None) -> AttackObjective:
        """What the attack ascends for these samples (``clean_logits``: the model's logits at the
        clean inputs, the reference distribution of ``loss="kl"``)."""
        reference = None
        if self.loss == "kl":
            assert clean_logits is not None, "loss='kl' needs the clean logits"
            reference = torch.softmax(clean_logits, dim=1)
        objective = AttackObjective.for_model(model, self.loss, labels, target, reference)
        objective.layout = self.execution.layout()
        if objective.loss_ensemble and not self.gradient.supports_loss_ensembles:
            raise ValueError(f"{self.gradient!r} does not support loss-averaging ensembles "
                             "(combine='mean_loss')")
        return objective

    # -- the algorithm --------------------------------------------------------------------------
    def _attack(self, ctx: AttackContext) -> AttackOutput:
        plan = ctx.prepared if isinstance(ctx.prepared, Plan) else Plan(1, ctx.model)
        ctx.prepared = None
        objective = self.objective(ctx.model, ctx.labels, ctx.target, ctx.clean_logits)
        start = self.initial_point(ctx.x, ctx.generator)  # for the whole batch, before threads
        bounds = linf_bounds(ctx.x, self.eps) if self.norm == "inf" else None
        x_adv, iterations, logits = run_shares(
            ctx, plan, objective,
            lambda share: self._iterate(share, objective, start, bounds, self.alpha))
        info = {"steps": self.steps, "alpha": self.alpha, "eps": self.eps, "norm": self.norm,
                "grad_evals_per_step": self.gradient.grad_evals_per_call, "budget": self.budget}
        return AttackOutput(x_adv=x_adv, iterations=iterations, info=info, adv_logits=logits)

    def _iterate(self, share: Share, objective: AttackObjective, x_adv: Tensor,
                 bounds: tuple[Tensor, Tensor] | None,
                 alpha: float | Tensor) -> tuple[Tensor, Tensor]:
        """The iterations on one share of the batch: ``T`` times ``g = ∇J(x_t)`` (the gradient
        estimator), ``x_{t+1} = Proj(x_t + α·direction(g))``; returns the share's adversarial
        images and iterations. With ``early_stop`` a sample leaves the loop once it is fooled
        (from the logits of the gradient pass when they come free, else one forward per step).
        ``alpha``: the step size, or one per sample (``N×1×1×1``)."""
        x, x_adv, objective = share.take(share.ctx.x), share.take(x_adv), share.take_objective(
            objective)
        if bounds is not None:
            bounds = (share.take(bounds[0]), share.take(bounds[1]))
        if isinstance(alpha, Tensor):
            alpha = share.take(alpha)
        gen = share.ctx.generator
        n = x.shape[0]
        update = self.make_update()
        update.start(x)
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        active = torch.arange(n, device=x.device)
        free_logits = isinstance(self.gradient, PlainGradient)
        for _ in range(self.steps):
            if self.early_stop and not free_logits:
                z = share.forward(x_adv[active], active)
                active = active[~self._fooled(z, objective, active)]
                if active.numel() == 0:
                    break
            rows = None if active.numel() == n else active  # None: every sample, no copies
            x_cur = x_adv if rows is None else x_adv[rows]
            est = share.gradient(self.gradient, x_cur, objective if rows is None
                                 else objective.subset(rows), rows)
            grad = est.grad
            if self.early_stop and free_logits and est.logits is not None:
                keep = ~self._fooled(est.logits, objective, active)
                if not bool(keep.all()):
                    active, rows, grad, x_cur = active[keep], active[keep], grad[keep], x_cur[keep]
                    if active.numel() == 0:
                        break
            step = alpha if rows is None or not isinstance(alpha, Tensor) else alpha[rows]
            x_next = x_cur + step * update.direction(grad, active, gen)
            if rows is None:
                x_adv = self.project(x, x_next, bounds)
            else:
                part = None if bounds is None else (bounds[0][rows], bounds[1][rows])
                x_adv[rows] = self.project(x[rows], x_next, part)
            iterations[active] += 1
        return x_adv, iterations

    @staticmethod
    def _fooled(logits: Tensor, objective: AttackObjective, active: Tensor) -> Tensor:
        pred = predict(logits)
        if objective.target is None:
            return pred != objective.labels[active]
        return pred == objective.target[active]

    # -- execution ------------------------------------------------------------------------------
    def _clean_forward(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Any]:
        # Without a random start the first step differentiates the model at x itself: the clean
        # forward keeps its graph for that step (see execution.clean_forward).
        reuse = not ((self.random_start and self.eps > 0)
                     or type(self.gradient) is not PlainGradient or _is_loss_ensemble(model))
        return clean_forward(self.execution, model, x, workers=self._workers(model, x),
                             reuse_graph=reuse)

    def _workers(self, model: nn.Module, x: Tensor) -> int:
        """Python threads that share a call on ``x``: automatic only for the plain gradient."""
        return self.execution.workers(model, x, auto=type(self.gradient) is PlainGradient)

    # -- every sample (training) ----------------------------------------------------------------
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor | None, *,
                start: Tensor | None = None, generator: torch.Generator | None = None,
                eps: Tensor | None = None, alpha: Tensor | None = None) -> Tensor:
        """Adversarial examples for **every** sample of ``x``, as adversarial training needs.

        Unlike calling the attack, already-misclassified inputs are attacked too, and there is no
        verification and no cost accounting; a clean forward runs only for ``y=None`` (attack
        the clean predictions) and for the reference distribution of ``loss="kl"``. The model
        is differentiated as given (no fast copy: a model in training changes at every batch),
        in eval mode with parameter gradients off (restored after). ``start`` replaces the
        initial point (default :meth:`initial_point`); ``generator`` drives the random start and
        the estimator's noise (default: seeded with ``seed``). Threads only when
        ``execution.threads`` asks for them. ``eps`` / ``alpha``: one ℓ∞ radius / step size per
        sample (shape ``(N,)``) instead of the attack's (ℓ∞, no random start).

        Returns:
            ``x_adv`` ``N×C×H×W`` (detached), in the ball around ``x`` and in ``[0, 1]``.
        """
        x = x.detach()
        n = x.shape[0]
        if (eps is not None or alpha is not None) and (self.norm != "inf" or self.random_start):
            raise ValueError("per-sample eps/alpha need an ℓ∞ attack without random start")
        gen = generator if generator is not None else make_generator(self.seed, x.device)
        with frozen_model(model):
            clean = None
            if self.loss == "kl" or y is None:
                with torch.no_grad():
                    clean = check_model_output(model(x), n)
            labels = predict(clean) if y is None else y.to(device=x.device, dtype=torch.long)
            ctx = AttackContext(model=model, x=x, labels=labels, target=None, clean_logits=clean,
                                index=torch.arange(n, device=x.device), generator=gen,
                                cost=CostCounter(n, device=x.device))
            objective = self.objective(model, labels, None, clean)
            x0 = self.initial_point(x, gen) if start is None else start.detach().clone()
            radius = self.eps if eps is None else eps
            bounds = linf_bounds(x, radius) if self.norm == "inf" else None
            step = self.alpha if alpha is None else alpha.to(x).view(-1, *([1] * (x.ndim - 1)))
            plan = Plan(max(1, min(self.execution.threads or 1, n)), model)
            x_adv, _, _ = run_shares(
                ctx, plan, objective,
                lambda share: self._iterate(share, objective, x0, bounds, step))
        return x_adv.detach()


class FGSM(IterativeAttack):
    """Fast gradient (sign) method: one step of size ε (``x + ε·sign(∇J)``, or ``ε·∇J/‖∇J‖₂``).

    With ``gradient=SmoothedGradient(...)`` this is sg-FGSM. Cost: ``m`` gradient evaluations.
    """

    def __init__(self, *, eps: float, norm: str | float = "inf",
                 gradient: GradientEstimator | None = None, loss: str = "ce",
                 seed: int = 0, threads: int | None = None,
                 fast_model: bool = True, execution: Execution | None = None) -> None:
        super().__init__(eps=eps, alpha=eps, steps=1, norm=norm, gradient=gradient, loss=loss,
                         seed=seed, threads=threads,
                         fast_model=fast_model, execution=execution)

    def _extra_params(self) -> None:
        self._params.pop("alpha", None)
        self._params.pop("steps", None)
        self._set_params(gradient=self.gradient, loss=self.loss)
        self._set_params(**self.execution.changed())


class IGSM(IterativeAttack):
    """Iterative gradient sign method / BIM (Kurakin et al.): T sign steps of size α from ``x``,
    projected onto the ℓ∞ ε-ball and ``[0, 1]`` after each. sg-IGSM with ``gradient=``."""

    def __init__(self, *, eps: float, alpha: float | None = None, steps: int | None = None,
                 gradient: GradientEstimator | None = None, loss: str = "ce",
                 early_stop: bool = False, budget: int | None = None, seed: int = 0,
                 threads: int | None = None,
                 fast_model: bool = True, execution: Execution | None = None) -> None:
        super().__init__(eps=eps, alpha=alpha, steps=steps, norm="inf", gradient=gradient,
                         loss=loss, early_stop=early_stop, budget=budget, seed=seed,
                         threads=threads,
                         fast_model=fast_model, execution=execution)

    def _extra_params(self) -> None:
        self._params.pop("norm", None)
        self._set_params(gradient=self.gradient, loss=self.loss, early_stop=self.early_stop)
        if self.budget is not None:
            self._set_params(budget=self.budget)
        self._set_params(**self.execution.changed())


BIM = IGSM


class PGD(IterativeAttack):
    """Projected gradient descent (Madry et al.): IGSM with a random start; ℓ∞ or ℓ2 ball.

    ℓ2: ``δ ← δ + α·∇/‖∇‖₂``, then ``x + δ`` rescaled into the ℓ2 ball and clamped to
    ``[0, 1]``. ``PGD(random_start=False)`` equals :class:`IGSM` (ℓ∞).
    """

    # 14 parameters: PGD's ten hyper-parameters, the seed and the execution settings with their
    # two shortcuts, spelled out (not **kwargs) so that each is typed, documented and checked
    def __init__(self, *, eps: float, alpha: float | None = None, steps: int | None = None,
                 norm: str | float = "inf", random_start: bool = True,
                 gradient: GradientEstimator | None = None, loss: str = "ce",
                 early_stop: bool = False, budget: int | None = None,
                 accumulate_grad: bool = False, seed: int = 0,
                 threads: int | None = None,
                 fast_model: bool = True, execution: Execution | None = None) -> None:
        super().__init__(eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=random_start,
                         gradient=gradient, loss=loss, early_stop=early_stop, budget=budget,
                         accumulate_grad=accumulate_grad, seed=seed, threads=threads,
                         fast_model=fast_model, execution=execution)

    def _extra_params(self) -> None:
        super()._extra_params()
        self._params.pop("decay", None)


class MIFGSM(IterativeAttack):
    """Momentum iterative FGSM (Dong et al.; the sg transfer paper's "mIGSM"): ``g ← μ·g + ∇/‖∇‖₁``,
    ``x ← Proj(x + α·sign(g))``, ``g₀ = 0``. ``decay=0`` equals :class:`IGSM`.
    sg-mIGSM with ``gradient=SmoothedGradient(...)`` (momentum on the smoothed gradient)."""

    # 13 parameters: MI-FGSM's nine hyper-parameters, the seed and the execution settings with
    # their two shortcuts, spelled out (not **kwargs) so that each is typed, documented and checked
    def __init__(self, *, eps: float, alpha: float | None = None, steps: int | None = None,
                 decay: float = 1.0, norm: str | float = "inf",
                 gradient: GradientEstimator | None = None, loss: str = "ce",
                 early_stop: bool = False, budget: int | None = None, seed: int = 0,
                 threads: int | None = None,
                 fast_model: bool = True, execution: Execution | None = None) -> None:
        super().__init__(eps=eps, alpha=alpha, steps=steps, norm=norm, decay=decay,
                         gradient=gradient, loss=loss, early_stop=early_stop, budget=budget,
                         seed=seed, threads=threads,
                         fast_model=fast_model, execution=execution)

    def _extra_params(self) -> None:
        super()._extra_params()
        self._params.pop("random_start", None)


# ----------------------------------------------------------------------------------------------
# sg- factories (for the attack registry / CLI)
# ----------------------------------------------------------------------------------------------

def _sg(sigma: float, samples: int, chunk_size: int | None) -> GradientEstimator:
    from .gradients import SmoothedGradient

    return SmoothedGradient(sigma, samples, chunk_size=chunk_size)


def sg_fgsm(*, eps: float = 8 / 255, sigma: float = 15 / 255, samples: int = 20,
            chunk_size: int | None = None, **kwargs: Any) -> FGSM:
    """sg-FGSM: ``FGSM(eps, gradient=SmoothedGradient(sigma, samples, chunk_size))``."""
    return FGSM(eps=eps, gradient=_sg(sigma, samples, chunk_size), **kwargs)


def sg_igsm(*, eps: float = 8 / 255, alpha: float | None = None, steps: int | None = None,
            sigma: float = 15 / 255, samples: int = 20, chunk_size: int | None = None,
            **kwargs: Any) -> IGSM:
    """sg-IGSM: ``IGSM(..., gradient=SmoothedGradient(sigma, samples, chunk_size))``."""
    return IGSM(eps=eps, alpha=alpha, steps=steps, gradient=_sg(sigma, samples, chunk_size),
                **kwargs)


def sg_mifgsm(*, eps: float = 8 / 255, alpha: float | None = None, steps: int | None = None,
              decay: float = 1.0, sigma: float = 15 / 255, samples: int = 20,
              chunk_size: int | None = None, **kwargs: Any) -> MIFGSM:
    """sg-mIGSM: ``MIFGSM(..., gradient=SmoothedGradient(sigma, samples, chunk_size))``."""
    return MIFGSM(eps=eps, alpha=alpha, steps=steps, decay=decay,
                  gradient=_sg(sigma, samples, chunk_size), **kwargs)
