"""Baselines of SmoothFool's Tables 1 and 3: the iterative smooth attack (IS), the colour shift (CS)
and its greyscale analogue (GS).

* :class:`IterativeSmooth` — docs/algorithms.md (SmoothFool Eq. 12): gradient descent on
  ``−CE(model(clamp(x + r)), y) + λ_s·Ω(r)`` (or a logit margin in place of the cross-entropy)
  with a per-sample stop at the first misclassified iterate.
* :class:`ColorShift` — the colour-shift baseline of SmoothFool Table 1 (Hosseini & Poovendran's
  semantic attack): random hue and saturation
  shifts in HSV space, ``trials`` attempts with a progressively wider saturation range, stop at
  the first misclassified trial. RGB inputs only (see the class docstring for greyscale).
* :class:`GreyShift` — a greyscale analogue of the colour shift (a grey image has no hue or
  saturation): random global contrast/brightness changes with a progressively wider range.

Also the vectorised colour conversions :func:`rgb_to_hsv` and :func:`hsv_to_rgb` (``N×3×H×W``,
all channels in ``[0, 1]``; hue as a fraction of a turn).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._tensors import predict
from .._utils import (
    check_choice,
    check_finite_gradient,
    check_int_at_least,
    check_nonnegative,
    check_positive,
)
from .base import Attack, AttackContext, AttackOutput, AttackResult
from .gradients import AttackObjective, check_logits

__all__ = ["IterativeSmooth", "ColorShift", "GreyShift", "rgb_to_hsv", "hsv_to_rgb"]

_TINY = 1e-12


# ----------------------------------------------------------------------------------------------
# colour conversions
# ----------------------------------------------------------------------------------------------

def _check_rgb(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be an N×3×H×W tensor, got {shape}")


def rgb_to_hsv(x: Tensor) -> Tensor:
    """RGB → HSV for ``N×3×H×W`` images in ``[0, 1]``; returns ``N×3×H×W`` (H, S, V) in ``[0, 1]``.

    Hue is a fraction of a full turn (``0`` = red, ``1/3`` = green, ``2/3`` = blue) and is ``0``
    for grey pixels (undefined hue); saturation is ``0`` for black. Same definitions as Python's
    :mod:`colorsys`, vectorised.
    """
    _check_rgb(x, "x")
    r, g, b = x.unbind(1)
    maxc, argmax = x.max(dim=1)
    minc = x.min(dim=1).values
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(_TINY), torch.zeros_like(maxc))
    d = delta.clamp_min(_TINY)
    h = torch.where(argmax == 0, (g - b) / d,
                    torch.where(argmax == 1, (b - r) / d + 2.0, (r - g) / d + 4.0))
    h = torch.where(delta > 0, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """HSV → RGB for ``N×3×H×W`` tensors (H as a fraction of a turn, S and V in ``[0, 1]``).

    Uses the closed form ``c_n = V − V·S·clamp(min(k, 4 − k), 0, 1)``, ``k = (n + 6H) mod 6`` with
    ``n = 5, 3, 1`` for R, G, B (exact inverse of :func:`rgb_to_hsv` up to rounding).
    """
    _check_rgb(hsv, "hsv")
    h, s, v = hsv.unbind(1)
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + 6.0 * h, 6.0)
        out.append(v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(out, dim=1)


# ----------------------------------------------------------------------------------------------
# IS: iterative smooth attack
# ----------------------------------------------------------------------------------------------

class IterativeSmooth(Attack):
    """Iterative smooth attack (IS, SmoothFool Eq. 12; docs/algorithms.md).

    Minimises, per sample, ``L(r) = −J(model(clamp(x + r, 0, 1))) + λ_s·Ω(r; σ_h)`` over ``r``
    (initialised at 0) by plain gradient descent, ``r ← r − lr_t·∇L`` with
    ``lr_t = lr · 0.5^⌊t / halve_every⌋`` (``t = 0, 1, ...``). Ω is the roughness of
    :func:`advsmooth.filters.roughness` (Gaussian h with σ_h, replicate padding, unnormalised).
    Every sample stops at the first iterate that is misclassified (without that stop the
    unbounded −J term makes r grow for ever); at most ``max_iter`` updates per sample.

    ``J`` is the engine's attack objective (:class:`~advsmooth.attacks.gradients.AttackObjective`):

    * ``loss="ce"`` (default, the paper's Eq. 12): ``J = CE(z, y)``; a targeted call ascends
      ``J = −CE(z, target)`` and stops when the target is reached.
    * ``loss="margin"``: ``J = max_{j≠y} z_j − z_y`` (targeted ``z_t − max_{j≠t} z_j``). The
      cross-entropy saturates on confidently classified images: its gradient shrinks like
      ``1 − p_y`` while the roughness term's grows with ``r``, so gradient descent settles at a
      point where the two balance and the image is never fooled. The logit margin does not
      saturate, so the same loop reaches the paper's fooling-rate regime with a roughness weight
      large enough to make ``r`` smooth (settings and measurements: docs/baselines.md).

    Cost per iteration and active image: one forward and one gradient evaluation (the forward
    that computes the gradient also checks the iterate). ``x_adv = clamp(x + r, 0, 1)``.

    The paper's settings: ``lambda_s`` 0.1 (MNIST), 0.01 (CIFAR-10), 0.05 (ImageNet), with the
    cross-entropy; lr 1e-3 halved every 100 iterations and ``max_iter`` 1000 are our defaults
    (the paper gives neither). ``lr × lambda_s`` must be at most 1 (``ValueError`` otherwise):
    the roughness term's curvature is up to ``2·lambda_s``, so larger steps make ``r`` diverge,
    and close to 1 its finest patterns decay slowly.
    """

    def __init__(self, *, lambda_s: float = 0.1, lr: float = 1e-3, halve_every: int = 100,
                 max_iter: int = 1000, sigma_h: float = 1.0, loss: str = "ce",
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.lambda_s = check_nonnegative("lambda_s", lambda_s)
        self.lr = check_positive("lr", lr)
        self.halve_every = check_int_at_least("halve_every", halve_every, 1)
        self.max_iter = check_int_at_least("max_iter", max_iter, 0)
        self.sigma_h = check_positive("sigma_h", sigma_h)
        self.loss = check_choice("loss", loss, ("ce", "margin"))
        # ∇(λ_s·Ω) = 2λ_s·(I − h)ᵀ(I − h)·r, and ‖I − h‖ ≤ 1 for the Gaussian h (Ωn ≤ 1): a
        # gradient step multiplies a pattern of curvature 2λ_s·μ (μ ≤ 1) by 1 − 2·lr·λ_s·μ, which
        # stays within [−1, 1] only while lr·λ_s ≤ 1. Near 1 the finest patterns hardly decay
        # (digits at lr·λ_s = 1: Ωn rose from 8e-3 to 13e-3); beyond, r grows without bound until
        # the model's output is NaN (digits at lr·λ_s = 2).
        if self.lr * self.lambda_s > 1.0:
            raise ValueError(
                f"lr × lambda_s must be at most 1 (got {self.lr:g} × {self.lambda_s:g} = "
                f"{self.lr * self.lambda_s:g}): beyond, gradient descent on the roughness term "
                "diverges (its curvature reaches 2·lambda_s); lower lr or lambda_s")
        self._set_params(lambda_s=self.lambda_s, lr=self.lr, halve_every=self.halve_every,
                         max_iter=self.max_iter, sigma_h=self.sigma_h, loss=self.loss)

    def _attack(self, ctx: AttackContext) -> AttackOutput:
        from ..filters import roughness

        x, model = ctx.x, ctx.model
        n = x.shape[0]
        r = torch.zeros_like(x)
        iters = torch.zeros(n, dtype=torch.long, device=x.device)
        objective = AttackObjective(self.loss, ctx.labels, ctx.target)
        active = torch.arange(n, device=x.device)
        for it in range(self.max_iter):
            if active.numel() == 0:
                break
            ra = r[active].clone().requires_grad_(True)
            logits = check_logits(model((x[active] + ra).clamp(0.0, 1.0)), active.numel())
            ctx.count_forward(active)
            pred = predict(logits, active.numel())
            keep = pred == ctx.labels[active] if ctx.target is None \
                else pred != ctx.target[active]
            if not bool(keep.any()):
                active = active[keep]
                break
            idx = active[keep]
            j = objective.subset(idx).value(logits[keep]).sum()
            omega = roughness(ra[keep], sigma_h=self.sigma_h, normalized=False).sum()
            (grad,) = torch.autograd.grad(self.lambda_s * omega - j, ra)
            check_finite_gradient(grad)
            ctx.count_grad(idx)
            lr_t = self.lr * 0.5 ** (it // self.halve_every)
            r[idx] = (r[idx] - lr_t * grad[keep]).detach()
            iters[idx] += 1
            active = idx
        x_adv = (x + r).clamp(0.0, 1.0)
        return AttackOutput(x_adv=x_adv, iterations=iters)


# ----------------------------------------------------------------------------------------------
# CS: colour shift
# ----------------------------------------------------------------------------------------------

class ColorShift(Attack):
    """Colour-shift (semantic) attack (CS; docs/algorithms.md).

    The image is converted to HSV. For trial ``t = 1..T`` every still-correct sample draws
    ``δH ~ U[0, 1)`` and ``δS ~ U[−s_t, s_t]`` with the progressive range ``s_t = t/T``, and is
    tried at ``H' = (H + δH) mod 1``, ``S' = clamp(S + δS, 0, 1)``, V unchanged (converted back to
    RGB). A sample stops at its first misclassified trial. No gradients: ``T`` forward
    evaluations per image at most.

    Randomness: all draws are made up front from the call's generator as one tensor of shape
    ``(n_active, T, 2)`` (sample-major: ``[..., 0]`` → δH, ``[..., 1]`` → the uniform that gives
    δS), so a run split into batches that share one generator (:func:`run_batched`) consumes
    exactly the same numbers as a single run; the same seed gives the same result.

    A sample that is not fooled within ``T`` trials is returned unchanged (``success=False``).
    ``result.extras``: ``hsv_magnitude`` — ``||(Δ_circ H, ΔS, 0)||₂`` over all pixels with the
    circular hue difference ``min(|ΔH|, 1 − |ΔH|)`` (0 for unchanged samples); ``hue_shift`` and
    ``saturation_shift`` — the successful δH and δS. Ω should be computed on the RGB
    perturbation ``x_adv − x``.

    Greyscale inputs: a grey image has no hue and zero saturation, so there is nothing to shift
    without inventing colour channels the model cannot see (treating grey as R = G = B and
    averaging back would turn the attack into a brightness change, which is not what CS is). The
    attack therefore requires 3-channel RGB inputs and raises ``ValueError`` for any other
    channel count: on MNIST-like data CS does not apply and should be reported as n/a.
    """

    stochastic = True

    def __init__(self, *, trials: int = 100, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.trials = check_int_at_least("trials", trials, 1)
        self._set_params(trials=self.trials, seed=self.seed)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor | Sequence[int] | None = None, *,
                 target: Tensor | Sequence[int] | None = None,
                 generator: torch.Generator | None = None) -> AttackResult:
        if isinstance(x, Tensor) and x.ndim == 4 and x.shape[1] != 3:
            raise ValueError(
                f"ColorShift needs RGB images (N×3×H×W), got {x.shape[1]} channel(s): a greyscale "
                "image has no hue or saturation to shift, so the colour-shift attack does not "
                "apply to it"
            )
        return super().__call__(model, x, y, target=target, generator=generator)

    def _attack(self, ctx: AttackContext) -> AttackOutput:
        x, model = ctx.x, ctx.model
        n, T = x.shape[0], self.trials
        hsv = rgb_to_hsv(x)
        draws = torch.rand((n, T, 2), generator=ctx.generator, dtype=x.dtype, device=x.device)
        ranges = torch.arange(1, T + 1, dtype=x.dtype, device=x.device) / T
        d_hue = draws[..., 0]
        d_sat = (2.0 * draws[..., 1] - 1.0) * ranges
        goal = ctx.labels if ctx.target is None else ctx.target
        x_adv = x.clone()
        iters = torch.zeros(n, dtype=torch.long, device=x.device)
        magnitude = torch.zeros(n, dtype=x.dtype, device=x.device)
        hue_shift = torch.zeros(n, dtype=x.dtype, device=x.device)
        sat_shift = torch.zeros(n, dtype=x.dtype, device=x.device)
        active = torch.arange(n, device=x.device)
        with torch.no_grad():
            for t in range(T):
                if active.numel() == 0:
                    break
                h, s, v = hsv[active].unbind(1)
                dh = d_hue[active, t].view(-1, 1, 1)
                h2 = torch.remainder(h + dh, 1.0)
                s2 = (s + d_sat[active, t].view(-1, 1, 1)).clamp(0.0, 1.0)
                cand = hsv_to_rgb(torch.stack([h2, s2, v], dim=1)).clamp(0.0, 1.0)
                pred = predict(model(cand), cand.shape[0])
                ctx.count_forward(active)
                iters[active] = t + 1
                hit = pred != goal[active] if ctx.target is None else pred == goal[active]
                if bool(hit.any()):
                    idx = active[hit]
                    x_adv[idx] = cand[hit]
                    dhc = (h2[hit] - h[hit]).abs()
                    dhc = torch.minimum(dhc, 1.0 - dhc)
                    ds = s2[hit] - s[hit]
                    magnitude[idx] = (dhc.pow(2) + ds.pow(2)).flatten(1).sum(1).sqrt()
                    hue_shift[idx] = d_hue[idx, t]
                    sat_shift[idx] = d_sat[idx, t]
                active = active[~hit]
        return AttackOutput(x_adv=x_adv, iterations=iters,
                            extras={"hsv_magnitude": magnitude, "hue_shift": hue_shift,
                                    "saturation_shift": sat_shift})


# ----------------------------------------------------------------------------------------------
# GS: grey shift (the colour shift's greyscale analogue)
# ----------------------------------------------------------------------------------------------

class GreyShift(Attack):
    """Greyscale analogue of the colour-shift attack: random global contrast/brightness shifts.

    The colour shift changes hue and saturation, which a grey image does not have
    (:class:`ColorShift` refuses 1-channel input); this is the same progressive random search
    over a global intensity change. Trial ``t = 1..trials``: ``x' = clamp(a·x + b, 0, 1)``,
    ``a ~ U[1 − s_t, 1 + s_t]``, ``b ~ U[−s_t, s_t]``, ``s_t = max_shift·t/trials``; a sample
    stops at its first misclassified trial (unchanged and ``success=False`` if none). All draws
    are made up front, sample-major ``(n, trials, 2)``, from the call's generator. Works for any
    channel count; ``trials`` forward evaluations per image at most.
    """

    stochastic = True

    def __init__(self, *, trials: int = 100, max_shift: float = 0.5, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.trials = check_int_at_least("trials", trials, 1)
        self.max_shift = check_nonnegative("max_shift", max_shift)
        self._set_params(trials=self.trials, max_shift=self.max_shift, seed=self.seed)

    def _attack(self, ctx: AttackContext) -> AttackOutput:
        x, n, T = ctx.x, ctx.x.shape[0], self.trials
        u = torch.rand((n, T, 2), generator=ctx.generator, dtype=x.dtype, device=x.device)
        s = self.max_shift * torch.arange(1, T + 1, dtype=x.dtype, device=x.device) / T
        a = 1.0 + (2.0 * u[..., 0] - 1.0) * s
        b = (2.0 * u[..., 1] - 1.0) * s
        goal = ctx.labels if ctx.target is None else ctx.target
        x_adv = x.clone()
        iters = torch.zeros(n, dtype=torch.long, device=x.device)
        active = torch.arange(n, device=x.device)
        view = (-1,) + (1,) * (x.ndim - 1)
        with torch.no_grad():
            for t in range(T):
                if active.numel() == 0:
                    break
                cand = (a[active, t].view(view) * x[active] + b[active, t].view(view)).clamp(0, 1)
                pred = ctx.model(cand).argmax(1)
                ctx.count_forward(active)
                iters[active] = t + 1
                hit = pred != goal[active] if ctx.target is None else pred == goal[active]
                x_adv[active[hit]] = cand[hit]
                active = active[~hit]
        return AttackOutput(x_adv=x_adv, iterations=iters)
