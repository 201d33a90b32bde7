"""Gradient estimators attacking smoothed classifiers: EPGD and SmoothAdv-PGD (docs/algorithms.md).

Plug them into the iterative engine: ``PGD(eps=..., alpha=..., steps=k,
gradient=ExpectationGradient(sigma, samples=M))``. Every step evaluates ``M`` noisy copies
``x + η_i`` (``η_i ~ N(0, σ²I)``, fresh at each step, drawn up front as ``(M, N, C, H, W)``) and
ascends one of three surrogate losses of their logits ``z_i`` (``variant``):

* ``"prob_average"`` (default) — EPGD as printed in the seed (Eq. 25), also what Salman et al.'s
  SmoothAdv code implements: ``L = −log((1/M) Σ_i softmax(z_i)_y)``, computed stably as
  ``−(logsumexp_i log_softmax(z_i)_y − log M)``;
* ``"logit_average"`` — SmoothAdv-PGD as printed in the seed (Eq. 24): ``L = CE((1/M) Σ_i z_i, y)``;
* ``"expected_loss"`` — the authors' EPGD (= EOT = the sg- gradient):
  ``L = (1/M) Σ_i CE(z_i, y)``.

Targeted attacks descend the same quantity for the target class; ``loss="margin"`` applies the
margin to the averaged log-probabilities (``prob_average``) or to the averaged logits
(``logit_average``). All three coincide when ``M = 1`` or ``σ = 0`` — with ``M = 1`` the estimator
takes exactly the code path of the plain/sg gradient, so EPGD(M = 1, σ = 0) equals PGD bit for bit.

Against a :class:`~advsmooth.defenses.SmoothedClassifier` the estimator differentiates the
classifier's *base* model (its votes are not differentiable); ``sigma=None`` then takes σ, the
noise space and the std from the classifier. The attack's clean/verification passes still query
the smoothed classifier itself.

Cost per step: ``M`` gradient evaluations and ``M`` forward evaluations per image (one graph over
all copies with ``chunk_size=None``; a smaller ``chunk_size`` bounds memory at the price of a
second forward pass for the non-linear variants). ``k`` steps cost ``k·M`` gradient evaluations:
compare methods at equal ``k×M`` (e.g. ``PGD(steps=k·M)`` vs ``PGD(steps=k, gradient=EPGD(M))``,
or the engine's ``budget=``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._utils import check_choice
from .gradients import AttackObjective, GradientEstimate, SmoothedGradient
from .noise_space import SmoothedModel, pixel_sigma, resolve_std

__all__ = ["ExpectationGradient", "SmoothAdvGradient", "VARIANTS"]

VARIANTS = ("prob_average", "logit_average", "expected_loss")


def _unwrap(model: nn.Module) -> tuple[nn.Module, SmoothedModel | None]:
    if isinstance(model, SmoothedModel):
        return model.base, model
    return model, None


class ExpectationGradient(SmoothedGradient):
    """EPGD gradient: the gradient of a surrogate loss over ``M`` Gaussian-noised copies.

    Args:
        sigma: noise std ≥ 0 in pixel units (or normalised units with
            ``noise_space="normalized"``); ``None``: take σ/noise space/std from the attacked
            :class:`~advsmooth.defenses.SmoothedClassifier`.
        samples: ``M`` (M_backward; seed: 8).
        variant: ``"prob_average"`` (seed EPGD, Salman's SmoothAdv code), ``"logit_average"``
            (SmoothAdv-PGD as printed) or ``"expected_loss"`` (the authors' EPGD / EOT).
        noise_space: ``"pixel"`` or ``"normalized"`` (noise ``σ·std_c`` per channel).
        std: per-channel std for ``noise_space="normalized"`` (default: from a ``Normalize``
            layer inside the attacked model).
        chunk_size: copies per forward pass (``None``: all at once).
        clip_noisy: clamp noisy copies to ``[0, 1]`` (default False, like the authors' code).
    """

    def __init__(self, sigma: float | None = 0.25, samples: int = 8, *,
                 variant: str = "prob_average", noise_space: str = "pixel",
                 std: Tensor | float | tuple[float, ...] | None = None,
                 chunk_size: int | None = None, clip_noisy: bool = False) -> None:
        super().__init__(sigma=0.0 if sigma is None else sigma, samples=samples,
                         chunk_size=chunk_size, clip_noisy=clip_noisy)
        self.sigma_from_model = sigma is None
        self.variant = check_choice("variant", variant, VARIANTS)
        # the std of normalised noise; None: pixel noise, or taken from the attacked model
        self.std = resolve_std(noise_space, std, required=False)
        self.noise_space = noise_space
        # M = 1: every variant equals the per-copy loss -> the linear (decomposable) path
        self.decomposable = self.variant == "expected_loss" or self.samples == 1
        self.supports_loss_ensembles = self.decomposable
        self._params = {"sigma": sigma, "samples": self.samples, "variant": self.variant}
        if noise_space != "pixel":
            self._params["noise_space"] = noise_space
        if chunk_size is not None:
            self._params["chunk_size"] = chunk_size
        if clip_noisy:
            self._params["clip_noisy"] = True
        self._scale: Tensor | float | None = None

    @property
    def stochastic(self) -> bool:
        return self.sigma_from_model or self.sigma > 0

    def _noise_scale(self, model: nn.Module, smoothed: SmoothedModel | None,
                     x: Tensor) -> Tensor | float:
        """Pixel-space noise std for ``x``: a float or a ``1×C×1×1`` tensor."""
        if self.sigma_from_model:
            if smoothed is None:
                raise ValueError("ExpectationGradient(sigma=None) takes σ from the attacked "
                                 "SmoothedClassifier; give sigma= to attack a plain model")
            return smoothed.pixel_sigma(x)
        std = self.std
        if self.noise_space == "normalized" and std is None:
            std = resolve_std(self.noise_space, None, model)
        return pixel_sigma(self.sigma, std, x)

    def draw_noise(self, x: Tensor, generator: torch.Generator) -> Tensor | None:
        scale = self._scale
        if scale is None:
            raise RuntimeError("draw_noise is called by estimate(); call estimate()")
        if not isinstance(scale, Tensor) and float(scale) == 0.0:
            return None
        if isinstance(scale, Tensor) and not bool(scale.any()):
            return None
        noise = torch.randn((self.samples, *x.shape), generator=generator, device=x.device,
                            dtype=x.dtype)
        return noise * scale

    def combine(self, objective: AttackObjective, raw: Tensor) -> Tensor:
        """Per-sample surrogate loss of the copies' logits ``raw`` (``M×N×K``)."""
        if self.decomposable:
            return objective.value(raw).mean(dim=0)
        if self.variant == "logit_average":
            return objective.value(raw.mean(dim=0))
        # prob_average: the objective of log((1/M) Σ softmax(z_i)) (a log-probability vector;
        # CE of it is −log of the averaged probability of the class)
        log_pbar = torch.logsumexp(torch.log_softmax(raw, dim=-1), dim=0) - math.log(raw.shape[0])
        return objective.value(log_pbar)

    def estimate(self, model: nn.Module, x: Tensor, objective: AttackObjective, *,
                 generator: torch.Generator | None = None) -> GradientEstimate:
        base, smoothed = _unwrap(model)
        if smoothed is not None and objective.loss_ensemble:
            objective = AttackObjective.for_model(base, objective.loss, objective.labels,
                                                  objective.target)
        self._scale = self._noise_scale(base, smoothed, x)
        try:
            return super().estimate(base, x, objective, generator=generator)
        finally:
            self._scale = None


class SmoothAdvGradient(ExpectationGradient):
    """SmoothAdv-PGD gradient as printed in the smoothing seed (Eq. 24): CE of the mean logits.

    A preset of :class:`ExpectationGradient` with ``variant="logit_average"``. Note: Salman et
    al.'s SmoothAdv *code* averages probabilities instead — that is
    ``ExpectationGradient(variant="prob_average")`` (the default EPGD).
    """

    def __init__(self, sigma: float | None = 0.25, samples: int = 8, *,
                 noise_space: str = "pixel",
                 std: Tensor | float | tuple[float, ...] | None = None,
                 chunk_size: int | None = None, clip_noisy: bool = False) -> None:
        super().__init__(sigma, samples, variant="logit_average", noise_space=noise_space,
                         std=std, chunk_size=chunk_size, clip_noisy=clip_noisy)
        self._params.pop("variant", None)

