"""MagNet: autoencoders as ordinary modules, FPR-calibrated detectors, attack accounting."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TinyCNN
from torch import nn

from advsmooth.defenses.magnet import (
    Autoencoder,
    DivergenceDetector,
    MagNet,
    ReconstructionDetector,
    magnet_fooling_rate,
    train_autoencoder,
)


@pytest.mark.parametrize("pool", [True, False])
@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 1, 7, 7), (2, 3, 8, 8)])
def test_autoencoder_is_an_ordinary_module(pool, shape):
    torch.manual_seed(0)
    ae = Autoencoder(shape[1], width=3, pool=pool).eval()
    x = torch.rand(shape, requires_grad=True)
    out = ae(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_train_autoencoder_reduces_loss():
    g = torch.Generator().manual_seed(0)
    blocks = (torch.rand(128, 1, 2, 2, generator=g) > 0.5).float()  # 4×4 black/white blocks
    x = torch.nn.functional.interpolate(blocks, size=(8, 8), mode="nearest")
    torch.manual_seed(1)
    ae = Autoencoder(1, width=4)
    losses = train_autoencoder(ae, x, epochs=10, lr=3e-2, batch_size=16)
    assert losses[-1] < 0.7 * losses[0] and not ae.training


def _magnet(detectors: int) -> tuple[MagNet, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyCNN(seed=0).eval()
    ae1, ae2 = Autoencoder(1, width=3).eval(), Autoencoder(1, width=3, pool=False).eval()
    dets: list[nn.Module] = [ReconstructionDetector(ae1, p=2), ReconstructionDetector(ae2, p=1),
                             DivergenceDetector(ae1, model, temperature=10.0)][:detectors]
    x = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return MagNet(model, ae1, dets), x


@pytest.mark.parametrize("detectors", [1, 2, 3])
@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.1, 0.3])
def test_threshold_gives_the_configured_fpr_on_the_fit_set(detectors, fpr):
    mag, x = _magnet(detectors)
    mag.fit(x, fpr=fpr)
    rate = float(mag.detect(x).double().mean())
    assert rate == pytest.approx(math.floor(fpr * len(x)) / len(x), abs=1 / len(x))
    assert abs(rate - fpr) <= 1 / len(x) + 1e-12


@pytest.mark.parametrize("bad", [0, 1, 0.0, 1.0, -0.1, 1.5, True, "0.1", float("nan")])
def test_fpr_outside_open_interval_raises(bad):
    mag, x = _magnet(1)
    with pytest.raises(ValueError, match=r"fpr.*\(0, 1\)"):
        mag.fit(x, fpr=bad)


def test_detect_needs_fit_and_forward_is_differentiable():
    mag, x = _magnet(2)
    with pytest.raises(RuntimeError, match="fit"):
        mag.detect(x[:3])
    xi = x[:4].clone().requires_grad_(True)
    out = mag(xi)
    assert torch.allclose(out, mag.model(mag.reformer(xi)))
    out.sum().backward()
    assert xi.grad is not None and xi.grad.abs().sum() > 0
    labels, flags = mag.fit(x, fpr=0.1).predict_with_detection(x[:5])
    assert labels.shape == (5,) and flags.dtype == torch.bool


class MeanBrightness(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(1)


def test_success_needs_fooling_and_evading():
    torch.manual_seed(0)
    model = TinyCNN(seed=0).eval()
    mag = MagNet(model, None, [MeanBrightness()])
    x = 0.5 * torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    mag.fit(x, fpr=0.05)
    # "adversarial" images: bright copies (flagged), a different prediction for many of them
    x_adv = (x + 0.5).clamp(0, 1)
    fr = magnet_fooling_rate(mag, x, x_adv, y)
    assert fr.n_used == 100 and fr.misclassified > 0
    assert fr.detected == 1.0 and fr.rate == 0.0
    assert fr.clean_flagged == pytest.approx(0.05, abs=0.011)
    # the same images undetected (no detector): success = misclassification
    plain = magnet_fooling_rate(MagNet(model), x, x_adv, y)
    assert plain.rate == plain.misclassified == fr.misclassified
