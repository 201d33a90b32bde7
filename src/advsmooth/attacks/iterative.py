"""The iterative gradient engine: FGSM, IGSM (BIM), PGD (ℓ∞ / ℓ2), MI-FGSM and their sg- versions.

ALGORITHMS.md §8 and §8.1. One loop (:class:`IterativeAttack`) made of small pieces:

* a **gradient estimator** (:mod:`advsmooth.attacks.gradients`): :class:`PlainGradient` by
  default; ``gradient=SmoothedGradient(sigma=15/255, samples=20)`` gives sg-FGSM / sg-IGSM /
  sg-mIGSM of seed 001; smoothing-aware estimators (EPGD, SmoothAdv) plug in the same way;
* an **update rule** (:class:`UpdateRule`): the step direction from the gradient —
  :class:`SignUpdate` (ℓ∞), :class:`L2Update` (ℓ2-normalised), optionally wrapped in
  :class:`MomentumUpdate` (MI-FGSM: ``g ← μ g + ∇/‖∇‖₁``, or REF-style raw accumulation);
* a **projection** onto the ε-ball around ``x`` and the box ``[0, 1]`` after every step, exact to
  the last bit in the input's dtype (see :func:`project_linf`, :func:`project_l2`).

Loss: ``loss="ce"`` (cross-entropy on logits, ascended; targeted: ``−CE`` w.r.t. the target) or
``loss="margin"`` (CW logit margin). Targeted attacks pass ``target=`` at call time.

Cost accounting: each step costs the estimator's ``grad_evals_per_call`` gradient evaluations per
image (1 for the plain gradient, ``m`` for sg); ``AttackResult.grad_evals`` reports what was spent.

Equal-budget mode: ``budget=B`` fixes the total number of gradient evaluations per image instead of
the number of steps: ``steps = B // m`` where ``m = gradient.grad_evals_per_call`` (rule: as many
full steps as the budget allows; the remainder ``B mod m`` is not spent). Examples:
``IGSM(eps=15/255, alpha=1/255, budget=100)`` → T = 100 (plain gradient);
``IGSM(eps=15/255, alpha=5/255, budget=100, gradient=SmoothedGradient(15/255, 20))`` → T = 5,
m = 20 (seed 001 Table 3). The step size is not derived from the budget; give ``alpha``.

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
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import check_finite_gradient, check_int_at_least, check_nonnegative
from .base import (
    Attack,
    AttackContext,
    AttackOutput,
    LayoutHint,
    fold_batchnorm,
    in_threads,
    plain_torch_modules,
    predict,
)
from .gradients import (
    LOSSES,
    AttackObjective,
    GradientEstimate,
    GradientEstimator,
    PlainGradient,
    _is_loss_ensemble,
    check_logits,
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

def linf_bounds(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Element-wise bounds ``(lo, hi)`` of ``{|x' − x|∞ ≤ ε} ∩ [0, 1]`` (same shape as ``x``).

    ``lo ≤ x ≤ hi``, ``0 ≤ lo``, ``hi ≤ 1`` and ``|lo − x|, |hi − x| ≤ ε`` both in ``x``'s dtype
    and exactly (float64): a bound that rounding put outside the ball is moved one ulp towards
    ``x``. Every point between the bounds is therefore feasible to the last bit, and clamping to
    them is the exact projection onto the (box-shaped) feasible set.
    """
    e = _eps_floor(eps, x.dtype, x.device)
    lo = _fix_linf(x, torch.clamp(x - e, min=0.0), e, eps)
    hi = _fix_linf(x, torch.clamp(x + e, max=1.0), e, eps)
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


def _linf_violations(x: Tensor, out: Tensor, e: Tensor, eps: float) -> Tensor:
    bad = (out - x).abs() > e
    if x.dtype != torch.float64:
        bad |= (out.double() - x.double()).abs() > min(eps, float(e))
    return bad


def _fix_linf(x: Tensor, out: Tensor, e: Tensor, eps: float) -> Tensor:
    for _ in range(4):
        bad = _linf_violations(x, out, e, eps)
        if not bool(bad.any()):
            return out
        out = torch.where(bad, torch.nextafter(out, x), out)
    bad = _linf_violations(x, out, e, eps)
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
    ``inner(g_{t+1})``. ``normalize=None`` accumulates raw gradients (the smoothing REF PGD that
    never zeroes ``x.grad``, ALGORITHMS.md §15.12).
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

@dataclass
class _CleanGraph:
    """The clean forward of (a slice ``[start, start + len)`` of) an attack call's batch, kept
    with its graph: input leaf and raw outputs."""

    x_var: Tensor
    raw: Tensor
    layout: LayoutHint
    start: int = 0


@dataclass
class _Prepared:
    """What the engine's clean forward keeps: the thread count chosen for the call, the model the
    gradient steps differentiate (the caller's or its fast copy) and, when the first step can
    reuse it, the clean forward's graph (one per thread's slice of the batch)."""

    workers: int
    graphs: list[_CleanGraph] | None
    grad_model: nn.Module | None = None


#: fewest images per thread for which the engine splits a batch among Python threads
MIN_IMAGES_PER_THREAD = 8


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
        loss: ``"ce"`` or ``"margin"``.
        early_stop: freeze samples as soon as they are adversarial.
        budget: total gradient evaluations per image; sets ``steps = budget // m``.
        accumulate_grad: accumulate raw gradients across steps (smoothing REF PGD, §15.12).
        seed: seed of the default generator (random start, sg noise).
        threads: Python threads that share a call's batch, each running the loop on its share
            with one intra-op thread (``1``: never). ``None`` (auto): torch's thread count on a
            CPU with the plain gradient and a model built only from hook-free ``torch.nn`` /
            ``torch.fx`` / ``advsmooth.models`` modules, at most one thread per
            :data:`MIN_IMAGES_PER_THREAD` images. Per-sample work is independent, so results
            equal a single-threaded call up to float rounding of batch-size-dependent kernels;
            the random start is drawn for the whole batch first. Needs a deterministic gradient
            estimator (sg noise is drawn per batch).
        fast_model: let the gradient steps differentiate a copy of the model made for speed
            (:func:`~advsmooth.attacks.base.fold_batchnorm` with ``channels_last=True``:
            Conv→BatchNorm pairs folded, on a CPU convolution tensors in channels-last layout)
            when the model is an eval-mode model of hook-free ``torch.nn`` / ``advsmooth.models``
            modules; the clean prediction and the final verification always use the model
            itself. ``False``: differentiate the model itself.

    The ℓ∞ random start is ``x + U[−ε, ε]`` per pixel; the ℓ2 one is ``x + ε·u·n/‖n‖₂`` with
    ``n ~ N(0, I)``, ``u ~ U[0, 1]``; both projected onto the ball and the box.
    """

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
        if threads is not None:
            check_int_at_least("threads", threads, 1)
            if threads > 1 and gradient.stochastic:
                raise ValueError(f"threads={threads} needs a deterministic gradient estimator; "
                                 f"{gradient!r} draws noise per batch (use threads=None or 1)")
        self.threads = threads
        if not isinstance(fast_model, bool):
            raise ValueError(f"fast_model must be a bool, got {fast_model!r}")
        self.fast_model = fast_model
        self._set_params(eps=self.eps, alpha=self.alpha, steps=self.steps, norm=self.norm)
        self._extra_params()

    def _extra_params(self) -> None:
        self._set_params(random_start=self.random_start, decay=self.decay,
                         gradient=self.gradient, loss=self.loss, early_stop=self.early_stop)
        if self.budget is not None:
            self._set_params(budget=self.budget)
        if self.accumulate_grad:
            self._set_params(accumulate_grad=True)
        if self.threads is not None:
            self._set_params(threads=self.threads)
        if not self.fast_model:
            self._set_params(fast_model=False)

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

    def _workers(self, model: nn.Module, x: Tensor) -> int:
        """Python threads that share a call on ``x`` (``N`` images): ``threads`` if given, else
        (auto) torch's intra-op thread count on a CPU when the gradient is the plain one and
        ``model`` is built only from hook-free ``torch.nn`` / ``torch.fx`` / ``advsmooth.models``
        modules; never more than one thread per :data:`MIN_IMAGES_PER_THREAD` images."""
        if self.threads is not None:
            want = self.threads
        elif (x.device.type == "cpu" and type(self.gradient) is PlainGradient
              and torch.get_num_threads() > 1
              and plain_torch_modules(model, ("torch.nn", "torch.fx", "advsmooth.models"))):
            want = torch.get_num_threads()
        else:
            return 1
        return max(1, min(want, x.shape[0] // MIN_IMAGES_PER_THREAD))

    def _clean_forward(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Any]:
        # Without a random start the first step differentiates the model at x itself: run the
        # clean forward with a graph and let that step reuse it (one forward per image saved).
        # With threads, each thread's slice of the batch gets its own forward (and graph).
        # The gradient steps may differentiate a fast copy; its graph is no clean prediction of
        # the model itself, so then the clean forward runs without one.
        workers = self._workers(model, x)
        grad_model = fold_batchnorm(model, x[:4], channels_last=True) if self.fast_model else model
        reuse = grad_model is model and not (
            (self.random_start and self.eps > 0) or type(self.gradient) is not PlainGradient
            or _is_loss_ensemble(model))
        if workers == 1 and not reuse:
            with torch.no_grad():
                return model(x), _Prepared(1, None, grad_model)
        layout = LayoutHint()
        cuts = [round(i * x.shape[0] / workers) for i in range(workers + 1)]

        def forward(w: int) -> _CleanGraph:
            a, b = cuts[w], cuts[w + 1]
            if not reuse:
                with torch.no_grad():
                    return _CleanGraph(x, model(x[a:b]), layout, a)
            x_var = x[a:b].detach().clone().requires_grad_(True)
            with torch.enable_grad():
                return _CleanGraph(x_var, layout(model, x_var), layout, a)

        graphs = (in_threads(forward, range(workers), workers) if workers > 1
                  else [forward(0)])
        raw = torch.cat([g.raw for g in graphs]).detach()
        return raw, _Prepared(workers, graphs if reuse else None, grad_model)

    def _first_step(self, ctx: AttackContext, objective: AttackObjective, graph: _CleanGraph,
                    sub: Tensor | None) -> GradientEstimate:
        """The gradient at ``x`` from the clean forward's graph (of the loop's samples ``sub``).
        Its backward runs over every image of the graph's slice of the call (also those already
        misclassified), so each is counted."""
        rows = (ctx.index if sub is None else ctx.index[sub]) - graph.start
        raw = check_logits(graph.raw)[rows]
        objective.layout = graph.layout
        val = objective.value(raw)
        (g,) = torch.autograd.grad(val.sum(), graph.x_var)
        check_finite_gradient(g)
        n = graph.raw.shape[0]
        ctx.cost.add_grad(None if graph.start == 0 and n == ctx.cost.grad.shape[0]
                          else torch.arange(graph.start, graph.start + n, device=g.device), 1)
        return GradientEstimate(g[rows].detach(), val.detach(), raw.detach(), 0, 0)

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

    # -- the loop -------------------------------------------------------------------------------
    def _attack(self, ctx: AttackContext) -> AttackOutput:
        model, x, gen = ctx.model, ctx.x, ctx.generator
        n = x.shape[0]
        prep = ctx.prepared if isinstance(ctx.prepared, _Prepared) else _Prepared(1, None)
        ctx.prepared = None
        grad_model = prep.grad_model if prep.grad_model is not None else model
        objective = AttackObjective.for_model(model, self.loss, ctx.labels, ctx.target)
        if objective.loss_ensemble and not self.gradient.supports_loss_ensembles:
            raise ValueError(f"{self.gradient!r} does not support loss-averaging ensembles "
                             "(combine='mean_loss')")
        # the random start is drawn for the whole batch here, so threads do not change it
        x_adv = self.initial_point(x, gen)
        bounds = linf_bounds(x, self.eps) if self.norm == "inf" else None
        info = {"steps": self.steps, "alpha": self.alpha, "eps": self.eps, "norm": self.norm,
                "grad_evals_per_step": self.gradient.grad_evals_per_call, "budget": self.budget}
        if prep.workers == 1:
            graph = prep.graphs[0] if prep.graphs else None
            x_adv, iterations, _ = self._loop(ctx, grad_model, objective, x_adv, bounds, None,
                                              graph)
            return AttackOutput(x_adv=x_adv, iterations=iterations, info=info)
        # Threads: each runs the whole loop on its share of the samples (the images of its clean
        # forward's slice, or an equal share), with one intra-op thread, and ends with the forward
        # at its x_adv that the base class would otherwise run as verification.
        if prep.graphs is not None:
            parts = []
            for g in prep.graphs:
                inside = (ctx.index >= g.start) & (ctx.index < g.start + g.raw.shape[0])
                parts.append((torch.nonzero(inside).flatten(), g))
        else:
            parts = [(sub, None) for sub in
                     torch.arange(n, device=x.device).tensor_split(prep.workers)]
        parts = [(sub, g) for sub, g in parts if sub.numel()]
        outs = in_threads(lambda p: self._loop(ctx, grad_model, objective, x_adv, bounds, p[0],
                                               p[1], final_logits=True), parts, prep.workers)
        # the final logits are None for a loss-averaging ensemble (in every thread alike)
        x_new = torch.empty_like(x_adv)
        iterations = torch.empty(n, dtype=torch.long, device=x.device)
        z0 = outs[0][2]
        logits = None if z0 is None else z0.new_empty((n, *z0.shape[1:]))
        for (sub, _), (xa, it, z) in zip(parts, outs, strict=True):
            x_new[sub], iterations[sub] = xa, it
            if logits is not None:
                logits[sub] = z
        return AttackOutput(x_adv=x_new, iterations=iterations, info=info, adv_logits=logits)

    def _loop(self, ctx: AttackContext, model: nn.Module, objective: AttackObjective,
              x_adv: Tensor,
              bounds: tuple[Tensor, Tensor] | None, sub: Tensor | None,
              graph: _CleanGraph | None, *, final_logits: bool = False
              ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The attack loop on the samples ``sub`` of ``ctx`` (``None``: all) from ``x_adv``,
        differentiating ``model`` (``ctx.model`` or its fast copy); returns their adversarial
        images, iterations and (``final_logits``) the logits of ``ctx.model`` itself at those
        images (``None`` for a loss-averaging ensemble)."""
        x, gen = ctx.x, ctx.generator
        if sub is not None:
            x, x_adv, objective = x[sub], x_adv[sub], objective.subset(sub)
            if bounds is not None:
                bounds = (bounds[0][sub], bounds[1][sub])

        def where(local: Tensor | None) -> Tensor | None:
            """Indices into ``ctx.x`` of the loop's samples ``local`` (``None``: all of them)."""
            if sub is None:
                return local
            return sub if local is None else sub[local]

        n = x.shape[0]
        update = self.make_update()
        update.start(x)
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        active = torch.arange(n, device=x.device)
        free_logits = isinstance(self.gradient, PlainGradient)
        for _ in range(self.steps):
            if active.numel() == 0:
                break
            if self.early_stop and not free_logits:
                with torch.no_grad():
                    z = model(x_adv[active])
                ctx.count_forward(where(active), 1)
                keep = ~self._fooled(z, objective, active)
                active = active[keep]
                if active.numel() == 0:
                    break
            # while every sample is active, whole tensors stand in for the indexed copies
            full = active.numel() == n
            x_cur = x_adv if full else x_adv[active]
            if graph is not None and full:
                est = self._first_step(ctx, objective, graph, sub)
            else:
                obj = objective if full else objective.subset(active)
                est = self.gradient.estimate(model, x_cur, obj, generator=gen)
                ctx.count_forward(where(None if full else active), est.forward_evals)
                ctx.count_grad(where(None if full else active), est.grad_evals)
            graph = None
            grad = est.grad
            if self.early_stop and free_logits and est.logits is not None:
                keep = ~self._fooled(est.logits, objective, active)
                if not bool(keep.all()):
                    active, grad, x_cur = active[keep], grad[keep], x_cur[keep]
                    full = False
                    if active.numel() == 0:
                        break
            step = self.alpha * update.direction(grad, active, gen)
            if full:
                x_adv = self.project(x, x_cur + step, bounds)
            else:
                part = None if bounds is None else (bounds[0][active], bounds[1][active])
                x_adv[active] = self.project(x[active], x_cur + step, part)
            iterations[active] += 1
        logits = None
        if final_logits and not objective.loss_ensemble:
            with torch.no_grad():
                logits = objective.forward(ctx.model, x_adv)
            ctx.count_forward(where(None), 1)
        return x_adv, iterations, logits

    @staticmethod
    def _fooled(logits: Tensor, objective: AttackObjective, active: Tensor) -> Tensor:
        pred = predict(logits)
        if objective.target is None:
            return pred != objective.labels[active]
        return pred == objective.target[active]


class FGSM(IterativeAttack):
    """Fast gradient (sign) method: one step of size ε (``x + ε·sign(∇J)``, or ``ε·∇J/‖∇J‖₂``).

    With ``gradient=SmoothedGradient(...)`` this is sg-FGSM. Cost: ``m`` gradient evaluations.
    """

    def __init__(self, *, eps: float, norm: str | float = "inf",
                 gradient: GradientEstimator | None = None, loss: str = "ce",
                 seed: int = 0, threads: int | None = None,
                 fast_model: bool = True) -> None:
        super().__init__(eps=eps, alpha=eps, steps=1, norm=norm, gradient=gradient, loss=loss,
                         seed=seed, threads=threads,
                         fast_model=fast_model)

    def _extra_params(self) -> None:
        self._params.pop("alpha", None)
        self._params.pop("steps", None)
        self._set_params(gradient=self.gradient, loss=self.loss)
        if self.threads is not None:
            self._set_params(threads=self.threads)
        if not self.fast_model:
            self._set_params(fast_model=False)


class IGSM(IterativeAttack):
    """Iterative gradient sign method / BIM (Kurakin et al.): T sign steps of size α from ``x``,
    projected onto the ℓ∞ ε-ball and ``[0, 1]`` after each. sg-IGSM with ``gradient=``."""

    def __init__(self, *, eps: float, alpha: float | None = None, steps: int | None = None,
                 gradient: GradientEstimator | None = None, loss: str = "ce",
                 early_stop: bool = False, budget: int | None = None, seed: int = 0,
                 threads: int | None = None,
                 fast_model: bool = True) -> None:
        super().__init__(eps=eps, alpha=alpha, steps=steps, norm="inf", gradient=gradient,
                         loss=loss, early_stop=early_stop, budget=budget, seed=seed,
                         threads=threads,
                         fast_model=fast_model)

    def _extra_params(self) -> None:
        self._params.pop("norm", None)
        self._set_params(gradient=self.gradient, loss=self.loss, early_stop=self.early_stop)
        if self.budget is not None:
            self._set_params(budget=self.budget)
        if self.threads is not None:
            self._set_params(threads=self.threads)
        if not self.fast_model:
            self._set_params(fast_model=False)


BIM = IGSM


class PGD(IterativeAttack):
    """Projected gradient descent (Madry et al.): IGSM with a random start; ℓ∞ or ℓ2 ball.

    ℓ2 (§8.1): ``δ ← δ + α·∇/‖∇‖₂``, then ``x + δ`` rescaled into the ℓ2 ball and clamped to
    ``[0, 1]``. ``PGD(random_start=False)`` equals :class:`IGSM` (ℓ∞).
    """

    def __init__(self, *, eps: float, alpha: float | None = None, steps: int | None = None,
                 norm: str | float = "inf", random_start: bool = True,
                 gradient: GradientEstimator | None = None, loss: str = "ce",
                 early_stop: bool = False, budget: int | None = None,
                 accumulate_grad: bool = False, seed: int = 0,
                 threads: int | None = None,
                 fast_model: bool = True) -> None:
        super().__init__(eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=random_start,
                         gradient=gradient, loss=loss, early_stop=early_stop, budget=budget,
                         accumulate_grad=accumulate_grad, seed=seed, threads=threads,
                         fast_model=fast_model)

    def _extra_params(self) -> None:
        super()._extra_params()
        self._params.pop("decay", None)


class MIFGSM(IterativeAttack):
    """Momentum iterative FGSM (Dong et al.; seed 001 "mIGSM"): ``g ← μ·g + ∇/‖∇‖₁``,
    ``x ← Proj(x + α·sign(g))``, ``g₀ = 0``. ``decay=0`` equals :class:`IGSM`.
    sg-mIGSM with ``gradient=SmoothedGradient(...)`` (momentum on the smoothed gradient)."""

    def __init__(self, *, eps: float, alpha: float | None = None, steps: int | None = None,
                 decay: float = 1.0, norm: str | float = "inf",
                 gradient: GradientEstimator | None = None, loss: str = "ce",
                 early_stop: bool = False, budget: int | None = None, seed: int = 0,
                 threads: int | None = None,
                 fast_model: bool = True) -> None:
        super().__init__(eps=eps, alpha=alpha, steps=steps, norm=norm, decay=decay,
                         gradient=gradient, loss=loss, early_stop=early_stop, budget=budget,
                         seed=seed, threads=threads,
                         fast_model=fast_model)

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
