"""Square attack (ℓ∞ and ℓ2): score-based random search over square-shaped perturbations.

Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search", arXiv:1912.00049. Common to both norms:

* the loss is the margin ``L(x) = z_y(x) − max_{j≠y} z_j(x)`` on the logits, *minimised* (the
  sample is adversarial once it is misclassified);
* each iteration changes the current point inside square windows of side ``h`` placed uniformly
  at random; the candidate replaces the current point only if its loss is lower (one forward
  evaluation per iteration);
* ``h = max(h_min, round(√(p·H·W)))`` (at most ``min(H, W)``) with ``p`` the fraction of pixels
  changed, halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a
  10,000-query run (the schedule is rescaled to ``queries``).

ℓ∞ (Algorithms 1 and 2): the perturbation always sits on a vertex of the ℓ∞ ball: every pixel
moves by exactly ``±ε`` (clipped to the box ``[0, 1]``). It starts as vertical stripes: one random
sign per column and channel; each iteration gives one window, in each channel, a fresh random
sign (``h_min = 1``).

ℓ2 (Algorithm 3): the perturbation ``ν = x̂ − x`` is built from *pyramids*, nested centred
squares where the ring at Chebyshev distance ``d`` from the centre is worth ``Σ_{u>d} 1/u²`` (up
to the outer ring, so the mass concentrates at the centre and decays like ``1/d``). The start
tiles the image with a grid of ``⌊min(H, W)/5⌋``-pixel squares, one pyramid per tile with a
random sign per tile and channel, rescaled to ``‖ν‖₂ = ε`` and clipped to the box. An iteration
draws two windows ``W1`` and ``W2`` of side ``h`` (``h_min = 3``) and, per channel, with
``ρ = ±1`` random and ``η`` a unit-norm window made of two pyramids of opposite sign side by side
(split left/right or, with probability ½, top/bottom):

* the budget available to the channel is ``ε_avail² = ‖ν_{W1∪W2}‖² + (ε² − ‖ν‖²)/c`` (what the
  two windows hold plus an equal share of what the box clipping left unused);
* ``ν_{W2} ← 0`` and ``ν_{W1} ← ε_avail · t/‖t‖`` with ``t = ρ·η + ν_{W1}/‖ν_{W1}‖``: the mass of
  both windows goes to ``W1``, in a direction that mixes the old content of ``W1`` with a new
  random profile; outside the windows nothing changes, so ``‖ν‖₂ = ε`` before clipping;
* the candidate is clipped to ``[0, 1]`` (and, against float rounding, projected onto the ball).

The attack uses no gradient, so it sees through gradient masking (zero, shattered or random
gradients); it costs one forward evaluation per query per sample still robust (a sample stops as
soon as it is misclassified). All randomness comes from the attack's generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._tensors import predict
from .._utils import check_int_at_least, check_nonnegative
from .base import Attack, AttackContext, AttackOutput
from .execution import fold_batchnorm, forward_in_chunks
from .gradients import AttackObjective, check_logits
from .iterative import linf_bounds, normalize_norm, project_l2

__all__ = ["Square", "square_side", "pyramid", "l2_window", "l2_move"]

#: iterations (of a 10,000-query run) at which the fraction p is halved
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)

#: default initial fraction p per norm (28×28 / 32×32 inputs; see :class:`Square`)
_P_INIT = {"inf": 0.8, "2": 0.8}

#: images per forward pass of the queries (:func:`.execution.forward_in_chunks`)
QUERY_CHUNK = 128

#: smallest window side per norm (the ℓ2 window holds two pyramids of opposite sign)
_MIN_SIDE = {"inf": 1, "2": 3}

#: a proposal: (indices of the live samples into the batch, iteration) -> candidate images
_Propose = Callable[[Tensor, int], Tensor]


def square_side(p_init: float, it: int, queries: int, height: int, width: int,
                minimum: int = 1) -> int:
    """Side ``h`` of the square window at iteration ``it`` (0-based) of a ``queries``-long run
    (at least ``minimum``, at most ``min(height, width)``)."""
    scaled = int(it / queries * 10000) if queries else 0
    p = p_init / 2 ** sum(scaled > t for t in _HALVINGS)
    return max(1, min(min(height, width), max(minimum, round(math.sqrt(p * height * width)))))


def pyramid(rows: int, cols: int) -> Tensor:
    """Nested centred squares on a ``rows × cols`` rectangle (float64): the pixel at Chebyshev
    distance ``d`` from the centre ``(rows // 2, cols // 2)`` is ``Σ_{u=d+1}^{R+1} 1/u²`` with
    ``R`` the largest distance in the rectangle (the outer ring is ``1/(R+1)²``)."""
    i = (torch.arange(rows) - rows // 2).abs()
    j = (torch.arange(cols) - cols // 2).abs()
    d = torch.maximum(i[:, None], j[None, :])
    terms = 1.0 / torch.arange(1, int(d.max()) + 2, dtype=torch.float64) ** 2
    tails = terms.flip(0).cumsum(0).flip(0)          # tails[k] = Σ_{u=k+1}^{R+1} 1/u²
    return tails[d]


def l2_window(side: int) -> Tensor:
    """The ℓ2 update profile ``(2, side, side)`` (float64, unit ℓ2 norm): a pyramid on the left
    ``side // 2`` columns and a negative one on the others, and its transpose."""
    k = side // 2
    parts = [pyramid(side, k), -pyramid(side, side - k)] if k else [-pyramid(side, side)]
    eta = torch.cat(parts, dim=1)
    eta = eta / eta.norm()
    return torch.stack([eta, eta.T])


def _margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``z_y − max_{j≠y} z_j`` per sample: minus the engine's untargeted margin objective."""
    return -AttackObjective("margin", labels).value(check_logits(logits))


def _windows(gen: torch.Generator, m: int, side: int, height: int,
             width: int) -> tuple[Tensor, Tensor, Tensor]:
    """``m`` windows of side ``side`` at uniform positions: the mask ``(m, 1, H, W)`` and the
    row / column offsets of every pixel inside its window, ``(m, H)`` and ``(m, W)`` (clamped
    to ``[0, side)`` outside it)."""
    dev = gen.device
    r = torch.randint(0, height - side + 1, (m,), generator=gen, device=dev)
    s = torch.randint(0, width - side + 1, (m,), generator=gen, device=dev)
    dr = torch.arange(height, device=dev)[None] - r[:, None]
    dc = torch.arange(width, device=dev)[None] - s[:, None]
    in_rows, in_cols = (dr >= 0) & (dr < side), (dc >= 0) & (dc < side)
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
    return mask, dr.clamp(0, side - 1), dc.clamp(0, side - 1)


def _channel_norm(t: Tensor) -> Tensor:
    """ℓ2 norm per sample and channel: ``(m, c, H, W)`` → ``(m, c, 1, 1)`` (float64)."""
    return t.double().flatten(2).norm(dim=2)[:, :, None, None]


class Square(Attack):
    """Square attack (Andriushchenko et al. 2020, arXiv:1912.00049), ℓ∞ or ℓ2, untargeted.

    Args:
        eps: radius (pixel units, ≥ 0) of the ℓ∞ or ℓ2 ball.
        queries: iterations (one forward evaluation each per running sample; the paper's
            budget is 10,000).
        p_init: initial fraction of pixels a square covers (the paper: 0.05 for ℓ∞ and 0.1 for
            ℓ2 on ImageNet, larger on small images). ``None``: 0.8 for either norm, chosen for
            28×28 / 32×32 inputs (for ℓ2, 1,000 queries on 100 test images: 44 % robust left
            with 0.8 against 54 % with 0.3 and 61 % with 0.1 on ``mnist-lenet-pgd`` at ε = 2,
            44 % against 50 % with 0.1 on ``cifar10-resnet20`` at ε = 0.25).
        norm: ``"inf"`` or ``2``.
        fast_model: run the queries on a BatchNorm-folded, channels-last copy of the model
            (:func:`~advsmooth.attacks.execution.fold_batchnorm`), at most
            :data:`QUERY_CHUNK` images per pass; the result is verified on the model itself.
        seed: seed of the default generator.
    """

    stochastic = True
    supports_targeted = False

    def __init__(self, *, eps: float, queries: int = 1000, p_init: float | None = None,
                 norm: str | float = "inf", fast_model: bool = True, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.eps = check_nonnegative("eps", eps)
        self.queries = check_int_at_least("queries", queries, 1)
        self.norm = normalize_norm(norm)
        p = _P_INIT[self.norm] if p_init is None else p_init
        if not 0.0 < p <= 1.0:
            raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
        self.p_init = float(p)
        self.fast_model = bool(fast_model)
        self._set_params(eps=self.eps, norm=self.norm, queries=self.queries, p_init=self.p_init)

    def _attack(self, ctx: AttackContext) -> AttackOutput:
        start, propose = (self._linf if self.norm == "inf" else self._l2)(ctx)
        x_adv, iterations = self._search(ctx, start, propose)
        return AttackOutput(x_adv=x_adv, iterations=iterations,
                            info={"eps": self.eps, "norm": self.norm, "queries": self.queries,
                                  "p_init": self.p_init})

    def _side(self, it: int, height: int, width: int) -> int:
        return square_side(self.p_init, it, self.queries, height, width, _MIN_SIDE[self.norm])

    def _search(self, ctx: AttackContext, best: Tensor,
                propose: _Propose) -> tuple[Tensor, Tensor]:
        """Random search from ``best`` ``(n, C, H, W)``: each iteration asks ``propose`` for one
        candidate per live sample and keeps it if the margin decreases. Returns the final
        images and the iterations per sample."""
        y = ctx.labels
        n = best.shape[0]
        iterations = torch.zeros(n, dtype=torch.long, device=best.device)
        # the queries' logits come from the fast copy (equal up to rounding); the base class
        # verifies the returned images on the model itself
        model = (fold_batchnorm(ctx.model, ctx.x[:4], channels_last=True) if self.fast_model
                 else ctx.model)
        z = forward_in_chunks(model, best, QUERY_CHUNK)
        ctx.count_forward(None, 1)
        loss = _margin(z, y)
        done = predict(z) != y
        live = torch.nonzero(~done).flatten()
        for it in range(self.queries):
            if live.numel() == 0:
                break
            cand = propose(live, it)
            z = forward_in_chunks(model, cand, QUERY_CHUNK)
            ctx.count_forward(live, 1)
            iterations[live] += 1
            new_loss = _margin(z, y[live])
            accept = new_loss < loss[live]
            if bool(accept.any()):
                acc = live[accept]
                best[acc] = cand[accept]
                loss[acc] = new_loss[accept]
            fooled = predict(z) != y[live]
            if bool((fooled & accept).any()):
                done[live[fooled & accept]] = True
                live = live[~(fooled & accept)]
        return best, iterations

    def _linf(self, ctx: AttackContext) -> tuple[Tensor, _Propose]:
        """ℓ∞: vertical stripes at the ball's vertices; a window gets a fresh sign per channel."""
        x, gen = ctx.x, ctx.generator
        n, c, h, w = x.shape
        lo, hi = linf_bounds(x, self.eps)
        stripes = torch.randint(0, 2, (n, c, 1, w), generator=gen, device=x.device)
        best = torch.where((2 * stripes - 1).expand(n, c, h, w) > 0, hi, lo)

        def propose(live: Tensor, it: int) -> Tensor:
            m = live.numel()
            window, _, _ = _windows(gen, m, self._side(it, h, w), h, w)
            colour = 2 * torch.randint(0, 2, (m, c, 1, 1), generator=gen, device=x.device) - 1
            vertex = torch.where(colour > 0, hi[live], lo[live])
            return torch.where(window, vertex, best[live])

        return best, propose

    def _l2(self, ctx: AttackContext) -> tuple[Tensor, _Propose]:
        """ℓ2: a grid of random-sign pyramids at norm ε; Algorithm 3 moves the mass of two
        windows into the first one, in a new random direction."""
        x, gen, eps = ctx.x, ctx.generator, self.eps
        n, c, h, w = x.shape
        best = project_l2(x, x + _l2_start(gen, x, eps), eps)

        def propose(live: Tensor, it: int) -> Tensor:
            m, side = live.numel(), self._side(it, h, w)
            x0 = x[live]
            nu = (best[live] - x0).double()
            w1, r1, c1 = _windows(gen, m, side, h, w)
            w2, _, _ = _windows(gen, m, side, h, w)
            turn = torch.randint(0, 2, (m,), generator=gen, device=x.device)
            rho = 2 * torch.randint(0, 2, (m, c, 1, 1), generator=gen, device=x.device) - 1
            eta = l2_window(side).to(x.device)[turn[:, None, None], r1[:, :, None],
                                               c1[:, None, :]][:, None]       # (m, 1, H, W)
            new = l2_move(nu, w1, w2, rho * eta * w1, eps)
            return project_l2(x0, x0 + new.to(x.dtype), eps)

        return best, propose


def l2_move(nu: Tensor, w1: Tensor, w2: Tensor, profile: Tensor, eps: float) -> Tensor:
    """One ℓ2 step of Algorithm 3 on the perturbations ``nu`` ``(m, C, H, W)`` (float64).

    ``w1``, ``w2``: window masks ``(m, 1, H, W)``; ``profile``: the signed unit profile placed in
    ``w1`` (zero outside it), per channel. Per channel, the mass of ``w1 ∪ w2`` plus an equal
    share of the unused budget ``ε² − ‖nu‖²`` goes to ``w1`` in the direction
    ``profile + nu_{w1}/‖nu_{w1}‖``; ``w2`` (outside ``w1``) is emptied, the rest is unchanged,
    so the result has ``‖·‖₂ = max(ε, ‖nu‖₂)`` (up to rounding).
    """
    c = nu.shape[1]
    old = nu * w1
    t = profile + old / _channel_norm(old).clamp_min(1e-30)
    unused = (eps ** 2 - nu.flatten(1).pow(2).sum(1)).clamp_min(0.0)
    avail = (_channel_norm(nu * (w1 | w2)) ** 2 + unused[:, None, None, None] / c).sqrt()
    new = torch.where(w2, 0.0, nu)
    return torch.where(w1, t / _channel_norm(t).clamp_min(1e-30) * avail, new)


def _l2_start(gen: torch.Generator, x: Tensor, eps: float) -> Tensor:
    """The ℓ2 starting perturbation ``(n, C, H, W)``: a centred grid of ``s × s`` tiles,
    ``s = max(1, ⌊min(H, W)/5⌋)``, each holding a pyramid with a random sign per sample, channel
    and tile, rescaled to ℓ2 norm ``eps`` (before clipping to the box)."""
    n, c, h, w = x.shape
    s = max(1, min(h, w) // 5)
    th, tw = h // s, w // s
    rows = torch.arange(h, device=x.device) - (h - th * s) // 2     # inside the grid: [0, th·s)
    cols = torch.arange(w, device=x.device) - (w - tw * s) // 2
    inside = ((rows >= 0) & (rows < th * s))[:, None] & ((cols >= 0) & (cols < tw * s))[None, :]
    rows, cols = rows.clamp(0, th * s - 1), cols.clamp(0, tw * s - 1)
    tile = pyramid(s, s).to(x.device)[(rows % s)[:, None], (cols % s)[None, :]] * inside
    signs = 2 * torch.randint(0, 2, (n, c, th, tw), generator=gen, device=x.device) - 1
    delta = signs[:, :, (rows // s)[:, None], (cols // s)[None, :]].double() * tile
    delta = delta / delta.flatten(1).norm(dim=1).clamp_min(1e-30)[:, None, None, None] * eps
    return delta.to(x.dtype)
