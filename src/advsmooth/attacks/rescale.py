"""Perturbations compared at an equal ℓ∞ size (SmoothFool Table 4, docs/algorithms.md).

SmoothFool's Table 4 compares the black-box transferability of DeepFool and of SmoothFool with
several smoothing kernels after rescaling every perturbation to the same ℓ∞ norm (16/255), so
that smoothness, not size, is what differs. :class:`RescaleLinf` wraps any attack this way.
"""

from __future__ import annotations

import torch

from .._utils import check_nonnegative
from .base import Attack, AttackContext, AttackOutput
from .iterative import linf_bounds

__all__ = ["RescaleLinf"]


class RescaleLinf(Attack):
    """Run ``attack``, then rescale each perturbation ``r = x_adv − x`` to ``‖r‖∞ = eps``.

    ``x_adv = clamp(x + r · eps/‖r‖∞, 0, 1)`` per sample (a zero perturbation stays zero),
    clamped so that ``‖x_adv − x‖∞ ≤ eps`` holds exactly in the input's dtype. Success is
    judged by the base class at the rescaled images, so it may differ from the inner attack's.
    Costs: the inner attack's evaluations (including its own clean prediction) are added.

    Args:
        attack: the attack whose perturbations are rescaled.
        eps: target ℓ∞ norm in pixel units (≥ 0; SmoothFool Table 4: 16/255).
    """

    def __init__(self, attack: Attack, eps: float) -> None:
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be an Attack, got {type(attack).__name__}")
        super().__init__(seed=attack.seed)
        self.attack = attack
        self.eps = check_nonnegative("eps", eps)
        self.stochastic = attack.stochastic
        self.supports_targeted = attack.supports_targeted
        self._set_params(attack=attack, eps=self.eps)

    def _attack(self, ctx: AttackContext) -> AttackOutput:
        res = self.attack(ctx.model, ctx.x, ctx.labels, target=ctx.target,
                          generator=ctx.generator)
        ctx.cost.forward[ctx.index] += res.forward_evals.to(ctx.cost.forward.dtype)
        ctx.cost.grad[ctx.index] += res.grad_evals.to(ctx.cost.grad.dtype)
        r = res.x_adv - ctx.x
        norm = r.flatten(1).abs().amax(1)
        scale = torch.where(norm > 0, self.eps / norm.clamp_min(1e-30), torch.zeros_like(norm))
        x_adv = ctx.x + r * scale.view(-1, *([1] * (r.ndim - 1)))
        # clamp to the box ∩ ℓ∞ ball, exactly in the input dtype (rounding of x + r·s can
        # overshoot eps by an ulp)
        lo, hi = linf_bounds(ctx.x, self.eps)
        x_adv = torch.minimum(torch.maximum(x_adv, lo), hi)
        return AttackOutput(x_adv=x_adv, iterations=res.iterations,
                            info={**res.info, "rescaled_linf": self.eps})
