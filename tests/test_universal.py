"""Tests of universal perturbations (plain and smooth UAP) and their fooling rate."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advsmooth.attacks import (
    DeepFool,
    SmoothFool,
    UniversalPerturbation,
    universal_fooling_rate,
)
from advsmooth.attacks.universal import project_l2, project_linf
from advsmooth.filters import roughness
from tests.conftest import Affine, TinyCNN


class NearBoundary(nn.Module):
    """Two classes, logits (0, 1ᵀx − b): every image of the test data is class 0 near the face."""

    def __init__(self, d: int, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(d, dtype=torch.float64))
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w - self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


def _data(n: int, seed: int, shape=(1, 6, 6), lo=0.0, hi=1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, *shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("norm,xi", [("inf", 0.05), (2, 0.4)])
def test_uap_respects_the_ball_exactly(norm, xi):
    model = Affine((1, 6, 6), 5, seed=1)
    x = _data(40, 0)
    uap = UniversalPerturbation(xi=xi, norm=norm, max_passes=2, target_fooling_rate=1.0,
                                progress_bar=False)
    v = uap.fit(model, x)
    assert v.shape == (1, 1, 6, 6) and v.dtype == x.dtype
    assert v is uap.perturbation_
    if norm == "inf":
        assert float(v.abs().max()) <= xi
        assert float(v.abs().max()) == pytest.approx(xi)  # DeepFool steps saturate the box
    else:
        assert float(torch.linalg.vector_norm(v)) <= xi
    assert uap.updates_ > 0 and uap.passes_ == 2 and len(uap.history_) == 2
    assert all(0.0 <= h <= 1.0 for h in uap.history_)
    assert uap.fooling_rate_ == uap.history_[-1]
    assert uap.history_[-1] == pytest.approx(universal_fooling_rate(model, x, v))
    assert uap.cost_["attack_calls"] > 0 and uap.cost_["grad"] > 0


def test_projections_are_exact():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        v = torch.randn(1, 3, 7, 7, generator=g) * 10
        assert float(torch.linalg.vector_norm(project_l2(v, 0.3))) <= 0.3
        assert float(torch.linalg.vector_norm(project_l2(v, 0.3, sphere=True))) <= 0.3
        assert float(project_linf(v, 0.3).abs().max()) <= 0.3
    small = torch.full((1, 1, 2, 2), 0.01)
    assert torch.equal(project_l2(small, 1.0), small)            # inside: unchanged
    assert float(torch.linalg.vector_norm(project_l2(small, 1.0, sphere=True))) == \
        pytest.approx(1.0)                                          # rescaled to the sphere


def test_uap_reaches_target_on_easy_affine_model_and_generalises():
    # every image has 1ᵀx in [0.4·36, 0.6·36]; b = 0.65·36 keeps them all in class 0 and
    # v = +ξ·1 with ξ = 0.3 moves 1ᵀx by 10.8 > 0.25·36 = 9: a universal perturbation exists.
    model = NearBoundary(36, 0.65 * 36)
    x_fit, x_test = _data(30, 1, lo=0.4, hi=0.6), _data(50, 2, lo=0.4, hi=0.6)
    assert universal_fooling_rate(model, x_fit, torch.zeros(1, 1, 6, 6)) == 0.0
    uap = UniversalPerturbation(xi=0.3, norm="inf", target_fooling_rate=0.8, max_passes=5,
                                progress_bar=False)
    v = uap.fit(model, x_fit)
    assert uap.history_[-1] >= 0.8
    assert uap.passes_ < 5                                   # stopped once the target was hit
    assert universal_fooling_rate(model, x_test, v) >= 0.8  # held-out data
    assert (v >= 0).all()                                   # DeepFool increments follow +w


def test_uap_seeded_and_data_forms_agree():
    model = Affine((1, 6, 6), 5, seed=3)
    x = _data(24, 4)
    y = torch.zeros(24, dtype=torch.long)

    def fit(data, seed=0):
        return UniversalPerturbation(xi=0.05, max_passes=1, target_fooling_rate=1.0,
                                     progress_bar=False, seed=seed).fit(model, data)

    v = fit(x)
    assert torch.equal(v, fit(x))
    assert torch.equal(v, fit((x, y)))
    assert torch.equal(v, fit(DataLoader(TensorDataset(x, y), batch_size=5)))
    assert torch.equal(v, fit(DataLoader(TensorDataset(x), batch_size=7)))
    assert not torch.equal(v, fit(x, seed=1))  # another visiting order


def test_uap_batch_update_and_no_clamp_modes_keep_the_bound():
    model = Affine((1, 6, 6), 5, seed=1)
    x = _data(30, 5)
    for kw in (dict(batch_update=8), dict(eval_clamp=False), dict(l2_projection="sphere")):
        uap = UniversalPerturbation(xi=0.3, norm=2, max_passes=2, target_fooling_rate=1.0,
                                    progress_bar=False, **kw)
        v = uap.fit(model, x)
        assert float(torch.linalg.vector_norm(v)) <= 0.3
        assert uap.updates_ > 0
    # with batch updates there are fewer base-attack calls than samples per pass
    uap = UniversalPerturbation(xi=0.3, norm=2, max_passes=1, target_fooling_rate=1.0,
                                batch_update=8, progress_bar=False)
    uap.fit(model, x)
    assert uap.cost_["attack_calls"] <= 4


def test_universal_fooling_rate_by_hand():
    model = NearBoundary(4, 2.0)
    x = torch.tensor([0.3, 0.45, 0.6, 0.9], dtype=torch.float64).view(4, 1, 1, 1) \
        .expand(4, 1, 2, 2).clone()
    # clean: 1ᵀx - 2 = 4x - 2 -> classes [0, 0, 1, 1]
    v = torch.full((1, 1, 2, 2), 0.1, dtype=torch.float64)
    # x + v = [0.4, 0.55, 0.7, 1.0] -> classes [0, 1, 1, 1]: one of four changes
    assert universal_fooling_rate(model, x, v) == pytest.approx(0.25)
    assert universal_fooling_rate(model, x, v[0]) == pytest.approx(0.25)
    # clamping matters: -0.5 takes 0.3 below 0; unclamped 4(x-0.5)-2 differs only where clamped
    big = torch.full((1, 1, 2, 2), -0.5, dtype=torch.float64)
    assert universal_fooling_rate(model, x, big) == pytest.approx(0.5)
    assert universal_fooling_rate(model, x, big, clamp=False) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="v must have shape"):
        universal_fooling_rate(model, x, torch.zeros(1, 1, 3, 3))


def test_uap_model_state_restored_and_input_untouched():
    model = TinyCNN().double()
    model.train()
    x = _data(6, 6, shape=(1, 8, 8))
    x0 = x.clone()
    UniversalPerturbation(base=DeepFool(max_iter=3), xi=0.1, max_passes=1,
                          progress_bar=False).fit(model, x)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert torch.equal(x, x0)


def test_uap_validates():
    with pytest.raises(ValueError, match="norm"):
        UniversalPerturbation(norm=1)
    with pytest.raises(ValueError, match="xi"):
        UniversalPerturbation(xi=0)
    with pytest.raises(ValueError, match="target_fooling_rate"):
        UniversalPerturbation(target_fooling_rate=1.5)
    with pytest.raises(ValueError, match="max_passes"):
        UniversalPerturbation(max_passes=0)
    with pytest.raises(ValueError, match="batch_update"):
        UniversalPerturbation(batch_update=0)
    with pytest.raises(ValueError, match="attack_clean"):
        UniversalPerturbation(attack_clean=True)
    with pytest.raises(TypeError, match="base"):
        UniversalPerturbation(base="deepfool")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        UniversalPerturbation(progress_bar=False).fit(Affine((1, 6, 6), 5), _data(3, 0) + 2)
    with pytest.raises(RuntimeError, match="fit"):
        UniversalPerturbation().apply(_data(1, 0))
    assert "xi=0.1" in repr(UniversalPerturbation(xi=0.1))


def test_uap_linf_bound_exact_in_float32():
    model = Affine((1, 6, 6), 5, seed=1, dtype=torch.float32)
    x = _data(20, 0).float()
    v = UniversalPerturbation(xi=0.03, max_passes=1, target_fooling_rate=1.0,
                              progress_bar=False).fit(model, x)
    assert v.dtype == torch.float32
    assert float(v.abs().max()) <= 0.03  # 0.03 is not a float32 number: rounded down


def test_smooth_uap_is_smoother_than_plain_uap_at_same_xi():
    model = Affine((1, 10, 10), 4, seed=2)
    x = _data(8, 7, shape=(1, 10, 10), lo=0.2, hi=0.8)
    xi = 0.1
    plain = UniversalPerturbation(xi=xi, max_passes=1, target_fooling_rate=1.0,
                                  progress_bar=False).fit(model, x)
    uap = UniversalPerturbation(base=SmoothFool(sigma=2.0), xi=xi, max_passes=1,
                                target_fooling_rate=1.0, progress_bar=False)
    smooth = uap.fit(model, x)
    assert uap.smooth and uap.updates_ > 0
    assert 0 <= uap.projection_fallbacks_ <= uap.updates_
    assert float(smooth.abs().max()) <= xi
    assert float(smooth.abs().max()) > 0
    om_plain = float(roughness(plain, normalized=True))
    om_smooth = float(roughness(smooth, normalized=True))
    assert om_smooth < 0.5 * om_plain


def test_smooth_uap_projection_and_literal_mode():
    uap = UniversalPerturbation(base=SmoothFool(sigma=1.0), xi=0.05, progress_bar=False)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(1, 1, 10, 10, generator=g, dtype=torch.float64) * 0.2
    p = uap.project(v)
    assert float(p.abs().max()) <= 0.05
    inside = torch.full((1, 1, 10, 10), 0.01, dtype=torch.float64)
    assert torch.allclose(uap.project(inside), inside)  # SmoothClip is the identity inside
    with pytest.raises(ValueError, match="norm='inf'"):
        UniversalPerturbation(base=SmoothFool(sigma=1.0), norm=2)
    model = Affine((1, 10, 10), 4, seed=2)
    x = _data(3, 3, shape=(1, 10, 10), lo=0.2, hi=0.8)
    lit = UniversalPerturbation(base=SmoothFool(sigma=1.0), xi=0.05, attack_clean=True,
                                max_passes=1, progress_bar=False)
    assert float(lit.fit(model, x).abs().max()) <= 0.05
