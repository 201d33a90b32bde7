"""MagNet (Meng & Chen 2017): autoencoder reformer + detectors with FPR-calibrated thresholds.

* :class:`Autoencoder` — MagNet's MNIST-style convolutional autoencoder (3×3 convolutions with
  sigmoid activations, optional 2×2 average pooling + upsampling), ``[0, 1]`` in and out,
  trained by :func:`train_autoencoder` to reconstruct clean images from noisy copies
  (``x + noise·N(0, I)``, clamped; MagNet uses noise volume 0.1) with a mean squared error.
* Detectors (each a module returning one score per image; large = suspicious):
  :class:`ReconstructionDetector` (``mean |x − AE(x)|^p``, ``p = 1`` or ``2``) and
  :class:`DivergenceDetector` (Jensen–Shannon divergence between ``softmax(f(x)/T)`` and
  ``softmax(f(AE(x))/T)``).
* :class:`MagNet` — ``forward(x) = model(reformer(x))`` (logits of the reformed input, an
  ordinary differentiable ``nn.Module``), :meth:`MagNet.detect` → boolean flags,
  :meth:`MagNet.predict_with_detection` → ``(labels, flags)``.

Thresholds (:meth:`MagNet.fit`): on clean validation images, each detector's score is mapped to
its empirical CDF over the validation scores (stored), the combined score of an image is the
maximum of these CDF values over the detectors, and the threshold is the ``(1 − fpr)``
empirical quantile of the combined validation scores, chosen so that **exactly**
``floor(fpr·n)`` of the ``n`` validation images are flagged when their scores are distinct.
With one detector this is the usual "threshold at the (1 − fpr) quantile of clean scores"; with
several detectors it calibrates the **union** of the detectors (an image is flagged when any
detector is beyond its own CDF level), so the configured FPR is the overall false-positive rate
— MagNet's paper instead sets each detector separately, which makes the overall rate larger
than the per-detector one.

Attack success against MagNet (:func:`magnet_fooling_rate`): over the clean inputs MagNet
classifies correctly, an adversarial input counts as successful only when it is misclassified
**and** not flagged by any detector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils import check_int_at_least, check_nonnegative, check_positive

__all__ = ["Autoencoder", "train_autoencoder", "ReconstructionDetector", "DivergenceDetector",
           "MagNet", "MagNetFooling", "magnet_fooling_rate", "check_fpr"]


def check_fpr(fpr: float) -> float:
    """``ValueError`` unless ``fpr`` is a number strictly between 0 and 1."""
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not (0.0 < fpr < 1.0):
        raise ValueError(f"fpr must be a number in the open interval (0, 1), got {fpr!r}")
    return float(fpr)


class Autoencoder(nn.Module):
    """MagNet's convolutional autoencoder with sigmoid activations; output in ``(0, 1)``.

    ``pool=True`` (MagNet MNIST "autoencoder I"): conv3×3(C→w)–σ, avgpool2, conv3×3(w→w)–σ,
    conv3×3(w→w)–σ, upsample×2 (to the input size), conv3×3(w→w)–σ, conv3×3(w→C)–σ.
    ``pool=False`` ("autoencoder II"): conv(C→w)–σ, conv(w→w)–σ, conv(w→C)–σ.

    ``activation="relu"`` replaces the hidden sigmoids by leaky ReLUs (slope 0.1; the output
    stays a sigmoid):
    it trains in a few epochs where the sigmoid version needs MagNet's ~100 epochs to leave the
    "mean image" plateau.

    Shapes: ``N×C×H×W`` in ``[0, 1]`` → same shape in ``(0, 1)``; differentiable.
    """

    def __init__(self, channels: int = 1, *, width: int = 3, pool: bool = True,
                 activation: str = "sigmoid") -> None:
        super().__init__()
        check_int_at_least("channels", channels, 1)
        check_int_at_least("width", width, 1)
        if activation not in ("sigmoid", "relu"):
            raise ValueError(f"activation must be 'sigmoid' or 'relu', got {activation!r}")
        self.channels, self.width, self.pool = channels, width, bool(pool)
        self.activation = activation

        def conv(a: int, b: int) -> nn.Conv2d:
            return nn.Conv2d(a, b, 3, padding=1)

        def act() -> nn.Module:
            return nn.Sigmoid() if activation == "sigmoid" else nn.LeakyReLU(0.1)

        if self.pool:
            self.encoder = nn.Sequential(conv(channels, width), act(),
                                         nn.AvgPool2d(2, ceil_mode=True),
                                         conv(width, width), act())
            self.decoder = nn.Sequential(conv(width, width), act())
            self.out = nn.Sequential(conv(width, width), act(), conv(width, channels),
                                     nn.Sigmoid())
        else:
            self.encoder = nn.Sequential(conv(channels, width), act(),
                                         conv(width, width), act())
            self.decoder = nn.Identity()
            self.out = nn.Sequential(conv(width, channels), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        h = self.decoder(self.encoder(x))
        if self.pool:
            h = F.interpolate(h, size=x.shape[-2:], mode="nearest")
        return self.out(h)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, width={self.width}, pool={self.pool}, "
                f"activation={self.activation!r}")


def train_autoencoder(ae: nn.Module, x: Tensor, *, noise: float = 0.1, epochs: int = 10,
                      lr: float = 1e-3, weight_decay: float = 1e-9, batch_size: int = 128,
                      seed: int = 0) -> list[float]:
    """Train ``ae`` in place: MSE between ``ae(clamp(x + noise·N(0, I), 0, 1))`` and ``x``.

    Adam (``lr``, ``weight_decay``: MagNet's L2 regulariser 1e-9); seeded shuffling and noise.
    Returns the mean training loss of every epoch (the model ends in eval mode).
    """
    check_nonnegative("noise", noise)
    check_int_at_least("epochs", epochs, 0)
    check_positive("lr", lr)
    check_int_at_least("batch_size", batch_size, 1)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"x must be a non-empty N×C×H×W tensor, got shape {tuple(x.shape)}")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(ae.parameters(), lr=lr, weight_decay=weight_decay)
    losses: list[float] = []
    for _ in range(epochs):
        ae.train()
        order = torch.randperm(len(x), generator=g)
        tot, nb = 0.0, 0
        for s in range(0, len(x), batch_size):
            xb = x[order[s:s + batch_size]]
            nz = torch.randn(xb.shape, generator=g, dtype=xb.dtype).to(xb.device)
            loss = F.mse_loss(ae((xb + noise * nz).clamp(0.0, 1.0)), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach())
            nb += 1
        losses.append(tot / max(nb, 1))
    ae.eval()
    return losses


class ReconstructionDetector(nn.Module):
    """Score ``mean over pixels of |x − AE(x)|^p`` (``p = 1``: L1, ``p = 2``: L2 / MSE)."""

    def __init__(self, autoencoder: nn.Module, *, p: int = 2) -> None:
        super().__init__()
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p!r}")
        self.autoencoder, self.p = autoencoder, p

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.autoencoder(x)).abs().pow(self.p).flatten(1).mean(1)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DivergenceDetector(nn.Module):
    """Score ``JSD(softmax(f(x)/T) ‖ softmax(f(AE(x))/T))`` (natural log; in ``[0, log 2]``)."""

    def __init__(self, autoencoder: nn.Module, model: nn.Module, *,
                 temperature: float = 10.0) -> None:
        super().__init__()
        self.autoencoder, self.model = autoencoder, model
        self.temperature = check_positive("temperature", temperature)

    def forward(self, x: Tensor) -> Tensor:
        p = F.softmax(self.model(x) / self.temperature, dim=1)
        q = F.softmax(self.model(self.autoencoder(x)) / self.temperature, dim=1)
        m = 0.5 * (p + q)

        def kl(a: Tensor, b: Tensor) -> Tensor:
            return (a * (a.clamp_min(1e-12).log() - b.clamp_min(1e-12).log())).sum(1)

        return 0.5 * kl(p, m) + 0.5 * kl(q, m)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class MagNet(nn.Module):
    """MagNet-defended classifier: logits of ``model(reformer(x))`` plus a detector.

    Args:
        model: the classifier (pixel-space input, logits out).
        reformer: autoencoder applied before the classifier (``None``: no reformer).
        detectors: score modules (e.g. :class:`ReconstructionDetector`,
            :class:`DivergenceDetector`); may be empty (then nothing is ever flagged).

    Call :meth:`fit` on clean validation images before :meth:`detect`. ``forward`` does not
    need it (white-box attacks differentiate through the reformer and the classifier).
    """

    def __init__(self, model: nn.Module, reformer: nn.Module | None = None,
                 detectors: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.model = model
        self.reformer = reformer if reformer is not None else nn.Identity()
        self.detectors = nn.ModuleList(detectors)
        self.fpr: float | None = None
        self.register_buffer("threshold", torch.tensor(float("nan"), dtype=torch.float64))
        self._val_scores: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.reformer(x))

    @torch.no_grad()
    def scores(self, x: Tensor, batch_size: int = 500) -> Tensor:
        """Raw detector scores ``(N, D)`` (one column per detector)."""
        if not len(self.detectors):
            return torch.zeros(x.shape[0], 0, device=x.device)
        cols = []
        for s in range(0, x.shape[0], batch_size):
            xb = x[s:s + batch_size]
            cols.append(torch.stack([d(xb) for d in self.detectors], dim=1))
        return torch.cat(cols).double()

    def _combined(self, raw: Tensor) -> Tensor:
        """Max over detectors of the empirical CDF of each score among the validation scores
        (ties of the maximum broken by the mean CDF, a term smaller than one CDF step)."""
        if raw.shape[1] == 0:
            return torch.zeros(raw.shape[0], dtype=torch.float64, device=raw.device)
        cdfs = []
        for j, val in enumerate(self._val_scores):
            v = val.to(raw.device)
            cdfs.append(torch.searchsorted(v, raw[:, j].contiguous(), right=True).double()
                        / len(v))
        c = torch.stack(cdfs, 1)
        n = max(len(v) for v in self._val_scores)
        return c.amax(1) + c.mean(1) / (2.0 * n + 2.0)

    def fit(self, x_val: Tensor, *, fpr: float = 0.01) -> MagNet:
        """Set the detection threshold on clean images ``x_val`` at false-positive rate ``fpr``
        (``ValueError`` unless ``0 < fpr < 1``). Returns ``self``."""
        self.fpr = check_fpr(fpr)
        if x_val.ndim != 4 or len(x_val) == 0:
            raise ValueError("x_val must be a non-empty N×C×H×W tensor of clean images")
        was = self.training
        self.eval()
        raw = self.scores(x_val)
        self.train(was)
        self._val_scores = [raw[:, j].sort().values.cpu() for j in range(raw.shape[1])]
        comb = self._combined(raw).sort(descending=True).values
        k = math.floor(fpr * len(comb))  # flag exactly the k largest (strictly above the next)
        thr = comb[k] if k < len(comb) else comb[-1]
        self.threshold = torch.tensor(float(thr), dtype=torch.float64,
                                      device=self.threshold.device)
        return self

    @torch.no_grad()
    def detect(self, x: Tensor) -> Tensor:
        """Boolean flags ``(N,)``: ``True`` = detected as adversarial (needs :meth:`fit`)."""
        if len(self.detectors) == 0:
            return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        if self.fpr is None:
            raise RuntimeError("MagNet.detect needs thresholds: call fit(x_val, fpr=...) first")
        was = self.training
        self.eval()
        try:
            comb = self._combined(self.scores(x))
        finally:
            self.train(was)
        return (comb > float(self.threshold)).to(x.device)

    @torch.no_grad()
    def predict_with_detection(self, x: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
        """``(labels, flags)``: predictions on the reformed input and the detection flags."""
        was = self.training
        self.eval()
        try:
            labels = torch.cat([self(x[s:s + batch_size]).argmax(1)
                                for s in range(0, x.shape[0], batch_size)])
        finally:
            self.train(was)
        return labels, self.detect(x)

    def extra_repr(self) -> str:
        return f"fpr={self.fpr}"


@dataclass
class MagNetFooling:
    """Fooling rate against MagNet: ``rate`` = fraction of the used inputs (clean input
    classified correctly) whose adversarial version is misclassified **and** not flagged;
    ``misclassified`` = fraction misclassified regardless of the detector; ``detected`` =
    fraction of adversarial inputs flagged; ``clean_flagged`` = fraction of used clean inputs
    flagged (false positives)."""

    rate: float
    misclassified: float
    detected: float
    clean_flagged: float
    n_used: int


def magnet_fooling_rate(magnet: MagNet, x: Tensor, x_adv: Tensor, y: Tensor) -> MagNetFooling:
    """Attack success against ``magnet`` (see :class:`MagNetFooling`)."""
    pc, fc = magnet.predict_with_detection(x)
    pa, fa = magnet.predict_with_detection(x_adv)
    used = pc == y
    n = int(used.sum())
    if n == 0:
        nan = float("nan")
        return MagNetFooling(nan, nan, nan, nan, 0)

    def frac(m: Tensor) -> float:
        return float((m & used).sum()) / n

    return MagNetFooling(rate=frac((pa != y) & ~fa), misclassified=frac(pa != y),
                         detected=frac(fa), clean_flagged=frac(fc), n_used=n)
