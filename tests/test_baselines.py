"""Tests of the SmoothFool Table 1 baselines: IterativeSmooth (IS) and ColorShift (CS)."""

from __future__ import annotations

import colorsys

import pytest
import torch
from torch import nn

from advsmooth.attacks import ColorShift, IterativeSmooth, hsv_to_rgb, rgb_to_hsv
from advsmooth.filters import roughness
from tests.conftest import TinyCNN

# ------------------------------------------------------------------------------------------------
# colour conversions
# ------------------------------------------------------------------------------------------------


def test_rgb_hsv_round_trip_and_matches_colorsys():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 5, 4, generator=g, dtype=torch.float64)
    x[0, :, 0, 0] = 0.5          # grey pixel (hue undefined -> 0)
    x[0, :, 0, 1] = 0.0          # black
    x[1, :, 1, 1] = torch.tensor([0.7, 0.7, 0.2], dtype=torch.float64)  # tie in the max
    hsv = rgb_to_hsv(x)
    assert hsv.shape == x.shape and float(hsv.min()) >= 0 and float(hsv.max()) <= 1
    assert torch.allclose(hsv_to_rgb(hsv), x, atol=1e-12)
    for n, i, j in [(0, 0, 0), (0, 0, 1), (1, 1, 1), (2, 3, 2), (1, 4, 0)]:
        want = colorsys.rgb_to_hsv(*x[n, :, i, j].tolist())
        assert hsv[n, :, i, j].tolist() == pytest.approx(list(want), abs=1e-12)


def test_hue_shift_math():
    red = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1)
    hsv = rgb_to_hsv(red)
    assert hsv.flatten().tolist() == pytest.approx([0.0, 1.0, 1.0])
    for shift, want in [(1 / 3, [0, 1, 0]), (2 / 3, [0, 0, 1]), (1 / 6, [1, 1, 0]),
                        (0.5, [0, 1, 1])]:
        h2 = hsv.clone()
        h2[:, 0] = torch.remainder(h2[:, 0] + shift, 1.0)
        assert hsv_to_rgb(h2).flatten().tolist() == pytest.approx(want, abs=1e-12)


def test_hsv_requires_three_channels():
    with pytest.raises(ValueError, match="N×3×H×W"):
        rgb_to_hsv(torch.rand(1, 1, 2, 2))


# ------------------------------------------------------------------------------------------------
# ColorShift
# ------------------------------------------------------------------------------------------------


class RedVsRest(nn.Module):
    """Class 0 iff the mean red channel exceeds the mean of green and blue by a margin."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, g, b = x.mean(dim=(2, 3)).unbind(1)
        s = r - 0.5 * (g + b) - 0.1
        return torch.stack([s, -s], dim=1)


def _reddish(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 4, 4, generator=g, dtype=torch.float64) * 0.3
    x[:, 0] += 0.6
    return x


def test_color_shift_fools_stays_in_range_and_reports_magnitude():
    model = RedVsRest().double()
    x = _reddish(6)
    y = torch.zeros(6, dtype=torch.long)
    res = ColorShift(trials=50, seed=1)(model, x, y)
    assert bool(res.success.all())
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert (res.iterations >= 1).all() and (res.iterations <= 50).all()
    # forward evals = clean pass + one per trial + the final verification
    assert torch.equal(res.forward_evals, res.iterations + 2)
    assert int(res.grad_evals.sum()) == 0
    # V channel is untouched by a colour shift
    assert torch.allclose(rgb_to_hsv(res.x_adv)[:, 2], rgb_to_hsv(x)[:, 2], atol=1e-12)
    # the reported magnitude follows from the reported shifts and the HSV images
    mag = res.extras["hsv_magnitude"]
    hue = res.extras["hue_shift"]
    assert (mag > 0).all()
    dh = torch.minimum(hue, 1 - hue)
    # saturation of these images stays below 1 - |dS| is not guaranteed; bound from below by hue
    assert (mag >= dh * 4 - 1e-9).all()  # sqrt(16 pixels * dh^2) = 4*dh
    s0, s1 = rgb_to_hsv(x)[:, 1], rgb_to_hsv(res.x_adv)[:, 1]
    want = (16 * dh ** 2 + (s1 - s0).flatten(1).pow(2).sum(1)).sqrt()
    assert torch.allclose(mag, want, atol=1e-9)


def test_color_shift_seeded_and_batch_invariant():
    model = RedVsRest().double()
    x = _reddish(5, seed=3)
    y = torch.zeros(5, dtype=torch.long)
    a = ColorShift(trials=30, seed=7)(model, x, y)
    b = ColorShift(trials=30, seed=7)(model, x, y)
    c = ColorShift(trials=30, seed=8)(model, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.iterations, b.iterations)
    assert not torch.equal(a.x_adv, c.x_adv)
    # split into batches that share one generator: same numbers as one run
    from advsmooth.attacks import run_batched
    d = run_batched(ColorShift(trials=30, seed=7), model, x, y, batch_size=2, progress_bar=False)
    assert torch.equal(a.x_adv, d.x_adv)


def test_color_shift_failure_returns_clean_and_greyscale_rejected():
    class Const(nn.Module):
        def forward(self, x):
            return torch.tensor([[1.0, 0.0]], dtype=x.dtype).expand(x.shape[0], 2)

    x = _reddish(2)
    res = ColorShift(trials=3)(Const(), x, torch.zeros(2, dtype=torch.long))
    assert not bool(res.success.any())
    assert torch.equal(res.x_adv, x) and res.iterations.tolist() == [3, 3]
    assert res.extras["hsv_magnitude"].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="greyscale"):
        ColorShift()(TinyCNN(), torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="trials"):
        ColorShift(trials=0)


# ------------------------------------------------------------------------------------------------
# IterativeSmooth
# ------------------------------------------------------------------------------------------------


def test_iterative_smooth_stops_at_first_misclassified_iterate():
    torch.manual_seed(0)
    model = TinyCNN().double().eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    atk = IterativeSmooth(lambda_s=0.1, lr=1.0, halve_every=15, max_iter=40)
    res = atk(model, x)  # y = clean predictions
    assert int(res.success.sum()) >= 3
    it = res.iterations
    assert (it >= 1).all()
    assert (it[~res.success] == 40).all()  # the failures ran to the cap
    # replay each sample's descent: the returned iterate is the first misclassified one
    for i in range(x.shape[0]):
        xi, yi = x[i:i + 1], res.labels[i:i + 1]
        r = torch.zeros_like(xi)
        for t in range(int(it[i])):
            assert int(model((xi + r).clamp(0, 1)).argmax(1)) == int(yi)
            rv = r.clone().requires_grad_(True)
            z = model((xi + rv).clamp(0, 1))
            loss = -nn.functional.cross_entropy(z, yi, reduction="sum") \
                + 0.1 * roughness(rv, sigma_h=1.0).sum()
            (gr,) = torch.autograd.grad(loss, rv)
            r = r - 1.0 * 0.5 ** (t // 15) * gr
        assert torch.allclose(res.x_adv[i:i + 1], (xi + r).clamp(0, 1), atol=1e-10)
        assert (int(model(res.x_adv[i:i + 1]).argmax(1)) != int(yi)) == bool(res.success[i])
    # one forward + one gradient per update, plus clean and verification forwards, plus the
    # forward that found the misclassified iterate (unless that was the last allowed update)
    assert torch.equal(res.grad_evals, it)
    assert torch.equal(res.forward_evals, it + 2 + (res.success & (it < 40)).long())


def test_iterative_smooth_respects_iteration_cap_and_batch_invariance():
    model = TinyCNN().double().eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    res = IterativeSmooth(lr=1e-4, max_iter=7)(model, x)
    assert (res.iterations <= 7).all()
    assert int(res.iterations.max()) == 7            # tiny lr: nobody is fooled in 7 steps
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    zero = IterativeSmooth(max_iter=0)(model, x)
    assert torch.equal(zero.x_adv, x) and int(zero.iterations.sum()) == 0
    # batch == per-sample
    big = IterativeSmooth(lr=0.5, max_iter=30)(model, x)
    for i in range(4):
        one = IterativeSmooth(lr=0.5, max_iter=30)(model, x[i:i + 1])
        assert torch.allclose(one.x_adv, big.x_adv[i:i + 1], atol=1e-12)
        assert int(one.iterations) == int(big.iterations[i])


def test_iterative_smooth_roughness_term_smooths():
    model = TinyCNN().double().eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    x = 0.25 + 0.5 * x  # keep away from the box so clamping does not interfere
    # plain gradient descent on the roughness term is stable only for lr·λ_s small (< ~1)
    plain = IterativeSmooth(lambda_s=0.0, lr=2.0, max_iter=150)(model, x)
    smooth = IterativeSmooth(lambda_s=0.2, lr=2.0, max_iter=150)(model, x)
    ok = plain.success & smooth.success
    assert bool(ok.any())
    on = roughness(plain.perturbation[ok], normalized=True)
    os_ = roughness(smooth.perturbation[ok], normalized=True)
    assert float(os_.mean()) < 0.5 * float(on.mean())


class _Saturated(nn.Module):
    """Three classes on the mean brightness m of a 1×8×8 image:
    ``z = (200(m − 0.4), 0, 300(0.35 − m))`` — class 0 above m = 0.4, class 2 below m ≈ 0.35.
    Around m = 0.6 the softmax is saturated (margin ≈ 40)."""

    def forward(self, x):
        m = x.flatten(1).mean(dim=1)
        return torch.stack([200 * (m - 0.4), torch.zeros_like(m), 300 * (0.35 - m)], dim=1)


def test_iterative_smooth_margin_loss_does_not_saturate():
    """On a saturated softmax (margin ≈ 40) the cross-entropy's gradient is ~e^-40 of the
    margin's: IS with the paper's CE loss does not move, while the logit margin (whose gradient
    does not depend on the confidence) walks every image across the boundary; the step replays
    the margin loss exactly."""
    model = _Saturated()
    x = 0.55 + 0.1 * torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(4),
                                dtype=torch.float64)
    ce = IterativeSmooth(lambda_s=0.01, lr=1e-3, max_iter=200, halve_every=1000)(model, x)
    assert not bool(ce.success.any())
    assert float(ce.perturbation.abs().max()) < 1e-12
    mg = IterativeSmooth(lambda_s=0.01, lr=1e-3, max_iter=200, halve_every=1000,
                         loss="margin")(model, x)
    assert torch.equal(mg.labels, torch.zeros(5, dtype=torch.long))
    assert bool(mg.success.all())
    # replay sample 0: r ← r − lr·∇(λΩ(r) − (max_{j≠y} z_j − z_y))
    xi, yi = x[:1], int(mg.labels[0])
    r = torch.zeros_like(xi)
    for _ in range(int(mg.iterations[0])):
        rv = r.clone().requires_grad_(True)
        z = model((xi + rv).clamp(0, 1))[0]
        other = torch.cat([z[:yi], z[yi + 1:]]).max()
        loss = 0.01 * roughness(rv, sigma_h=1.0).sum() - (other - z[yi])
        (gr,) = torch.autograd.grad(loss, rv)
        r = r - 1e-3 * gr
    assert torch.allclose(mg.x_adv[:1], (xi + r).clamp(0, 1), atol=1e-10)


def test_iterative_smooth_margin_loss_targeted():
    model = _Saturated()
    x = 0.55 + 0.1 * torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(6),
                                dtype=torch.float64)
    target = torch.full((4,), 2, dtype=torch.long)
    res = IterativeSmooth(lambda_s=0.0, lr=1e-3, max_iter=300, loss="margin")(
        model, x, target=target)
    assert bool(res.success.all())
    assert torch.equal(model(res.x_adv).argmax(1), target)


def test_iterative_smooth_validates():
    for bad in [dict(lambda_s=-1), dict(lr=0), dict(halve_every=0), dict(max_iter=-1),
                dict(sigma_h=0), dict(loss="dlr")]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            IterativeSmooth(**bad)
    assert "lambda_s=0.1" in repr(IterativeSmooth())
    assert "loss='margin'" in repr(IterativeSmooth(loss="margin"))


def test_iterative_smooth_rejects_a_diverging_step():
    """lr·λ_s > 1 is rejected, and that is where plain gradient descent on λ_s·Ω starts to
    diverge: Ω's curvature is at most 2 (for the Gaussian h, Ωn ≤ 1)."""
    with pytest.raises(ValueError, match="lr × lambda_s must be at most 1"):
        IterativeSmooth(lr=2.5e-3, lambda_s=800.0)
    IterativeSmooth(lr=2.5e-3, lambda_s=400.0)  # lr·λ_s = 1: allowed

    def descend(step: float) -> float:
        r = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
        start = float(r.norm())
        for _ in range(200):
            r = r.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(roughness(r).sum(), r)
            r = r - step * g  # step = lr·λ_s
        return float(r.detach().norm()) / start

    assert descend(0.95) <= 1.0   # every pattern decays or stays
    assert descend(1.2) > 1e6     # the finest patterns blow up
