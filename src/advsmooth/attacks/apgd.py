"""Auto-PGD (APGD): step-size-free PGD with momentum and a checkpoint schedule.

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", arXiv:2003.01690, Algorithm 1 (§3):

* the step size starts at ``η⁽⁰⁾ = 2ε`` and is only ever halved, at checkpoints
  ``w_j = ⌈p_j·N⌉`` with ``p₀ = 0``, ``p₁ = 0.22``, ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03,
  0.06)``;
* at a checkpoint ``w_j`` the step size of a sample is halved, and its iterate restarts from the
  best point found so far, when (1) the loss increased in fewer than ``ρ = 0.75`` of the steps
  since ``w_{j−1}``, or (2) neither its step size nor its best loss changed since ``w_{j−1}``;
* the update has momentum ``α = 0.75`` on the iterates:
  ``z = P(x⁽ᵏ⁾ + η⁽ᵏ⁾·s(∇f(x⁽ᵏ⁾)))``, ``x⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + α(z − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾))``
  with ``s = sign`` (ℓ∞) or ``g/‖g‖₂`` (ℓ2), and ``P`` the projection onto the ε-ball ∩ [0, 1];
  the first step has no momentum.

Losses (:class:`~advsmooth.attacks.gradients.AttackObjective`): cross-entropy (``loss="ce"``,
APGD-CE) or the scale-invariant difference-of-logits ratio (``loss="dlr"``, APGD-DLR);
``targets=k`` runs the targeted DLR loss against each of the ``k`` classes the model ranks
highest after the true one on the clean input (APGD-T), one after the other, as the paper's
AutoAttack does. A sample stops as soon as it is misclassified (``early_stop``, default True):
it costs nothing more, and its returned image is the first misclassified iterate. Samples never
fooled return the iterate with the highest loss of the last run. ``restarts`` runs per target
start from uniform random points of the ball (the first from ``x`` itself with
``random_start=False``); only the samples not yet fooled take part in a restart.

``eps`` may be a list: the call then returns an :class:`~advsmooth.attacks.grid.EpsGrid`, one
result per ε (ascending; a sample fooled at ε keeps its image at every larger ε, and only the
survivors are attacked at the next ε).

Cost: every iterate costs the gradient estimator's evaluations (one forward + one gradient with
the plain gradient); with an expectation-over-transformation estimator (randomised models) the
misclassification check costs one more forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._tensors import predict
from .._utils import check_int_at_least, check_nonnegative
from .base import Attack, AttackContext, AttackOutput
from .execution import fold_batchnorm
from .gradients import AttackObjective, GradientEstimator, PlainGradient, check_logits
from .grid import attack_grid, check_eps_list
from .iterative import L2Update, SignUpdate, linf_bounds, normalize_norm, project_l2, project_linf

__all__ = ["APGD", "apgd_checkpoints", "ranked_targets"]


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j = ⌈p_j·N⌉`` (``1 ≤ w_j ≤ N``, ascending, distinct) at which APGD
    may halve its step size, for ``N = steps``."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    # (rounded first: 0.57·100 is 57.000000000000007 in floating point)
    w = {math.ceil(round(q * steps, 9)) for q in p[1:] if q <= 1.0}
    return sorted(v for v in w if v >= 1)


def ranked_targets(clean_logits: Tensor, k: int) -> list[Tensor]:
    """The targets of a targeted run per sample, one ``(N,)`` tensor per rank: the ``k`` classes
    (at most ``K − 1``) the model ranks highest after its clean prediction (rank 0, the label of
    a correctly classified sample), as AutoAttack's APGD-T and FAB-T choose them."""
    z = check_logits(clean_logits)
    order = z.argsort(dim=1, descending=True)
    return [order[:, r] for r in range(1, min(k, z.shape[1] - 1) + 1)]


class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020, arXiv:2003.01690), ℓ∞ or ℓ2, CE or DLR loss.

    Args:
        eps: radius of the ball (pixel units, ≥ 0), or a list of radii (one result per ε).
        norm: ``"inf"`` or ``2``.
        steps: iterations ``N`` per run (≥ 1; the paper uses 100).
        restarts: runs per target (≥ 1), each from a fresh random start.
        loss: ``"ce"`` or ``"dlr"`` (or ``"margin"``); ``"dlr"`` needs >= 3 classes.
        targets: ``None`` (untargeted) or ``k ≥ 1``: targeted loss against each of the ``k``
            most likely wrong classes of the clean input (APGD-T; needs ``loss="dlr"`` or
            ``"ce"``/``"margin"`` in their targeted forms). Success is still misclassification.
        rho: fraction of increasing steps below which a checkpoint halves the step (0.75).
        momentum: weight ``α`` of the new step against the previous one (0.75).
        random_start: start the first run from a uniform random point of the ball.
        early_stop: stop each sample at its first misclassified iterate.
        gradient: gradient estimator (default plain; an
            :class:`~advsmooth.attacks.ExpectationGradient` gives EOT for randomised models).
        fast_model: differentiate a BatchNorm-folded, channels-last copy of the model (see
            :func:`~advsmooth.attacks.execution.fold_batchnorm`); predictions use the model itself.
        seed: seed of the random starts (and of a stochastic gradient estimator).
    """

    stochastic = True
    supports_targeted = False

    # 13 parameters: APGD's knobs from the paper (ε, norm, N, restarts, loss, targets, ρ, α,
    # random start), early stopping, the gradient estimator, fast_model and the seed; grouping
    # them would hide the paper's names
    def __init__(self, *, eps: float | Sequence[float], norm: str | float = "inf",
                 steps: int = 100, restarts: int = 1, loss: str = "ce",
                 targets: int | None = None, rho: float = 0.75, momentum: float = 0.75,
                 random_start: bool = True, early_stop: bool = True,
                 gradient: GradientEstimator | None = None, fast_model: bool = True,
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        if isinstance(eps, (int, float)) and not isinstance(eps, bool):
            self.eps_list: list[float] | None = None
            self.eps = check_nonnegative("eps", eps)
        else:
            self.eps_list = check_eps_list(eps)
            self.eps = self.eps_list[-1]
        self.norm = normalize_norm(norm)
        self.steps = check_int_at_least("steps", steps, 1)
        self.restarts = check_int_at_least("restarts", restarts, 1)
        none = torch.zeros(0, dtype=torch.long)
        AttackObjective(loss=loss, labels=none,  # validates loss
                        target=none if targets is not None else None)
        self.loss = loss
        if targets is not None:
            check_int_at_least("targets", targets, 1)
        self.targets = targets
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"rho must be in [0, 1], got {rho!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        self.rho, self.momentum = float(rho), float(momentum)
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)
        if gradient is None:
            gradient = PlainGradient()
        if not isinstance(gradient, GradientEstimator):
            raise TypeError(f"gradient must be a GradientEstimator, got {type(gradient).__name__}")
        self.gradient = gradient
        self.fast_model = bool(fast_model)
        self.checkpoints = apgd_checkpoints(self.steps)
        self._set_params(eps=eps if self.eps_list is None else self.eps_list, norm=self.norm,
                         steps=self.steps, restarts=self.restarts, loss=self.loss)
        if targets is not None:
            self._set_params(targets=targets)
        if not isinstance(gradient, PlainGradient):
            self._set_params(gradient=gradient)

    def at(self, eps: float) -> APGD:
        """This attack with a single radius ``eps`` (same settings)."""
        return APGD(eps=eps, norm=self.norm, steps=self.steps, restarts=self.restarts,
                    loss=self.loss, targets=self.targets, rho=self.rho, momentum=self.momentum,
                    random_start=self.random_start, early_stop=self.early_stop,
                    gradient=self.gradient, fast_model=self.fast_model, seed=self.seed)

    def __call__(self, model: nn.Module, x: Tensor, y: Any = None, *, target: Any = None,
                 generator: torch.Generator | None = None) -> Any:  # type: ignore[override]
        """Attack ``model`` at ``x`` (see :meth:`Attack.__call__`); with a list of ε, an
        :class:`~advsmooth.attacks.grid.EpsGrid` of one :class:`AttackResult` per ε."""
        if self.eps_list is None:
            return super().__call__(model, x, y, target=target, generator=generator)
        return attack_grid(self.at, model, x, y, self.eps_list, generator=generator)

    # -- pieces ---------------------------------------------------------------------------------
    def _project(self, x: Tensor, x_new: Tensor, bounds: tuple[Tensor, Tensor] | None) -> Tensor:
        if self.norm == "inf":
            return project_linf(x, x_new, self.eps, bounds)
        return project_l2(x, x_new, self.eps)

    def _start(self, x: Tensor, bounds: tuple[Tensor, Tensor] | None, random: bool,
               gen: torch.Generator) -> Tensor:
        if not random or self.eps == 0:
            return x.clone()
        if self.norm == "inf":
            u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            return self._project(x, x + (2 * u - 1) * self.eps, bounds)
        d = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        d = d / torch.linalg.vector_norm(d.flatten(1), dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        r = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype)
        return self._project(x, x + (r * self.eps).view(-1, 1, 1, 1) * d, bounds)

    def _target_classes(self, clean_logits: Tensor) -> list[Tensor | None]:
        if self.targets is None:
            return [None]
        return list(ranked_targets(clean_logits, self.targets))

    # -- the attack -----------------------------------------------------------------------------
    def _attack(self, ctx: AttackContext) -> AttackOutput:
        z0 = ctx.clean_logits
        if self.loss == "dlr" and (z0.ndim == 1 or z0.shape[-1] < 3):
            raise ValueError("loss='dlr' needs a model with at least 3 classes (with 2 the ratio "
                             "is constant: no gradient); use loss='ce' or 'margin'")
        model = ctx.model
        grad_model = (fold_batchnorm(model, ctx.x[:4], channels_last=True) if self.fast_model
                      else model)
        n = ctx.x.shape[0]
        x_out = ctx.x.clone()
        fooled = torch.zeros(n, dtype=torch.bool, device=ctx.x.device)
        iterations = torch.zeros(n, dtype=torch.long, device=ctx.x.device)
        first = True
        for tgt in self._target_classes(ctx.clean_logits):
            for _ in range(self.restarts):
                act = torch.nonzero(~fooled).flatten()
                if act.numel() == 0:
                    break
                xa, ok, its = self._run(ctx, grad_model, act, tgt,
                                        random=self.random_start or not first)
                first = False
                x_out[act], iterations[act] = xa, iterations[act] + its
                fooled[act] = ok
        info = {"eps": self.eps, "norm": self.norm, "steps": self.steps,
                "restarts": self.restarts, "loss": self.loss, "targets": self.targets}
        return AttackOutput(x_adv=x_out, iterations=iterations, info=info)

    def _estimate(self, ctx: AttackContext, model: nn.Module, x: Tensor, obj: AttackObjective,
                  rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Gradient, objective and misclassification of the samples ``rows`` (of ``ctx``) at
        ``x``; counts their cost."""
        est = self.gradient.estimate(model, x, obj, generator=ctx.generator)
        ctx.count_forward(rows, est.forward_evals)
        ctx.count_grad(rows, est.grad_evals)
        if est.logits is not None:  # (of the fast copy: the base class verifies the result)
            logits = est.logits
        else:  # a noisy estimate's logits are no verdict of the model itself
            with torch.no_grad():
                logits = ctx.model(x)
            ctx.count_forward(rows, 1)
        return est.grad, est.value, predict(logits) != ctx.labels[rows]

    def _run(self, ctx: AttackContext, model: nn.Module, rows: Tensor, target: Tensor | None,
             *, random: bool) -> tuple[Tensor, Tensor, Tensor]:
        """One APGD run on the samples ``rows`` of ``ctx``: (images, misclassified, iterations).

        The per-sample state lives in tensors over the samples still running; a sample that
        finishes (misclassified, with early stopping) is written out and dropped from them."""
        x = ctx.x[rows]
        m = x.shape[0]
        obj = AttackObjective.for_model(ctx.model, self.loss, ctx.labels[rows],
                                        None if target is None else target[rows])
        bounds = linf_bounds(x, self.eps) if self.norm == "inf" else None
        direction = SignUpdate() if self.norm == "inf" else L2Update()
        x_cur = self._start(x, bounds, random, ctx.generator)
        g_cur, f_cur, wrong = self._estimate(ctx, model, x_cur, obj, rows)
        out = x_cur.clone()          # first misclassified iterate, else the best one
        fooled = wrong.clone()
        iterations = torch.zeros(m, dtype=torch.long, device=x.device)
        # the state of the running samples (local index `live` into this run's m samples)
        s = {"live": torch.arange(m, device=x.device), "x": x, "x_cur": x_cur,
             "x_prev": x_cur.clone(), "f_cur": f_cur, "g_cur": g_cur, "x_best": x_cur.clone(),
             "f_best": f_cur.clone(), "g_best": g_cur.clone(),
             "eta": torch.full((m,), 2.0 * self.eps, dtype=x.dtype, device=x.device),
             "increases": torch.zeros(m, dtype=torch.long, device=x.device)}
        if bounds is not None:
            s["lo"], s["hi"] = bounds
        s["eta_ckpt"], s["f_best_ckpt"] = s["eta"].clone(), s["f_best"].clone()
        if self.early_stop:
            s = self._drop(s, ~wrong, out)
        last_ckpt = 0
        for k in range(self.steps):
            live = s["live"]
            if live.numel() == 0:
                break
            xc, x0 = s["x_cur"], s["x"]
            part = (s["lo"], s["hi"]) if bounds is not None else None
            d = direction.direction(s["g_cur"], live, ctx.generator)
            z = self._project(x0, xc + s["eta"].view(-1, 1, 1, 1) * d, part)
            if k == 0:
                x_new = z
            else:
                x_new = self._project(x0, xc + self.momentum * (z - xc)
                                      + (1.0 - self.momentum) * (xc - s["x_prev"]), part)
            g_new, f_new, wrong = self._estimate(ctx, model, x_new, obj.subset(live), rows[live])
            iterations[live] += 1
            s["increases"] += (f_new > s["f_cur"]).long()
            s["x_prev"], s["x_cur"], s["f_cur"], s["g_cur"] = xc, x_new, f_new, g_new
            better = f_new > s["f_best"]
            if bool(better.any()):
                for key, val in (("x_best", x_new), ("f_best", f_new), ("g_best", g_new)):
                    s[key] = torch.where(better.view(-1, *[1] * (val.ndim - 1)), val, s[key])
            new_fooled = wrong & ~fooled[live]
            if bool(new_fooled.any()):
                out[live[new_fooled]] = x_new[new_fooled]
                fooled[live[new_fooled]] = True
            if k + 1 in self.checkpoints:
                since = k + 1 - last_ckpt
                cut = ((s["increases"].double() < self.rho * since)
                       | ((s["eta"] == s["eta_ckpt"]) & (s["f_best"] == s["f_best_ckpt"])))
                if bool(cut.any()):
                    c4 = cut.view(-1, 1, 1, 1)
                    s["eta"] = torch.where(cut, s["eta"] / 2, s["eta"])
                    s["x_cur"] = torch.where(c4, s["x_best"], s["x_cur"])
                    s["x_prev"] = torch.where(c4, s["x_best"], s["x_prev"])
                    s["g_cur"] = torch.where(c4, s["g_best"], s["g_cur"])
                    s["f_cur"] = torch.where(cut, s["f_best"], s["f_cur"])
                s["increases"] = torch.zeros_like(s["increases"])
                s["eta_ckpt"], s["f_best_ckpt"] = s["eta"].clone(), s["f_best"].clone()
                last_ckpt = k + 1
            if self.early_stop and bool(wrong.any()):
                s = self._drop(s, ~wrong, out)
        if s["live"].numel():
            keep = ~fooled[s["live"]]
            out[s["live"][keep]] = s["x_best"][keep]
        return out, fooled, iterations

    @staticmethod
    def _drop(s: dict[str, Tensor], keep: Tensor, out: Tensor) -> dict[str, Tensor]:
        """The running state restricted to the samples ``keep`` (bool over the running ones)."""
        if bool(keep.all()):
            return s
        return {key: val[keep] for key, val in s.items()}
