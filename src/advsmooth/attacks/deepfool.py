"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016): minimal perturbations by iterated linearisation.

Multiclass DeepFool for any ``p`` in ``{2, ∞}`` or real ``p > 1`` (ALGORITHMS.md §3.2), the
binary variant for single-score models (§3.1, handled as the two-class logits ``[0, s]``), and a
targeted mode. Fully batched: samples that are fooled leave the active batch, so every iteration
costs only what the still-active samples need.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
>>> x = torch.rand(4, 1, 4, 4)
>>> res = DeepFool()(model, x)
>>> bool(res.success.all())
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._utils import check_choice, check_int_at_least, check_nonnegative
from .base import Attack, AttackContext, AttackOutput

__all__ = ["DeepFool", "JACOBIAN_METHODS"]

#: how the candidate-face gradients are computed (see docs/deepfool.md for measurements)
JACOBIAN_METHODS = ("auto", "loop", "loop_logits", "batched", "vmap", "replicate")

_TINY = 1e-12

Counter = Callable[[Tensor, int], None]


def as_logits(z: Tensor) -> Tensor:
    """Model output → ``N×K`` logits; a single score ``s`` (``(N,)`` or ``N×1``) → ``[0, s]``.

    With this mapping ``argmax`` agrees with the binary rule ``class = 1 iff s > 0``.
    """
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2:
        raise ValueError(f"model output must have shape N×K (or N for a binary score), "
                         f"got {tuple(z.shape)}")
    if z.shape[1] == 1:
        z = torch.cat([torch.zeros_like(z), z], dim=1)
    return z


def _parse_norm(norm: float | int | str) -> float:
    if isinstance(norm, str):
        if norm.lower() in ("inf", "linf", "infinity"):
            return math.inf
        try:
            norm = float(norm)
        except ValueError:
            raise ValueError(f"norm must be 2, 'inf' or a real number > 1, got {norm!r}") from None
    if isinstance(norm, bool) or not isinstance(norm, (int, float)) or math.isnan(norm) \
            or not norm > 1:
        raise ValueError(f"norm must be 2, 'inf' or a real number > 1, got {norm!r}")
    return float(norm)


@dataclass
class DeepFoolRun:
    """Per-sample outcome of :meth:`DeepFool.run` (first dimension = batch size).

    ``r_tot``: un-overshot accumulated perturbation; ``x_adv``: ``x + (1+η)·r_tot`` (clamped to
    ``[0, 1]`` when ``clip``); ``label_adv``: prediction at ``x_adv``; ``fooled``: the stopping
    criterion was met; ``failed``: stopped because every face normal vanished; ``face``: class
    index of the face used in the last iteration; ``iterations``.
    """

    r_tot: Tensor
    x_adv: Tensor
    label_adv: Tensor
    fooled: Tensor
    failed: Tensor
    face: Tensor
    iterations: Tensor


class DeepFool(Attack):
    """DeepFool: the smallest perturbation (in ℓp) that crosses the nearest linearised boundary.

    Args:
        norm: ``2`` (default), ``"inf"`` or any real ``p > 1``.
        overshoot: η; the returned perturbation is ``(1+η)·r_tot`` (applied to the total).
        max_iter: iteration cap per sample (a sample not fooled by then ends with success=False).
        candidates: number Kc of candidate classes (top-Kc clean logits, fixed for the run; all
            classes when K <= Kc). Must be >= 2.
        stabilizer: δ added to every step's distance (``(d + δ)``; LTS4's 1e-4) so that steps
            never vanish.
        clip: keep every iterate in ``[0, 1]`` (off by default, like the paper).
        linearize_with_overshoot: linearise at ``x + (1+η)·r_tot`` (LTS4 Python) instead of
            ``x + r_tot`` (paper/MATLAB, default).
        jacobian: how the Kc−1 face gradients are computed from one forward pass: ``"loop"``
            (Kc−1 backward passes of the logit differences through a retained graph),
            ``"loop_logits"`` (Kc backward passes of the logits), ``"batched"`` (one
            ``autograd.grad(..., is_grads_batched=True)``), ``"vmap"`` (``torch.func``
            vmap/jacrev), ``"replicate"`` (the batch repeated Kc−1 times, one backward; costs Kc−1
            forward evaluations), or ``"auto"`` (default: ``"loop"``, the fastest in our
            measurements, see ``benchmarks/deepfool_jacobian.py``).
        seed: unused (DeepFool is deterministic); kept for the common signature.

    Targeted mode (``attack(model, x, y, target=t)``): each iteration uses only the face between
    the target and its strongest competitor (the clean label at first, then the top non-target
    class at the last checked point); success means ``pred == t``.

    Result extras: ``r_tot`` (un-overshot perturbation), ``label_orig`` (clean prediction),
    ``face`` (class of the last face), ``failed`` (all face normals vanished).
    Costs per iteration and active sample: 2 forward evaluations (the linearisation point with
    gradients and the overshot check point) and Kc−1 gradient evaluations (Kc for
    ``"loop_logits"``; 1 for binary models and targeted attacks).
    """

    supports_targeted = True

    def __init__(self, *, norm: float | int | str = 2, overshoot: float = 0.02, max_iter: int = 50,
                 candidates: int = 10, stabilizer: float = 1e-4, clip: bool = False,
                 linearize_with_overshoot: bool = False, jacobian: str = "auto",
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.p = _parse_norm(norm)
        self.overshoot = check_nonnegative("overshoot", overshoot)
        self.max_iter = check_int_at_least("max_iter", max_iter, 1)
        self.candidates = check_int_at_least("candidates", candidates, 2)
        self.stabilizer = check_nonnegative("stabilizer", stabilizer)
        if not isinstance(clip, bool):
            raise ValueError(f"clip must be a bool, got {clip!r}")
        if not isinstance(linearize_with_overshoot, bool):
            raise ValueError(f"linearize_with_overshoot must be a bool, got "
                             f"{linearize_with_overshoot!r}")
        self.clip = clip
        self.linearize_with_overshoot = linearize_with_overshoot
        self.jacobian = check_choice("jacobian", jacobian, JACOBIAN_METHODS)
        norm_repr: float | str = "inf" if math.isinf(self.p) else (
            int(self.p) if self.p.is_integer() else self.p)
        self._set_params(norm=norm_repr, overshoot=self.overshoot, max_iter=self.max_iter,
                         candidates=self.candidates, stabilizer=self.stabilizer, clip=clip,
                         linearize_with_overshoot=linearize_with_overshoot, jacobian=jacobian)

    # ------------------------------------------------------------------------------------------
    @property
    def q(self) -> float:
        """Dual exponent ``q = p/(p−1)`` (1 for p = ∞)."""
        return 1.0 if math.isinf(self.p) else self.p / (self.p - 1.0)

    def gradients_per_iteration(self, num_classes: int, targeted: bool = False) -> int:
        """Gradient evaluations per iteration and active sample for a ``num_classes`` model."""
        if targeted or num_classes <= 2:
            return 1
        kc = min(self.candidates, num_classes)
        return kc if self._method() == "loop_logits" else kc - 1

    def _method(self) -> str:
        return "loop" if self.jacobian == "auto" else self.jacobian

    def _attack(self, ctx: AttackContext) -> AttackOutput:
        z0 = as_logits(ctx.clean_logits)
        k0 = z0.argmax(dim=1)
        run = self.run(
            ctx.model, ctx.x, z0, target=ctx.target,
            count_forward=lambda sub, k: ctx.count_forward(sub, k),
            count_grad=lambda sub, k: ctx.count_grad(sub, k),
        )
        extras = {"r_tot": run.r_tot, "label_orig": k0, "face": run.face, "failed": run.failed}
        return AttackOutput(x_adv=run.x_adv, iterations=run.iterations, extras=extras,
                            info={"jacobian": self._method()})

    # ------------------------------------------------------------------------------------------
    def run(self, model: nn.Module, x: Tensor, z0: Tensor, *, target: Tensor | None = None,
            count_forward: Counter | None = None, count_grad: Counter | None = None
            ) -> DeepFoolRun:
        """DeepFool on every sample of ``x`` (no input checks, no model hygiene: the caller's job).

        ``z0`` are the logits at ``x`` (``N×K``, see :func:`as_logits`); the clean label is
        ``argmax z0``. ``count_forward(idx, k)`` / ``count_grad(idx, k)`` receive indices into
        ``x``. Used by :class:`DeepFool` and by SmoothFool's inner loop.
        """
        n = x.shape[0]
        dev = x.device
        z0 = as_logits(z0.detach())
        num_classes = z0.shape[1]
        k0 = z0.argmax(dim=1)
        if target is None:
            kc = min(self.candidates, num_classes)
            # stable descending sort: ties keep the lower index first, like argmax
            cand = torch.sort(z0, dim=1, descending=True, stable=True).indices[:, :kc]
        else:
            cand = torch.stack([k0, target.to(dev).long()], dim=1)
        eta = self.overshoot
        r_tot = torch.zeros_like(x)
        iters = torch.zeros(n, dtype=torch.long, device=dev)
        face = cand[:, 1].clone()
        fooled = torch.zeros(n, dtype=torch.bool, device=dev)
        failed = torch.zeros(n, dtype=torch.bool, device=dev)
        label_adv = k0.clone()
        act = torch.arange(n, device=dev)
        method = self._method()
        for _ in range(self.max_iter):
            if act.numel() == 0:
                break
            xa, ra, ca = x[act], r_tot[act], cand[act]
            xl = xa + ra * (1.0 + eta) if self.linearize_with_overshoot else xa + ra
            if self.clip:
                xl = xl.clamp(0.0, 1.0)
            fp, wp, ngrad, nfwd = _face_gradients(model, xl, ca, method)
            if count_forward is not None:
                count_forward(act, nfwd)
            if count_grad is not None:
                count_grad(act, ngrad)
            step, l, bad = self._step(fp, wp)
            ra = ra + step
            if self.clip:
                ra = (xa + ra).clamp(0.0, 1.0) - xa
            r_tot[act] = ra
            iters[act] += 1
            face[act] = ca.gather(1, (l + 1)[:, None])[:, 0]
            # stopping check at the overshot point
            xc = xa + (1.0 + eta) * ra
            if self.clip:
                xc = xc.clamp(0.0, 1.0)
            with torch.no_grad():
                zc = as_logits(model(xc))
            if count_forward is not None:
                count_forward(act, 1)
            pc = zc.argmax(dim=1)
            label_adv[act] = pc
            if target is None:
                hit = pc != k0[act]
            else:
                ta = cand[act, 1]
                hit = pc == ta
                # next face: target vs its strongest competitor at the checked point
                comp = zc.scatter(1, ta[:, None], float("-inf")).argmax(dim=1)
                cand[act, 0] = comp
            fooled[act] = hit
            failed[act] = bad & ~hit
            act = act[~(hit | bad)]
        x_adv = x + (1.0 + eta) * r_tot
        if self.clip:
            x_adv = x_adv.clamp(0.0, 1.0)
        return DeepFoolRun(r_tot=r_tot, x_adv=x_adv, label_adv=label_adv, fooled=fooled,
                           failed=failed, face=face, iterations=iters)

    def _step(self, fp: Tensor, wp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Step to the nearest linearised face. ``fp``: (n, m) ``f'``; ``wp``: (n, m, C, H, W)."""
        n, m = fp.shape
        flat = wp.reshape(n, m, -1)
        q = self.q
        if q == 2.0:
            norms = flat.norm(dim=2)
        elif q == 1.0:
            norms = flat.abs().sum(dim=2)
        else:
            norms = torch.linalg.vector_norm(flat, ord=q, dim=2)
        dist = fp.abs() / norms.clamp_min(_TINY)
        l = dist.argmin(dim=1)
        ar = torch.arange(n, device=fp.device)
        wl = wp[ar, l]
        nl = norms[ar, l]
        bad = nl < _TINY
        scale = (dist[ar, l] + self.stabilizer).masked_fill(bad, 0.0)
        shape = (n,) + (1,) * (wl.ndim - 1)
        if q == 2.0:
            direction = wl / nl.clamp_min(_TINY).view(shape)
        elif q == 1.0:
            direction = wl.sign()
        else:
            direction = (wl.abs() / nl.clamp_min(_TINY).view(shape)).pow(q - 1.0) * wl.sign()
        return scale.view(shape) * direction, l, bad


# ----------------------------------------------------------------------------------------------
# face gradients: f'_j = z[c_j] − z[c_0], w'_j = ∇ f'_j for j = 1..m (m = Kc − 1)
# ----------------------------------------------------------------------------------------------

def _face_gradients(model: nn.Module, xl: Tensor, cand: Tensor, method: str
                    ) -> tuple[Tensor, Tensor, int, int]:
    """Returns ``(f' (n, m), w' (n, m, C, H, W), grad evals, forward evals)`` per sample."""
    m = cand.shape[1] - 1
    if method == "vmap":
        return (*_face_gradients_vmap(model, xl, cand), m, 1)
    if method == "replicate":
        return (*_face_gradients_replicate(model, xl, cand), m, m)
    xg = xl.detach().requires_grad_(True)
    z = as_logits(model(xg))
    zc = z.gather(1, cand)
    if method == "loop_logits":
        gl = [torch.autograd.grad(zc[:, j].sum(), xg, retain_graph=j < m)[0] for j in range(m + 1)]
        wp = torch.stack([g - gl[0] for g in gl[1:]], dim=1)
        fp = (zc[:, 1:] - zc[:, :1]).detach()
        return fp, wp, m + 1, 1
    diffs = zc[:, 1:] - zc[:, :1]
    if method == "batched" and m > 1:
        eye = torch.eye(m, dtype=diffs.dtype, device=diffs.device)
        go = eye[:, None, :].expand(m, diffs.shape[0], m)
        (g,) = torch.autograd.grad(diffs, xg, grad_outputs=go, is_grads_batched=True)
        wp = g.transpose(0, 1)
    else:
        wp = torch.stack([torch.autograd.grad(diffs[:, j].sum(), xg, retain_graph=j < m - 1)[0]
                          for j in range(m)], dim=1)
    return diffs.detach(), wp, m, 1


def _face_gradients_replicate(model: nn.Module, xl: Tensor, cand: Tensor
                              ) -> tuple[Tensor, Tensor]:
    n = xl.shape[0]
    m = cand.shape[1] - 1
    xr = xl.detach().unsqueeze(1).expand(n, m, *xl.shape[1:]).reshape(n * m, *xl.shape[1:])
    xr.requires_grad_(True)
    z = as_logits(model(xr)).view(n, m, -1)
    up = z.gather(2, cand[:, 1:, None])[..., 0]
    down = z.gather(2, cand[:, :1, None].expand(n, m, 1))[..., 0]
    diffs = up - down
    (g,) = torch.autograd.grad(diffs.sum(), xr)
    return diffs.detach(), g.view(n, m, *xl.shape[1:])


def _face_gradients_vmap(model: nn.Module, xl: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def f(xs: Tensor, cs: Tensor) -> tuple[Tensor, Tensor]:
        z = as_logits(functional_call(model, (params, buffers), (xs[None],)))[0]
        zc = z[cs]
        d = zc[1:] - zc[0]
        return d, d

    jac, fp = vmap(jacrev(f, argnums=0, has_aux=True))(xl.detach(), cand)
    return fp, jac
