"""Determinism on CPU: the same call with the same seed gives bit-identical results for every
attack (stochastic ones included: PGD random start, sg, EPGD, NAttack, ColorShift, UAP), the
SmoothedClassifier (forward / predict / certify), and one CLI command run twice (identical npz).
GPU non-determinism is documented in docs/trustworthy.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TinyCNN
from test_invariance import ALL_NAMES, is_universal, make_attack

from advsmooth.cli import main
from advsmooth.defenses import SmoothedClassifier


@pytest.fixture(scope="module")
def setup():
    model = TinyCNN(3, 4, seed=0).eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _outputs(name, model, x, y, seed):
    atk = make_attack(name, seed=seed)
    if is_universal(name):
        return [atk.fit(model, x)]
    r = atk(model, x, y)
    return [r.x_adv, r.success, r.iterations, r.forward_evals, r.grad_evals]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_same_seed_bit_identical(name, setup):
    model, x, y = setup
    a = _outputs(name, model, x, y, seed=5)
    b = _outputs(name, model, x, y, seed=5)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("name", ["pgd", "sg-igsm", "nattack", "epgd", "color-shift"])
def test_stochastic_attacks_depend_on_the_seed(name, setup):
    """The seed is actually used (else the identity above would be vacuous)."""
    model, x, y = setup
    a = _outputs(name, model, x, y, seed=1)[0]
    b = _outputs(name, model, x, y, seed=2)[0]
    assert not torch.equal(a, b)


def test_explicit_generator_reproducible(setup):
    model, x, y = setup
    atk = make_attack("pgd")
    a = atk(model, x, y, generator=torch.Generator().manual_seed(9)).x_adv
    b = atk(model, x, y, generator=torch.Generator().manual_seed(9)).x_adv
    assert torch.equal(a, b)


def test_smoothed_classifier_bit_identical(setup):
    model, x, _ = setup

    def run():
        s = SmoothedClassifier(model, sigma=0.25, samples=16, seed=7)
        return [s(x), s.predict(x, n=20, alpha=0.01), s.certify(x, n0=8, n=32, alpha=0.01).radius]

    a, b = run(), run()
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    s = SmoothedClassifier(model, sigma=0.25, samples=16, seed=7)
    first = s(x)
    s.reseed()
    assert torch.equal(first, s(x))


def test_cli_attack_twice_identical_npz(tmp_path):
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        assert main(["attack", "deepfool", "--model", "digits-lenet", "--data", "digits",
                     "--n", "16", "--out", str(out)]) == 0
        outs.append(np.load(out / "adversarial.npz", allow_pickle=False))
    a, b = outs
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key
