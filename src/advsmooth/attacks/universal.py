"""Universal adversarial perturbations: plain UAP and smooth UAP (docs/algorithms.md).

:class:`UniversalPerturbation` computes one image-agnostic perturbation ``v`` (``1×C×H×W``) that
changes the prediction of as many inputs as possible, with ``||v||_p ≤ ξ``:

* **plain UAP** (Moosavi-Dezfooli et al., "Universal adversarial perturbations",
  arXiv:1610.08401) — with a :class:`~advsmooth.attacks.DeepFool` base: for each sample
  (seeded order) still classified as on its clean image, add the minimal perturbation that
  fools ``x + v`` and project back onto the ℓ∞ or ℓ2 ball of radius ξ;
* **smooth UAP** (SmoothFool Alg. 3, arXiv:1910.03624) — with a
  :class:`~advsmooth.attacks.SmoothFool` base: SmoothFool increments, and the projection is
  SmoothClip in normalised form
  ``u = (v/ξ + 1)/2 → SmoothClip(0, u) → v = (2u − 1)·ξ`` with SmoothFool's own filter g, so the
  perturbation stays smooth while ``|v| ≤ ξ``.

Sequential dependence: every update depends on the current ``v``, so the reference algorithm
attacks one sample at a time (one base-attack call per sample; this loop over samples is
inherent to UAP and is the only per-sample Python loop in advsmooth). ``batch_update=b`` attacks
``b`` samples at once against the same ``v`` and adds the *mean* of their increments before
projecting: much faster, but a different algorithm (not equivalent to the sequential one).

Fooling rate: ``mean_x 1[pred(x + v) ≠ pred(x)]`` over all samples, against the clean
predictions (no correctness filter): :func:`universal_fooling_rate`. Measure it on held-out data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .._tensors import check_images, check_model_compat, frozen_model, predict, predict_chunks
from .._utils import (
    check_bool,
    check_choice,
    check_int_at_least,
    check_nonnegative,
    check_positive,
    make_generator,
    progress,
)
from .base import Attack
from .smoothfool import SmoothFool, smooth_clip

__all__ = ["UniversalPerturbation", "universal_fooling_rate", "project_linf", "project_l2"]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def _check_v(v: Tensor, x: Tensor) -> Tensor:
    if not isinstance(v, Tensor):
        raise TypeError(f"v must be a torch.Tensor, got {type(v).__name__}")
    if v.ndim == 3:
        v = v.unsqueeze(0)
    if v.ndim != 4 or v.shape[0] != 1 or v.shape[1:] != x.shape[1:]:
        raise ValueError(f"v must have shape 1×{'×'.join(map(str, x.shape[1:]))} (or without the "
                         f"leading 1), got {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("v contains NaN or Inf values")
    return v.to(device=x.device, dtype=x.dtype)


def universal_fooling_rate(model: nn.Module, x: Tensor, v: Tensor, *, clamp: bool = True,
                           batch_size: int = 256, clean_pred: Tensor | None = None) -> float:
    """Fooling rate of a universal perturbation: ``mean 1[pred(x + v) ≠ pred(x)]`` over all ``x``.

    Args:
        model: classifier on pixel-space images (evaluated in eval mode, state restored).
        x: images ``N×C×H×W`` in ``[0, 1]``.
        v: the perturbation, ``1×C×H×W`` (or ``C×H×W``).
        clamp: evaluate on ``clamp(x + v, 0, 1)`` (DEFAULT; the authors' code does not clamp).
        batch_size: forward-pass chunk size.
        clean_pred: the clean predictions ``(N,)`` if already known (saves one pass).

    Returns:
        The fraction of inputs whose prediction changes (``nan`` for an empty ``x``). Clean
        misclassifications are not filtered out (the UAP definition compares with ``pred(x)``).
    """
    check_images(x)
    check_int_at_least("batch_size", batch_size, 1)
    v = _check_v(v, x)
    if x.shape[0] == 0:
        return float("nan")
    if clean_pred is None:
        clean_pred = predict_chunks(model, x, batch_size)[0]
    z = x + v
    if clamp:
        z = z.clamp(0.0, 1.0)
    adv = []
    with frozen_model(model), torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            adv.append(predict(model(z[s:s + batch_size]), z[s:s + batch_size].shape[0]))
    return float((torch.cat(adv) != clean_pred.to(x.device)).double().mean())


def _bound(xi: float, dtype: torch.dtype) -> float:
    """The largest value of ``dtype`` that is ≤ ``xi`` (so ``|v| ≤ ξ`` holds after rounding)."""
    b = torch.tensor(xi, dtype=dtype)
    if float(b) > xi:
        b = torch.nextafter(b, torch.zeros_like(b))
    return float(b)


def project_linf(v: Tensor, xi: float) -> Tensor:
    """Projection onto the ℓ∞ ball of radius ``xi``: ``clamp(v, −ξ, ξ)``.

    Exact in ``v``'s dtype: the bound is rounded down, so ``float(v.abs().max()) ≤ xi``.
    """
    b = _bound(xi, v.dtype)
    return v.clamp(-b, b)


def project_l2(v: Tensor, xi: float, *, sphere: bool = False) -> Tensor:
    """Projection onto the ℓ2 ball of radius ``xi``: ``v·min(1, ξ/||v||₂)``.

    ``sphere=True`` always rescales to ``||v||₂ = ξ`` (the authors' code's "projection"). The result
    satisfies ``||v||₂ ≤ ξ`` in floating point (the scale is nudged down if rounding exceeds ξ).
    """
    norm = float(torch.linalg.vector_norm(v))
    if norm == 0.0 or (not sphere and norm <= xi):
        return v
    out = v * (xi / norm)
    shrink = 1.0
    while float(torch.linalg.vector_norm(out)) > xi:
        shrink *= 1.0 - 4 * torch.finfo(v.dtype).eps
        out = v * (xi / norm * shrink)
    return out


def _materialise(data: Any) -> Tensor:
    """A tensor ``x``, an ``(x, y)`` pair, or an iterable of batches (DataLoader) → ``x``."""
    if isinstance(data, Tensor):
        x = data
    elif isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor) \
            and data[0].ndim == 4:
        x = data[0]
    elif isinstance(data, Iterable):
        parts = []
        for batch in data:
            xb = batch[0] if isinstance(batch, (tuple, list)) else batch
            if not isinstance(xb, Tensor):
                raise TypeError("each batch of data must be a tensor or an (x, y) pair, got "
                                f"{type(xb).__name__}")
            parts.append(xb)
        if not parts:
            raise ValueError("data holds no samples")
        x = torch.cat(parts)
    else:
        raise TypeError("data must be a tensor x, an (x, y) pair or an iterable of batches "
                        f"(DataLoader), got {type(data).__name__}")
    check_images(x, "data")
    if x.shape[0] == 0:
        raise ValueError("data holds no samples")
    return x.detach()


def _smooth_clip_unit(u: Tensor, base: SmoothFool, step: float) -> tuple[Tensor, bool]:
    """SmoothClip of ``u`` into ``[0, 1]`` from ``x = 0`` (SmoothFool Alg. 3), returning the
    clipped ``u``.

    Uses the SmoothFool attack's filter and its SmoothClip settings (iteration cap, minimum step,
    mask normalisation) with the step ``step``. Also returns whether SmoothClip had to fall
    back to pixel-wise clamping (its iteration cap was hit).
    """
    r_c, _, fallback = smooth_clip(torch.zeros_like(u), u, base.filter, step,
                                   max_iter=base.clip_max_iter, min_step=base.clip_min_step,
                                   normalize_mask=base.normalize_mask)
    return r_c, bool(fallback.any())


# ----------------------------------------------------------------------------------------------
# the algorithm
# ----------------------------------------------------------------------------------------------

class UniversalPerturbation:
    """Universal adversarial perturbation (plain UAP, or smooth UAP with SmoothFool).

    Args:
        base: the per-sample attack giving the increments: ``DeepFool(max_iter=10)`` (DEFAULT,
            plain UAP) or a ``SmoothFool`` (smooth UAP; projection by SmoothClip with the
            attack's own filter). Any untargeted :class:`Attack` works for plain UAP.
        xi: radius ξ of the ℓp ball, pixel units (DEFAULT 10/255, the seed's ImageNet value).
        norm: ``"inf"`` (DEFAULT) or ``2``. Smooth UAP supports ``"inf"`` only.
        target_fooling_rate: τ; passes stop once the fooling rate on the fitting data is ≥ τ
            (authors' code: 0.8; SmoothFool's Table 5 uses 0.9).
        max_passes: cap on the passes over the data (DEFAULT 10, the authors' MATLAB code).
        eval_clamp: take predictions on ``clamp(x + v, 0, 1)`` (DEFAULT True). The base attack is
            always run on the clamped image (attacks need valid ``[0, 1]`` inputs); with
            ``eval_clamp=False`` only the fooled-or-not checks and the fooling rate use the raw
            ``x + v`` as in the authors' code.
        batch_update: ``None`` (DEFAULT, sequential as in the authors' code) or ``b ≥ 1``: attack
            ``b`` samples against the same ``v`` and add the mean of their increments (faster,
            NOT equivalent to the sequential algorithm).
        attack_clean: smooth UAP only: attack ``x_i`` itself instead of ``x_i + v`` (the literal
            Alg. 3 of SmoothFool; DEFAULT False follows UAP).
        clip_step: SmoothClip step ε_sc of the smooth projection (DEFAULT 0.1, the seed's value).
        l2_projection: ``"ball"`` (DEFAULT, true projection) or ``"sphere"`` (authors' code: rescale
            to ``||v||₂ = ξ``).
        batch_size: chunk size of the fooling-rate passes.
        progress_bar: show tqdm bars over passes and samples.
        seed: seed of the per-pass shuffles (and of the base attack's generator).

    After :meth:`fit`: ``perturbation_`` (``1×C×H×W``), ``history_`` (fooling rate on the
    fitting data after each pass), ``fooling_rate_`` (last entry), ``passes_``, ``updates_``
    (number of accepted increments), ``cost_`` (total forward / gradient evaluations and base
    attack calls), ``projection_fallbacks_`` (smooth UAP: projections where SmoothClip hit its
    iteration cap and clamped pixel-wise, so that step was not smooth).

    ``v`` is the perturbation after the last pass (as in the authors' code), not the best one seen.

    An increment is accepted only when the base attack succeeded (fooled ``x + v``); for
    DeepFool this is the authors' "converged" test (they use ``iters < max_iter − 1``).
    """

    # 13 parameters: the base attack and the knobs of the UAP and smooth-UAP algorithms (ξ, norm,
    # τ, passes, clamp, batch update, attack_clean, ε_sc, ℓ2 projection), the chunk size, the bar
    # and the seed; grouping them would hide the papers' names
    def __init__(self, *, base: Attack | None = None, xi: float = 10 / 255,
                 norm: float | int | str = "inf", target_fooling_rate: float = 0.8,
                 max_passes: int = 10, eval_clamp: bool = True, batch_update: int | None = None,
                 attack_clean: bool = False, clip_step: float = 0.1,
                 l2_projection: str = "ball", batch_size: int = 256, progress_bar: bool = True,
                 seed: int = 0) -> None:
        if base is None:
            from .deepfool import DeepFool
            base = DeepFool(max_iter=10)
        if not isinstance(base, Attack):
            raise TypeError(f"base must be an advsmooth Attack, got {type(base).__name__}")
        self.base = base
        self.xi = check_positive("xi", xi)
        if norm in ("inf", "Linf", "linf", float("inf")):
            self.norm: str | int = "inf"
        elif norm in (2, 2.0, "2", "l2", "L2"):
            self.norm = 2
        else:
            raise ValueError(f"norm must be 'inf' or 2, got {norm!r}")
        self.target_fooling_rate = check_nonnegative("target_fooling_rate", target_fooling_rate)
        if self.target_fooling_rate > 1:
            raise ValueError(f"target_fooling_rate must be in [0, 1], got {target_fooling_rate!r}")
        self.max_passes = check_int_at_least("max_passes", max_passes, 1)
        for name, val in (("eval_clamp", eval_clamp), ("attack_clean", attack_clean),
                          ("progress_bar", progress_bar)):
            check_bool(name, val)
        self.eval_clamp = eval_clamp
        self.batch_update = None if batch_update is None else check_int_at_least(
            "batch_update", batch_update, 1)
        self.attack_clean = attack_clean
        self.clip_step = check_positive("clip_step", clip_step)
        self.l2_projection = check_choice("l2_projection", l2_projection, ("ball", "sphere"))
        self.batch_size = check_int_at_least("batch_size", batch_size, 1)
        self.progress_bar = progress_bar
        self.seed = int(seed)
        self.smooth = isinstance(base, SmoothFool)
        if self.smooth and self.norm != "inf":
            raise ValueError("smooth UAP (SmoothFool base) projects with SmoothClip onto "
                             "|v| <= xi; use norm='inf'")
        if attack_clean and not self.smooth:
            raise ValueError("attack_clean=True is the literal SmoothFool Alg. 3 and needs a "
                             "SmoothFool base")
        self.perturbation_: Tensor | None = None
        self.history_: list[float] = []
        self.fooling_rate_: float = float("nan")
        self.passes_ = 0
        self.updates_ = 0
        self.cost_: dict[str, int] = {}
        self.projection_fallbacks_ = 0

    def __repr__(self) -> str:
        return (f"UniversalPerturbation(base={self.base!r}, xi={self.xi!r}, norm={self.norm!r}, "
                f"target_fooling_rate={self.target_fooling_rate!r}, max_passes={self.max_passes}, "
                f"eval_clamp={self.eval_clamp}, batch_update={self.batch_update}, "
                f"attack_clean={self.attack_clean}, clip_step={self.clip_step!r}, "
                f"l2_projection={self.l2_projection!r}, seed={self.seed})")

    # -- projection -------------------------------------------------------------------------
    def project(self, v: Tensor) -> Tensor:
        """Project ``v`` (``1×C×H×W``) onto the constraint set: ℓ∞/ℓ2 ball, or smooth ℓ∞
        (SmoothClip)."""
        if self.smooth:
            u = (v / self.xi + 1.0) / 2.0
            u, fell_back = _smooth_clip_unit(u, self.base, self.clip_step)
            self.projection_fallbacks_ += int(fell_back)
            u = u.clamp(0.0, 1.0)
            return project_linf((2.0 * u - 1.0) * self.xi, self.xi)
        if self.norm == "inf":
            return project_linf(v, self.xi)
        return project_l2(v, self.xi, sphere=self.l2_projection == "sphere")

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, model: nn.Module, data: Any) -> Tensor:
        """Compute the universal perturbation on ``data``.

        Args:
            model: classifier on pixel-space images.
            data: images ``M×C×H×W`` in ``[0, 1]`` as a tensor, an ``(x, y)`` pair (labels are
                not used: UAP fools the model's own predictions) or an iterable of batches such
                as a ``DataLoader`` (materialised in memory, since UAP makes several passes).

        Returns:
            ``v``, shape ``1×C×H×W`` with ``||v||_p ≤ ξ`` (also stored as ``perturbation_``).
        """
        x = _materialise(data)
        check_model_compat(model, x)
        m = x.shape[0]
        clean_pred = predict_chunks(model, x, self.batch_size)[0]
        forward = m
        grad = 0
        calls = 0
        gen = make_generator(self.seed, "cpu")
        attack_gen = make_generator(self.seed, x.device)
        v = torch.zeros((1, *x.shape[1:]), dtype=x.dtype, device=x.device)
        self.history_ = []
        self.projection_fallbacks_ = 0
        self.updates_ = 0
        self.passes_ = 0
        fr = 0.0
        b = self.batch_update or 1
        passes = progress(range(self.max_passes), total=self.max_passes,
                          desc=f"{'smooth ' if self.smooth else ''}UAP passes",
                          enabled=self.progress_bar)
        for p in passes:
            if p > 0 and fr >= self.target_fooling_rate:
                break
            order = torch.randperm(m, generator=gen).to(x.device)
            starts = range(0, m, b)
            for s in progress(starts, total=len(starts), desc=f"pass {p + 1}",
                              enabled=self.progress_bar):
                idx = order[s:s + b]
                xi, ki = x[idx], clean_pred[idx]
                need_check = self.attack_clean or not self.eval_clamp
                if need_check:
                    z = xi + v
                    if self.eval_clamp:
                        z = z.clamp(0.0, 1.0)
                    with frozen_model(model), torch.no_grad():
                        still = predict(model(z), z.shape[0]) == ki
                    forward += idx.numel()
                    if not bool(still.any()):
                        continue
                    xi, ki = xi[still], ki[still]
                x_in = xi if self.attack_clean else (xi + v).clamp(0.0, 1.0)
                res = self.base(model, x_in, ki, generator=attack_gen)
                calls += 1
                forward += int(res.forward_evals.sum())
                grad += int(res.grad_evals.sum())
                ok = res.success & ~res.skipped
                if not bool(ok.any()):
                    continue
                delta = (res.x_adv - x_in)[ok].mean(dim=0, keepdim=True)
                v = self.project(v + delta)
                self.updates_ += int(ok.sum())
            fr = universal_fooling_rate(model, x, v, clamp=self.eval_clamp,
                                        batch_size=self.batch_size, clean_pred=clean_pred)
            forward += m
            self.history_.append(fr)
            self.passes_ = p + 1
            if hasattr(passes, "set_postfix"):
                passes.set_postfix(fooling_rate=f"{fr:.3f}")
        self.perturbation_ = v.detach()
        self.fooling_rate_ = fr if self.history_ else float("nan")
        self.cost_ = {"forward": forward, "grad": grad, "attack_calls": calls}
        return self.perturbation_

    def apply(self, x: Tensor) -> Tensor:
        """``clamp(x + v, 0, 1)`` for images ``N×C×H×W`` (after :meth:`fit`)."""
        if self.perturbation_ is None:
            raise RuntimeError("call fit(model, data) first")
        check_images(x)
        return (x + _check_v(self.perturbation_, x)).clamp(0.0, 1.0)

