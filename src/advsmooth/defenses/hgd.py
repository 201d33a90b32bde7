"""High-level representation guided denoiser (HGD; Liao et al. 2018).

A small U-Net-style encoder–decoder :class:`Denoiser` predicts the adversarial noise ``n̂(x)``
of an image and returns ``clamp(x − n̂(x), 0, 1)`` (``[0, 1]`` in and out). It is trained by
:func:`train_hgd` so that the *target model's* high-level representation of the denoised
adversarial image matches that of the clean image:

``L = || h(D(x_adv)) − h(x) ||₁``  (mean over elements)

with ``h`` the model's logits (``layer="logits"``: LGD in the paper) or the output of a named
sub-module (``layer="linear1"``: FGD, feature guided; captured with a forward hook). The target
model is never updated. The adversarial training set is crafted **once** before training, on
the target model, by FGSM or IGSM with a per-image ε drawn uniformly from ``eps`` (a number or
a ``(low, high)`` range; the paper draws ε ∈ [1, 16]/255 on ImageNet), so the set contains
images from barely to strongly perturbed.

The defended classifier is ``HGDDefended(denoiser, model)`` — an ``nn.Sequential`` (denoiser
then model), an ordinary differentiable module: attacks can target it directly (white-box) or be
crafted on the bare model and transferred to it (zero-knowledge, the paper's setting).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._tensors import frozen_model
from .._utils import check_int_at_least, check_positive, progress
from ..attacks import IGSM

__all__ = ["Denoiser", "HGDDefended", "HGDResult", "train_hgd", "representation",
           "layer_names", "craft_training_set"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class Denoiser(nn.Module):
    """U-Net-style denoiser: ``D(x) = clamp(x − n̂(x), 0, 1)``.

    ``depth`` encoder blocks (two 3×3 conv + BN + ReLU each; the channel count doubles per level
    from ``width``) separated by 2×2 average pooling, a bottleneck block, and a decoder that
    upsamples (bilinear, to the skip's size, so odd sizes such as 7×7 work), concatenates the
    encoder feature map of the same level (skip connection) and applies a block; a final 1×1
    convolution predicts the noise ``n̂`` (initialised to zero, so an untrained denoiser is the
    identity on ``[0, 1]`` images).

    Args:
        channels: image channels C (1 for MNIST).
        width: channels of the first level.
        depth: number of down-sampling levels (≥ 1).

    Shapes: ``N×C×H×W`` in ``[0, 1]`` → ``N×C×H×W`` in ``[0, 1]``. Differentiable w.r.t. the
    input (``clamp`` passes the gradient where the output is inside the box).
    """

    def __init__(self, channels: int = 1, *, width: int = 16, depth: int = 2) -> None:
        super().__init__()
        check_int_at_least("channels", channels, 1)
        check_int_at_least("width", width, 1)
        check_int_at_least("depth", depth, 1)
        self.channels, self.width, self.depth = channels, width, depth
        widths = [width * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c = channels
        for w in widths[:-1]:
            self.down.append(_block(c, w))
            c = w
        self.bottleneck = _block(c, widths[-1])
        self.up = nn.ModuleList(
            _block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], channels, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def noise(self, x: Tensor) -> Tensor:
        """The predicted adversarial noise ``n̂(x)`` (same shape as ``x``)."""
        skips = []
        h = x
        for blk in self.down:
            h = blk(h)
            skips.append(h)
            h = F.avg_pool2d(h, 2, ceil_mode=True)
        h = self.bottleneck(h)
        for blk, skip in zip(self.up, reversed(skips)):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = blk(torch.cat([h, skip], dim=1))
        return self.head(h)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.noise(x)).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, width={self.width}, depth={self.depth}"


class HGDDefended(nn.Sequential):
    """``nn.Sequential(denoiser, model)``: the HGD-defended classifier (logits of ``D(x)``)."""

    def __init__(self, denoiser: nn.Module, model: nn.Module) -> None:
        super().__init__(denoiser, model)

    @property
    def denoiser(self) -> nn.Module:
        return self[0]

    @property
    def model(self) -> nn.Module:
        return self[1]


def layer_names(model: nn.Module) -> list[str]:
    """Valid ``layer`` values for :func:`representation`: ``"logits"`` and every named
    sub-module of ``model``."""
    return ["logits"] + [n for n, _ in model.named_modules() if n]


def representation(model: nn.Module, x: Tensor, layer: str = "logits") -> Tensor:
    """``model``'s representation of ``x``: its output (``"logits"``) or the output of the named
    sub-module (captured with a forward hook). ``ValueError`` listing the valid names for an
    unknown ``layer``."""
    if layer == "logits":
        return model(x)
    mods = dict(model.named_modules())
    if not layer or layer not in mods:
        raise ValueError(f"unknown layer {layer!r}; valid names: {', '.join(layer_names(model))}")
    captured: list[Tensor] = []

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        captured.append(out[0] if isinstance(out, (tuple, list)) else out)

    handle = mods[layer].register_forward_hook(hook)
    try:
        model(x)
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"layer {layer!r} was not called in the forward pass")
    return captured[-1]


def _eps_range(eps: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(eps, (int, float)) and not isinstance(eps, bool):
        lo = hi = float(eps)
    elif isinstance(eps, Sequence) and len(eps) == 2:
        lo, hi = float(eps[0]), float(eps[1])
    else:
        raise ValueError(f"eps must be a number or a (low, high) pair, got {eps!r}")
    if not (0.0 <= lo <= hi) or hi == float("inf"):
        raise ValueError(f"eps must satisfy 0 <= low <= high < inf, got {eps!r}")
    return lo, hi


def craft_training_set(model: nn.Module, x: Tensor, y: Tensor, *, attack: str = "fgsm",
                       eps: float | Sequence[float] = (0.0, 0.3), steps: int = 10,
                       batch_size: int = 256, seed: int = 0) -> Tensor:
    """Adversarial images for HGD training: FGSM or IGSM (α = 2.5·ε/steps) on ``model`` with a
    per-image ε ~ U[low, high] (seeded); every image is perturbed, clamped to ``[0, 1]``
    (:meth:`advsmooth.attacks.IGSM.perturb` with per-sample radii)."""
    if attack not in ("fgsm", "igsm"):
        raise ValueError(f"attack must be 'fgsm' or 'igsm', got {attack!r}")
    lo, hi = _eps_range(eps)
    check_int_at_least("steps", steps, 1)
    g = torch.Generator().manual_seed(seed)
    eps_i = (lo + (hi - lo) * torch.rand(x.shape[0], generator=g, dtype=torch.float64)).to(x)
    engine = IGSM(eps=hi, steps=1 if attack == "fgsm" else steps)
    out = []
    for s in range(0, x.shape[0], batch_size):
        e = eps_i[s:s + batch_size]
        out.append(engine.perturb(model, x[s:s + batch_size], y[s:s + batch_size], eps=e,
                                  alpha=e if attack == "fgsm" else 2.5 * e / steps))
    return torch.cat(out) if out else x.clone()


@dataclass
class HGDResult:
    """What :func:`train_hgd` returns: the denoiser (trained in place, eval mode), the loss per
    epoch (mean over batches), the first batch's loss before any update, the wall time (s) of
    crafting and of training."""

    denoiser: Denoiser
    losses: list[float] = field(default_factory=list)
    initial_loss: float = float("nan")
    craft_seconds: float = 0.0
    train_seconds: float = 0.0


def train_hgd(denoiser: nn.Module, model: nn.Module, data: tuple[Tensor, Tensor], *,
              layer: str = "logits", attack: str = "fgsm",
              eps: float | Sequence[float] = (0.0, 0.3), steps: int = 10,
              x_adv: Tensor | None = None, epochs: int = 5, lr: float = 1e-3,
              batch_size: int = 64, seed: int = 0, show_progress: bool = False) -> HGDResult:
    """Train ``denoiser`` in place so that ``h(D(x_adv)) ≈ h(x)`` for the frozen ``model``.

    Args:
        denoiser: e.g. :class:`Denoiser` (any module mapping images to images).
        model: the classifier to protect; frozen (eval mode, no parameter gradients) throughout,
            its flags restored afterwards.
        data: clean training images ``N×C×H×W`` in ``[0, 1]`` and labels ``(N,)``.
        layer: ``"logits"`` (LGD) or the name of a sub-module of ``model`` (FGD); unknown names
            raise ``ValueError`` listing the valid ones (checked before any work).
        attack, eps, steps: how the adversarial set is crafted (:func:`craft_training_set`),
            unless ``x_adv`` (same shape as the images) is given.
        epochs, lr, batch_size, seed: Adam; the shuffling order is seeded.

    Returns:
        :class:`HGDResult` (loss = mean |h(D(x_adv)) − h(x)| per epoch).
    """
    x, y = data
    if layer != "logits" and layer not in dict(model.named_modules()) or not layer:
        raise ValueError(f"unknown layer {layer!r}; valid names: {', '.join(layer_names(model))}")
    check_int_at_least("epochs", epochs, 0)
    check_positive("lr", lr)
    check_int_at_least("batch_size", batch_size, 1)
    if x.ndim != 4 or len(y) != len(x) or len(x) == 0:
        raise ValueError("data must be non-empty (x N×C×H×W, y (N,))")
    t0 = time.perf_counter()
    if x_adv is None:
        x_adv = craft_training_set(model, x, y, attack=attack, eps=eps, steps=steps, seed=seed)
    elif x_adv.shape != x.shape:
        raise ValueError(f"x_adv must have the images' shape {tuple(x.shape)}, got "
                         f"{tuple(x_adv.shape)}")
    craft_s = time.perf_counter() - t0
    res = HGDResult(denoiser=denoiser, craft_seconds=craft_s)  # type: ignore[arg-type]
    opt = torch.optim.Adam([p for p in denoiser.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    with frozen_model(model):
        with torch.no_grad():
            target = torch.cat([representation(model, x[s:s + 512], layer)
                                for s in range(0, len(x), 512)])
        for epoch in range(epochs):
            denoiser.train()
            order = torch.randperm(len(x), generator=g)
            tot, nb = 0.0, 0
            starts = range(0, len(x), batch_size)
            for s in progress(starts, total=len(starts), desc=f"hgd epoch {epoch + 1}",
                              enabled=show_progress):
                idx = order[s:s + batch_size]
                rep = representation(model, denoiser(x_adv[idx]), layer)
                loss = (rep - target[idx]).abs().mean()
                if epoch == 0 and nb == 0:
                    res.initial_loss = float(loss.detach())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot += float(loss.detach())
                nb += 1
            res.losses.append(tot / max(nb, 1))
    denoiser.eval()
    res.train_seconds = time.perf_counter() - t0
    return res
