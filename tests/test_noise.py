"""Noise injection (PNI / CNI / input noise): exactness at scale 0, gradients, seeding, switches."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TinyCNN
from torch import nn

from advsmooth.defenses import noise as nz

CONFIGS = [
    dict(where="weights", kind="pni", granularity="layerwise"),
    dict(where="weights", kind="pni", granularity="channelwise"),
    dict(where="weights", kind="pni", granularity="elementwise"),
    dict(where="activations", kind="pni", granularity="channelwise"),
    dict(where="both", kind="pni", granularity="elementwise", input_shape=(1, 8, 8)),
    dict(where="weights", kind="cni"),
    dict(where="both", kind="cni", input_shape=(1, 8, 8), act_side="input"),
]


def _x(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_scale_zero_equals_original(cfg):
    base = TinyCNN().eval()
    extra = {"init_factor": 0.0} if cfg["kind"] == "cni" else {}
    noisy = nz.inject_noise(base, init=0.0, **cfg, **extra).eval()
    x = _x()
    assert torch.equal(noisy(x), base(x))
    noisy.train()
    base_t = copy.deepcopy(base).train()
    assert torch.equal(noisy(x), base_t(x))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_noise_on_in_eval_differs_per_call_and_switch_off(cfg):
    base = TinyCNN().eval()
    noisy = nz.inject_noise(base, **cfg).eval()
    x = _x()
    a, b = noisy(x), noisy(x)
    assert not torch.equal(a, b)
    assert not torch.equal(a, base(x))
    nz.set_noise(noisy, False)
    assert torch.equal(noisy(x), base(x))
    nz.set_noise(noisy, True)
    with nz.noise_disabled(noisy):
        assert torch.equal(noisy(x), base(x))
    assert not torch.equal(noisy(x), base(x))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_scales_receive_gradients(cfg):
    noisy = nz.inject_noise(TinyCNN(), **cfg).train()
    params = nz.noise_parameters(noisy)
    assert params
    loss = nn.functional.cross_entropy(noisy(_x()), torch.tensor([0, 1, 2, 3, 0, 1]))
    grads = torch.autograd.grad(loss, params)
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(bool((g != 0).any()) for g in grads)


def test_cni_gradients_finite_at_zero_diagonal():
    noisy = nz.inject_noise(TinyCNN(), kind="cni", init=0.0)
    loss = noisy(_x()).square().sum()
    grads = torch.autograd.grad(loss, nz.noise_parameters(noisy))
    assert all(torch.isfinite(g).all() for g in grads)


def test_reproducible_under_seed_and_independent_of_global_rng():
    base = TinyCNN()
    x = _x()
    m1 = nz.inject_noise(base, where="both", seed=3)
    m2 = nz.inject_noise(base, where="both", seed=3)
    m3 = nz.inject_noise(base, where="both", seed=4)
    torch.manual_seed(0)
    s1 = [m1(x) for _ in range(3)]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    s2 = [m2(x) for _ in range(3)]
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched
    for a, b in zip(s1, s2):
        assert torch.equal(a, b)
    assert not torch.equal(m3(x), s1[0])
    nz.seed_noise(m1, 3)  # restart the stream
    assert torch.equal(m1(x), s1[0])


def test_weight_noise_shared_across_batch():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    noisy = nz.inject_noise(net, where="weights", seed=0)
    x = _x(1)
    out = noisy(torch.cat([x, x, x]))  # one draw per call: identical rows
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_pni_noise_statistics():
    w = torch.randn(64, 32) * 0.3
    mod = nz.PNINoise(w.shape, granularity="layerwise", init=1.0, seed=0)
    with torch.no_grad():
        draws = torch.stack([mod.noise(w) for _ in range(200)])
    assert abs(float(draws.std()) - float(w.std())) < 0.02 * float(w.std()) + 1e-3


def test_cni_covariance_matches_formula():
    shape = (3,)
    mod = nz.CNINoise(shape, rank=2, init_diag=0.5, init_factor=0.3, seed=0)
    with torch.no_grad():
        mod.factor.copy_(torch.tensor([[0.3, -0.1], [0.2, 0.4], [0.0, 0.1]]))
    t = torch.tensor([1.0, 2.0, 4.0])
    s = float(t.std())
    samples = torch.stack([mod.noise(t) for _ in range(4000)]).double()
    cov = torch.cov(samples.T)
    low_rank = (mod.factor @ mod.factor.T).double()
    expect = torch.diag(torch.full((3,), abs(s * 0.5))).double() + low_rank
    assert torch.allclose(cov, expect.detach(), atol=0.08)


def test_inject_returns_copy_by_default_and_inplace_option():
    base = TinyCNN()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    noisy = nz.inject_noise(base)
    assert all(type(m) is not nz.NoisyConv2d for m in base.modules())
    assert noisy is not base
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    same = nz.inject_noise(base, inplace=True)
    assert same is base
    assert any(isinstance(m, nz.NoisyConv2d) for m in base.modules())
    assert base.net[0].weight.data_ptr() != noisy.net[0].weight.data_ptr()


def test_state_dict_round_trip_restores_noise_stream():
    base = TinyCNN()
    a = nz.inject_noise(base, where="both", kind="pni", seed=5)
    x = _x()
    a(x)
    sd = a.state_dict()
    expect = a(x)
    b = nz.inject_noise(base, where="both", kind="pni", seed=99)
    b.load_state_dict(sd)
    assert torch.equal(b(x), expect)
    assert "net.0.weight" in sd and "net.0.weight_noise.alpha" in sd


def test_noise_parameters_and_groups():
    noisy = nz.inject_noise(TinyCNN(), where="both", input_sigma=0.1, input_learnable=True)
    ids = {id(p) for p in nz.noise_parameters(noisy)}
    names = [n for n, p in noisy.named_parameters() if id(p) in ids]
    assert names and all(("noise" in n or n.endswith("sigma")) for n in names)
    groups = nz.parameter_groups(noisy, weight_decay=5e-4)
    assert groups[0]["weight_decay"] == 5e-4 and groups[1]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(noisy.parameters()))


def test_input_noise_pixel_and_normalized():
    x = torch.full((2000, 3, 2, 2), 0.5)
    pix = nz.InputNoise(0.1, seed=0)
    assert abs(float((pix(x) - x).std()) - 0.1) < 0.005
    nrm = nz.InputNoise(0.5, space="normalized", std=(0.1, 0.2, 0.4), seed=0)
    d = nrm(x) - x
    stds = d.transpose(0, 1).reshape(3, -1).std(dim=1)
    assert torch.allclose(stds, torch.tensor([0.05, 0.1, 0.2]), rtol=0.05)
    noisy = nz.add_input_noise(TinyCNN().eval(), 0.0)
    assert torch.equal(noisy(_x()), noisy[1](_x()))
    learn = nz.InputNoise(0.2, learnable=True)
    g = torch.autograd.grad(learn(torch.zeros(4, 1, 2, 2)).square().sum(), learn.sigma)[0]
    assert float(g) != 0


def test_attack_hygiene_keeps_noise_on():
    from advsmooth._tensors import frozen_model

    noisy = nz.inject_noise(TinyCNN(), where="both").train()
    x = _x()
    with frozen_model(noisy) as m:
        assert not m.training
        assert not torch.equal(m(x), m(x))  # eval mode keeps the noise on
        assert all(not p.requires_grad for p in m.parameters())
    assert noisy.training and all(p.requires_grad for p in noisy.parameters())


def test_bad_arguments():
    base = TinyCNN()
    with pytest.raises(ValueError, match="where"):
        nz.inject_noise(base, where="everywhere")
    with pytest.raises(ValueError, match="kind"):
        nz.inject_noise(base, kind="xyz")
    with pytest.raises(ValueError, match="granularity"):
        nz.inject_noise(base, granularity="pixelwise")
    with pytest.raises(ValueError, match="granularity"):
        nz.inject_noise(base, kind="cni", granularity="layerwise")
    with pytest.raises(ValueError, match="input_shape"):
        nz.inject_noise(base, where="activations", kind="cni")
    with pytest.raises(ValueError, match="init"):
        nz.inject_noise(base, init=-0.1)
    with pytest.raises(ValueError, match="sigma"):
        nz.InputNoise(-1.0)
    with pytest.raises(ValueError, match="std"):
        nz.InputNoise(0.1, space="normalized")
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        nz.inject_noise(nn.Sequential(nn.ReLU()))


def test_direct_layers():
    conv = nz.PNIConv2d(1, 4, 3, padding=1, granularity="channelwise")
    assert conv.weight_noise.alpha.shape == (4, 1, 1, 1)
    lin = nz.CNILinear(6, 3, rank=5)
    assert lin.weight_noise.factor.shape == (18, 5)
    out = lin(torch.rand(2, 6))
    assert out.shape == (2, 3)
    assert conv(torch.rand(2, 1, 5, 5)).shape == (2, 4, 5, 5)
