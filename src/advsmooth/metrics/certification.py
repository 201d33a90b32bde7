"""Certified accuracy vs radius of a randomised-smoothing classifier (Cohen, Rosenfeld & Kolter
2019, "Certified adversarial robustness via randomized smoothing", arXiv:1902.02918, §3.2).

:func:`certified_accuracy` runs :meth:`~advsmooth.defenses.SmoothedClassifier.certify` (CERTIFY:
``n0`` samples select the class, ``n`` samples bound its probability from below at level ``α``)
on every input and tabulates, for each ℓ2 radius ``r``, the fraction of inputs whose certified
class is the true label with certified radius ≥ ``r``. Abstentions count as wrong at every radius
and are reported separately.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._tensors import check_images, check_labels
from .._utils import check_model_output, progress
from ..defenses.smoothing import SmoothedClassifier

__all__ = ["CertificationReport", "certified_accuracy"]


@dataclass
class CertificationReport:
    """What :func:`certified_accuracy` found (fractions over all ``n_samples`` inputs).

    Attributes:
        sigma: noise level of the smoothed classifier (pixel units); ``n0``, ``n``, ``alpha``:
            the CERTIFY parameters.
        radii: the ℓ2 radii tabulated (ascending); ``certified_accuracy``: one value per radius.
        abstained: inputs where CERTIFY abstained; ``prediction`` ``(N,)`` (−1: abstain),
            ``radius`` ``(N,)`` certified radii, ``labels`` ``(N,)``.
    """

    sigma: float
    n0: int
    n: int
    alpha: float
    radii: list[float]
    certified_accuracy: list[float]
    abstained: int
    prediction: Tensor
    radius: Tensor
    labels: Tensor
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.labels.shape[0])

    def table(self) -> str:
        """Markdown table: radius → certified accuracy."""
        rows = [f"| {r:.3g} | {a:.1%} |" for r, a in zip(self.radii, self.certified_accuracy,
                                                          strict=True)]
        return "\n".join(["| ℓ2 radius | certified accuracy |", "| --- | --- |", *rows])

    def summary(self) -> str:
        correct = int(((self.prediction == self.labels) & (self.prediction >= 0)).sum())
        return (f"{self.n_samples} samples, σ = {self.sigma:g}, N0 = {self.n0}, N = {self.n}, "
                f"α = {self.alpha:g}: {correct} certified correct, {self.abstained} abstained, "
                f"{self.seconds:.1f} s\n\n" + self.table())

    def to_dict(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "n0": self.n0, "n": self.n, "alpha": self.alpha,
                "radii": self.radii, "certified_accuracy": self.certified_accuracy,
                "abstained": self.abstained, "n_samples": self.n_samples,
                "prediction": self.prediction.tolist(),
                "radius": [float(r) for r in self.radius.tolist()],
                "labels": self.labels.tolist(), "seconds": self.seconds, "config": self.config}


def certified_accuracy(smoothed: SmoothedClassifier, x: Tensor, y: Tensor | Sequence[int], *,
                       n0: int = 100, n: int = 10000, alpha: float = 0.001,
                       radii: Sequence[float] | None = None, batch_size: int = 64,
                       noise_seed: int = 0, progress_bar: bool = True) -> CertificationReport:
    """Certify every input of ``x`` and tabulate certified accuracy vs ℓ2 radius.

    Args:
        smoothed: the smoothed classifier.
        x: images ``N×C×H×W`` in ``[0, 1]``; ``y``: labels ``(N,)``.
        n0, n, alpha: CERTIFY's selection samples, estimation samples and failure probability.
        radii: radii to tabulate (default: 0 to the largest certified radius in 10 steps).
        batch_size: inputs certified per call (memory only; numbers do not depend on it).
        noise_seed: seed of the noise (input ``i`` of batch ``b`` gets a seed derived from it).
        progress_bar: a bar over the inputs on a terminal (never in a log, a pipe or CI).

    Returns:
        A :class:`CertificationReport`.
    """
    import time

    if not isinstance(smoothed, SmoothedClassifier):
        raise TypeError(f"certify needs a SmoothedClassifier, got {type(smoothed).__name__}")
    check_images(x)
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch: nothing to certify")
    with torch.no_grad(), smoothed._base_mode():  # the class count, for the labels' range
        k = check_model_output(smoothed.base(x[:1]), 1).shape[1]
    labels = check_labels(y, x.shape[0], max(k, 2), x.device)  # one logit: binary
    t0 = time.perf_counter()
    preds, rads = [], []
    bar = progress(total=x.shape[0], desc="certify", enabled=progress_bar, unit="image")
    for b, i in enumerate(range(0, x.shape[0], batch_size)):
        cert = smoothed.certify(x[i:i + batch_size], n0=n0, n=n, alpha=alpha,
                                noise_seed=noise_seed * 1_000_003 + b)
        preds.append(cert.prediction)
        rads.append(cert.radius)
        bar.update(cert.prediction.shape[0])
    bar.close()
    pred = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    radius = torch.cat(rads) if rads else torch.zeros(0, dtype=torch.float64)
    ok = (pred == labels) & (pred >= 0)
    if radii is None:
        top = float(radius[ok].max()) if bool(ok.any()) else 0.0
        grid = [round(top * k / 10, 6) for k in range(11)] if top > 0 else [0.0]
    else:
        grid = sorted({float(r) for r in radii})
        if any(r < 0 or not math.isfinite(r) for r in grid):
            raise ValueError(f"radii must be finite and >= 0, got {list(radii)}")
    acc = [float((ok & (radius >= r)).double().mean()) if len(labels) else math.nan
           for r in grid]
    return CertificationReport(
        sigma=float(smoothed.sigma), n0=n0, n=n, alpha=float(alpha), radii=grid,
        certified_accuracy=acc, abstained=int((pred < 0).sum()), prediction=pred,
        radius=radius, labels=labels, seconds=time.perf_counter() - t0,
        config={"batch_size": batch_size, "noise_seed": noise_seed})
