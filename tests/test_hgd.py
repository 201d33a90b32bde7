"""HGD denoiser: an ordinary [0,1]→[0,1] module, white-box differentiable, trainable."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyCNN
from torch import nn

from advsmooth import attacks
from advsmooth.defenses.hgd import (
    Denoiser,
    HGDDefended,
    craft_training_set,
    layer_names,
    representation,
    train_hgd,
)


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (3, 1, 7, 7), (2, 3, 8, 8), (1, 1, 9, 13)])
def test_shapes_range_and_identity_at_init(shape):
    torch.manual_seed(0)
    d = Denoiser(shape[1], width=4, depth=2).eval()
    x = torch.rand(shape)
    out = d(x)
    assert out.shape == x.shape
    assert torch.equal(out, x)  # zero-initialised noise head: the identity on [0,1] images
    with torch.no_grad():
        for p in d.parameters():
            p.add_(torch.randn_like(p))
    out = d(x)
    assert out.min() >= 0 and out.max() <= 1 and not torch.equal(out, x)


def test_defended_model_is_sequential_and_gradients_reach_the_input():
    torch.manual_seed(0)
    d = Denoiser(1, width=4, depth=1).eval()
    with torch.no_grad():
        d.head.weight.normal_(0, 0.01)
    model = TinyCNN(seed=0).eval()
    hgd = HGDDefended(d, model)
    assert isinstance(hgd, nn.Sequential) and hgd.denoiser is d and hgd.model is model
    x = (0.25 + 0.5 * torch.rand(4, 1, 8, 8)).requires_grad_(True)
    assert torch.allclose(hgd(x), model(d(x)))
    hgd(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # any attack can target it (white-box)
    res = attacks.FGSM(eps=0.1)(hgd, x.detach(), torch.zeros(4, dtype=torch.long))
    assert res.x_adv.shape == x.shape


def test_representation_layers_and_unknown_layer_errors():
    model = TinyCNN(seed=0).eval()
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(representation(model, x, "logits"), model(x))
    assert representation(model, x, "net.0").shape == (3, 8, 8, 8)
    assert "net.6" in layer_names(model) and layer_names(model)[0] == "logits"
    with pytest.raises(ValueError, match=r"unknown layer 'fc9'.*logits.*net\.0"):
        representation(model, x, "fc9")
    with pytest.raises(ValueError, match="valid names"):
        train_hgd(Denoiser(1, width=2, depth=1), model, (x, torch.zeros(3, dtype=torch.long)),
                  layer="fc9")


def test_craft_training_set_budget_seed_and_errors():
    model = TinyCNN(seed=0).eval()
    x, y = torch.rand(10, 1, 8, 8), torch.randint(0, 4, (10,))
    for attack in ("fgsm", "igsm"):
        a = craft_training_set(model, x, y, attack=attack, eps=(0.05, 0.1), steps=3, seed=1)
        b = craft_training_set(model, x, y, attack=attack, eps=(0.05, 0.1), steps=3, seed=1)
        assert torch.equal(a, b)
        assert (a - x).abs().amax() <= 0.1 + 1e-6 and a.min() >= 0 and a.max() <= 1
    with pytest.raises(ValueError, match="eps"):
        craft_training_set(model, x, y, eps=(0.2, 0.1))
    with pytest.raises(ValueError, match="attack"):
        craft_training_set(model, x, y, attack="cw")


@pytest.mark.parametrize("layer", ["logits", "net.3"])
def test_training_reduces_the_representation_loss(layer):
    torch.manual_seed(0)
    model = TinyCNN(seed=0).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g)
    y = model(x).argmax(1)
    flags = [p.requires_grad for p in model.parameters()]
    w0 = [p.detach().clone() for p in model.parameters()]
    d = Denoiser(1, width=8, depth=1)
    res = train_hgd(d, model, (x, y), layer=layer, eps=0.2, epochs=8, lr=3e-3, batch_size=16)
    assert res.losses[-1] < 0.8 * res.initial_loss
    assert not d.training and res.denoiser is d
    assert flags == [p.requires_grad for p in model.parameters()]  # target model untouched
    assert all(torch.equal(a, b) for a, b in zip(w0, model.parameters()))
