"""APGD, Square, attacks over an ε grid and ``advsmooth.evaluate``: feasibility, the schedule,
the DLR loss, monotonicity in ε, a gradient-masking model caught by the black-box stage, and
randomised-model detection."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TinyCNN
from torch import nn

import advsmooth as asm
from advsmooth.attacks import APGD, PGD, AttackObjective, EpsGrid, Square
from advsmooth.attacks.apgd import apgd_checkpoints
from advsmooth.attacks.square import square_side
from advsmooth.metrics.evaluation import RobustnessReport, evaluate


def _setup(n: int = 24, seed: int = 3) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = TinyCNN(channels=1, num_classes=4, seed=seed).eval()
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


class Quantized(nn.Module):
    """Input quantisation before the model: ``round(x·L)/L`` has a zero gradient everywhere, so
    every gradient attack is blind (gradient masking on purpose)."""

    def __init__(self, base: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.base, self.levels = base, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(torch.round(x * self.levels) / self.levels)


class Noisy(nn.Module):
    """Gaussian noise injection at the input (a randomised model)."""

    def __init__(self, base: nn.Module, sigma: float = 0.05) -> None:
        super().__init__()
        self.base, self.sigma = base, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x + self.sigma * torch.randn_like(x))


def _within(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str) -> bool:
    r = (x_adv.double() - x.double()).flatten(1)
    size = r.abs().amax(1) if norm == "inf" else r.norm(dim=1)
    return bool((size <= eps + 1e-7).all()) and float(x_adv.min()) >= 0 and \
        float(x_adv.max()) <= 1


# ----------------------------------------------------------------------------------------------
# APGD
# ----------------------------------------------------------------------------------------------

def test_apgd_checkpoints_follow_the_paper_schedule() -> None:
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (increments shrink by .03 down to .06)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(1) == [1]


def test_dlr_loss_is_scale_and_shift_invariant() -> None:
    z = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    t = torch.tensor([1, 2, 3, 4, 0, 2])
    for target in (None, t):
        obj = AttackObjective("dlr", y, target)
        a, b = obj.value(z), obj.value(3.7 * z + 11.0)
        assert torch.allclose(a, b, atol=1e-5)
    # untargeted DLR is > 0 exactly when the sample is misclassified
    v = AttackObjective("dlr", y).value(z)
    assert torch.equal(v > 0, z.argmax(1) != y)


@pytest.mark.parametrize("norm,eps", [("inf", 0.1), (2, 0.5)])
def test_apgd_respects_eps_and_box_and_beats_no_attack(norm, eps) -> None:
    model, x, y = _setup()
    for kw in ({"loss": "ce"}, {"loss": "dlr", "targets": 2}):
        res = APGD(eps=eps, norm=norm, steps=15, **kw)(model, x, y)
        assert _within(x, res.x_adv, eps, "inf" if norm == "inf" else "2")
        assert bool(res.success.any())
        assert bool((res.grad_evals[res.success & ~res.skipped] > 0).all())
        # a sample reported fooled is fooled on the returned image
        with torch.no_grad():
            assert torch.equal(model(res.x_adv).argmax(1) != y, res.success)


def test_apgd_is_seeded_and_early_stops() -> None:
    model, x, y = _setup()
    a = APGD(eps=0.1, steps=12, seed=5)(model, x, y)
    b = APGD(eps=0.1, steps=12, seed=5)(model, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    full = APGD(eps=0.1, steps=12, seed=5, early_stop=False)(model, x, y)
    assert a.grad_evals.sum() <= full.grad_evals.sum()
    fooled = a.success & ~a.skipped
    if fooled.any():
        assert bool((a.iterations[fooled] <= full.iterations[fooled]).all())


def test_apgd_eps_list_returns_monotone_per_eps_results() -> None:
    model, x, y = _setup()
    grid = APGD(eps=[0.15, 0.02, 0.06], steps=10)(model, x, y)
    assert isinstance(grid, EpsGrid) and grid.eps == [0.02, 0.06, 0.15]
    prev = None
    for e, res in grid.items():
        assert _within(x, res.x_adv, e, "inf")
        if prev is not None:  # fooled at a smaller eps stays fooled
            assert bool((res.success | ~prev.success).all())
        prev = res
    acc = list(grid.robust_accuracy().values())
    assert acc == sorted(acc, reverse=True)


# ----------------------------------------------------------------------------------------------
# Square
# ----------------------------------------------------------------------------------------------

def test_square_side_schedule_halves_p() -> None:
    assert square_side(0.8, 0, 10000, 28, 28) == round(math.sqrt(0.8 * 784))
    assert square_side(0.8, 11, 10000, 28, 28) == round(math.sqrt(0.4 * 784))
    assert square_side(0.8, 9999, 10000, 28, 28) == max(1, round(math.sqrt(0.8 / 512 * 784)))
    assert square_side(0.8, 100, 1000, 28, 28) == square_side(0.8, 1000, 10000, 28, 28)


def test_square_is_exactly_feasible_and_fools_a_gradient_masked_model() -> None:
    base, x, _ = _setup(n=16)
    model = Quantized(base)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 0.3
    pgd = PGD(eps=eps, steps=10, random_start=False)(model, x, y)
    assert not bool(pgd.success.any())          # the zero gradient leaves x where it is
    res = Square(eps=eps, queries=200, seed=1)(model, x, y)
    assert _within(x, res.x_adv, eps, "inf")
    assert bool(res.success.any())
    assert int(res.forward_evals.max()) <= 200 + 2
    again = Square(eps=eps, queries=200, seed=1)(model, x, y)
    assert torch.equal(res.x_adv, again.x_adv)


# ----------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------

_FAST = {"pgd_steps": 5, "apgd_steps": 8, "apgd_targets": 2, "square_queries": 150}


def test_evaluate_is_monotone_in_eps_and_consistent() -> None:
    model, x, y = _setup()
    rep = evaluate(model, x, y, eps=[0.2, 0.05, 0.1], **_FAST)
    assert rep.eps == [0.05, 0.1, 0.2]
    acc = [rep.robust_accuracy[e] for e in rep.eps]
    assert acc == sorted(acc, reverse=True)
    assert bool((rep.robust[1:] <= rep.robust[:-1]).all())       # robust at ε ⇒ at smaller ε
    for e in rep.eps:
        assert rep.robust_accuracy[e] <= rep.pgd_robust_accuracy[e]
        assert rep.robust_accuracy[e] <= rep.clean_accuracy
        # DeepFool's ‖r‖ ≤ ε samples are fooled by its (projected) image: the bound holds
        assert rep.robust_accuracy[e] <= rep.clean_accuracy - rep.deepfool["fraction_within"][e]
    last = [s for s in rep.stages if s["eps"] == rep.eps[-1]]
    assert [s["stage"] for s in last] == rep.stage_list
    # fooled counts add up to the robust accuracy
    fooled = sum(s["fooled"] for s in rep.stages)
    assert fooled == round(rep.n * (rep.clean_accuracy - acc[-1]))
    back = RobustnessReport.from_dict(rep.to_dict())
    assert back.table() == rep.table() and torch.equal(back.robust, rep.robust)


def test_evaluate_finds_masked_gradients_through_the_black_box_stage() -> None:
    base, x, _ = _setup(n=16)
    model = Quantized(base)
    with torch.no_grad():
        y = model(x).argmax(1)
    rep = evaluate(model, x, y, eps=[0.3], **_FAST)
    flags = {f.name: f for f in rep.flags}
    assert rep.robust_accuracy[0.3] < rep.pgd_robust_accuracy[0.3]
    assert flags["blackbox_beats_whitebox"].raised
    assert flags["zero_gradients"].raised
    assert rep.masking_suspected
    square = [s for s in rep.stages if s["stage"] == "square"][0]
    assert square["fooled"] > 0


def test_evaluate_detects_a_randomised_model_and_uses_eot() -> None:
    base, x, y = _setup(n=8)
    rep = evaluate(Noisy(base), x, y, eps=[0.1], stages=["pgd-ce", "apgd-ce"], pgd_steps=3,
                   apgd_steps=4, eot_samples=2, draws=3, deepfool=False)
    assert rep.randomized
    assert {f.name: f for f in rep.flags}["randomized"].raised
    assert not evaluate(base, x, y, eps=[0.1], stages=["pgd-ce"], pgd_steps=2,
                        deepfool=False).randomized
    # a SmoothedClassifier (hard votes, no gradient of its own): EPGD through the base model,
    # DeepFool left out
    smoothed = asm.defenses.SmoothedClassifier(base, sigma=0.1, samples=8)
    rep = evaluate(smoothed, x, y, eps=[0.1], pgd_steps=2, apgd_steps=3, apgd_targets=1,
                   square_queries=5, eot_samples=2, draws=3)
    assert rep.randomized and "deepfool" not in rep.stage_list and not rep.deepfool
    assert rep.robust_accuracy[0.1] <= rep.clean_accuracy


def test_evaluate_rejects_bad_arguments() -> None:
    model, x, y = _setup(n=4)
    with pytest.raises(ValueError, match="stage"):
        evaluate(model, x, y, eps=[0.1], stages=["pgd"])
    with pytest.raises(ValueError, match="norm='inf' only"):
        evaluate(model, x, y, eps=[0.1], norm=2, stages=["square"])
    with pytest.raises(ValueError, match="eps"):
        evaluate(model, x, y, eps=[-0.1])
    assert asm.evaluate is evaluate
