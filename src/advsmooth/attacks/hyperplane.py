"""The geometry of linearised decision boundaries: ℓp norms, Hölder directions, and the
minimal-norm step onto a hyperplane inside the box ``[0, 1]``.

Shared by DeepFool (Moosavi-Dezfooli et al., arXiv:1511.04599; its box-aware step with
``clip=True``) and FAB (Croce & Hein, "Minimally distorted adversarial examples with a fast
adaptive boundary attack", arXiv:1907.02044, whose projection onto a hyperplane intersected with
the box is exactly :func:`box_solve`'s problem).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["lp_norm", "holder_direction", "box_solve", "TINY"]

TINY = 1e-12
#: iteration cap of the free-set solve of the box-constrained step (it converges in a handful)
_BOX_ITERS = 64


def lp_norm(v: Tensor, p: float) -> Tensor:
    """ℓp norm over the last dimension."""
    if p == 2.0:
        return v.norm(dim=-1)
    if p == 1.0:
        return v.abs().sum(dim=-1)
    if math.isinf(p):
        return v.abs().amax(dim=-1)
    # scaled by the largest entry: |v|^p underflows in float32 for large p (p = 101 already
    # gives 0 for entries of 10⁻²), and ‖v‖_p = m·‖v/m‖_p
    m = v.abs().amax(dim=-1, keepdim=True)
    return m[..., 0] * torch.linalg.vector_norm(v / m.clamp_min(TINY), ord=p, dim=-1)


def holder_direction(w: Tensor, norms: Tensor, q: float) -> Tensor:
    """The unit-ℓp vector ``u`` with ``w·u = ‖w‖_q`` (Hölder's equality case), for ``w``
    (..., D) and ``norms = ‖w‖_q`` (...): ``w/‖w‖₂`` (q = 2), ``sign(w)`` (q = 1) or
    ``|w|^(q−1)·sign(w) / ‖w‖_q^(q−1)``; 0 where ``w`` vanishes."""
    if q == 2.0:
        return w / norms.clamp_min(TINY)[..., None]
    if q == 1.0:
        return w.sign()
    return (w.abs() / norms.clamp_min(TINY)[..., None]).pow(q - 1.0) * w.sign()


def box_solve(w: Tensor, u: Tensor, b: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """The smallest ``t ≥ 0`` with ``w·clip(t·u, lo, hi) = b``, per face.

    ``w``, ``u``: (n, a, D) with ``sign(u) = sign(w)``; ``b`` (n, a) ≥ 0; ``lo ≤ 0 ≤ hi``
    (n, 1, D). For every ℓp, ``clip(t·u, lo, hi)`` with this ``t`` is the minimal-norm ``r`` in
    the box with ``w·r = b`` (the box-constrained problem's optimality conditions). Free-set
    iteration: ``t = (b − Σ_saturated w_j·bound_j) / Σ_free w_j·u_j``, then coordinates that
    pass their bound at ``t`` are fixed at it, and again; ``t`` grows monotonically and stops,
    exactly, when no further coordinate saturates (at most D rounds; a handful in practice).
    Returns ``(t (n, a), reachable (n, a))``; ``t`` is 0 where the face is out of reach
    (``b`` above the most the box allows).
    """
    bound = torch.where(u > 0, hi, lo)  # the bound each coordinate moves towards
    cap = w * bound  # a saturated coordinate's contribution (≥ 0)
    wu = w * u
    reach = cap.sum(dim=-1) >= b
    b = torch.where(reach, b, torch.zeros_like(b))
    t = b / wu.sum(dim=-1).clamp_min(TINY)
    size = bound.abs()
    for _ in range(_BOX_ITERS):
        sat = t[..., None] * u.abs() >= size
        free = torch.where(sat, torch.zeros_like(wu), wu).sum(dim=-1)
        fixed = torch.where(sat, cap, torch.zeros_like(cap)).sum(dim=-1)
        t_new = torch.where(free > 0, (b - fixed).clamp_min(0.0) / free.clamp_min(TINY), t)
        t_new = torch.maximum(t, t_new)  # monotone despite rounding
        if torch.equal(t_new, t):
            break
        t = t_new
    return t, reach
