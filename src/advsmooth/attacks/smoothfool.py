"""SmoothFool: smooth, approximately ℓ2-minimal adversarial perturbations.

Dabouei, Soleymani, Taherkhani, Dawson, Nasrabadi, "SmoothFool: An Efficient Framework for
Computing Smooth Adversarial Perturbations", WACV 2020, arXiv:1910.03624. Each outer iteration
(the paper's Algorithm 2) runs DeepFool (Moosavi-Dezfooli et al., arXiv:1511.04599) from the
current point ``x_i`` to find a nearby boundary point ``x_p``, takes the boundary normal ``w``
there, smooths it with a low-pass filter ``g`` (``w̃ = g ∗ w``) and steps along ``w̃`` just far
enough to reach the linearised boundary: ``r_i = α·⟨w, x_p − x_i⟩ / ⟨w, w̃⟩ · w̃``.
:func:`smooth_clip` (the paper's Algorithm 1, SmoothClip) keeps every iterate inside ``[0, 1]``
without destroying smoothness by subtracting smoothed out-of-range masks instead of clipping
pixel-wise.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
>>> x = torch.rand(2, 1, 8, 8) * 0.5 + 0.25
>>> res = SmoothFool(sigma=1.0)(model, x)
>>> res.x_adv.shape
torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._utils import (
    check_bool,
    check_choice,
    check_finite_gradient,
    check_int_at_least,
    check_model_output,
    check_nonnegative,
    check_positive,
    progress,
    warn_caller,
)
from ..filters import LowPassFilter
from .base import Attack, AttackContext, AttackOutput
from .deepfool import DeepFool, FaceMemory, as_logits

__all__ = ["SmoothFool", "smooth_clip"]

_TINY = 1e-12


def _bdot(a: Tensor, b: Tensor) -> Tensor:
    return (a.flatten(1) * b.flatten(1)).sum(dim=1)


def _view(t: Tensor, ref: Tensor) -> Tensor:
    return t.view((t.shape[0],) + (1,) * (ref.ndim - 1))


def smooth_clip(x: Tensor, r: Tensor, filter: LowPassFilter, step: float, *, lo: float = 0.0,
                hi: float = 1.0, max_iter: int = 200, min_step: float = 0.01,
                normalize_mask: bool = True, final_clamp: bool = True
                ) -> tuple[Tensor, Tensor, Tensor]:
    """SmoothClip (SmoothFool Alg. 1): make ``x + r`` lie in ``[lo, hi]`` by smooth corrections.

    Per sample, while some pixel of ``x + r_c`` is out of range (strictly): smooth the masks of
    the pixels above ``hi`` / below ``lo`` with ``filter`` (peak-normalised to 1 when
    ``normalize_mask``), and subtract ``step·a1·m_over`` / add ``step·a0·m_under``, where
    ``a1 = max(max violation above, min_step)`` and ``a0`` likewise below. Batched; samples leave
    the active set as soon as they are in range.

    Args:
        x: images ``N×C×H×W``; r: perturbations of the same shape.
        filter: the low-pass filter (normally the attack's ``g``).
        step: ε_sc (SmoothFool paper: 1 MNIST, 0.5 CIFAR-10, 0.1 ImageNet).
        max_iter: iteration cap; samples still out of range afterwards are clamped pixel-wise
            (``final_clamp=True``, flagged in ``fallback_used``) or returned as they are.
        min_step: lower bound of the per-iteration magnitude (guarantees termination).

    Returns:
        ``(r_c, iters (N,) int64, fallback_used (N,) bool)``. If ``x + r`` is already in range,
        ``r_c`` equals ``r`` exactly and ``iters`` is 0.
    """
    check_positive("step", step)
    check_int_at_least("max_iter", max_iter, 0)
    check_nonnegative("min_step", min_step)
    if not hi > lo:
        raise ValueError(f"hi must be > lo, got lo={lo!r}, hi={hi!r}")
    if x.shape != r.shape:
        raise ValueError(f"x and r must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(r.shape)}")
    n = x.shape[0]
    r_c = r.detach().clone()
    iters = torch.zeros(n, dtype=torch.long, device=x.device)
    fallback = torch.zeros(n, dtype=torch.bool, device=x.device)

    # the active samples' images, perturbations and range masks stay gathered between iterations;
    # a sample's row is written back to r_c when it leaves (in range, or out of iterations)
    act = torch.arange(n, device=x.device)
    xa, ra = x, r_c
    for it in range(max_iter + 1):
        z = xa + ra
        over, under = z > hi, z < lo
        bad = (over | under).flatten(1).any(dim=1)
        if not bool(bad.all()):
            done = ~bad
            r_c[act[done]] = ra[done]
            act, xa, ra, z = act[bad], xa[bad], ra[bad], z[bad]
            over, under = over[bad], under[bad]
        if act.numel() == 0 or it == max_iter:
            break
        masks = filter(torch.cat([over, under]).to(r_c.dtype))
        m1, m0 = masks[: act.numel()], masks[act.numel():]
        if normalize_mask:
            p1 = m1.flatten(1).amax(dim=1)
            p0 = m0.flatten(1).amax(dim=1)
            m1 = m1 / _view(torch.where(p1 > 0, p1, torch.ones_like(p1)), m1)
            m0 = m0 / _view(torch.where(p0 > 0, p0, torch.ones_like(p0)), m0)
        any1 = over.flatten(1).any(dim=1)
        any0 = under.flatten(1).any(dim=1)
        a1 = torch.where(any1, (z - hi).flatten(1).amax(dim=1).clamp_min(min_step),
                         torch.zeros_like(any1, dtype=r_c.dtype))
        a0 = torch.where(any0, (lo - z).flatten(1).amax(dim=1).clamp_min(min_step),
                         torch.zeros_like(any0, dtype=r_c.dtype))
        ra = ra - step * _view(a1, m1) * m1 + step * _view(a0, m0) * m0
        iters[act] += 1
    if act.numel():
        r_c[act] = (xa + ra).clamp(lo, hi) - xa if final_clamp else ra
        fallback[act] = final_clamp
    return r_c, iters, fallback


class SmoothFool(Attack):
    """SmoothFool: smooth minimal perturbations along low-pass-filtered boundary normals.

    Args:
        sigma: σ (pixels) of the Gaussian filter g (σ < 0.4 gives the identity → DeepFool).
        kernel: ``"gaussian"`` (default), ``"linear"`` or ``"uniform"`` (then ``size`` is the
            kernel size k).
        size: kernel size for ``kernel="linear"``/``"uniform"``.
        padding: padding of g (default ``"zeros"``, as the authors' code; graceful for σ ≫
            image size).
        filter: any :class:`~advsmooth.filters.LowPassFilter` to use as g (overrides
            ``sigma``/``kernel``/``size``/``padding``).
        clip_step: SmoothClip step ε_sc (paper: 1 MNIST, 0.5 CIFAR-10, 0.1 ImageNet).
        max_iter: outer iteration cap (the authors' code: 500); a sample not fooled by then has
            success=False.
        use_smoothclip: keep iterates in ``[0, 1]`` with SmoothClip (default) or plain clamping.
        clip_max_iter, clip_min_step, normalize_mask: SmoothClip settings (the authors'
            code: 200, 0.01, True).
        xp_scale: λ, the DeepFool perturbation is scaled by λ to get the boundary point ``x_p``
            (the authors' code: 1.5).
        step_scale: α_f, multiplies the projection step (the authors' code: 1.1).
        deepfool: the inner :class:`DeepFool` (default: ``DeepFool()``: ℓ2, 10 candidates,
            η = 0.02, 50 iterations); its ``fold_batchnorm`` / ``channels_last`` also decide the
            fast copy of the model that steps 1-2 differentiate (the check is the model's own).
        grad_budget: gradient evaluations per image (inner DeepFool included) after which an
            image stops: it leaves after the first outer iteration that reaches the budget, with
            ``success`` from its last iterate (normally False), ``budget_exhausted=True`` and a
            ``RuntimeWarning`` naming how many images ran out. ``None``: only ``max_iter``
            bounds the cost. Default 10,000 (the paper's settings need a few hundred to a few
            thousand on MNIST/CIFAR-10; a model SmoothFool cannot fool would otherwise run up to
            ``max_iter`` outer iterations of up to 500 gradients each).
        progress_bar: a tqdm bar over outer iterations (images still running, gradients spent),
            shown only once a call has run for 2 s (and not when ``ADVSMOOTH_NO_PROGRESS`` is set).
        seed: unused (deterministic); common signature.

    Result extras: ``clip_iters_total`` (SmoothClip iterations summed over outer iterations),
    ``fallback_used`` (SmoothClip had to clamp pixel-wise at least once), ``failed`` (⟨w, g∗w⟩
    ≤ 1e-12·||w||²: the smoothed normal is orthogonal to the boundary normal),
    ``deepfool_iters_total``, ``label_orig``, ``budget_exhausted`` (stopped by ``grad_budget``).
    ``info["grad_budget"]`` holds the budget. Costs include the inner DeepFool evaluations, plus per
    outer iteration one forward + one gradient for the normal and one forward for the check.
    """

    supports_targeted = False

    # 17 parameters: the filter g (sigma, kernel, size, padding, or a ready filter), SmoothClip's
    # five settings, the outer loop's four (max_iter, λ, α_f, the inner DeepFool), the cost cap,
    # the bar and the common seed; each is a knob of the paper's algorithm or the authors' code,
    # and grouping them would hide the paper's names
    def __init__(self, *, sigma: float = 5.0, kernel: str = "gaussian", size: int | None = None,
                 padding: str = "zeros", filter: LowPassFilter | None = None,
                 clip_step: float = 0.5, max_iter: int = 500, use_smoothclip: bool = True,
                 clip_max_iter: int = 200, clip_min_step: float = 0.01,
                 normalize_mask: bool = True, xp_scale: float = 1.0, step_scale: float = 1.0,
                 deepfool: DeepFool | None = None, grad_budget: int | None = 10_000,
                 progress_bar: bool = True, seed: int = 0) -> None:
        super().__init__(seed=seed)
        if filter is not None:
            if not isinstance(filter, LowPassFilter):
                raise ValueError(f"filter must be a LowPassFilter, got {type(filter).__name__}")
            g = filter
        else:
            check_choice("kernel", kernel, ("gaussian", "linear", "uniform"))
            if kernel == "gaussian":
                check_positive("sigma", sigma)
                g = LowPassFilter("gaussian", float(sigma), padding=padding)
            else:
                if size is None:
                    raise ValueError(f"size (kernel size k) is required for kernel={kernel!r}")
                check_int_at_least("size", size, 1)
                g = LowPassFilter(kernel, size, padding=padding)
        self.filter = g
        self.clip_step = check_positive("clip_step", clip_step)
        self.max_iter = check_int_at_least("max_iter", max_iter, 1)
        self.use_smoothclip = check_bool("use_smoothclip", use_smoothclip)
        self.clip_max_iter = check_int_at_least("clip_max_iter", clip_max_iter, 0)
        self.clip_min_step = check_nonnegative("clip_min_step", clip_min_step)
        self.normalize_mask = check_bool("normalize_mask", normalize_mask)
        self.xp_scale = check_positive("xp_scale", xp_scale)
        self.step_scale = check_positive("step_scale", step_scale)
        if deepfool is None:
            deepfool = DeepFool()
        if not isinstance(deepfool, DeepFool):
            raise ValueError(f"deepfool must be a DeepFool instance, got {type(deepfool).__name__}")
        self.deepfool = deepfool
        self.grad_budget = (None if grad_budget is None
                            else check_int_at_least("grad_budget", grad_budget, 1))
        self.progress_bar = check_bool("progress_bar", progress_bar)
        self._set_params(filter=g, clip_step=self.clip_step, max_iter=self.max_iter,
                         use_smoothclip=use_smoothclip, clip_max_iter=self.clip_max_iter,
                         clip_min_step=self.clip_min_step, normalize_mask=normalize_mask,
                         xp_scale=self.xp_scale, step_scale=self.step_scale, deepfool=deepfool,
                         grad_budget=self.grad_budget)

    def _clip(self, x: Tensor, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.use_smoothclip:
            return smooth_clip(x, r, self.filter, self.clip_step, max_iter=self.clip_max_iter,
                               min_step=self.clip_min_step, normalize_mask=self.normalize_mask)
        zeros = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return (x + r).clamp(0.0, 1.0) - x, zeros, zeros.bool()

    def _boundary_normal(self, ctx: AttackContext, fast: Callable[[Tensor], Tensor],
                         act: Tensor, x_p: Tensor, k_p: Tensor, k0: Tensor) -> Tensor:
        """Step 2: the boundary normal ``w = ∇ₓ(f_{k_p} − f_{k_0})`` at the boundary points
        ``x_p`` of the active samples ``act`` (one forward and one gradient each), on ``fast``
        (the model, or its fast copy)."""
        xg = x_p.detach().requires_grad_(True)
        z = as_logits(check_model_output(fast(xg), xg.shape[0]))
        obj = z.gather(1, k_p[:, None]) - z.gather(1, k0[:, None])
        (w,) = torch.autograd.grad(obj.sum(), xg)
        check_finite_gradient(w)
        ctx.count_forward(act, 1)
        ctx.count_grad(act, 1)
        return w

    def _smooth_step(self, w: Tensor, r_p: Tensor) -> tuple[Tensor, Tensor]:
        """Steps 3-4: ``w̃ = g ∗ w`` and ``r_i = α·⟨w, r_p⟩ / ⟨w, w̃⟩ · w̃``; also the ``bad``
        mask ``(N,)`` where ``⟨w, w̃⟩ ≤ 1e-12·‖w‖²`` (there ``r_i = 0``)."""
        wt = self.filter(w)
        den = _bdot(w, wt)
        num = _bdot(w, r_p)
        bad = den <= _TINY * _bdot(w, w)
        rho = torch.where(bad, torch.zeros_like(den),
                          self.step_scale * num / torch.where(bad, torch.ones_like(den), den))
        return _view(rho, wt) * wt, bad

    def _fast_copy(self, model: nn.Module, x: Tensor
                   ) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
        """The inner DeepFool's fast copy of ``model`` (its :attr:`DeepFool.execution`:
        BatchNorm folded, channels-last; ``model`` itself with ``DeepFool(fold_batchnorm=False)``)
        and a call of it in the attack's memory layout."""
        ex = self.deepfool.execution
        copy, hint = ex.gradient_model(model, x[:4]), ex.layout()
        return copy, lambda xs: hint(copy, xs)

    def _attack(self, ctx: AttackContext) -> AttackOutput:
        """The paper's Algorithm 2: one pass of the loop is one outer iteration (steps 1-6)."""
        model, x = ctx.model, ctx.x
        n, dev = x.shape[0], x.device
        # steps 1-2 differentiate a fast copy; step 6's check is the caller's model's verdict
        copy, fast = self._fast_copy(model, x)

        z_cur = as_logits(ctx.clean_logits.detach()).clone()
        k0 = z_cur.argmax(dim=1)
        xi = x.clone()
        iters = torch.zeros(n, dtype=torch.long, device=dev)
        clip_iters = torch.zeros(n, dtype=torch.long, device=dev)
        df_iters = torch.zeros(n, dtype=torch.long, device=dev)
        fallback = torch.zeros(n, dtype=torch.bool, device=dev)
        failed = torch.zeros(n, dtype=torch.bool, device=dev)
        exhausted = torch.zeros(n, dtype=torch.bool, device=dev)
        act = torch.arange(n, device=dev)
        # what each inner DeepFool learnt about the faces, for the next one from the new iterate
        memory = FaceMemory.empty(n, z_cur.shape[1], device=dev, dtype=x.dtype)
        bar = progress(total=self.max_iter, desc="SmoothFool", enabled=self.progress_bar,
                       delay=2.0)
        for _ in range(self.max_iter):
            if act.numel() == 0:
                break
            xa, k0a = xi[act], k0[act]

            def cf(sub: Tensor, k: int, a: Tensor = act) -> None:
                ctx.count_forward(a[sub], k)

            def cg(sub: Tensor, k: int, a: Tensor = act) -> None:
                ctx.count_grad(a[sub], k)

            # 1. DeepFool from x_i (candidates from the logits at x_i, already known)
            mem = memory.rows(act)
            run = self.deepfool.run(copy, xa, z_cur[act], count_forward=cf, count_grad=cg,
                                    memory=mem)
            memory.put(act, mem)
            df_iters[act] += run.iterations
            r_p = self.xp_scale * (run.x_adv - xa)
            x_p = xa + r_p
            k_p = torch.where(run.label_adv != k0a, run.label_adv, run.face)
            # 2. boundary normal at x_p
            w = self._boundary_normal(ctx, fast, act, x_p, k_p, k0a)
            # 3.-4. smoothed normal and projection step
            r_i, bad = self._smooth_step(w, r_p)
            # 5. keep the iterate in [0, 1]
            r_i, ci, fb = self._clip(xa, r_i)
            xa_new = xa + r_i
            xi[act] = xa_new
            iters[act] += 1
            clip_iters[act] += ci
            fallback[act] |= fb
            # 6. check
            with torch.no_grad():
                zn = as_logits(check_model_output(model(xa_new), xa_new.shape[0]))
            ctx.count_forward(act, 1)
            z_cur[act] = zn
            fooled = zn.argmax(dim=1) != k0a
            failed[act] = bad & ~fooled
            over = torch.zeros_like(fooled)
            if self.grad_budget is not None:
                over = ~(fooled | bad) & (ctx.cost.grad[ctx.index[act]] >= self.grad_budget)
                exhausted[act] = over
            act = act[~(fooled | bad | over)]
            bar.update(1)
            bar.set_postfix(running=act.numel(),
                            grads=int(ctx.cost.grad[ctx.index].max()), refresh=False)
        bar.close()
        if bool(exhausted.any()):
            warn_caller(
                f"SmoothFool: {int(exhausted.sum())} of {n} image(s) reached grad_budget="
                f"{self.grad_budget} gradient evaluations without being fooled and were stopped "
                "(success=False; extras['budget_exhausted']); raise grad_budget to go on",
                RuntimeWarning)
        extras = {"clip_iters_total": clip_iters, "fallback_used": fallback, "failed": failed,
                  "deepfool_iters_total": df_iters, "label_orig": k0,
                  "budget_exhausted": exhausted}
        return AttackOutput(x_adv=xi, iterations=iters, extras=extras,
                            info={"grad_budget": self.grad_budget})
