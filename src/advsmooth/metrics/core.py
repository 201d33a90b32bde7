"""Core evaluation metrics: fooling rate (overall and per class), robustness ρ_adv, σ^A%, ρ_FGSM.

All functions work in pixel space (``[0, 1]`` images) and never change the model's state: the
model is evaluated in eval mode under :func:`advsmooth._tensors.frozen_model`, which restores
every training flag and ``requires_grad`` flag afterwards (docs/algorithms.md).

Conventions

* The white-box fooling rate (SmoothFool) is defined on the inputs the model classifies
  correctly: ``FR = mean 1[pred(x_adv) ≠ y]`` over ``{pred(x) = y}``. Inputs that are already
  misclassified are *excluded* and counted (``n_excluded``), never silently mixed in.
* The universal-perturbation fooling rate (``mean 1[pred(x+v) ≠ pred(x)]`` over all inputs) lives
  in :func:`advsmooth.attacks.universal.universal_fooling_rate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._tensors import check_images, check_model_compat, frozen_model, predict_chunks
from .._utils import check_int_at_least, input_mismatch
from ..attacks.gradients import AttackObjective, PlainGradient, check_logits

__all__ = [
    "FoolingRate",
    "fooling_rate",
    "per_class_fooling_rate",
    "robustness",
    "sigma_at",
    "fgsm_rho",
    "predict_batched",
]


@dataclass
class FoolingRate:
    """A fooling rate restricted to correctly classified inputs.

    Attributes:
        rate: fraction of the used inputs whose adversarial prediction differs from the label
            (``nan`` when no input is used).
        n_used: number of inputs classified correctly on the clean image (the denominator).
        n_excluded: number of inputs excluded because the clean image is already misclassified.
        fooled: ``(N,)`` bool, ``pred(x_adv) ≠ y`` for every input (also the excluded ones).
        used: ``(N,)`` bool, ``pred(x) = y`` (the inputs that enter ``rate``).
    """

    rate: float
    n_used: int
    n_excluded: int
    fooled: Tensor
    used: Tensor

    @property
    def n_fooled(self) -> int:
        """Number of used inputs that are fooled (the numerator)."""
        return int((self.fooled & self.used).sum())

    def as_dict(self) -> dict[str, float | int]:
        """The scalar fields as a plain dict (JSON friendly)."""
        return {"rate": self.rate, "n_used": self.n_used, "n_excluded": self.n_excluded,
                "n_fooled": self.n_fooled}


def predict_batched(model: nn.Module, x: Tensor, *, batch_size: int = 256,
                    check: bool = True) -> Tensor:
    """Predicted labels ``(N,)`` of ``model`` on ``x`` (``N×C×H×W``), in batches, in eval mode.

    ``check=False`` skips the ``[0, 1]`` range check (for unclipped adversarial images).
    """
    return _predict_classes(model, x, batch_size, check)[0]


def _predict_classes(model: nn.Module, x: Tensor, batch_size: int,
                     check: bool) -> tuple[Tensor, int | None]:
    """:func:`predict_batched` and the model's number of classes (``None`` for no input)."""
    check_int_at_least("batch_size", batch_size, 1)
    if check:
        check_images(x)
    check_model_compat(model, x)
    return predict_chunks(model, x, batch_size)


def _check_pair(x: Tensor, x_adv: Tensor, y: Tensor) -> Tensor:
    check_images(x)
    if not isinstance(x_adv, Tensor) or not x_adv.is_floating_point():
        raise ValueError("x_adv must be a floating-point tensor")
    if x_adv.shape == x.shape and x_adv.numel() and not bool(torch.isfinite(x_adv).all()):
        raise ValueError("x_adv contains NaN or Inf values")
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv must have the shape of x {tuple(x.shape)}, "
                         f"got {tuple(x_adv.shape)}")
    if y is None:
        raise ValueError("y (true labels, shape (N,)) is required")
    y = torch.as_tensor(y, device=x.device)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    return y.long()


def fooling_rate(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, *,
                 batch_size: int = 256) -> FoolingRate:
    """White-box fooling rate over the correctly classified inputs (docs/algorithms.md).

    Args:
        model: classifier on pixel-space images.
        x: clean images ``N×C×H×W`` in ``[0, 1]``.
        x_adv: adversarial images, same shape, evaluated as given (an unclipped DeepFool
            output may leave ``[0, 1]``; clamp it first if the threat model requires it).
        y: true labels ``(N,)``.
        batch_size: forward-pass chunk size.

    Returns:
        :class:`FoolingRate` with ``rate = mean 1[pred(x_adv) ≠ y]`` over ``{pred(x) = y}``,
        the number of inputs used and excluded, and per-sample masks.
    """
    y = _check_pair(x, x_adv, y)
    clean, k = _predict_classes(model, x, batch_size, True)
    if k is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
        raise ValueError(f"y must be class indices in [0, {k - 1}] for this model, got values in "
                         f"[{int(y.min())}, {int(y.max())}]")
    adv = predict_batched(model, x_adv, batch_size=batch_size, check=False)
    used = clean == y
    fooled = adv != y
    n_used = int(used.sum())
    rate = float((fooled & used).sum()) / n_used if n_used else float("nan")
    return FoolingRate(rate=rate, n_used=n_used, n_excluded=int(x.shape[0]) - n_used,
                       fooled=fooled, used=used)


def per_class_fooling_rate(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, *,
                           batch_size: int = 256) -> dict[int, dict[str, float | int]]:
    """Fooling rate per true class, each over that class's correctly classified inputs.

    Returns:
        ``{class: {"rate": float, "n_used": int, "n_excluded": int}}`` for every class present
        in ``y`` (sorted); ``rate`` is ``nan`` for a class with no correctly classified input.
    """
    fr = fooling_rate(model, x, x_adv, y, batch_size=batch_size)
    y = torch.as_tensor(y, device=x.device).long()
    out: dict[int, dict[str, float | int]] = {}
    for c in sorted(int(v) for v in torch.unique(y).tolist()):
        in_c = y == c
        used = in_c & fr.used
        n_used = int(used.sum())
        rate = float((fr.fooled & used).sum()) / n_used if n_used else float("nan")
        out[c] = {"rate": rate, "n_used": n_used, "n_excluded": int(in_c.sum()) - n_used}
    return out


def _pnorm(t: Tensor, p: float | str) -> Tensor:
    flat = t.flatten(1)
    if p in ("inf", float("inf")):
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    p = float(p)
    if not p > 0:
        raise ValueError(f"p must be > 0 or 'inf', got {p!r}")
    return torch.linalg.vector_norm(flat, ord=p, dim=1)


def robustness(r: Tensor, x: Tensor, p: float | str = 2, *, mask: Tensor | None = None) -> float:
    """Robustness ρ_adv = mean over samples of ``||r||_p / ||x||_p`` (DeepFool paper,
    arXiv:1511.04599, §3.3).

    Args:
        r: perturbations ``N×...`` (e.g. ``result.perturbation``).
        x: the clean images they apply to (same shape).
        p: ``2`` for ρ_adv, ``"inf"`` (or ``float('inf')``) for ρ∞_adv; any ``p > 0`` works.
        mask: optional ``(N,)`` bool selecting the samples to average over (e.g. the successful
            attacks on correctly classified inputs).

    Returns:
        The mean ratio as a float (``nan`` if no sample is selected). A zero image contributes
        ``||r||_p / 1e-12`` (safe division; never NaN). The value depends on the input
        representation: here pixel space ``[0, 1]``.
    """
    for name, t in (("r", r), ("x", x)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__} (convert it "
                            "with torch.as_tensor)")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if r.shape != x.shape:
        raise ValueError(f"r must have the shape of x {tuple(x.shape)}, got {tuple(r.shape)}")
    if r.ndim < 1:
        raise ValueError("r and x must have a leading sample dimension (shape N×...)")
    for name, t in (("r", r), ("x", x)):
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf values")
    ratio = _pnorm(r.double(), p) / _pnorm(x.double(), p).clamp_min(1e-12)
    if mask is not None:
        mask = torch.as_tensor(mask, device=ratio.device)
        if mask.dtype != torch.bool or mask.shape != ratio.shape:
            raise ValueError(f"mask must be a bool tensor of shape {tuple(ratio.shape)}")
        ratio = ratio[mask]
    return float(ratio.mean()) if ratio.numel() else float("nan")


def sigma_at(sigmas: Sequence[float] | Tensor, fooling_rates: Sequence[float] | Tensor,
             level: float) -> float:
    """σ^A%: the largest smoothing σ at which the fooling rate is still ≥ ``level`` (SmoothFool
    paper, arXiv:1910.03624, Fig. 6).

    The grid is sorted by σ. With ``i`` the last grid point whose fooling rate is ≥ ``level``,
    the result interpolates linearly between ``(σ_i, FR_i)`` and ``(σ_{i+1}, FR_{i+1})`` to the
    crossing of ``level``. If the fooling rate never drops below ``level`` the grid maximum is
    returned; if no grid point reaches ``level`` the result is ``nan``.

    Args:
        sigmas: the σ grid (any order, no duplicates).
        fooling_rates: the fooling rate at each σ, as fractions in ``[0, 1]``.
        level: the level A as a fraction in ``[0, 1]`` (``0.2`` for σ^20%).
    """
    s = [float(v) for v in (sigmas.tolist() if isinstance(sigmas, Tensor) else sigmas)]
    f = [float(v) for v in (fooling_rates.tolist() if isinstance(fooling_rates, Tensor)
                            else fooling_rates)]
    if len(s) != len(f):
        raise ValueError("sigmas and fooling_rates must have the same length, "
                         f"got {len(s)} and {len(f)}")
    if not s:
        raise ValueError("sigmas must not be empty")
    if len(set(s)) != len(s):
        raise ValueError("sigmas must not contain duplicates")
    if any(math.isnan(v) for v in s + f):
        raise ValueError("sigmas and fooling_rates must not contain NaN")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 <= level <= 1.0:
        raise ValueError(f"level must be a fraction in [0, 1] (0.2 for σ^20%), got {level!r}")
    pairs = sorted(zip(s, f))
    above = [i for i, (_, fr) in enumerate(pairs) if fr >= level]
    if not above:
        return float("nan")
    i = above[-1]
    if i == len(pairs) - 1:
        return pairs[-1][0]
    (s0, f0), (s1, f1) = pairs[i], pairs[i + 1]
    return s0 + (f0 - level) / (f0 - f1) * (s1 - s0)


def fgsm_rho(model: nn.Module, x: Tensor, y: Tensor, *, p: float | str = 2,
             target_rate: float = 0.9, eps_max: float = 0.5, grid: int = 200,
             batch_size: int = 256) -> dict[str, float]:
    """ρ_FGSM of the DeepFool paper (arXiv:1511.04599, §3.3): robustness of the 90 %-rule FGSM.

    The FGSM direction ``s = sign(∇_x CE(model(x), y))`` does not depend on ε, so it is computed
    once (one gradient evaluation per image); then the smallest ε on a uniform grid of ``grid``
    values in ``(0, eps_max]`` such that FGSM misclassifies at least ``target_rate`` of *all*
    inputs (``pred(clamp(x + ε s)) ≠ y``) is found by bracketing from small ε up (grid points
    1, 2, 4, 8, … ) and bisecting inside the bracket (forward passes only; the misclassification
    rate is assumed non-decreasing up to the bracket — it may fall again at larger ε). The
    perturbation used for ρ is the clamped one, ``clamp(x + ε s, 0, 1) − x``.

    Returns:
        ``{"eps": ε, "rho": mean ||r||_p/||x||_p, "rate": misclassification rate at ε,
        "rho_l2": …, "rho_inf": …}`` (ε does not depend on ``p``, so both norms of the same
        perturbation come from one call); ``eps`` and ``rho`` are ``nan`` if none of the
        bracketing grid points (up to ``eps_max``) reaches ``target_rate`` (and the two extra
        keys are then absent).
    """
    check_int_at_least("batch_size", batch_size, 1)
    check_images(x)
    y = torch.as_tensor(y, device=x.device).long()
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    if not 0.0 < target_rate <= 1.0:
        raise ValueError(f"target_rate must be in (0, 1], got {target_rate!r}")
    if not eps_max > 0:
        raise ValueError(f"eps_max must be > 0, got {eps_max!r}")
    check_int_at_least("grid", grid, 1)
    signs = []
    with frozen_model(model):
        if y.numel():  # the class count, to refuse labels the model cannot have
            with torch.no_grad(), input_mismatch(x):
                k = check_logits(model(x[:1]), 1).shape[1]
            if int(y.min()) < 0 or int(y.max()) >= k:
                raise ValueError(f"y must be class indices in [0, {k - 1}] for this model, got "
                                 f"values in [{int(y.min())}, {int(y.max())}]")
        for s in range(0, x.shape[0], batch_size):
            objective = AttackObjective("ce", y[s:s + batch_size])
            est = PlainGradient().estimate(model, x[s:s + batch_size], objective)
            signs.append(est.grad.sign())
    sign = torch.cat(signs) if signs else x.new_zeros(x.shape)

    rates: dict[float, float] = {}

    def rate_at(eps: float) -> float:  # each ε is evaluated once (bisection + the result)
        if eps not in rates:
            x_adv = (x + eps * sign).clamp(0, 1)
            pred = predict_batched(model, x_adv, batch_size=batch_size)
            rates[eps] = float((pred != y).double().mean())
        return rates[eps]

    epss = [eps_max * (k + 1) / grid for k in range(grid)]
    # Bracket first, from small ε up (grid indices 0, 1, 3, 7, ...): at large ε the rate can fall
    # again (FGSM at ε → 0.5 saturates every image, and a model that then answers one class is
    # wrong on only ~90 % of a balanced set), so the largest ε is no safe upper end.
    lo, hi, k = -1, None, 0
    while hi is None:
        if rate_at(epss[k]) >= target_rate:
            hi = k
        elif k == grid - 1:
            return {"eps": float("nan"), "rho": float("nan"), "rate": rate_at(epss[-1])}
        else:
            lo, k = k, min(2 * k + 1, grid - 1)
    # invariant: rate(epss[hi]) >= target; lo is below (or -1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if rate_at(epss[mid]) >= target_rate:
            hi = mid
        else:
            lo = mid
    eps = epss[hi]
    r = (x + eps * sign).clamp(0, 1) - x
    return {"eps": eps, "rho": robustness(r, x, p), "rate": rate_at(eps),
            "rho_l2": robustness(r, x, 2), "rho_inf": robustness(r, x, "inf")}
