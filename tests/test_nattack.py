"""NAttack: constraints, success on an easy model, reproducibility, query accounting."""

from __future__ import annotations

import pytest
import torch
from conftest import Affine, TinyCNN

from advsmooth.attacks import NAttack
from advsmooth.defenses import SmoothedClassifier


@pytest.fixture
def easy():
    model = Affine((1, 6, 6), 5, seed=1)
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return model, x


def test_constraints_and_success_on_affine(easy):
    model, x = easy
    y = model(x).argmax(1)
    att = NAttack(eps=0.1, population=50, max_iter=100, seed=0)
    res = att(model, x, y)
    r = res.x_adv - x
    assert float(r.abs().max()) <= 0.1 + 1e-12
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert bool(res.success.all()), res.success
    assert bool(res.extras["broken"].all())
    # queries: a multiple of the population, the iterations times n, early stopping per sample
    q = res.extras["queries"]
    assert torch.equal(q, res.iterations * 50)
    assert torch.equal(res.forward_evals, q + 2)
    assert int(res.iterations.max()) < 100


def test_reproducible_and_seed_dependent(easy):
    model, x = easy
    kw = dict(eps=0.02, population=20, max_iter=15)
    a = NAttack(seed=3, **kw)(model, x)
    b = NAttack(seed=3, **kw)(model, x)
    c = NAttack(seed=4, **kw)(model, x)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.iterations, b.iterations)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_budget_caps_iterations_and_untouched_state(easy):
    model, x = easy
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    x0 = x.clone()
    att = NAttack(eps=1e-4, population=10, max_iter=500, max_queries=55)
    assert att.iterations == 5
    res = att(model, x)
    assert int(res.extras["queries"].max()) <= 55
    # an unbroken sample spent the whole budget and stays in the ball
    unbroken = ~res.extras["broken"]
    assert bool(unbroken.any())
    assert bool((res.extras["queries"][unbroken] == 50).all())
    assert float((res.x_adv - x).abs().max()) <= 1e-4 + 1e-12
    assert torch.equal(x, x0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.requires_grad for p in model.parameters())


def test_against_smoothed_classifier():
    torch.manual_seed(0)
    base = TinyCNN(channels=1, num_classes=4, seed=2).eval()
    sm = SmoothedClassifier(base, 0.1, 4, vote="prediction", seed=0)
    assert sm.outputs_probabilities
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = base(x).argmax(1)
    res = NAttack(eps=0.3, population=16, max_iter=20, seed=0)(sm, x, y)
    assert float((res.x_adv - x).abs().max()) <= 0.3 + 1e-6
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert bool(res.extras["broken"].any())
    assert not base.training


def test_targeted(easy):
    model, x = easy
    y = model(x).argmax(1)
    t = (y + 1) % 5
    res = NAttack(eps=0.3, population=50, max_iter=200, seed=0)(model, x, y, target=t)
    assert bool(res.success.any())
    assert torch.equal(res.adv_pred[res.success], t[res.success])


def test_bad_arguments():
    for kw in ({"eps": -1.0}, {"population": 1}, {"sigma": 0.0}, {"lr": -0.1},
               {"max_iter": 0}, {"output": "scores"}, {"population": 10, "max_queries": 5}):
        with pytest.raises(ValueError):
            NAttack(**kw)
    assert "population=300" in repr(NAttack())
