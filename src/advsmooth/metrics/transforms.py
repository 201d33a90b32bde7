"""Image transformations for destruction-rate measurements (Kurakin et al.; docs/algorithms.md).

Every transform maps a batch ``N×C×H×W`` in ``[0, 1]`` to a batch of the same shape, dtype and
device in ``[0, 1]``, never modifies its input and never touches the global RNG:

* :class:`Rotation` ``(degrees)`` — bilinear rotation about the image centre, zero fill
  (``affine_grid`` / ``grid_sample``); positive angles rotate counter-clockwise as displayed.
* :class:`GaussianNoise` ``(std, seed)`` — ``clamp(x + std·n, 0, 1)``, ``n ~ N(0, I)`` drawn from a
  generator seeded with ``seed`` at every call (same input → same output).
* :class:`GaussianBlur` ``(sigma)`` — :class:`advsmooth.filters.LowPassFilter` Gaussian of std
  ``sigma`` pixels with replicate padding.
* :class:`JPEG` ``(quality)`` — a real JPEG encode/decode with Pillow at ``quality`` (1–100), after
  8-bit quantisation (``round(255·x)``); 1-channel images as greyscale, 3-channel as RGB.

Strength 0 is the identity for rotation, noise and blur (returned as an exact copy).
:func:`make_transform` builds one from a kind name and a strength.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._utils import check_nonnegative, make_generator

__all__ = [
    "Transform",
    "Identity",
    "Rotation",
    "GaussianNoise",
    "GaussianBlur",
    "JPEG",
    "TRANSFORM_KINDS",
    "make_transform",
    "default_strengths",
]


class Transform:
    """Base class: ``transform(x) -> x'`` with the same shape, in ``[0, 1]``."""

    kind: str = "transform"
    strength: float = 0.0

    def __call__(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"x must have shape N×C×H×W, got {tuple(x.shape)}")
        return self.apply(x.detach())

    def apply(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.strength!r})"


class Identity(Transform):
    """The identity (a copy of the input)."""

    kind = "identity"

    def apply(self, x: Tensor) -> Tensor:
        return x.clone()

    def __repr__(self) -> str:
        return "Identity()"


class Rotation(Transform):
    """Rotate by ``degrees`` about the centre (bilinear, zero fill)."""

    kind = "rotation"

    def __init__(self, degrees: float) -> None:
        if isinstance(degrees, bool) or not isinstance(degrees, (int, float)) \
                or not math.isfinite(degrees):
            raise ValueError(f"degrees must be a finite number, got {degrees!r}")
        self.strength = float(degrees)

    def apply(self, x: Tensor) -> Tensor:
        if self.strength % 360.0 == 0.0:
            return x.clone()
        n, _, h, w = x.shape
        a = math.radians(self.strength)
        c, s = math.cos(a), -math.sin(a)
        # output normalised coords (u, v) -> input coords: inverse rotation in pixel units
        # (image rows point down, so a counter-clockwise turn as displayed has this sign)
        theta = torch.tensor([[c, s * h / w, 0.0], [-s * w / h, c, 0.0]], dtype=x.dtype,
                             device=x.device)
        grid = F.affine_grid(theta.expand(n, 2, 3), list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.clamp(0.0, 1.0)


class GaussianNoise(Transform):
    """Additive Gaussian noise of std ``std`` (pixel units), then clamp to ``[0, 1]``."""

    kind = "noise"

    def __init__(self, std: float, seed: int = 0) -> None:
        self.strength = check_nonnegative("std", std)
        self.seed = int(seed)

    def apply(self, x: Tensor) -> Tensor:
        if self.strength == 0:
            return x.clone()
        gen = make_generator(self.seed, x.device)
        noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return (x + self.strength * noise).clamp(0.0, 1.0)

    def __repr__(self) -> str:
        return f"GaussianNoise({self.strength!r}, seed={self.seed})"


class GaussianBlur(Transform):
    """Gaussian blur of std ``sigma`` pixels (``LowPassFilter``, replicate padding)."""

    kind = "blur"

    def __init__(self, sigma: float) -> None:
        self.strength = check_nonnegative("sigma", sigma)
        self._filter = None
        if self.strength > 0:
            from ..filters import LowPassFilter

            self._filter = LowPassFilter("gaussian", self.strength, padding="replicate")

    def apply(self, x: Tensor) -> Tensor:
        if self._filter is None:
            return x.clone()
        return self._filter(x).clamp(0.0, 1.0)


class JPEG(Transform):
    """JPEG encode/decode with Pillow at ``quality`` (1–100) after 8-bit quantisation."""

    kind = "jpeg"

    def __init__(self, quality: int) -> None:
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) \
                or not 1 <= int(quality) <= 100:
            raise ValueError(f"quality must be an integer in [1, 100], got {quality!r}")
        self.strength = int(quality)

    def apply(self, x: Tensor) -> Tensor:
        from PIL import Image

        n, c, h, w = x.shape
        if c not in (1, 3):
            raise ValueError(f"JPEG needs 1 or 3 channels, got {c}")
        arr = (x.detach().cpu().double() * 255.0).round().clamp(0, 255).to(torch.uint8)
        arr = arr.permute(0, 2, 3, 1).numpy()
        out = np.empty_like(arr)
        for i in range(n):
            img = Image.fromarray(arr[i, :, :, 0] if c == 1 else arr[i],
                                  mode="L" if c == 1 else "RGB")
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=self.strength)
            buf.seek(0)
            dec = np.asarray(Image.open(buf).convert("L" if c == 1 else "RGB"))
            out[i] = dec[:, :, None] if c == 1 else dec
        res = torch.from_numpy(out).permute(0, 3, 1, 2).to(dtype=x.dtype, device=x.device)
        return res / 255.0


#: kind name -> transform class
TRANSFORM_KINDS: dict[str, type[Transform]] = {
    "rotation": Rotation,
    "noise": GaussianNoise,
    "blur": GaussianBlur,
    "jpeg": JPEG,
}


def make_transform(kind: str, strength: float, *, seed: int = 0) -> Transform:
    """Build a transform: ``kind`` in ``TRANSFORM_KINDS`` (or ``"identity"``) at ``strength``
    (degrees / noise std / blur σ in pixels / JPEG quality)."""
    if kind == "identity":
        return Identity()
    if kind not in TRANSFORM_KINDS:
        raise ValueError(f"kind must be one of {('identity', *TRANSFORM_KINDS)}, got {kind!r}")
    if kind == "noise":
        return GaussianNoise(strength, seed=seed)
    if kind == "jpeg":
        return JPEG(int(strength))
    return TRANSFORM_KINDS[kind](strength)


def default_strengths(kind: str) -> list[float]:
    """Strength grids of the destruction-rate curves (sg transfer paper Fig. 5 analogue)."""
    grids = {
        "rotation": [0, 2.5, 5, 7.5, 10, 15, 20, 30],
        "noise": [0, 2 / 255, 5 / 255, 10 / 255, 15 / 255, 20 / 255, 30 / 255],
        "blur": [0, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5],
        "jpeg": [100, 90, 75, 50, 30, 20, 10],
    }
    if kind not in grids:
        raise ValueError(f"kind must be one of {tuple(grids)}, got {kind!r}")
    return list(grids[kind])
