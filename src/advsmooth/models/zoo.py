"""Model architectures: MLP, LeNet (advertorch layout), LeNet-5, CIFAR ResNet (6n+2, option A),
VGG and WideResNet, plus :class:`Normalize` and :func:`create`.

Every network maps a float batch ``N×C×H×W`` to logits ``N×K``. Parameter names of
:class:`MLP`, :class:`LeNet` and :class:`CifarResNet` match the checkpoints in
``../shared/models`` so that they load with ``strict=True``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils import check_int_at_least, did_you_mean

__all__ = [
    "Normalize",
    "Normalized",
    "MLP",
    "LeNet",
    "LeNet5",
    "CifarResNet",
    "VGG",
    "WideResNet",
    "ARCHITECTURES",
    "create",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel: put a model's preprocessing inside the model.

    ``mean`` and ``std`` are sequences of length ``C`` (or scalars); they are stored as
    buffers of shape ``1×C×1×1`` (saved in the state dict) and follow ``.to(device)``.
    """

    def __init__(self, mean: Sequence[float] | float, std: Sequence[float] | float) -> None:
        super().__init__()
        m = torch.as_tensor(mean, dtype=torch.float32).flatten()
        s = torch.as_tensor(std, dtype=torch.float32).flatten()
        if m.numel() != s.numel() and 1 not in (m.numel(), s.numel()):
            raise ValueError(f"mean and std must have the same length, got {m.numel()} and "
                             f"{s.numel()}")
        if not bool((s > 0).all()):
            raise ValueError(f"std must be > 0, got {s.tolist()}")
        self.register_buffer("mean", m.view(1, -1, 1, 1))
        self.register_buffer("std", s.view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        m = ", ".join(f"{v:.4g}" for v in self.mean.flatten().tolist())
        s = ", ".join(f"{v:.4g}" for v in self.std.flatten().tolist())
        return f"mean=({m}), std=({s})"


class Normalized(nn.Module):
    """A network preceded by :class:`Normalize`: takes ``[0, 1]`` pixels.

    The inner network is ``.net`` (its state dict is what checkpoints hold); the wrapper's own
    state-dict keys are ``normalize.mean``, ``normalize.std`` and ``net.*``.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float] | float,
                 std: Sequence[float] | float) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.normalize(x))


# ----------------------------------------------------------------------------------------------
# MLP and LeNets
# ----------------------------------------------------------------------------------------------

class MLP(nn.Module):
    """Fully connected network: flatten → [Linear → ReLU]* → Linear.

    Layers are named ``linear1``, ``linear2``, ... (the advertorch MNIST MLP layout; the default
    ``hidden=(300, 100)`` on 1×28×28 is ``mnist_mlp300_100.pt``).
    """

    def __init__(self, in_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
                 hidden: Sequence[int] = (300, 100)) -> None:
        super().__init__()
        dims = [math.prod(in_shape), *hidden, num_classes]
        self.depth = len(dims) - 1
        for i in range(self.depth):
            setattr(self, f"linear{i + 1}", nn.Linear(dims[i], dims[i + 1]))

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(1)
        for i in range(1, self.depth + 1):
            h = getattr(self, f"linear{i}")(h)
            if i < self.depth:
                h = F.relu(h)
        return h


class LeNet(nn.Module):
    """The advertorch MNIST CNN ("LeNet5" there): conv3×3(32) → ReLU → pool2 → conv3×3(64) →
    ReLU → pool2 → Linear(200) → ReLU → Linear(K). Keys ``conv1, conv2, linear1, linear2``
    (``mnist_lenet_clean.pt`` / ``mnist_lenet_pgdadv.pt``)."""

    def __init__(self, in_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
                 channels: tuple[int, int] = (32, 64), hidden: int = 200) -> None:
        super().__init__()
        c, h, w = in_shape
        self.conv1 = nn.Conv2d(c, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.linear1 = nn.Linear(channels[1] * (h // 4) * (w // 4), hidden)
        self.linear2 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.linear2(F.relu(self.linear1(x.flatten(1))))


class LeNet5(nn.Module):
    """Classic LeNet-5 (LeCun et al. 1998) with ReLU and max pooling: conv5×5(6, pad 2) → pool →
    conv5×5(16) → pool → 120 → 84 → K."""

    def __init__(self, in_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10) -> None:
        super().__init__()
        c, h, w = in_shape
        self.conv1 = nn.Conv2d(c, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        hh, ww = (h // 2 - 4) // 2, (w // 2 - 4) // 2
        if hh < 1 or ww < 1:
            raise ValueError(f"LeNet5 needs inputs of at least 12×12, got {h}×{w}")
        self.fc1 = nn.Linear(16 * hh * ww, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


# ----------------------------------------------------------------------------------------------
# CIFAR ResNet (He et al. 2016, option A shortcuts; akamaster layout)
# ----------------------------------------------------------------------------------------------

class _ShortcutA(nn.Module):
    """Parameter-free shortcut: subsample by 2 and zero-pad channels (``planes // 4`` each side)."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            if planes - in_planes != 2 * (planes // 4) or stride != 2:
                raise ValueError("option-A shortcut needs stride 2 and planes == 2 * in_planes")
            self.shortcut: nn.Module = _ShortcutA(planes // 4)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth ``6n+2`` (20, 32, 44, 56, 110, ...) with option-A shortcuts.

    Keys ``conv1, bn1, layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}, linear`` (akamaster layout, the
    shared ``cifar10_resnet*.pt`` files). Works for any input size ≥ 4×4 (global average pool).
    """

    def __init__(self, depth: int = 20, in_shape: Sequence[int] = (3, 32, 32),
                 num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 44, 56, ...), got {depth}")
        if width % 4:
            raise ValueError(f"width must be a multiple of 4, got {width}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_shape[0], width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._stage(width, width, n, 1)
        self.layer2 = self._stage(width, 2 * width, n, 2)
        self.layer3 = self._stage(2 * width, 4 * width, n, 2)
        self.linear = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


# ----------------------------------------------------------------------------------------------
# VGG
# ----------------------------------------------------------------------------------------------

VGG_CONFIGS: dict[str, list[int | str]] = {
    "small": [32, 32, "M", 64, 64, "M", 128, 128, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
}


class VGG(nn.Module):
    """VGG with BatchNorm (3×3 convs, 2×2 max pools with ``ceil_mode`` so any input ≥ 1×1 works),
    global average pool and one linear classifier. ``config`` in ``small, vgg11, vgg13, vgg16``."""

    def __init__(self, config: str = "small", in_shape: Sequence[int] = (3, 32, 32),
                 num_classes: int = 10, batch_norm: bool = True) -> None:
        super().__init__()
        if config not in VGG_CONFIGS:
            raise ValueError(f"config must be one of {tuple(VGG_CONFIGS)}, got {config!r}")
        layers: list[nn.Module] = []
        c = in_shape[0]
        for v in VGG_CONFIGS[config]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                assert isinstance(v, int)
                layers.append(nn.Conv2d(c, v, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(v))
                layers.append(nn.ReLU(inplace=True))
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


# ----------------------------------------------------------------------------------------------
# WideResNet (Zagoruyko & Komodakis 2016), pre-activation blocks
# ----------------------------------------------------------------------------------------------

class _WideBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = (nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
                         if stride != 1 or in_planes != planes else None)

    def forward(self, x: Tensor) -> Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.dropout > 0:
            y = F.dropout(y, p=self.dropout, training=self.training)
        y = self.conv2(y)
        return y + (self.shortcut(o) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """WRN-depth-width: ``depth = 6n + 4`` (16, 22, 28, 34, ...), widths 16·k, 32·k, 64·k."""

    def __init__(self, depth: int = 16, width: int = 4, in_shape: Sequence[int] = (3, 32, 32),
                 num_classes: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n+4 with n >= 1 (16, 22, 28, 34, ...), got {depth}")
        check_int_at_least("width", width, 1)
        n = (depth - 4) // 6
        w = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_shape[0], w[0], 3, padding=1, bias=False)
        self.block1 = self._group(w[0], w[1], n, 1, dropout)
        self.block2 = self._group(w[1], w[2], n, 2, dropout)
        self.block3 = self._group(w[2], w[3], n, 2, dropout)
        self.bn = nn.BatchNorm2d(w[3])
        self.fc = nn.Linear(w[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @staticmethod
    def _group(i: int, o: int, n: int, stride: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(*[_WideBlock(i if k == 0 else o, o, stride if k == 0 else 1, dropout)
                               for k in range(n)])

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


# ----------------------------------------------------------------------------------------------
# factory
# ----------------------------------------------------------------------------------------------

ARCHITECTURES = ("mlp", "fc", "lenet", "lenet5", "resnet<6n+2>", "vgg-small", "vgg11", "vgg13",
                 "vgg16", "wrn-<depth>-<width>")


def _check_fits(net: nn.Module, arch: str, shape: tuple[int, ...]) -> None:
    """``ValueError`` when ``net`` cannot run on one ``shape`` image (e.g. too small for its
    pooling layers): one forward on zeros, in eval mode, so no statistics change."""
    was = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, *shape))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"architecture {arch!r} cannot take {'x'.join(map(str, shape))} inputs "
                         f"(C×H×W): {first}") from None
    finally:
        net.train(was)


def create(arch: str, in_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, *,
           mean: Sequence[float] | float | None = None, std: Sequence[float] | float | None = None,
           **kwargs: Any) -> nn.Module:
    """Build an untrained network by architecture name (global RNG initialises the weights).

    ``arch``: ``mlp``/``fc`` (``hidden=``), ``lenet`` (advertorch CNN), ``lenet5`` (classic),
    ``resnet20``/``resnet32``/... or ``resnet`` with ``depth=`` (CIFAR ResNet, ``width=``),
    ``vgg-small``/``vgg11``/``vgg13``/``vgg16``, ``wrn-16-4`` or ``wrn`` with ``depth=``,
    ``width=``. ``in_shape`` is ``C×H×W``. With ``mean``/``std`` the network is wrapped in
    :class:`Normalized`. Returns a module in train mode mapping ``N×C×H×W`` to ``N×K`` logits.
    """
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a string, got {type(arch).__name__}")
    shape = tuple(int(v) for v in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"in_shape must be (C, H, W) with positive entries, got {in_shape!r}")
    check_int_at_least("num_classes", num_classes, 2)
    a = arch.lower().replace("_", "-")
    net: nn.Module
    if a in ("mlp", "fc"):
        net = MLP(shape, num_classes, **kwargs)
    elif a == "lenet":
        net = LeNet(shape, num_classes, **kwargs)
    elif a == "lenet5":
        net = LeNet5(shape, num_classes, **kwargs)
    elif m := re.fullmatch(r"resnet-?(\d+)?", a):
        depth = int(m.group(1)) if m.group(1) else kwargs.pop("depth", 20)
        net = CifarResNet(depth, shape, num_classes, **kwargs)
    elif m := re.fullmatch(r"vgg-?(small|11|13|16)", a):
        cfg = m.group(1) if m.group(1) == "small" else f"vgg{m.group(1)}"
        net = VGG(cfg, shape, num_classes, **kwargs)
    elif m := re.fullmatch(r"wrn(?:-(\d+)-(\d+))?", a):
        if m.group(1):
            kwargs["depth"], kwargs["width"] = int(m.group(1)), int(m.group(2))
        net = WideResNet(in_shape=shape, num_classes=num_classes, **kwargs)
    else:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}"
                         f"{did_you_mean(arch, ARCHITECTURES)}")
    _check_fits(net, arch, shape)
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if mean is not None and std is not None:
        return Normalized(net, mean, std)
    return net
