"""Gaussian input noise in pixel or normalised units: the σ logic of smoothed classifiers.

Randomised smoothing (Cohen et al., "Certified Adversarial Robustness via Randomized Smoothing",
arXiv:1902.02918) classifies Gaussian-noised copies ``x + η`` of an input. Papers quote σ either in
**pixel units** (inputs in ``[0, 1]``; ``noise_space="pixel"``) or in units of the model's
**normalised input** (noise added after the mean/std normalisation; ``noise_space="normalized"``),
where the pixel-space std of channel ``c`` is ``σ·std_c``. This module is the one place that turns
``(σ, noise_space, std)`` into a pixel-space noise scale; it is shared by
:class:`~advsmooth.defenses.SmoothedClassifier` (which classifies noisy copies),
:class:`~advsmooth.attacks.ExpectationGradient` (which attacks them) and the noise-injection
layers of :mod:`advsmooth.defenses.noise`.

:class:`SmoothedModel` is the base class of classifiers built on noisy copies of a base model;
attacks recognise them by it (and differentiate the base model under the same noise) without
depending on the defences that implement them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._utils import check_choice

__all__ = ["NOISE_SPACES", "SmoothedModel", "check_std", "find_std", "pixel_sigma",
           "resolve_std"]

#: the units σ can be given in
NOISE_SPACES = ("pixel", "normalized")

_NEEDS_STD = ("noise_space='normalized' needs std= or an advsmooth.models.Normalize layer "
              "inside the model (this model has none: its inputs are the pixels, so use "
              "noise_space='pixel' / --noise-space pixel)")


def find_std(model: nn.Module) -> Tensor | None:
    """The per-channel std of the first ``Normalize`` layer inside ``model`` (detached), or
    ``None`` when the model has none."""
    for m in model.modules():
        std = getattr(m, "std", None)
        if type(m).__name__ in ("Normalize", "NormalizedModel") and isinstance(std, Tensor):
            return std.detach()
    return None


def check_std(std: Any) -> Tensor:
    """``std`` as a flat float64 tensor of positive, finite per-channel stds (else
    ``ValueError``)."""
    s = torch.as_tensor(std, dtype=torch.float64).detach().flatten()
    if s.numel() == 0 or bool((s <= 0).any()) or not bool(torch.isfinite(s).all()):
        raise ValueError(f"std must be positive and finite, got {s.tolist()}")
    return s


def resolve_std(noise_space: str, std: Any = None, model: nn.Module | None = None,
                *, required: bool = True) -> Tensor | None:
    """The per-channel std (flat float64) that normalised noise is scaled by, or ``None``.

    ``noise_space="pixel"``: ``None`` (``std`` must not be given). ``"normalized"``: ``std`` if
    given, else the std of a ``Normalize`` layer inside ``model``; when neither exists,
    ``ValueError`` if ``required``, else ``None`` (to be looked up later on the attacked model).
    """
    check_choice("noise_space", noise_space, NOISE_SPACES)
    if noise_space == "pixel":
        if std is not None:
            raise ValueError("std= is only used with noise_space='normalized'")
        return None
    if std is None and model is not None:
        std = find_std(model)
    if std is None:
        if required:
            raise ValueError(_NEEDS_STD)
        return None
    return check_std(std)


def pixel_sigma(sigma: float, std: Tensor | None, x: Tensor) -> Tensor | float:
    """The pixel-space noise std for inputs like ``x`` (``N×C×H×W``): ``sigma`` itself
    (``std=None``, pixel noise) or the ``1×C×1×1`` tensor ``sigma·std_c`` in ``x``'s dtype."""
    if std is None:
        return sigma
    s = std.to(device=x.device, dtype=x.dtype).flatten()
    if s.numel() not in (1, x.shape[1]):
        raise ValueError(f"std has {s.numel()} entries but x has {x.shape[1]} channels")
    return (sigma * s).view(1, -1, 1, 1)


class SmoothedModel(nn.Module):
    """Base class of classifiers of Gaussian-noised copies ``x + η`` of their input.

    Subclasses set ``base`` (the model that sees the noisy copies), ``sigma`` (in
    ``noise_space`` units) and ``std`` (the per-channel std of normalised noise, or ``None`` for
    pixel noise). Gradient attacks differentiate ``base`` under noise of std
    :meth:`pixel_sigma` (see :class:`~advsmooth.attacks.ExpectationGradient`).
    """

    base: nn.Module
    sigma: float
    std: Tensor | None

    def pixel_sigma(self, x: Tensor) -> Tensor | float:
        """The noise std in pixel units: a float, or a ``1×C×1×1`` tensor for normalised noise."""
        return pixel_sigma(self.sigma, self.std, x)
