"""One attack over a list of radii ε in one call: :func:`attack_grid` and its :class:`EpsGrid`.

The balls are nested (``B(x, ε) ⊂ B(x, ε')`` for ``ε ≤ ε'``, in any norm, intersected with the
same box ``[0, 1]``), so an adversarial image found at ε is one at every larger ε. The grid is
attacked in ascending order; at each ε only the samples not yet misclassified are attacked, and
the others keep the image that fooled the model first. Robust accuracy is therefore
non-increasing in ε by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import make_generator
from .base import Attack, AttackResult

__all__ = ["EpsGrid", "attack_grid", "check_eps_list"]


def check_eps_list(eps: Any) -> list[float]:
    """A non-empty sequence of finite radii ≥ 0 → the sorted list of distinct floats
    (``ValueError`` / ``TypeError`` naming what is wrong)."""
    if isinstance(eps, (str, bytes)) or not isinstance(eps, Sequence | Tensor):
        raise TypeError(f"eps must be a number or a sequence of numbers, got {type(eps).__name__}")
    vals = []
    for e in (eps.tolist() if isinstance(eps, Tensor) else eps):
        if isinstance(e, bool) or not isinstance(e, (int, float)):
            raise TypeError(f"eps values must be numbers, got {e!r}")
        if not math.isfinite(float(e)) or e < 0:
            raise ValueError(f"eps values must be finite and >= 0, got {e!r}")
        vals.append(float(e))
    if not vals:
        raise ValueError("eps must hold at least one radius")
    return sorted(set(vals))


class EpsGrid(Mapping[float, AttackResult]):
    """One :class:`AttackResult` per radius ε (ascending); ``grid[eps]`` or iterate.

    ``forward_evals`` / ``grad_evals`` of the result at ε are cumulative: what each sample cost
    over every radius up to ε. ``elapsed`` is the time spent at that radius.
    """

    def __init__(self, results: dict[float, AttackResult]) -> None:
        self._results = dict(sorted(results.items()))

    def __getitem__(self, eps: float) -> AttackResult:
        for e, r in self._results.items():
            if math.isclose(e, float(eps), rel_tol=1e-9, abs_tol=1e-12):
                return r
        raise KeyError(eps)

    def __iter__(self) -> Iterator[float]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    @property
    def eps(self) -> list[float]:
        """The radii, ascending."""
        return list(self._results)

    def robust_accuracy(self) -> dict[float, float]:
        """ε → fraction of samples classified correctly and not fooled."""
        return {e: float((~r.success).double().mean()) if len(r) else float("nan")
                for e, r in self._results.items()}

    def __repr__(self) -> str:
        accs = ", ".join(f"{e:.4g}: {a:.3f}" for e, a in self.robust_accuracy().items())
        return f"EpsGrid(robust_accuracy={{{accs}}})"


def _merge(prev: AttackResult, rows: Tensor, new: AttackResult) -> AttackResult:
    """``prev`` with the samples ``rows`` replaced by ``new`` (costs added, not replaced)."""
    out = replace(prev, x_adv=prev.x_adv.clone(), success=prev.success.clone(),
                  iterations=prev.iterations.clone(), forward_evals=prev.forward_evals.clone(),
                  grad_evals=prev.grad_evals.clone(), adv_pred=prev.adv_pred.clone(),
                  extras={}, info=dict(new.info), elapsed=new.elapsed, attack=new.attack)
    out.x_adv[rows] = new.x_adv
    out.success[rows] = new.success
    out.iterations[rows] = new.iterations
    out.adv_pred[rows] = new.adv_pred
    out.forward_evals[rows] += new.forward_evals
    out.grad_evals[rows] += new.grad_evals
    return out


def attack_grid(make: Callable[[float], Attack], model: nn.Module, x: Tensor, y: Any,
                eps: Sequence[float], *, generator: torch.Generator | None = None) -> EpsGrid:
    """Run ``make(ε)`` for every ε of ``eps`` (ascending) on the samples still robust.

    Args:
        make: builds the attack for one radius (e.g. ``lambda e: PGD(eps=e)``).
        model, x, y: as for :meth:`Attack.__call__` (untargeted).
        eps: the radii (any order; duplicates dropped).
        generator: random source shared by the radii in order (default: seeded with the first
            attack's seed).

    Returns:
        An :class:`EpsGrid` of ``len(set(eps))`` results over all of ``x``.
    """
    radii = check_eps_list(eps)
    results: dict[float, AttackResult] = {}
    prev: AttackResult | None = None
    gen = generator
    for e in radii:
        attack = make(e)
        if gen is None:
            gen = make_generator(attack.seed, x.device)
        if prev is None:
            prev = attack(model, x, y, generator=gen)
        else:
            rows = torch.nonzero(~prev.success).flatten()
            new = attack(model, x[rows], prev.labels[rows], generator=gen)
            prev = _merge(prev, rows, new)
        results[e] = prev
    return EpsGrid(results)
