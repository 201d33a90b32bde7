"""APGD, Square (ℓ∞ and ℓ2), attacks over an ε grid and ``advsmooth.evaluate``: feasibility, the
schedule, the DLR loss, monotonicity in ε, a gradient-masking model caught by the black-box stage
(both norms), and randomised-model detection."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TinyCNN
from torch import nn

import advsmooth as asm
from advsmooth.attacks import APGD, PGD, AttackObjective, EpsGrid, Square
from advsmooth.attacks.apgd import apgd_checkpoints
from advsmooth.attacks.square import l2_move, l2_window, pyramid, square_side
from advsmooth.metrics.evaluation import STAGES, RobustnessReport, evaluate, stage_names


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


def _masked_setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny model behind an input quantisation (zero gradient), 16 images, its own labels."""
    base, x, _ = _setup(n=16)
    model = Quantized(base)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_square_is_exactly_feasible_and_fools_a_gradient_masked_model() -> None:
    model, x, y = _masked_setup()
    eps = 0.3
    pgd = PGD(eps=eps, steps=10, random_start=False)(model, x, y)
    assert not bool(pgd.success.any())          # the zero gradient leaves x where it is
    res = Square(eps=eps, queries=200, seed=1)(model, x, y)
    assert _within(x, res.x_adv, eps, "inf")
    assert bool(res.success.any())
    assert int(res.forward_evals.max()) <= 200 + 2
    again = Square(eps=eps, queries=200, seed=1)(model, x, y)
    assert torch.equal(res.x_adv, again.x_adv)


class _Widest(nn.Module):
    """Records the largest batch it was called on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.widest = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.widest = max(self.widest, x.shape[0])
        return self.inner(x)


def test_forward_in_chunks_matches_one_pass_and_bounds_the_batch() -> None:
    from advsmooth.attacks.execution import forward_in_chunks

    base, x, _ = _setup(n=16)
    x = torch.cat([x] * 20)                       # 320 images
    model = _Widest(base).eval()
    with torch.no_grad():
        whole = base(x)
    out = forward_in_chunks(model, x, 128)
    assert model.widest == 128 and out.shape == whole.shape and not out.requires_grad
    torch.testing.assert_close(out, whole, rtol=1e-5, atol=1e-6)


def test_square_fast_copy_gives_the_plain_models_verdicts() -> None:
    # a BatchNorm model: the queries run on its folded copy, the result is judged on the model
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 8 * 8, 10)).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    x = torch.rand(24, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    fast = Square(eps=0.2, queries=150, seed=3)(model, x, y)
    plain = Square(eps=0.2, queries=150, seed=3, fast_model=False)(model, x, y)
    with torch.no_grad():
        wrong = model(fast.x_adv).argmax(1) != y
    assert torch.equal(fast.success, wrong)       # verified on the model itself
    assert _within(x, fast.x_adv, 0.2, "inf")
    # the same search up to rounding: nearly the same samples fooled
    assert abs(int(fast.success.sum()) - int(plain.success.sum())) <= 2


def _l2_size(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    return (x_adv.double() - x.double()).flatten(1).norm(dim=1)


def test_square_l2_profiles() -> None:
    p = pyramid(5, 5)
    # rings at Chebyshev distance 0, 1, 2 from the centre: 1 + 1/4 + 1/9, 1/4 + 1/9, 1/9
    assert float(p[2, 2]) == pytest.approx(1 + 1 / 4 + 1 / 9)
    assert float(p[1, 3]) == pytest.approx(1 / 4 + 1 / 9)
    assert float(p[0, 4]) == pytest.approx(1 / 9) and float(p[4, 0]) == pytest.approx(1 / 9)
    for side in (3, 4, 7):
        eta = l2_window(side)
        assert eta.shape == (2, side, side)
        assert float(eta[0].norm()) == pytest.approx(1.0)
        assert torch.equal(eta[1], eta[0].T)
        k = side // 2
        assert bool((eta[0][:, :k] > 0).all()) and bool((eta[0][:, k:] < 0).all())


def test_square_l2_move_keeps_the_budget_and_touches_only_the_two_windows() -> None:
    gen = torch.Generator().manual_seed(0)
    m, c, eps = 6, 3, 1.5
    nu = torch.randn(m, c, 10, 10, generator=gen, dtype=torch.float64)
    nu *= torch.linspace(0.5, 1.0, m, dtype=torch.float64)[:, None, None, None] * eps \
        / nu.flatten(1).norm(dim=1)[:, None, None, None]      # ‖nu‖ from 0.5ε to ε
    rows = torch.arange(10)
    w1 = ((rows[:, None] >= 2) & (rows[:, None] < 6) & (rows[None] >= 1) & (rows[None] < 5))
    w2 = ((rows[:, None] >= 4) & (rows[:, None] < 8) & (rows[None] >= 3) & (rows[None] < 7))
    w1, w2 = w1.expand(m, 1, 10, 10), w2.expand(m, 1, 10, 10)
    eta = l2_window(4)[0]
    profile = torch.zeros(m, c, 10, 10, dtype=torch.float64)
    profile[:, :, 2:6, 1:5] = eta * (2 * torch.randint(0, 2, (m, c, 1, 1), generator=gen) - 1)
    new = l2_move(nu, w1, w2, profile, eps)
    assert torch.allclose(new.flatten(1).norm(dim=1), torch.full((m,), eps, dtype=torch.float64))
    outside = ~(w1 | w2).expand_as(nu)
    assert torch.equal(new[outside], nu[outside])
    assert bool((new[(w2 & ~w1).expand_as(nu)] == 0).all())
    # the unused budget is shared equally: each channel's W1 holds its old W1 ∪ W2 mass + share
    unused = eps ** 2 - nu.flatten(1).pow(2).sum(1)
    held = (nu * (w1 | w2)).flatten(2).pow(2).sum(2) + unused[:, None] / c
    assert torch.allclose((new * w1).flatten(2).pow(2).sum(2), held)


def test_square_l2_stays_in_the_ball_and_the_box() -> None:
    for channels, seed in ((1, 3), (3, 4)):
        model = TinyCNN(channels=channels, num_classes=4, seed=seed).eval()
        x = torch.rand(24, channels, 8, 8, generator=torch.Generator().manual_seed(seed))
        x[:4] = torch.round(x[:4])                    # pixels at 0 and 1: clipping bites
        with torch.no_grad():
            y = model(x).argmax(1)
        for eps in (0.05, 0.5, 2.0, 20.0):
            res = Square(eps=eps, norm=2, queries=60, seed=seed)(model, x, y)
            size = _l2_size(x, res.x_adv)
            assert bool((size <= eps * (1 + 1e-6)).all()), (eps, float(size.max()))
            assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
            assert int(res.forward_evals.max()) <= 60 + 3


def test_square_l2_keeps_the_whole_budget_when_the_box_does_not_bind() -> None:
    # grey images and a radius no single pixel can reach the box with: every accepted move
    # only moves mass around, so the perturbation stays on the sphere ‖δ‖₂ = ε
    model = TinyCNN(channels=3, num_classes=4, seed=5).eval()
    x = torch.full((8, 3, 8, 8), 0.5)
    x += 0.01 * torch.rand(x.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(1)
    res = Square(eps=0.3, norm=2, queries=100, seed=2)(model, x, y)
    assert bool((res.iterations > 0).any())
    assert torch.allclose(_l2_size(x, res.x_adv), torch.full((8,), 0.3, dtype=torch.float64),
                          rtol=1e-5)


def test_square_l2_fools_a_linear_model_at_a_large_eps_and_never_at_zero() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    zero = Square(eps=0.0, norm=2, queries=50, seed=0)(model, x, y)
    assert not bool(zero.success.any()) and torch.equal(zero.x_adv, x)
    big = Square(eps=4.0, norm=2, queries=400, seed=0)(model, x, y)
    assert bool(big.success.all())
    assert bool((_l2_size(x, big.x_adv) <= 4.0 * (1 + 1e-6)).all())


def test_square_l2_is_seeded_and_fools_a_gradient_masked_model() -> None:
    model, x, y = _masked_setup()
    eps = 1.0
    pgd = PGD(eps=eps, steps=10, norm=2, random_start=False)(model, x, y)
    res = Square(eps=eps, norm=2, queries=200, seed=1)(model, x, y)
    assert _within(x, res.x_adv, eps, "2")
    assert int(res.success.sum()) > int(pgd.success.sum()) + 4
    again = Square(eps=eps, norm="2", queries=200, seed=1)(model, x, y)
    assert torch.equal(res.x_adv, again.x_adv) and torch.equal(res.iterations, again.iterations)
    other = Square(eps=eps, norm=2, queries=200, seed=2)(model, x, y)
    assert not torch.equal(res.x_adv, other.x_adv)


def test_square_norm_argument() -> None:
    assert Square(eps=0.1, norm=float("inf")).norm == "inf"
    assert Square(eps=0.1, norm="2").norm == "2" == Square(eps=0.1, norm=2).norm
    assert "norm='2'" in repr(Square(eps=0.1, norm=2))
    with pytest.raises(ValueError, match="norm"):
        Square(eps=0.1, norm=1)


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
    model, x, y = _masked_setup()
    rep = evaluate(model, x, y, eps=[0.3], **_FAST)
    flags = {f.name: f for f in rep.flags}
    assert rep.robust_accuracy[0.3] < rep.pgd_robust_accuracy[0.3]
    assert flags["blackbox_beats_whitebox"].raised
    assert flags["zero_gradients"].raised
    assert rep.masking_suspected
    square = [s for s in rep.stages if s["stage"] == "square"][0]
    assert square["fooled"] > 0


def test_evaluate_l2_runs_square_and_finds_masked_gradients() -> None:
    assert stage_names(2) == list(STAGES) and "square" in stage_names("2")
    assert stage_names(2, ["square"]) == ["square"]
    model, x, y = _masked_setup()
    rep = evaluate(model, x, y, norm=2, eps=[1.0], **_FAST)
    assert "square" in rep.stage_list and rep.norm == "2"
    flags = {f.name: f for f in rep.flags}
    assert flags["blackbox_beats_whitebox"].raised and rep.masking_suspected
    square = [s for s in rep.stages if s["stage"] == "square"][0]
    assert square["fooled"] > 0 and square["forward_evals"] > 0
    assert rep.robust_accuracy[1.0] < rep.pgd_robust_accuracy[1.0]


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
    with pytest.raises(ValueError, match="norm"):
        evaluate(model, x, y, eps=[0.1], norm=1, stages=["square"])
    with pytest.raises(ValueError, match="eps"):
        evaluate(model, x, y, eps=[-0.1])
    assert asm.evaluate is evaluate


def _square_recorder(monkeypatch, fool_batches: int) -> list[dict]:
    """Replace the Square stage's attack calls by a recorder that, in each of its first
    ``fool_batches`` calls, fools the first sample of the call with a slightly darkened image
    (and nobody after); the other stages run for real."""
    import advsmooth.metrics.evaluation as ev

    seen: list[dict] = []
    real = ev._Cascade._attack_stage
    monkeypatch.setattr(ev, "SQUARE_GROUP", 4)  # groups of 4 survivors (batch_size=4 below)

    def fake(self, rows, e, name, seed):
        if name != "square":
            return real(self, rows, e, name, seed)
        todo = self.correct & ~self.fooled
        images = self.x[rows].clone()
        hit = torch.zeros_like(rows, dtype=torch.bool)
        if len(seen) < fool_batches:
            hit[0] = True
            images[0] *= 0.999
        seen.append({"rows": rows.clone(), "survivors": torch.nonzero(todo).flatten(),
                     "df_norm": self.df_norm.clone(), "image": images[0].clone()})
        return hit, images, 0.0, float(rows.numel())

    monkeypatch.setattr(ev._Cascade, "_attack_stage", fake)
    return seen


def test_evaluate_square_attacks_the_nearest_survivors_first_and_stops(monkeypatch) -> None:
    model, x, y = _setup(n=24)
    seen = _square_recorder(monkeypatch, fool_batches=0)
    rep = evaluate(model, x, y, eps=[0.01], stages=["deepfool", "square"], batch_size=4)
    surv, norm = seen[0]["survivors"], seen[0]["df_norm"]
    assert surv.numel() > 8
    sq = [s for s in rep.stages if s["stage"] == "square"][0]
    # one batch of 4, the survivors nearest by DeepFool (a failed DeepFool counts as nearest)
    assert len(seen) == 1 and sq["attacked"] == 4
    assert sq["not_attacked"] == surv.numel() - 4 and sq["fooled"] == 0
    assert f"{surv.numel() - 4} at ε = 0.01 (square_all=True" in rep.summary()
    key = torch.where(torch.isfinite(norm), norm, torch.full_like(norm, -1.0))
    first = seen[0]["rows"]
    rest = surv[~torch.isin(surv, first)]
    assert float(key[first].max()) <= float(key[rest].min())
    # square_all: every survivor at once, as AutoAttack
    seen.clear()
    rep_all = evaluate(model, x, y, eps=[0.01], stages=["deepfool", "square"], batch_size=4,
                       square_all=True)
    sq_all = [s for s in rep_all.stages if s["stage"] == "square"][0]
    assert len(seen) == 1 and seen[0]["rows"].numel() == surv.numel()
    assert sq_all["attacked"] == surv.numel() and sq_all["not_attacked"] == 0
    assert rep_all.config["square_all"] and not rep.config["square_all"]
    with pytest.raises(ValueError, match="square_all"):
        evaluate(model, x, y, eps=[0.01], square_all=1)


def test_evaluate_square_attacks_every_survivor_once_it_has_fooled_one(monkeypatch) -> None:
    model, x, y = _setup(n=24)
    seen = _square_recorder(monkeypatch, fool_batches=1)
    rep = evaluate(model, x, y, eps=[0.01, 0.02], stages=["deepfool", "square"], batch_size=4,
                   keep_images=True)
    sq = [s for s in rep.stages if s["stage"] == "square"]
    surv = seen[0]["survivors"].numel()
    # the first batch fooled one: every batch after it, though they fool nobody
    assert sq[0]["fooled"] == 1 and sq[0]["attacked"] == surv and sq[0]["not_attacked"] == 0
    # the verdict and the image land on the sample that was fooled, and on no other
    first = int(seen[0]["rows"][0])
    by_square = rep.fooled_by[0] == rep.stage_list.index("square")
    assert torch.nonzero(by_square).flatten().tolist() == [first]
    assert torch.equal(rep.images[0][first], seen[0]["image"])
    batches = -(-surv // 4)
    assert len(seen) >= batches
    rows = torch.cat([s["rows"] for s in seen[:batches]])
    assert rows.numel() == surv and rows.unique().numel() == surv
    # at the next ε, all the survivors in one call (Square has shown it finds what the gradient
    # stages miss)
    assert len(seen) == batches + 1 and sq[1]["not_attacked"] == 0
    assert seen[-1]["rows"].numel() == sq[1]["attacked"]


def test_evaluate_black_box_flag_looks_at_every_eps() -> None:
    """Over a grid whose largest ε has nothing left to attack, the flag still reports the ε
    where Square alone fooled samples."""
    model, x, y = _masked_setup()
    rep = evaluate(model, x, y, eps=[0.3, 1.0], **_FAST)
    flag = {f.name: f for f in rep.flags}["blackbox_beats_whitebox"]
    last = [s for s in rep.stages if s["eps"] == 1.0 and s["stage"] == "square"][0]
    assert last["fooled"] == 0
    assert flag.raised and "ε = 0.3 " in flag.detail


def test_evaluate_square_groups_do_not_shrink_with_the_batch_size(monkeypatch) -> None:
    """A small ``batch_size`` (memory) does not make the early stop judge one sample at a time:
    the first group holds ``SQUARE_GROUP`` survivors."""
    import advsmooth.metrics.evaluation as ev

    model, x, y = _setup(n=24)
    seen = _square_recorder(monkeypatch, fool_batches=0)
    monkeypatch.setattr(ev, "SQUARE_GROUP", 8)
    rep = evaluate(model, x, y, eps=[0.01], stages=["deepfool", "square"], batch_size=1)
    sq = [s for s in rep.stages if s["stage"] == "square"][0]
    assert seen[0]["survivors"].numel() > 8
    assert len(seen) == 1 and seen[0]["rows"].numel() == 8 and sq["attacked"] == 8


def test_progress_bar_counts_every_eps_and_stage(monkeypatch) -> None:
    """One bar step per (ε, stage) pair, enabled unless asked not to (tqdm itself stays silent
    without a terminal); closed with the report."""
    import advsmooth as asm
    from advsmooth.metrics import evaluation as E

    seen = []

    class Bar:
        def __init__(self, total, enabled, **_):
            self.total, self.enabled, self.n, self.closed = total, enabled, 0, False
            seen.append(self)

        def update(self, k):
            self.n += k

        def set_postfix(self, **_):
            pass

        def close(self):
            self.closed = True

    monkeypatch.setattr(E, "_bar", lambda total, enabled, **kw: Bar(total, enabled))
    m = asm.models.load("digits-lenet", verbose=False)
    x, y = asm.data.load("digits", n=6)
    rep = asm.evaluate(m, x, y, eps=[0.05, 0.1], stages=["pgd-ce", "deepfool"], pgd_steps=2)
    asm.evaluate(m, x, y, eps=[0.1], stages=["pgd-ce"], pgd_steps=2, progress_bar=False)
    assert seen[0].total == seen[0].n == 2 * len(rep.stage_list) and seen[0].enabled
    assert seen[0].closed and not seen[1].enabled


def test_adding_a_radius_changes_no_other_radius() -> None:
    """Stage seeds come from the radius's value and the stage's name, not their positions: a
    grid with an extra ε = 0 (where nothing can be fooled) gives the same verdicts at 0.1."""
    import advsmooth as asm

    m = asm.models.load("digits-lenet", verbose=False)
    x, y = asm.data.load("digits", n=16)
    kw = {"stages": ["pgd-ce", "apgd-ce"], "pgd_steps": 3, "apgd_steps": 3, "deepfool": False}
    one = asm.evaluate(m, x, y, eps=[0.1], **kw)
    two = asm.evaluate(m, x, y, eps=[0.0, 0.1], **kw)
    assert torch.equal(one.robust[-1], two.robust[-1])
    assert one.pgd_robust_accuracy[0.1] == two.pgd_robust_accuracy[0.1]
