"""Square attack (ℓ∞): score-based random search over square-shaped perturbations.

Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search", arXiv:1912.00049, Algorithms 1 and 2 (ℓ∞):

* the loss is the margin ``L(x) = z_y(x) − max_{j≠y} z_j(x)`` on the logits, *minimised* (the
  sample is adversarial once it is misclassified);
* the perturbation always sits on a vertex of the ℓ∞ ball: every pixel moves by exactly ``±ε``
  (clipped to the box ``[0, 1]``). It starts as vertical stripes: one random sign per column and
  channel;
* each iteration draws one square window of side ``h`` at a random position and gives it, in each
  channel, a fresh random sign; the candidate replaces the current point only if its loss is
  lower (one forward evaluation per iteration);
* ``h = max(1, round(√(p·H·W)))`` (at most ``min(H, W)``) with ``p`` the fraction of pixels
  changed, halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a
  10,000-query run (the schedule is rescaled to ``queries``).

The attack uses no gradient, so it sees through gradient masking (zero, shattered or random
gradients); it costs one forward evaluation per query per sample still robust (a sample stops as
soon as it is misclassified). All randomness comes from the attack's generator.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._tensors import predict
from .._utils import check_int_at_least, check_nonnegative
from .base import Attack, AttackContext, AttackOutput
from .gradients import check_logits
from .iterative import linf_bounds, normalize_norm

__all__ = ["Square", "square_side"]

#: iterations (of a 10,000-query run) at which the fraction p is halved
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_side(p_init: float, it: int, queries: int, height: int, width: int) -> int:
    """Side ``h`` of the square window at iteration ``it`` (0-based) of a ``queries``-long run."""
    scaled = int(it / queries * 10000) if queries else 0
    p = p_init / 2 ** sum(scaled > t for t in _HALVINGS)
    return max(1, min(min(height, width), round(math.sqrt(p * height * width))))


def _margin(logits: Tensor, labels: Tensor) -> Tensor:
    z = check_logits(logits)
    zy = z.gather(1, labels[:, None])[:, 0]
    other = z.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return zy - other


class Square(Attack):
    """Square attack (Andriushchenko et al. 2020, arXiv:1912.00049), ℓ∞, untargeted.

    Args:
        eps: ℓ∞ radius (pixel units, ≥ 0).
        queries: iterations (one forward evaluation each per running sample; the paper's
            budget is 10,000).
        p_init: initial fraction of pixels a square covers (the paper: 0.05 on ImageNet, larger
            on small images; 0.8 here for 28×28 / 32×32 inputs).
        norm: only ``"inf"``.
        seed: seed of the default generator.
    """

    stochastic = True
    supports_targeted = False

    def __init__(self, *, eps: float, queries: int = 1000, p_init: float = 0.8,
                 norm: str | float = "inf", seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.eps = check_nonnegative("eps", eps)
        self.queries = check_int_at_least("queries", queries, 1)
        if not 0.0 < p_init <= 1.0:
            raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
        self.p_init = float(p_init)
        if normalize_norm(norm) != "inf":
            raise ValueError("Square supports norm='inf' only")
        self._set_params(eps=self.eps, queries=self.queries, p_init=self.p_init)

    def _attack(self, ctx: AttackContext) -> AttackOutput:
        x, y, gen = ctx.x, ctx.labels, ctx.generator
        n, c, h, w = x.shape
        lo, hi = linf_bounds(x, self.eps)
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        # the perturbation as signs (+1: upper bound, −1: lower bound): always on a vertex
        stripes = torch.randint(0, 2, (n, c, 1, w), generator=gen, device=x.device)
        sign = (2 * stripes - 1).expand(n, c, h, w).to(x.dtype).contiguous()

        def image(s: Tensor, rows: Tensor) -> Tensor:
            return torch.where(s > 0, hi[rows], lo[rows])

        everyone = torch.arange(n, device=x.device)
        with torch.no_grad():
            z = ctx.model(image(sign, everyone))
        ctx.count_forward(None, 1)
        loss = _margin(z, y)
        done = predict(z) != y
        live = torch.nonzero(~done).flatten()
        ar_h = torch.arange(h, device=x.device)
        ar_w = torch.arange(w, device=x.device)
        for it in range(self.queries):
            if live.numel() == 0:
                break
            m = live.numel()
            side = square_side(self.p_init, it, self.queries, h, w)
            r = torch.randint(0, h - side + 1, (m,), generator=gen, device=x.device)
            s = torch.randint(0, w - side + 1, (m,), generator=gen, device=x.device)
            colour = 2 * torch.randint(0, 2, (m, c, 1, 1), generator=gen, device=x.device) - 1
            in_rows = (ar_h[None] >= r[:, None]) & (ar_h[None] < (r + side)[:, None])
            in_cols = (ar_w[None] >= s[:, None]) & (ar_w[None] < (s + side)[:, None])
            window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]      # (m, 1, H, W)
            cand = torch.where(window, colour.to(x.dtype), sign[live])
            with torch.no_grad():
                z = ctx.model(image(cand, live))
            ctx.count_forward(live, 1)
            iterations[live] += 1
            new_loss = _margin(z, y[live])
            accept = new_loss < loss[live]
            if bool(accept.any()):
                acc = live[accept]
                sign[acc] = cand[accept]
                loss[acc] = new_loss[accept]
            fooled = predict(z) != y[live]
            if bool((fooled & accept).any()):
                done[live[fooled & accept]] = True
                live = live[~(fooled & accept)]
        x_adv = image(sign, everyone)
        return AttackOutput(x_adv=x_adv, iterations=iterations,
                            info={"eps": self.eps, "queries": self.queries, "p_init": self.p_init})
