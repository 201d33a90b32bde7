"""Low-pass filters and the roughness metric (docs/algorithms.md: low-pass filters, roughness)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import advsmooth.metrics
from advsmooth.filters import LowPassFilter, gaussian_kernel1d, roughness

ALL_PADDINGS = ("zeros", "replicate", "reflect", "circular")


def _x(shape=(3, 3, 12, 12), seed=0, dtype=torch.float64):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _filters():
    return [LowPassFilter("gaussian", 1.0), LowPassFilter("gaussian", 2.3),
            LowPassFilter("linear", 5), LowPassFilter("uniform", 3), LowPassFilter("uniform", 4),
            LowPassFilter("gaussian", 2.0, size_rule="ref")]


# -- kernels ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [0.4, 0.7, 1.0, 2.0, 3.3, 10.0])
def test_gaussian_kernel_size_sum_symmetry(sigma):
    k = gaussian_kernel1d(sigma)
    assert k.numel() == 2 * math.floor(2.5 * sigma) + 1
    assert k.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(k, k.flip(0))
    assert int(k.argmax()) == k.numel() // 2
    # taps follow exp(-(i-c)^2 / 2 sigma^2)
    c = (k.numel() - 1) / 2
    ratio = k[int(c) + 1] / k[int(c)]
    assert ratio.item() == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-12)


@pytest.mark.parametrize("sigma", [0.1, 0.25, 0.39])
def test_small_sigma_is_exact_identity(sigma):
    f = LowPassFilter("gaussian", sigma)
    assert f.size == 1 and f.is_identity
    x = _x()
    y = f(x)
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()


def test_kernels_sum_to_one_and_shapes():
    for f in _filters():
        assert f.kernel2d().sum().item() == pytest.approx(1.0, abs=1e-12)
    lin = LowPassFilter("linear", 7).kernel1d()
    assert lin[0] == 0 and lin[-1] == 0  # end taps are zero
    k2 = LowPassFilter("linear", 9).kernel2d()
    assert k2.max().item() == pytest.approx(4 / 81, rel=0.3)
    assert torch.allclose(LowPassFilter("uniform", 5).kernel2d(), torch.full((5, 5), 1 / 25,
                                                                              dtype=torch.float64))
    assert LowPassFilter("gaussian", 2.0, size_rule="ref").size == 10


def test_constant_preserved_in_interior_and_everywhere_with_nonzero_padding():
    c = torch.full((2, 3, 16, 16), 0.37, dtype=torch.float64)
    for f in _filters():
        k = f.size
        out = f(c)
        inner = out[..., k:-k, k:-k]
        assert torch.allclose(inner, c[..., k:-k, k:-k], atol=1e-12), f
        assert (out[..., 0, 0] < 0.37).all()  # zero padding darkens the border
    for pad in ("replicate", "reflect", "circular"):
        for kind, p in (("gaussian", 1.5), ("linear", 5), ("uniform", 4)):
            f = LowPassFilter(kind, p, padding=pad)
            assert torch.allclose(f(c), c, atol=1e-12), (kind, pad)


def test_never_mixes_channels_and_is_depthwise():
    x = _x()
    f = LowPassFilter("gaussian", 1.5, padding="reflect")
    y = f(x)
    for ch in range(3):
        only = torch.zeros_like(x)
        only[:, ch] = x[:, ch]
        yo = f(only)
        assert torch.allclose(yo[:, ch], y[:, ch], atol=1e-12)
        others = [c for c in range(3) if c != ch]
        assert torch.equal(yo[:, others], torch.zeros_like(yo[:, others]))


@pytest.mark.parametrize("padding", ALL_PADDINGS)
@pytest.mark.parametrize("kind,param", [("gaussian", 1.2), ("linear", 5), ("uniform", 4),
                                        ("gaussian", 2.0)])
def test_separable_matches_direct_2d_convolution(padding, kind, param):
    """Two 1-D passes == one 2-D conv with the outer-product kernel (also for even sizes)."""
    x = _x((2, 2, 11, 13))
    f = LowPassFilter(kind, param, padding=padding)
    g2 = LowPassFilter(f.kernel2d(), padding=padding)  # user 2-D kernel: one depthwise conv
    assert torch.allclose(f(x), g2(x), atol=1e-12)


def test_matches_manual_reference_with_even_ref_padding():
    x = _x((1, 1, 9, 9))
    f = LowPassFilter("gaussian", 0.8, size_rule="ref")  # K = 4 (even)
    k = f.kernel2d()[None, None]
    ref = F.conv2d(F.pad(x, (1, 2, 1, 2)), k)  # (K//2-1, K//2) on each axis
    assert torch.allclose(f(x), ref, atol=1e-12)
    f_odd = LowPassFilter("gaussian", 1.0, padding="replicate")
    ref_odd = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), f_odd.kernel2d()[None, None])
    assert torch.allclose(f_odd(x), ref_odd, atol=1e-12)


def test_circular_is_shift_equivariant_even_for_kernels_larger_than_the_image():
    x = _x((1, 2, 6, 7))
    for sigma in (1.0, 5.0):  # 5.0: K = 25 > image size
        f = LowPassFilter("gaussian", sigma, padding="circular")
        assert torch.allclose(f(torch.roll(x, (2, 3), (2, 3))), torch.roll(f(x), (2, 3), (2, 3)),
                              atol=1e-12)
        assert torch.allclose(f(x).sum(dim=(2, 3)), x.sum(dim=(2, 3)), atol=1e-10)


def test_reflect_falls_back_to_replicate_with_warning():
    x = _x((1, 1, 5, 5))
    f = LowPassFilter("gaussian", 3.0, padding="reflect")
    with pytest.warns(UserWarning, match="replicate"):
        y = f(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.allclose(y, LowPassFilter("gaussian", 3.0, padding="replicate")(x))


def test_zero_padding_large_sigma_tends_to_channel_constant():
    x = _x((1, 3, 8, 8))
    y = LowPassFilter("gaussian", 200.0)(x)
    spread = y.amax(dim=(2, 3)) - y.amin(dim=(2, 3))
    assert (spread < 1e-3 * y.amax(dim=(2, 3))).all()
    ratio = y.mean(dim=(2, 3)) / x.mean(dim=(2, 3))
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-6)


def test_user_1d_kernel_and_dtype_and_cache():
    k = torch.tensor([1.0, 2.0, 1.0]) / 4
    f = LowPassFilter(k, padding="replicate")
    assert f.size == 3
    x32 = _x(dtype=torch.float32)
    y32 = f(x32)
    assert y32.dtype == torch.float32
    assert torch.allclose(y32.double(), f(x32.double()), atol=1e-6)
    assert len(f._cache) == 2  # one entry per (C, dtype, device)
    f(x32)
    assert len(f._cache) == 2


def test_invalid_arguments():
    with pytest.raises(ValueError, match="kind"):
        LowPassFilter("median", 3)
    with pytest.raises(ValueError, match="sigma"):
        LowPassFilter("gaussian", -1.0)
    with pytest.raises(ValueError, match="sigma"):
        LowPassFilter("gaussian")
    with pytest.raises(ValueError, match="param"):
        LowPassFilter("uniform", 2.5)
    with pytest.raises(ValueError, match="param"):
        LowPassFilter("linear", 2)
    with pytest.raises(ValueError, match="padding"):
        LowPassFilter("gaussian", 1.0, padding="mirror")
    with pytest.raises(ValueError, match="size_rule"):
        LowPassFilter("gaussian", 1.0, size_rule="even")
    with pytest.raises(ValueError, match="5\\*sigma"):
        LowPassFilter("gaussian", 1.33, size_rule="ref")
    with pytest.raises(ValueError, match="kernel"):
        LowPassFilter(torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="N×C×H×W"):
        LowPassFilter("gaussian", 1.0)(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel1d(0.0)


# -- roughness --------------------------------------------------------------------------------

def test_roughness_definition_and_reexport():
    r = _x() - 0.5
    h = LowPassFilter("gaussian", 1.0, padding="replicate")
    expected = ((r - h(r)) ** 2).sum(dim=(1, 2, 3))
    assert torch.allclose(roughness(r), expected)
    assert torch.allclose(roughness(r, normalized=True), expected / (r**2).sum(dim=(1, 2, 3)))
    assert advsmooth.metrics.roughness is roughness
    g = LowPassFilter("uniform", 3, padding="zeros")
    assert torch.allclose(roughness(r, filter=g), ((r - g(r)) ** 2).sum(dim=(1, 2, 3)))


def test_roughness_properties():
    r = _x() - 0.5
    const = torch.full((2, 3, 10, 10), -0.2, dtype=torch.float64)
    assert (roughness(const) < 1e-25).all()  # zero up to rounding of the taps' sum
    assert (roughness(const, padding="zeros") > 0).all()  # border artefacts with zero padding
    assert torch.allclose(roughness(3.7 * r), 3.7**2 * roughness(r))
    assert torch.allclose(roughness(3.7 * r, normalized=True), roughness(r, normalized=True))
    assert torch.equal(roughness(torch.zeros(2, 1, 5, 5), normalized=True), torch.zeros(2))
    assert torch.equal(roughness(r, sigma_h=0.3), torch.zeros(3, dtype=torch.float64))
    smooth = LowPassFilter("gaussian", 4.0, padding="replicate")(r)
    assert (roughness(smooth, normalized=True) < roughness(r, normalized=True)).all()


def _worst_case(h: LowPassFilter, hgt: int, wid: int) -> tuple[torch.Tensor, float]:
    """Input maximising Ωn: the top right-singular vector of I − H (H as a matrix)."""
    n = hgt * wid
    basis = torch.eye(n, dtype=torch.float64).view(n, 1, hgt, wid)
    m = (basis - h(basis)).view(n, n)  # row i = (I − H) e_i  →  m = (I − H)^T
    _, s, vh = torch.linalg.svd(m.T)
    return vh[0].view(1, 1, hgt, wid), float(s[0] ** 2)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 5), (7, 4), (12, 12), (16, 9)])
def test_normalized_roughness_bounded_by_one_for_default_h(size):
    """Ωn ≤ 1 for h = Gaussian σh = 1 with replicate padding, even for the worst-case input.

    Interior: the 1-D frequency response of the 5-tap kernel is ≥ 0.0232 > 0, so
    |1 − H(ω)| < 1; the borders (replicate) are checked here exhaustively via the operator norm.
    """
    h = LowPassFilter("gaussian", 1.0, padding="replicate")
    r, top = _worst_case(h, *size)
    assert top < 1.0
    assert 0.0 <= roughness(r, normalized=True).item() <= 1.0
    gen = torch.Generator().manual_seed(1)
    rand = torch.randn(64, 2, *size, dtype=torch.float64, generator=gen)
    on = roughness(rand, normalized=True)
    assert ((on >= 0) & (on <= 1)).all()


def test_normalized_roughness_can_exceed_one_for_other_filters():
    """Documented: truncated Gaussians with σ = 1.5 have a negative frequency lobe (Ωn > 1)."""
    h = LowPassFilter("gaussian", 1.5, padding="circular")
    r, top = _worst_case(h, 12, 12)
    assert top > 1.0
    assert roughness(r, normalized=True, filter=h).item() == pytest.approx(top, rel=1e-9)


@pytest.mark.filterwarnings("ignore:reflect padding")
@pytest.mark.parametrize("method", ["fft", "matrix"])
@pytest.mark.parametrize("padding", ALL_PADDINGS)
def test_fft_and_matrix_paths_match_direct(padding, method):
    x = _x((2, 3, 20, 17), dtype=torch.float32)
    cases = [("gaussian", 14.0, {}), ("gaussian", 1.6, {"size_rule": "ref"}),  # even K = 8
             ("uniform", 70, {}), ("linear", 9, {}), ("gaussian", 1e4, {})]
    for kind, p, kw in cases:
        direct = LowPassFilter(kind, p, padding=padding, method="direct", **kw)
        other = LowPassFilter(kind, p, padding=padding, method=method, **kw)
        assert (direct(x) - other(x)).abs().max() <= 1e-5, (kind, p)
        x64 = x.double()
        assert (direct(x64) - other(x64)).abs().max() <= 1e-12, (kind, p)
    asym = torch.tensor([0.5, 0.3, 0.15, 0.05])  # orientation matters (cross-correlation)
    d = LowPassFilter(asym, padding=padding, method="direct")
    f = LowPassFilter(asym, padding=padding, method=method)
    assert (d(x) - f(x)).abs().max() <= 1e-5
    big = LowPassFilter("gaussian", 30.0, padding=padding)
    assert (big(x) - LowPassFilter("gaussian", 30.0, padding=padding, method="direct")(x)
            ).abs().max() <= 1e-5


@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_auto_uses_matrix_products_on_small_images_only(padding):
    """``auto``: the matrix products up to 64×64 pixels (MNIST, CIFAR-10), else FFT for long
    kernels and depthwise convolutions for short ones."""
    for shape, sigma, expected in [((2, 3, 32, 32), 8.0, "matrix"), ((2, 1, 28, 28), 1.0, "matrix"),
                                   ((1, 3, 70, 66), 2.0, "direct"), ((1, 3, 70, 66), 30.0, "fft")]:
        x = _x(shape, dtype=torch.float32)
        auto = LowPassFilter("gaussian", sigma, padding=padding)(x)
        picked = {m: torch.equal(auto, LowPassFilter("gaussian", sigma, padding=padding,
                                                     method=m)(x))
                  for m in ("direct", "fft", "matrix")}
        assert picked[expected], (shape, sigma, picked)
    half = _x((2, 3, 16, 16), dtype=torch.float32).to(torch.bfloat16)  # half: always direct
    assert torch.equal(LowPassFilter("gaussian", 2.0, padding=padding)(half),
                LowPassFilter("gaussian", 2.0, padding=padding, method="direct")(half))
    with pytest.raises(ValueError, match="method"):
        LowPassFilter("gaussian", 1.0, method="dft")
