"""SmoothedClassifier: votes, σ = 0, chunk independence, seeds, predict/certify, statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import Affine, TinyCNN
from torch import nn

from advsmooth.defenses import SmoothedClassifier
from advsmooth.defenses.smoothing import (
    VOTES,
    binom_test_half,
    clopper_pearson_lower,
    votes_from_logits,
)


class TableModel(nn.Module):
    """Returns a fixed table of logits, row by row, whatever the input (a stub per noise copy)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.pos = 0
        self.dummy = nn.Parameter(torch.zeros((), dtype=table.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.table[self.pos:self.pos + x.shape[0]]
        self.pos += x.shape[0]
        return out + 0 * x.flatten(1)[:, :1]


@pytest.fixture
def cnn():
    m = TinyCNN(channels=1, num_classes=4, seed=3)
    m.eval()
    return m


@pytest.fixture
def xs():
    return torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("vote", VOTES)
def test_sigma_zero_reproduces_base(cnn, xs, vote):
    kw = {"C": 0.5} if vote == "weighted_c" else {}
    sm = SmoothedClassifier(cnn, 0.0, 16, vote=vote, batch_size=7, **kw)
    with torch.no_grad():
        z = cnn(xs)
        s = sm(xs)
    assert torch.equal(s.argmax(1), z.argmax(1))
    if vote == "prediction":
        assert torch.equal(s, torch.nn.functional.one_hot(z.argmax(1), 4).float())
    elif vote == "soft":
        torch.testing.assert_close(s, z.softmax(1))
    elif vote == "logit_mean":
        torch.testing.assert_close(s, z)
    elif vote == "weighted":
        ranks = z.argsort(1, descending=True).argsort(1).float()
        torch.testing.assert_close(s, 2.0 ** (-ranks) / (2 * (1 - 2.0 ** -4)))


@pytest.mark.parametrize("vote", ["prediction", "weighted", "weighted_c", "soft"])
def test_shares_sum_to_one(cnn, xs, vote):
    kw = {"C": 0.3} if vote == "weighted_c" else {}
    sm = SmoothedClassifier(cnn, 0.3, 32, vote=vote, **kw)
    s = sm(xs)
    assert s.shape == (6, 4)
    assert bool((s >= 0).all())
    torch.testing.assert_close(s.sum(1), torch.ones(6))


def test_weighted_votes_hand_built():
    # M = 3 copies, N = 2 samples, K = 3 classes; copy-major rows (copy m, sample i) = m*N + i
    z = torch.tensor([
        [[3.0, 2.0, 1.0], [0.0, 1.0, 2.0]],   # copy 0: ranks s0: (0,1,2), s1: (2,1,0)
        [[1.0, 3.0, 2.0], [0.0, 1.0, 2.0]],   # copy 1: s0: (2,0,1)
        [[3.0, 1.0, 2.0], [5.0, 1.0, 2.0]],   # copy 2: s0: (0,2,1), s1: (0,2,1)
    ])
    table = z.reshape(6, 3)
    x = torch.rand(2, 1, 2, 2)
    # powers of two: V = 2^(1-k), k = 1 for the top class
    exp_pow = torch.tensor([[1 + .25 + 1, .5 + 1 + .25, .25 + .5 + .5],
                            [.25 + .25 + 1, .5 + .5 + .25, 1 + 1 + .5]])
    sm = SmoothedClassifier(TableModel(table), 0.1, 3, vote="weighted", batch_size=100)
    torch.testing.assert_close(sm.vote_counts(x), exp_pow)
    sm.base.pos = 0
    torch.testing.assert_close(sm(x), exp_pow / (3 * 1.75))
    # V_C: 1 for the top class, C for the runner-up
    c = 0.4
    exp_c = torch.tensor([[1 + 0 + 1, c + 1 + 0, 0 + c + c],
                          [0 + 0 + 1, c + c + 0, 1 + 1 + c]])
    sm = SmoothedClassifier(TableModel(table), 0.1, 3, vote="weighted_c", C=c, batch_size=100)
    torch.testing.assert_close(sm.vote_counts(x), exp_c)
    torch.testing.assert_close(votes_from_logits(z, "weighted_c", C=c, normalize=False), exp_c)
    # C = 0 is prediction smoothing
    torch.testing.assert_close(votes_from_logits(z, "weighted_c", C=0.0),
                               votes_from_logits(z, "prediction"))
    torch.testing.assert_close(votes_from_logits(z, "prediction", normalize=False),
                               torch.tensor([[2.0, 1.0, 0.0], [1.0, 0.0, 2.0]]))


@pytest.mark.parametrize("vote", ["prediction", "soft", "logit_mean"])
def test_chunk_size_independent(cnn, xs, vote):
    outs = []
    for bs in (3, 17, 1000):
        sm = SmoothedClassifier(cnn, 0.25, 20, vote=vote, batch_size=bs, seed=11)
        with torch.no_grad():
            outs.append(sm(xs))
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-5, atol=1e-6)
    # hard votes exactly equal
    if vote == "prediction":
        assert all(torch.equal(o, outs[0]) for o in outs)


def test_chunk_independent_with_many_noise_blocks():
    # N·C·H·W large enough that the noise is split into several blocks (2**20 numbers each)
    # (here 64 images of 1×32×32: 16 copies per block, 40 copies -> 3 blocks)
    lin = Affine((1, 32, 32), 4, seed=2, dtype=torch.float32)
    x = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    a = SmoothedClassifier(lin, 0.2, 40, batch_size=5000, seed=3).copy_logits(x)
    b = SmoothedClassifier(lin, 0.2, 40, batch_size=333, seed=3).copy_logits(x)
    assert a.shape == (40, 64, 4)
    # logits reach ~75 here; the 1024-term float32 sums of differently shaped batches may round
    # differently by a few 1e-5 (CPU-kernel dependent), while differing noise changes them by ~10
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(a[0], a[16])  # different blocks carry different noise


def test_seeds_and_stream(cnn, xs):
    a = SmoothedClassifier(cnn, 0.3, 8, vote="soft", seed=0)
    b = SmoothedClassifier(cnn, 0.3, 8, vote="soft", seed=1)
    with torch.no_grad():
        s0, s1 = a(xs), b(xs)
        assert not torch.allclose(s0, s1)
        # fresh noise per call, reproducible stream
        s0b = a(xs)
        assert not torch.allclose(s0, s0b)
        a.reseed()
        assert torch.equal(a(xs), s0)
        # fixed noise: every call identical
        f = SmoothedClassifier(cnn, 0.3, 8, vote="soft", seed=0, fixed_noise=True)
        assert torch.equal(f(xs), f(xs))
        # explicit noise_seed: reproducible and does not advance the stream
        assert torch.equal(a.scores(xs, noise_seed=7), a.scores(xs, noise_seed=7))


def test_no_global_rng_and_mode_untouched(cnn, xs):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    sm = SmoothedClassifier(cnn, 0.3, 8)
    sm(xs)
    sm.certify(xs[:2], n0=10, n=50)
    assert torch.equal(torch.get_rng_state(), before)
    assert not cnn.training


def test_soft_is_differentiable(cnn, xs):
    sm = SmoothedClassifier(cnn, 0.2, 4, vote="soft")
    x = xs.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(sm(x)[:, 0].sum(), x)
    assert g.abs().sum() > 0
    hard = SmoothedClassifier(cnn, 0.2, 4, vote="prediction")
    with pytest.raises(ValueError, match="no input gradient"):  # a gradient attack's call
        hard(x)
    assert not hard(x.detach()).requires_grad  # a plain prediction


def test_normalized_noise_space(cnn, xs):
    std = torch.tensor([0.5])
    a = SmoothedClassifier(cnn, 0.4, 8, noise_space="normalized", std=std, vote="soft", seed=2)
    b = SmoothedClassifier(cnn, 0.2, 8, vote="soft", seed=2)
    with torch.no_grad():
        torch.testing.assert_close(a(xs), b(xs))

    class Normalize(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("std", torch.tensor([0.5]))

        def forward(self, x):
            return x / self.std.view(1, -1, 1, 1)

    wrapped = nn.Sequential(Normalize(), cnn)
    c = SmoothedClassifier(wrapped, 0.4, 2, noise_space="normalized")
    assert float(c.pixel_sigma(xs).flatten()[0]) == pytest.approx(0.2)


def test_bad_arguments(cnn):
    with pytest.raises(ValueError, match="sigma"):
        SmoothedClassifier(cnn, -0.1, 8)
    with pytest.raises(ValueError, match="samples"):
        SmoothedClassifier(cnn, 0.1, 0)
    with pytest.raises(ValueError, match="vote"):
        SmoothedClassifier(cnn, 0.1, 8, vote="majority")
    with pytest.raises(ValueError, match="C"):
        SmoothedClassifier(cnn, 0.1, 8, vote="weighted_c")
    with pytest.raises(ValueError, match="noise_space"):
        SmoothedClassifier(cnn, 0.1, 8, noise_space="latent")
    with pytest.raises(ValueError, match="std"):
        SmoothedClassifier(cnn, 0.1, 8, noise_space="normalized")
    with pytest.raises(ValueError, match="batch_size"):
        SmoothedClassifier(cnn, 0.1, 8, batch_size=0)
    sm = SmoothedClassifier(cnn, 0.1, 8)
    x = torch.rand(2, 1, 8, 8)
    for a in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(ValueError, match="alpha"):
            sm.predict(x, alpha=a)
        with pytest.raises(ValueError, match="alpha"):
            sm.certify(x, alpha=a)
    assert "sigma=0.1" in repr(sm) and "vote='prediction'" in repr(sm)


def test_predict_abstains_on_tie():
    # 4 copies, one sample: two votes for class 0, two for class 1 -> tie -> abstain
    table = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [1.0, 2.0, 0.0]])
    sm = SmoothedClassifier(TableModel(table), 0.1, 4)
    assert sm.predict(torch.rand(1, 1, 2, 2), alpha=0.05).tolist() == [-1]
    # a clear majority is returned
    table = torch.tensor([[2.0, 1.0, 0.0]] * 20)
    sm = SmoothedClassifier(TableModel(table), 0.1, 20)
    assert sm.predict(torch.rand(1, 1, 2, 2), alpha=0.05).tolist() == [0]


def test_predict_without_alpha_is_argmax(cnn, xs):
    sm = SmoothedClassifier(cnn, 0.0, 4)
    assert torch.equal(sm.predict(xs), cnn(xs).argmax(1))


def _binary_linear(dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    lin = Affine((1, 1, dim), 2, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.zeros(dim, dtype=torch.float64), w]))
        lin.bias.zero_()
    return lin, w


def test_certify_matches_closed_form_on_linear_model():
    sigma, dim = 0.25, 16
    lin, w = _binary_linear(dim)
    wn = float(w.norm())
    # inputs at L2 distance d from the hyperplane w·x + b = 0 (b chosen per sample, via x)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 1, 1, dim, generator=g, dtype=torch.float64) * 0.2 + 0.4
    d_target = torch.tensor([0.2, -0.3, 0.1, 0.25], dtype=torch.float64)
    margin = x0.flatten(1) @ w
    bias = d_target * wn - margin   # f(x) = w·x + bias_i: distance = |d_target|
    lin_b = _PerSampleBias(lin, bias)
    sm = SmoothedClassifier(lin_b, sigma, 1, batch_size=50000)
    cert = sm.certify(x0, n0=100, n=40000, alpha=0.001, noise_seed=0)
    expected_cls = (d_target > 0).long()
    assert cert.prediction.tolist() == expected_cls.tolist()
    true_radius = d_target.abs()
    # the bound is conservative and tight: pA_lower < pA = Φ(d/σ) and close to it
    p_true = torch.special.ndtr(true_radius / sigma)
    assert bool((cert.p_lower < p_true + 1e-12).all())
    assert bool(((p_true - cert.p_lower) < 0.01).all())
    assert bool((cert.radius <= true_radius + 0.01).all())
    assert bool((cert.radius >= true_radius - 0.03).all())
    # radius = σ Φ⁻¹(p_lower)
    torch.testing.assert_close(cert.radius, sigma * torch.special.ndtri(cert.p_lower))


class _PerSampleBias(nn.Module):
    """f(x) = [0, w·x + b_i] where the sample index i is recovered from the copy-major layout."""

    def __init__(self, lin: nn.Module, bias: torch.Tensor) -> None:
        super().__init__()
        self.lin = lin
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.bias.shape[0]
        b = self.bias.repeat(x.shape[0] // n)
        z = self.lin(x)
        return torch.stack([z[:, 0], z[:, 1] + b], dim=1)


def test_certify_abstains_at_zero_sigma_tie_and_zero_radius_when_sigma_zero(cnn, xs):
    sm = SmoothedClassifier(cnn, 0.0, 1)
    cert = sm.certify(xs, n0=5, n=20, alpha=0.01)
    assert torch.equal(cert.prediction, cnn(xs).argmax(1))
    assert bool((cert.radius == 0).all())


def test_statistics_known_values():
    """Clopper-Pearson and the binomial test against closed forms and exact sums."""
    # Clopper-Pearson with k = n: alpha^(1/n); k = 1: 1 - (1 - alpha)^(1/n); k = 0: 0
    n = np.array([10, 10, 10, 1000])
    lo = clopper_pearson_lower(np.array([10, 0, 1, 1000]), n, 0.01)
    assert lo[0] == pytest.approx(0.01 ** 0.1, rel=1e-10) and lo[1] == 0.0
    assert lo[2] == pytest.approx(1 - 0.99 ** 0.1, rel=1e-10)
    assert lo[3] == pytest.approx(0.01 ** 1e-3, rel=1e-12)
    # values given by the built-in continued-fraction implementation this replaced
    ref = {(990, 1000, 0.001): 0.9760361872, (5000, 10000, 0.05): 0.4917265044}
    for (k, nn_, alpha), v in ref.items():
        assert float(clopper_pearson_lower(k, nn_, alpha)) == pytest.approx(v, rel=1e-9)
    # binomial test p = 1/2: exact sums, vectorised
    k, n = 8, 10
    tail = sum(math.comb(n, j) for j in range(k, n + 1)) / 2**n
    assert float(binom_test_half(k, n)) == pytest.approx(2 * tail, rel=1e-12)
    out = binom_test_half(np.array([8, 2, 5, 0]), np.array([10, 10, 10, 0]))
    np.testing.assert_allclose(out, [2 * tail, 2 * tail, 1.0, 1.0], rtol=1e-12)
    with pytest.raises(ValueError, match="alpha"):
        clopper_pearson_lower(1, 10, 1.5)
    with pytest.raises(ValueError, match="k <= n"):
        clopper_pearson_lower(11, 10, 0.01)


def test_binom_test_half_matches_scipy_binomtest():
    from scipy import stats

    for kk, nn_ in [(6, 10), (9, 10), (60, 100), (5200, 10000), (3, 7), (0, 5)]:
        assert float(binom_test_half(kk, nn_)) == pytest.approx(
            stats.binomtest(kk, nn_, 0.5).pvalue, rel=1e-9)
