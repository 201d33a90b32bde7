"""Tests of advsmooth.metrics.core: fooling rate, per-class FR, ρ_adv, σ^A%, ρ_FGSM."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advsmooth.metrics import (
    fgsm_rho,
    fooling_rate,
    per_class_fooling_rate,
    robustness,
    sigma_at,
)


class Threshold(nn.Module):
    """Two classes on the mean pixel value: class 1 iff mean(x) > 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1, keepdim=True) - 0.5
        return torch.cat([-m, m], dim=1)


def _images(values):
    return torch.tensor(values, dtype=torch.float64).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def test_fooling_rate_excludes_misclassified_and_counts_them():
    model = Threshold().double()
    x = _images([0.2, 0.3, 0.8, 0.9, 0.1])
    y = torch.tensor([0, 0, 1, 1, 1])          # the last one is misclassified on clean input
    x_adv = _images([0.7, 0.3, 0.1, 0.9, 0.1])  # fools sample 0 and 2
    fr = fooling_rate(model, x, x_adv, y, batch_size=2)
    assert fr.n_used == 4 and fr.n_excluded == 1
    assert fr.rate == pytest.approx(2 / 4)
    assert fr.used.tolist() == [True, True, True, True, False]
    assert fr.fooled.tolist() == [True, False, True, False, True]
    assert fr.n_fooled == 2
    assert fr.as_dict()["n_excluded"] == 1


def test_fooling_rate_nan_when_nothing_correct_and_validates():
    model = Threshold().double()
    x = _images([0.2])
    fr = fooling_rate(model, x, x, torch.tensor([1]))
    assert math.isnan(fr.rate) and fr.n_used == 0 and fr.n_excluded == 1
    with pytest.raises(ValueError, match="x_adv"):
        fooling_rate(model, x, _images([0.2, 0.3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="batch_size"):
        fooling_rate(model, x, x, torch.tensor([0]), batch_size=0)


def test_fooling_rate_restores_model_state():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.BatchNorm1d(2)).double()
    model.train()
    x = _images([0.2, 0.7, 0.4])
    running = model[2].running_mean.clone()
    fooling_rate(model, x, x, torch.tensor([0, 1, 0]))
    assert model.training
    assert torch.equal(model[2].running_mean, running)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_per_class_fooling_rate():
    model = Threshold().double()
    x = _images([0.2, 0.3, 0.8, 0.9, 0.1])
    y = torch.tensor([0, 0, 1, 1, 1])
    x_adv = _images([0.7, 0.3, 0.1, 0.9, 0.1])
    pc = per_class_fooling_rate(model, x, x_adv, y)
    assert set(pc) == {0, 1}
    assert pc[0] == {"rate": 0.5, "n_used": 2, "n_excluded": 0}
    assert pc[1] == {"rate": 0.5, "n_used": 2, "n_excluded": 1}


def test_robustness_hand_built():
    x = torch.zeros(2, 1, 2, 2)
    x[0] = 1.0                      # ||x0||2 = 2, ||x0||inf = 1
    x[1, 0, 0, 0] = 0.5             # ||x1||2 = 0.5, ||x1||inf = 0.5
    r = torch.zeros_like(x)
    r[0, 0, 0, 0] = 0.2             # ratio2 = 0.1, ratio_inf = 0.2
    r[1, 0, 1, 1] = -0.1            # ratio2 = 0.2, ratio_inf = 0.2
    assert robustness(r, x, p=2) == pytest.approx(0.15)
    assert robustness(r, x, p="inf") == pytest.approx(0.2)
    assert robustness(r, x, p=float("inf")) == pytest.approx(0.2)
    assert robustness(r, x, p=2, mask=torch.tensor([False, True])) == pytest.approx(0.2)
    assert math.isnan(robustness(r, x, mask=torch.tensor([False, False])))
    # a zero image never gives NaN
    assert math.isfinite(robustness(r, torch.zeros_like(x)))
    with pytest.raises(ValueError, match="mask"):
        robustness(r, x, mask=torch.tensor([1, 0]))


def test_sigma_at_interpolation_on_hand_built_curves():
    sig = [1.0, 2.0, 4.0, 8.0]
    fr = [1.0, 0.9, 0.5, 0.1]
    # 0.7 lies half-way between 0.9 (σ=2) and 0.5 (σ=4)
    assert sigma_at(sig, fr, 0.7) == pytest.approx(3.0)
    # 0.2 lies 3/4 of the way from 0.5 (σ=4) to 0.1 (σ=8)
    assert sigma_at(sig, fr, 0.2) == pytest.approx(7.0)
    # level hit exactly on a grid point
    assert sigma_at(sig, fr, 0.5) == pytest.approx(4.0)
    assert sigma_at(sig, fr, 1.0) == pytest.approx(1.0)
    # never drops below the level -> grid max; never reaches it -> nan
    assert sigma_at(sig, fr, 0.05) == 8.0
    assert math.isnan(sigma_at([1.0, 2.0], [0.3, 0.2], 0.5))
    # unsorted input is sorted by sigma first; tensors accepted
    assert sigma_at(torch.tensor([4.0, 1.0, 8.0, 2.0]), torch.tensor([0.5, 1.0, 0.1, 0.9]),
                    0.7) == pytest.approx(3.0)
    # uses the LAST grid point >= level (non-monotone noise after a dip)
    assert sigma_at([0, 1, 2, 3], [1.0, 0.4, 0.8, 0.0], 0.6) == pytest.approx(2.25)


@pytest.mark.parametrize("bad", [
    dict(sigmas=[1, 2], fooling_rates=[1.0], level=0.5),
    dict(sigmas=[], fooling_rates=[], level=0.5),
    dict(sigmas=[1, 1], fooling_rates=[1.0, 0.5], level=0.5),
    dict(sigmas=[1, 2], fooling_rates=[1.0, 0.5], level=50),
])
def test_sigma_at_validates(bad):
    with pytest.raises(ValueError):
        sigma_at(**bad)


def test_fgsm_rho_finds_smallest_grid_eps():
    # affine 2-class model on the mean: sign gradient is uniform, so FGSM moves the mean by eps
    model = Threshold().double()
    x = _images([0.40, 0.45, 0.30, 0.35])
    y = torch.zeros(4, dtype=torch.long)
    out = fgsm_rho(model, x, y, p="inf", target_rate=0.5, eps_max=0.5, grid=100)
    # need mean > 0.5 for 2 of 4 samples: eps > 0.10 (for 0.40); grid step 0.005
    assert out["eps"] == pytest.approx(0.105)
    assert out["rate"] >= 0.5
    assert out["rho"] == pytest.approx(sum(0.105 / v for v in [0.40, 0.45, 0.30, 0.35]) / 4)
    none = fgsm_rho(model, x, y, target_rate=1.0, eps_max=0.1, grid=10)
    assert math.isnan(none["eps"]) and none["rate"] < 1.0


class Band(nn.Module):
    """Two classes on the mean pixel value m: class 1 iff 0.5 < m < 0.8 (wrong again above)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1, keepdim=True)
        z1 = torch.minimum(m - 0.5, 0.8 - m)
        return torch.cat([torch.zeros_like(z1), z1], dim=1)


def test_fgsm_rho_when_the_rate_falls_again_at_large_eps():
    """At ε = eps_max FGSM overshoots the band and the rate is 0 again; the 90 %-rule ε is still
    the smallest grid ε with rate ≥ target (a top-down bisection returned nan here)."""
    x = _images([0.40, 0.42, 0.44])
    y = torch.zeros(3, dtype=torch.long)
    out = fgsm_rho(Band().double(), x, y, p="inf", target_rate=0.9, eps_max=0.5, grid=100)
    assert out["eps"] == pytest.approx(0.105)       # first grid ε with m > 0.5 for 0.40
    assert out["rate"] == 1.0
    model = Band().double()
    with torch.no_grad():                           # the largest ε fools nobody
        assert int(model(x + 0.5).argmax(1).sum()) == 0


def test_fooling_rate_accepts_unclipped_adversarial_images():
    model = Threshold().double()
    x = _images([0.4, 0.45])
    x_adv = _images([1.2, 0.45])             # outside [0, 1] (unclipped DeepFool style)
    fr = fooling_rate(model, x, x_adv, torch.tensor([0, 0]))
    assert fr.rate == pytest.approx(0.5)
    with pytest.raises(ValueError, match="NaN"):
        fooling_rate(model, x, _images([float("nan"), 0.1]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fooling_rate(model, x_adv, x, torch.tensor([0, 0]))   # the clean x must be valid
