"""Shared fixtures: tiny deterministic models, the shared data/models folders, quiet progress."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

os.environ.setdefault("ADVSMOOTH_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ADVSMOOTH_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
SHARED_MODELS = SHARED / "models"


def needs_shared(*names: str):
    """Skip unless ``../shared`` holds every named file (relative to ``../shared``)."""
    missing = [n for n in names if not (SHARED / n).exists()]
    return pytest.mark.skipif(bool(missing), reason=f"../shared missing {missing}")


class Affine(nn.Module):
    """f(x) = W·flatten(x) + b: the closed-form test bed for minimal-perturbation attacks."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, seed: int = 0,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = in_shape[0] * in_shape[1] * in_shape[2]
        self.weight = nn.Parameter(torch.randn(num_classes, d, generator=g, dtype=dtype))
        self.bias = nn.Parameter(torch.randn(num_classes, generator=g, dtype=dtype) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


def conv_bn_net(num_classes: int, seed: int, spread: float = 0.5) -> nn.Sequential:
    """An eval-mode float64 ``conv → BatchNorm → ReLU → linear`` net for 3×8×8 inputs, made of
    plain ``torch.nn`` modules (so the attacks' BatchNorm-folded fast copy applies) with
    non-trivial running statistics (means in ``±spread``, variances in [0.5, 2])."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, num_classes)).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-spread, spread)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


class TinyCNN(nn.Module):
    """A small non-linear classifier for 1×8×8 or 3×8×8 inputs (BatchNorm tests hygiene)."""

    def __init__(self, channels: int = 1, num_classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
            nn.Flatten(), nn.Linear(8 * 4 * 4, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture
def affine_model():
    return Affine((1, 6, 6), 5, seed=1)


@pytest.fixture
def tiny_cnn():
    m = TinyCNN()
    m.eval()
    return m


@pytest.fixture
def rand_images():
    g = torch.Generator().manual_seed(123)
    return torch.rand(16, 1, 8, 8, generator=g)
