"""FAB-T (Croce & Hein, arXiv:1907.02044): minimal perturbations near the boundary, ℓ2 and ℓ∞.

On an affine model the face between the label and a target is a hyperplane, so the smallest
perturbation that reaches it is known in closed form: ``|f| / ‖w‖_q`` (``q`` the dual norm) when
the box does not bind. FAB must never report less (its images are verified adversarial) and
should come close to it.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import Affine, needs_shared

from advsmooth.attacks import FAB, run_batched
from advsmooth.attacks.gradients import AttackObjective, PlainGradient
from advsmooth.metrics.evaluation import evaluate, stage_names


def _affine_case(classes: int = 3, seed: int = 0):
    """An affine model with small weights on mid-grey images: every face is reachable well
    inside the box, so the closed-form distances apply."""
    model = Affine((1, 6, 6), classes, seed=seed)
    with torch.no_grad():
        model.weight.mul_(0.05)
    g = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.02 * torch.randn(12, 1, 6, 6, generator=g, dtype=torch.float64))
    return model, x


def _face_distance(model, x, y, t, q):
    """Distance from ``x`` to the face ``z_t = z_y`` of the affine model, in the norm dual to q."""
    z = model(x)
    f = (z.gather(1, t[:, None]) - z.gather(1, y[:, None]))[:, 0]
    w = model.weight[t] - model.weight[y]
    return (f.abs() / torch.linalg.vector_norm(w, ord=q, dim=1)).detach()


@pytest.mark.parametrize("norm,p,q", [(2, 2.0, 2.0), ("inf", math.inf, 1.0)])
def test_affine_minimal_norm_reached_and_never_undercut(norm, p, q):
    model, x = _affine_case()
    y = model(x).argmax(1)
    # one target: the face with the second-highest logit on the clean image
    t = model(x).argsort(1, descending=True)[:, 1]
    d = _face_distance(model, x, y, t, q)
    res = FAB(norm=norm, targets=1, steps=100)(model, x, y)
    r = torch.linalg.vector_norm((res.x_adv - x).flatten(1), ord=p, dim=1)
    assert res.success.all()
    assert (r >= d * (1 - 1e-6)).all(), "an adversarial closer than the face itself"
    assert (r <= d * 1.05).all(), (r / d).max()
    assert torch.allclose(res.extras["min_norm"].to(r.dtype), r)


@pytest.mark.parametrize("norm,p,q", [(2, 2.0, 2.0), ("inf", math.inf, 1.0)])
def test_eps_mode_stays_in_ball_and_box_and_decides_by_distance(norm, p, q):
    model, x = _affine_case(seed=3)
    y = model(x).argmax(1)
    t = model(x).argsort(1, descending=True)[:, 1]
    d = _face_distance(model, x, y, t, q)
    # with three classes the nearest face of any target is at least min over the two faces
    lo = float(d.min()) * 0.5
    res = FAB(norm=norm, eps=lo, targets=2)(model, x, y)
    r = torch.linalg.vector_norm((res.x_adv - x).flatten(1), ord=p, dim=1)
    assert (r <= lo * (1 + 1e-9)).all() and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert not res.success.any()
    hi = float(d.max()) * 1.2
    res = FAB(norm=norm, eps=hi, targets=2)(model, x, y)
    r = torch.linalg.vector_norm((res.x_adv - x).flatten(1), ord=p, dim=1)
    assert res.success.all() and (r <= hi * (1 + 1e-9)).all()


def test_box_binds_matches_box_constrained_deepfool():
    """Black images: half of every face normal points out of the box. FAB's result stays in
    [0, 1] and is no larger than DeepFool's box-aware minimal step (both solve the same
    box-constrained projection on an affine model)."""
    from advsmooth.attacks import DeepFool

    model = Affine((1, 6, 6), 2, seed=5)
    x = torch.zeros(6, 1, 6, 6, dtype=torch.float64)
    x[:, :, :3] = 0.3
    y = model(x).argmax(1)
    fab = FAB(norm=2, targets=1, steps=100)(model, x, y)
    df = DeepFool(norm=2, clip=True, overshoot=0.0)(model, x, y)
    assert fab.success.all() and df.success.all()
    assert fab.x_adv.min() >= 0 and fab.x_adv.max() <= 1
    r_fab = (fab.x_adv - x).flatten(1).norm(dim=1)
    r_df = (df.x_adv - x).flatten(1).norm(dim=1)
    assert (r_fab <= r_df * 1.05).all(), (r_fab / r_df)


def test_unreachable_face_steps_to_the_box_corner():
    """A face out of reach inside the box: the step goes to the box point that comes closest
    (every coordinate that helps at its bound), not a short clipped step."""
    fab = FAB(norm=2)
    w = torch.tensor([[1.0, -1.0, 0.0]])
    p = torch.tensor([[0.5, 0.5, 0.5]])
    d = fab._project(w, torch.tensor([5.0]), p)
    assert torch.allclose(d, torch.tensor([[0.5, -0.5, 0.0]]))
    d = fab._project(w, torch.tensor([-5.0]), p)  # the face on the other side
    assert torch.allclose(d, torch.tensor([[-0.5, 0.5, 0.0]]))
    d = fab._project(w, torch.tensor([0.2]), p)  # reachable: the minimal-ℓ2 step
    assert torch.allclose(d, torch.tensor([[0.1, -0.1, 0.0]]))


def test_seeded_restarts_reproduce(tiny_cnn, rand_images):
    y = tiny_cnn(rand_images).argmax(1)
    a = FAB(norm=2, targets=2, restarts=2, steps=10, seed=4)(tiny_cnn, rand_images, y)
    b = FAB(norm=2, targets=2, restarts=2, steps=10, seed=4)(tiny_cnn, rand_images, y)
    assert torch.equal(a.x_adv, b.x_adv)


def test_face_objective_is_target_minus_label():
    z = torch.tensor([[3.0, 1.0, -2.0], [0.0, 4.0, 1.0]])
    obj = AttackObjective("face", torch.tensor([0, 1]), torch.tensor([2, 0]))
    assert torch.equal(obj.value(z), torch.tensor([-5.0, -4.0]))
    with pytest.raises(ValueError, match="needs target"):
        AttackObjective("face", torch.tensor([0, 1]))
    model = Affine((1, 2, 2), 3, seed=2)
    x = torch.rand(2, 1, 2, 2, dtype=torch.float64)
    est = PlainGradient().estimate(model, x, AttackObjective("face", torch.tensor([0, 1]),
                                                             torch.tensor([2, 2])))
    w = model.weight[2] - model.weight[torch.tensor([0, 1])]
    assert torch.allclose(est.grad.flatten(1), w)


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"targets": 0}, {"restarts": 0},
                                    {"alpha_max": 1.5}, {"eta": 0.5}, {"beta": 0.0},
                                    {"eps": -1.0}, {"norm": 3}])
def test_bad_settings_raise(kwargs):
    with pytest.raises(ValueError):
        FAB(**kwargs)


def test_evaluate_runs_fab_at_l2_only_by_default():
    assert "fab-t" in stage_names(2) and "fab-t" not in stage_names("inf")
    assert stage_names("inf", ["fab-t"]) == ["fab-t"]
    model, x = _affine_case(seed=7)
    x = x.float()
    model = model.float()
    y = model(x).argmax(1)
    rep = evaluate(model, x, y, norm=2, eps=[0.01, 10.0], stages=["fab-t"], deepfool=False)
    assert rep.robust_accuracy[0.01] == 1.0 and rep.robust_accuracy[10.0] == 0.0
    assert rep.config["fab_targets"] == 3


@needs_shared("models/mnist_lenet_pgdadv.pt", "data/mnist_test.npz")
def test_fab_finds_l2_adversarials_apgd_misses_on_linf_trained_lenet():
    """The ℓ∞-PGD-trained MNIST LeNet at ℓ2 ε = 2: FAB-T fools nearly all of 32 images within
    ε, APGD-CE (the same gradient budget order) leaves many robust."""
    import advsmooth as asm
    from advsmooth.attacks import APGD

    model = asm.models.load("mnist-lenet-pgd").eval()
    x, y = asm.data.load("mnist", "test", n=32)
    fab = run_batched(FAB(norm=2, eps=2.0, targets=3), model, x, y, batch_size=32,
                      progress_bar=False)
    apgd = run_batched(APGD(norm=2, eps=2.0, steps=100), model, x, y, batch_size=32,
                       progress_bar=False)
    r = (fab.x_adv - x).flatten(1).norm(dim=1)
    assert (r <= 2.0 * (1 + 1e-6)).all() and fab.x_adv.min() >= 0 and fab.x_adv.max() <= 1
    assert int(fab.success.sum()) >= 30
    assert int(fab.success.sum()) > int(apgd.success.sum()) + 5


def test_evaluate_leaves_fab_out_for_randomised_models():
    """A randomised model's linearisation means nothing: like DeepFool, FAB-T is dropped."""
    model, x = _affine_case(seed=9)
    model, x = model.float(), x.float()[:4]
    y = model(x).argmax(1)
    rep = evaluate(model, x, y, norm=2, eps=[0.01], stages=["pgd-ce", "fab-t"], pgd_steps=2,
                   randomized=True, draws=1, eot_samples=1, deepfool=False)
    assert rep.stage_list == ["pgd-ce"] and rep.randomized
