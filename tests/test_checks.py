"""The gradient-masking checklist (advsmooth.checks): it flags deliberately masked models
(quantisation in front, saturated softmax head, random gradients attacked with single draws) and
passes ordinary ones (a tiny CNN, digits-lenet, and the shared MNIST LeNets when present)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TinyCNN, needs_shared
from torch import nn

from advsmooth.checks import Check, evaluate_defense, is_randomized
from advsmooth.cli import main

FAST = dict(steps=8, deepfool_iter=30, eps_grid=(0.05, 0.1, 0.3), nattack_population=10,
            nattack_iter=8, draws=4, epgd_samples=16)
#: lighter budget for the (bigger) real models that must pass
LIGHT = dict(steps=5, deepfool_iter=20, eps_grid=(0.1, 0.3), nattack_population=8,
             nattack_iter=5)


class Quantise(nn.Module):
    """Straight rounding to 5 grey levels in front of the model: zero input gradients."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(torch.round(x * 4) / 4)


class Saturated(nn.Module):
    """Outputs softmax(T·logits) with a huge temperature factor: CE gradients vanish."""

    def __init__(self, m: nn.Module, t: float = 1e5) -> None:
        super().__init__()
        self.m, self.t = m, t

    def forward(self, x):
        return torch.softmax(self.t * self.m(x), dim=1)


class RandomGradient(nn.Module):
    """Randomised defence whose single-draw input gradients are dominated by noise: the forward
    is x + tiny noise, the backward multiplies the gradient by (1 + k·n), n ~ N(0, 1) per pixel
    and draw (mean: the true gradient). Draws from its own generator, never the global RNG."""

    def __init__(self, m: nn.Module, k: float = 10.0, seed: int = 0) -> None:
        super().__init__()
        self.m, self.k = m, k
        self.g = torch.Generator().manual_seed(seed)

    def forward(self, x):
        n = torch.randn(x.shape, generator=self.g, dtype=x.dtype)
        e = torch.randn(x.shape, generator=self.g, dtype=x.dtype)
        return self.m(x + self.k * (n * x - (n * x).detach()) + 0.01 * e)


@pytest.fixture(scope="module")
def tiny():
    m = TinyCNN(1, 4, seed=0).eval()
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = m(x).argmax(1)
    return m, x, y


def test_ordinary_tiny_model_passes(tiny):
    m, x, y = tiny
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rep = evaluate_defense(m, (x, y), n=10, **FAST)
    assert rep.passed, rep.table()
    assert rep["unbounded"].status == "pass"
    assert rep["unbounded"].evidence["deepfool"] >= 0.95
    assert rep["gradient_norm"].status == "pass"
    assert rep["randomness"].status == "skip" and not rep.randomized
    assert rep["whitebox_vs_transfer"].status == "skip"
    sweep = rep["eps_monotone"].evidence
    assert sweep["pgd"][-1] >= sweep["pgd"][0]
    assert all(p >= f - 0.2 for p, f in zip(sweep["pgd"], sweep["fgsm"]))
    # the table carries the names, statuses and the verdict; the model is untouched
    table = rep.table()
    for c in rep.checks:
        assert c.name in table
    assert "verdict: no" in table
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    json.dumps(rep.to_dict(), default=float)


def test_quantisation_in_front_is_flagged(tiny):
    m, x, y = tiny
    rep = evaluate_defense(Quantise(m), (x, y), n=10, **FAST)
    assert not rep.passed
    assert rep["unbounded"].status == "fail"
    assert rep["gradient_norm"].status == "fail"
    assert rep["gradient_norm"].evidence["zero_gradient_fraction"] == 1.0
    assert "quantisation" in rep["unbounded"].cause and rep["unbounded"].remedy
    assert "GRADIENT MASKING LIKELY" in rep.table()


def test_saturated_softmax_head_is_flagged(tiny):
    m, x, y = tiny
    rep = evaluate_defense(Saturated(m), (x, y), n=10, **FAST)
    assert not rep.passed
    assert rep["gradient_norm"].status == "fail"
    assert "saturated" in rep["gradient_norm"].cause


def test_randomized_model_attacked_with_single_draws_is_flagged(tiny):
    m, x, y = tiny
    rnd = RandomGradient(m)
    assert is_randomized(rnd, x)
    assert not is_randomized(m, x)
    rep = evaluate_defense(rnd, (x, y), n=10, **FAST)
    assert rep.randomized
    c = rep["randomness"]
    assert c.status == "fail", rep.table()
    assert c.evidence["epgd"] > c.evidence["single_draw_pgd"]
    assert 0 < c.evidence["prediction_agreement"] <= 1
    assert "EPGD" in c.message and "agree" in c.message
    assert not rep.passed


def test_transfer_check_runs_with_a_surrogate(tiny):
    m, x, y = tiny
    rep = evaluate_defense(Quantise(m), (x, y), n=10, surrogate=m, nattack=False, **{
        k: v for k, v in FAST.items() if not k.startswith("nattack")})
    c = rep["whitebox_vs_transfer"]
    assert c.status == "fail"  # the surrogate's (unmasked) gradients transfer, white-box stalls
    assert max(c.evidence["transfer"]) > max(c.evidence["pgd"])


def test_invalid_arguments(tiny):
    m, x, y = tiny
    with pytest.raises(ValueError, match="eps_grid"):
        evaluate_defense(m, (x, y), eps_grid=(0.3, 0.1))
    with pytest.raises(ValueError, match="eps_grid"):
        evaluate_defense(m, (x, y), eps_grid=())
    with pytest.raises(TypeError, match="pair"):
        evaluate_defense(m, x)
    with pytest.raises(ValueError, match="n must"):
        evaluate_defense(m, (x, y), n=0)
    with pytest.raises(ValueError, match="status"):
        Check("x", "ok")


def test_digits_lenet_passes():
    import advsmooth as asm

    m = asm.models.load("digits-lenet", verbose=False)
    x, y = asm.data.load("digits", split="test", n=6)
    rep = evaluate_defense(m, (x, y), n=6, **LIGHT)
    assert rep.passed, rep.table()
    assert rep["unbounded"].evidence["pgd_eps1"] >= 0.95


@needs_shared("models/mnist_lenet_clean.pt", "models/mnist_lenet_pgdadv.pt", "data")
@pytest.mark.parametrize("name", ["mnist-lenet", "mnist-lenet-pgd"])
def test_shared_mnist_lenets_pass(name):
    import advsmooth as asm

    m = asm.models.load(name, verbose=False)
    x, y = asm.data.load("mnist", split="test", n=6)
    rep = evaluate_defense(m, (x, y), n=6, **LIGHT)
    assert rep.passed, rep.table()
    assert rep["unbounded"].status in ("pass", "warn")


def test_cli_check_defense(tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["check-defense", "--model", "digits-lenet", "--data", "digits", "--n", "4",
                 "--eps", "0.1", "0.3", "--steps", "4", "--no-nattack", "--device", "cpu",
                 "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "unbounded" in text and "verdict:" in text
    data = json.loads(out.read_text())
    assert data["passed"] is True and data["eps_grid"] == [0.1, 0.3]
    assert main(["check-defense", "--model", "digits-lenet", "--data", "digits",
                 "--eps", "0.3", "0.1", "--device", "cpu"]) == 2


def test_smoothed_classifier_runs_the_randomness_checks(tiny):
    from advsmooth.defenses import SmoothedClassifier

    m, x, y = tiny
    s = SmoothedClassifier(m, sigma=0.1, samples=8, vote="soft")
    rep = evaluate_defense(s, (x[:4], y[:4]), n=4, steps=3, eps_grid=(0.1, 0.3),
                           nattack_population=4, nattack_iter=3, draws=2, epgd_samples=2)
    assert rep.randomized
    assert rep["randomness"].status in ("pass", "fail")
    assert {"single_draw_pgd", "epgd", "prediction_agreement"} <= set(rep["randomness"].evidence)
    assert "pgd_eps1" in rep["unbounded"].message  # DeepFool skipped: votes not differentiable
    assert rep["unbounded"].evidence["pgd_eps1"] >= 0.95
