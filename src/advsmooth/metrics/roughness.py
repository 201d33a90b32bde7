"""Roughness Ω / Ωn of perturbations (re-exported from :mod:`advsmooth.filters`).

``advsmooth.metrics.roughness(r, sigma_h=1.0, normalized=False)`` — see
:func:`advsmooth.filters.roughness` for the definition and properties.
"""

from __future__ import annotations

from ..filters import roughness

__all__ = ["roughness"]
