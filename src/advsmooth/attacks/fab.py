"""FAB: the fast adaptive boundary attack, targeted version (FAB-T), ℓ2 and ℓ∞.

Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive boundary
attack", arXiv:1907.02044, Algorithm 1. FAB looks for the smallest perturbation that changes the
decision, like DeepFool, but keeps the iterates close to the original image ``x₀``:

* linearise at the current iterate ``x``: the face between the label ``y`` and the target ``t``
  is ``h(z) = f(x) + w·(z − x) = 0`` with ``f = z_t − z_y`` and ``w = ∇f(x)`` (the targeted
  version differentiates only this one face per iteration; the untargeted version of the paper
  picks the nearest of all ``K − 1`` faces);
* project both ``x`` and ``x₀`` onto the face intersected with the box ``[0, 1]``: ``δ`` and
  ``δ₀`` (the minimal-ℓp steps, :func:`~advsmooth.attacks.hyperplane.box_solve`);
* step to a convex combination biased towards the original image,
  ``x ← clip((1 − α)(x + η·δ) + α(x₀ + η·δ₀), 0, 1)`` with
  ``α = min(‖δ‖ / (‖δ‖ + ‖δ₀‖), α_max)`` and the extrapolation ``η > 1``;
* when the iterate is misclassified, it is recorded if it is the smallest adversarial
  perturbation so far, and then pulled back towards the original, ``x ← x₀ + β·(x − x₀)``
  (the *backward step*): the iterates oscillate around the boundary while ``α`` draws them
  towards ``x₀``, so the recorded perturbation shrinks.

Targets: like AutoAttack's FAB-T, one run per target ``t`` among the ``targets`` classes the
model ranks highest after the label on the clean image; a run counts any misclassification as
adversarial. ``restarts > 1`` adds runs per target from random points of the ball of radius
``min(best ‖r‖, ε)/2`` around ``x₀`` (the first run of each target starts at ``x₀``).

With ``eps`` set, a sample stops as soon as a perturbation of norm ≤ ε is found, and the
returned image is the smallest adversarial found, projected onto the ε-ball (``x₀`` when none
was found): the attack then answers "is there an adversarial example within ε?", as in a
robustness evaluation. With ``eps=None`` every run goes to its end and the smallest adversarial
perturbation is returned (a minimum-norm attack).

Departure from the paper's loop, for cost only: the paper checks the new iterate with one
forward pass and linearises it with another; here one forward pass with its gradient does both.
When the iterate is misclassified its gradient is not used (the backward-stepped point is
linearised next), so ``steps`` counts the projection steps of a run and a run may take a few more
gradient evaluations than ``steps``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._tensors import predict
from .._utils import check_int_at_least, check_nonnegative
from .apgd import ranked_targets
from .base import Attack, AttackContext, AttackOutput
from .execution import fold_batchnorm
from .gradients import AttackObjective, PlainGradient
from .hyperplane import TINY, box_solve, holder_direction, lp_norm
from .iterative import normalize_norm, project_l2, project_linf

__all__ = ["FAB"]

#: the one plain-gradient estimator every linearisation uses (stateless)
_PLAIN = PlainGradient()


class FAB(Attack):
    """FAB-T (Croce & Hein 2020, arXiv:1907.02044), ℓ2 or ℓ∞, minimum-norm or within ε.

    Args:
        norm: ``"inf"`` or ``2``.
        eps: radius (pixel units): stop a sample at its first adversarial of norm ≤ ε and return
            images inside the ε-ball; ``None``: minimise the norm over the whole budget.
        steps: projection steps per run (the paper and AutoAttack use 100).
        targets: target classes per sample (the most likely wrong classes on the clean input;
            AutoAttack's FAB-T uses 9).
        restarts: runs per target (the first from ``x₀``, the others from random points).
        alpha_max: the largest weight ``α`` of the step from the original image (0.1).
        eta: extrapolation ``η ≥ 1`` of both steps (1.05).
        beta: backward step ``β ∈ (0, 1]`` towards the original image after a success (0.9).
        fast_model: differentiate a BatchNorm-folded, channels-last copy of the model (see
            :func:`~advsmooth.attacks.execution.fold_batchnorm`); the returned images are
            verified on the model itself.
        seed: seed of the random restarts.

    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> res = FAB(norm=2, targets=2, steps=20)(model, torch.rand(4, 1, 4, 4))
    >>> bool(res.success.all())
    True
    """

    stochastic = True
    supports_targeted = False

    def __init__(self, *, norm: str | float = 2, eps: float | None = None, steps: int = 100,
                 targets: int = 9, restarts: int = 1, alpha_max: float = 0.1,
                 eta: float = 1.05, beta: float = 0.9, fast_model: bool = True,
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.norm = normalize_norm(norm)
        self.p = math.inf if self.norm == "inf" else 2.0
        self.q = 1.0 if self.norm == "inf" else 2.0
        self.eps = None if eps is None else check_nonnegative("eps", eps)
        self.steps = check_int_at_least("steps", steps, 1)
        self.targets = check_int_at_least("targets", targets, 1)
        self.restarts = check_int_at_least("restarts", restarts, 1)
        if not 0.0 <= alpha_max <= 1.0:
            raise ValueError(f"alpha_max must be in [0, 1], got {alpha_max!r}")
        if not eta >= 1.0:
            raise ValueError(f"eta must be ≥ 1, got {eta!r}")
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {beta!r}")
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)
        self.fast_model = bool(fast_model)
        self._set_params(norm=self.norm, eps=self.eps, steps=self.steps, targets=self.targets,
                         restarts=self.restarts)

    # -- the attack -----------------------------------------------------------------------------
    def _attack(self, ctx: AttackContext) -> AttackOutput:
        model = (fold_batchnorm(ctx.model, ctx.x[:4], channels_last=True) if self.fast_model
                 else ctx.model)
        n = ctx.x.shape[0]
        best = ctx.x.clone()
        best_norm = torch.full((n,), math.inf, dtype=torch.float64, device=ctx.x.device)
        iterations = torch.zeros(n, dtype=torch.long, device=ctx.x.device)
        for tgt in ranked_targets(ctx.clean_logits, self.targets):
            for restart in range(self.restarts):
                rows = torch.nonzero(~self._done(best_norm)).flatten()
                if rows.numel() == 0:
                    break
                xs, norms, its = self._run(ctx, model, rows, tgt, best_norm[rows],
                                           random=restart > 0)
                better = norms < best_norm[rows]
                best[rows[better]], best_norm[rows[better]] = xs[better], norms[better]
                iterations[rows] += its
        info = {"norm": self.norm, "eps": self.eps, "steps": self.steps,
                "targets": self.targets, "restarts": self.restarts}
        return AttackOutput(x_adv=self._inside(ctx.x, best), iterations=iterations,
                            extras={"min_norm": best_norm}, info=info)

    def _done(self, norms: Tensor) -> Tensor:
        """Samples that need no further run: an adversarial within ε was found."""
        if self.eps is None:
            return torch.zeros_like(norms, dtype=torch.bool)
        return norms <= self.eps

    def _inside(self, x: Tensor, best: Tensor) -> Tensor:
        """The returned images: the smallest adversarials, projected onto the ε-ball."""
        if self.eps is None:
            return best
        if self.norm == "inf":
            return project_linf(x, best, self.eps)
        return project_l2(x, best, self.eps)

    def _run(self, ctx: AttackContext, model: nn.Module, rows: Tensor, tgt: Tensor,
             best_norm: Tensor, *, random: bool) -> tuple[Tensor, Tensor, Tensor]:
        """One FAB-T run on the samples ``rows`` of ``ctx`` towards the classes ``tgt[rows]``:
        ``(smallest adversarial images (x₀ if none), their norms (∞ if none), linearisations)``.
        """
        x0, labels = ctx.x[rows], ctx.labels[rows]
        m = x0.shape[0]
        obj = AttackObjective.for_model(ctx.model, "face", labels, tgt[rows])
        x = self._start(x0, best_norm, ctx.generator) if random else x0.clone()
        out, out_norm = x0.clone(), torch.full((m,), math.inf, dtype=torch.float64,
                                               device=x0.device)
        taken = torch.zeros(m, dtype=torch.long, device=x0.device)   # projection steps
        evals = torch.zeros(m, dtype=torch.long, device=x0.device)   # linearisations
        live = torch.arange(m, device=x0.device)
        while live.numel():
            f, w, wrong = self._linearise(ctx, model, x, obj.subset(live), rows[live])
            evals[live] += 1
            if bool(wrong.any()):
                # a success: record it if it is the smallest, then the backward step
                hit = live[wrong]
                r = lp_norm((x[wrong] - x0[hit]).flatten(1).double(), self.p)
                better = r < out_norm[hit]
                out[hit[better]], out_norm[hit[better]] = x[wrong][better], r[better]
                x[wrong] = x0[hit] + self.beta * (x[wrong] - x0[hit])
            go = ~wrong
            x[go] = self._step(x[go], x0[live[go]], f[go], w[go])
            taken[live[go]] += 1
            keep = (taken[live] < self.steps) & (evals[live] < 2 * self.steps)
            keep &= ~self._done(out_norm[live])
            live, x = live[keep], x[keep]
        return out, out_norm, evals

    def _linearise(self, ctx: AttackContext, model: nn.Module, x: Tensor,
                   obj: AttackObjective, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``f = z_t − z_y`` at ``x``, its gradient ``w`` and whether ``x`` is misclassified
        (one forward and one gradient evaluation, counted)."""
        est = _PLAIN.estimate(model, x, obj, generator=ctx.generator)
        ctx.count_forward(rows, est.forward_evals)
        ctx.count_grad(rows, est.grad_evals)
        logits = est.logits
        if logits is None:  # a loss-averaging ensemble: its verdict needs its own forward
            with torch.no_grad():
                logits = ctx.model(x)
            ctx.count_forward(rows, 1)
        return est.value, est.grad, predict(logits) != obj.labels

    def _step(self, x: Tensor, x0: Tensor, f: Tensor, w: Tensor) -> Tensor:
        """The biased projection step from ``x`` (linearised there: ``f``, ``w``) and ``x₀``."""
        m = x.shape[0]
        if m == 0:
            return x
        wf = w.flatten(1)
        # h(z) = f + w·(z − x): the step from a point p must add −h(p) to w·p
        b_x = -f
        b_0 = -(f + (wf * (x0 - x).flatten(1)).sum(dim=1))
        d = self._project(torch.cat([wf, wf]), torch.cat([b_x, b_0]),
                          torch.cat([x, x0]).flatten(1))
        dx, d0 = d[:m], d[m:]
        nx, n0 = lp_norm(dx, self.p), lp_norm(d0, self.p)
        alpha = (nx / (nx + n0).clamp_min(TINY)).clamp(0.0, self.alpha_max)[:, None]
        new = (1 - alpha) * (x.flatten(1) + self.eta * dx) + alpha * (x0.flatten(1)
                                                                        + self.eta * d0)
        return new.clamp(0.0, 1.0).view_as(x)

    def _project(self, w: Tensor, b: Tensor, p: Tensor) -> Tensor:
        """The minimal-ℓp ``δ`` with ``w·δ = b`` and ``p + δ ∈ [0, 1]`` (rows of (k, D)); where
        the face cannot be reached inside the box, the step of the box that maximises ``w·δ``."""
        s = torch.where(b < 0, -1.0, 1.0).to(w.dtype)[:, None]
        ws, bs = w * s, b.abs()
        nq = lp_norm(ws, self.q)
        u = holder_direction(ws, nq, self.q)
        lo, hi = -p, 1.0 - p
        t, reach = box_solve(ws[:, None], u[:, None], bs[:, None], lo[:, None], hi[:, None])
        d = torch.minimum(torch.maximum(t[:, 0, None] * u, lo), hi)
        # out of reach: the point of the box that gets closest to the face (every coordinate
        # that moves towards the face at its bound)
        far = torch.where(u > 0, hi, torch.where(u < 0, lo, torch.zeros_like(lo)))
        return torch.where(reach, d, far)

    def _start(self, x0: Tensor, best_norm: Tensor, gen: torch.Generator) -> Tensor:
        """A random point of the ball of radius ``min(best ‖r‖, ε)/2`` around ``x₀`` (in the
        box); ``x₀`` itself where neither is finite."""
        radius = best_norm if self.eps is None else best_norm.clamp(max=self.eps)
        radius = torch.where(torch.isfinite(radius), radius / 2, torch.zeros_like(radius))
        radius = radius.to(x0.dtype).view(-1, 1, 1, 1)
        if self.norm == "inf":
            u = torch.rand(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
            return (x0 + radius * (2 * u - 1)).clamp(0.0, 1.0)
        d = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        d = d / lp_norm(d.flatten(1), 2.0).clamp_min(TINY).view(-1, 1, 1, 1)
        return (x0 + radius * d).clamp(0.0, 1.0)
