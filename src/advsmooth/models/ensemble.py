"""Ensembles of classifiers usable as the source model of any attack (Liu et al., arXiv:1611.02770).

``Ensemble([m1, m2, ...], combine=...)`` is an ``nn.Module`` mapping pixels ``N×C×H×W`` in
``[0, 1]`` to ``N×K`` scores. Each member keeps its own preprocessing (``Normalize`` inside the
member), so members trained with different mean/std can be mixed. Attacks put the whole ensemble
(and hence every member) in eval mode through :func:`~advsmooth._tensors.frozen_model`.

``combine``:

* ``"mean_logits"`` (DEFAULT): ``z = Σ_k w_k z_k`` with weights summing to 1 (``1/E`` each);
* ``"sum_logits"``: ``z = Σ_k z_k`` — the seed's Eq. 3 literally (a different softmax
  temperature than the mean; same argmax);
* ``"mean_probs"``: ``z = log Σ_k w_k softmax(z_k)`` (log of the averaged probabilities);
* ``"mean_loss"``: predictions use the mean logits, but attacks average the *losses* of the
  members, ``J = Σ_k w_k J(z_k)`` (the iterative engine detects this through
  :meth:`Ensemble.member_logits`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._utils import check_choice

__all__ = ["Ensemble", "COMBINE_MODES"]

COMBINE_MODES = ("mean_logits", "sum_logits", "mean_probs", "mean_loss")


class Ensemble(nn.Module):
    """An ensemble of classifiers with a common label space.

    Args:
        models: the member classifiers (each ``N×C×H×W`` pixels → ``N×K`` logits, same ``K``).
        combine: how member outputs are combined (see the module docstring).
        weights: optional non-negative member weights (normalised to sum to 1; ignored by
            ``"sum_logits"``). Default: equal weights.
        names: optional member names (for reports); default ``model0, model1, ...``.
    """

    def __init__(self, models: Sequence[nn.Module], *, combine: str = "mean_logits",
                 weights: Sequence[float] | None = None,
                 names: Sequence[str] | None = None) -> None:
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("models must contain at least one classifier")
        for i, m in enumerate(models):
            if not isinstance(m, nn.Module):
                raise TypeError(f"models[{i}] must be a torch.nn.Module, got {type(m).__name__}")
        self.members = nn.ModuleList(models)
        self.combine = check_choice("combine", combine, COMBINE_MODES)
        if weights is None:
            w = torch.full((len(models),), 1.0 / len(models), dtype=torch.float64)
        else:
            w = torch.as_tensor(list(weights), dtype=torch.float64)
            if w.shape != (len(models),):
                raise ValueError(f"weights must have one entry per model ({len(models)}), "
                                 f"got {len(w)}")
            if bool((w < 0).any()) or not bool(torch.isfinite(w).all()) or float(w.sum()) <= 0:
                raise ValueError("weights must be finite, non-negative and not all zero")
            w = w / w.sum()
        self._weights = [float(v) for v in w]
        if names is not None and len(names) != len(models):
            raise ValueError(f"names must have one entry per model ({len(models)}), "
                             f"got {len(names)}")
        self.names = list(names) if names is not None else [f"model{i}" for i in range(len(models))]

    def __len__(self) -> int:
        return len(self.members)

    @property
    def weights(self) -> list[float]:
        """Normalised member weights (sum to 1)."""
        return list(self._weights)

    def member_logits(self, x: Tensor) -> Tensor:
        """Logits of every member, stacked as ``(N, E, K)``."""
        outs = []
        for i, m in enumerate(self.members):
            z = m(x)
            if z.ndim != 2:
                raise ValueError(f"ensemble member {self.names[i]} returned shape "
                                 f"{tuple(z.shape)}, expected N×K logits")
            outs.append(z)
        ks = {z.shape[1] for z in outs}
        if len(ks) != 1:
            raise ValueError(f"ensemble members disagree on the number of classes: {sorted(ks)}")
        return torch.stack(outs, dim=1)

    def _w(self, like: Tensor) -> Tensor:
        return torch.tensor(self._weights, dtype=like.dtype, device=like.device).view(1, -1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if len(self.members) == 1 and self.combine != "mean_probs":
            return self.members[0](x)
        z = self.member_logits(x)
        if self.combine == "sum_logits":
            return z.sum(dim=1)
        if self.combine == "mean_probs":
            return torch.logsumexp(z.log_softmax(dim=-1) + self._w(z).log(), dim=1)
        return (z * self._w(z)).sum(dim=1)

    def extra_repr(self) -> str:
        return f"combine={self.combine!r}, names={self.names!r}"
