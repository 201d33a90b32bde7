"""The iterative gradient engine: equivalences, exact constraints, cost accounting, hygiene."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import Affine, TinyCNN
from torch import nn

from advsmooth.attacks import (
    FGSM,
    IGSM,
    MIFGSM,
    PGD,
    Attack,
    AttackObjective,
    GradientEstimator,
    PlainGradient,
    SmoothedGradient,
)
from advsmooth.attacks.iterative import linf_bounds, project_l2, project_linf
from advsmooth.models.ensemble import Ensemble


@pytest.fixture
def cnn64():
    m = TinyCNN(seed=3).double().eval()
    return m


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(7)
    x = torch.rand(24, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (24,), generator=g)
    return x, y


def _attack_all(model, x, y, atk):
    return atk(model, x, y)


# ---------------------------------------------------------------------------------------------
# equivalences (docs/algorithms.md: gradient-sign attacks)
# ---------------------------------------------------------------------------------------------

def test_sg_with_one_sample_and_zero_sigma_equals_igsm(cnn64, batch):
    x, y = batch
    a = IGSM(eps=0.1, alpha=0.02, steps=6)(cnn64, x, y)
    b = IGSM(eps=0.1, alpha=0.02, steps=6, gradient=SmoothedGradient(0.0, 1))(cnn64, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv, x)  # the attack did move


def test_sg_with_zero_sigma_equals_plain_for_any_m(cnn64, batch):
    x, y = batch
    obj = AttackObjective("ce", y)
    with torch.enable_grad():
        g1 = PlainGradient().estimate(cnn64, x, obj)
        g5 = SmoothedGradient(0.0, 5, chunk_size=2).estimate(cnn64, x, obj)
    torch.testing.assert_close(g1.grad, g5.grad, rtol=1e-12, atol=1e-15)
    assert g5.grad_evals == 5 and g1.grad_evals == 1


def test_fgsm_equals_one_igsm_step(cnn64, batch):
    x, y = batch
    a = FGSM(eps=0.07)(cnn64, x, y)
    b = IGSM(eps=0.07, alpha=0.07, steps=1)(cnn64, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    # and it is x + eps*sign(grad) clamped, computed by hand
    xv = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(cnn64(xv), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, xv)
    ref = (x + 0.07 * g.sign()).clamp(0, 1)
    att = ~a.skipped
    torch.testing.assert_close(a.x_adv[att], ref[att], rtol=0, atol=1e-15)


def test_mifgsm_with_zero_decay_equals_igsm(cnn64, batch):
    x, y = batch
    a = IGSM(eps=0.1, alpha=0.02, steps=7)(cnn64, x, y)
    b = MIFGSM(eps=0.1, alpha=0.02, steps=7, decay=0.0)(cnn64, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    c = MIFGSM(eps=0.1, alpha=0.02, steps=7, decay=1.0)(cnn64, x, y)
    assert not torch.equal(a.x_adv, c.x_adv)  # momentum does change the path


def test_pgd_without_random_start_equals_igsm(cnn64, batch):
    x, y = batch
    a = IGSM(eps=0.1, alpha=0.02, steps=5)(cnn64, x, y)
    b = PGD(eps=0.1, alpha=0.02, steps=5, random_start=False)(cnn64, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    c = PGD(eps=0.1, alpha=0.02, steps=5, random_start=True)(cnn64, x, y)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_ce_objective_value_and_gradient_are_accurate_in_float32():
    g = torch.Generator().manual_seed(11)
    z64 = torch.randn(64, 10, generator=g, dtype=torch.float64) * 4
    y = torch.randint(0, 10, (64,), generator=g)
    z64[torch.arange(64), y] += torch.linspace(0, 30, 64, dtype=torch.float64)  # to saturation
    z64 = z64.float().double()  # the reference sees the same (float32-representable) logits
    ref = torch.nn.functional.cross_entropy(z64, y, reduction="none")
    p = torch.softmax(z64, dim=1)
    ref_grad = p - torch.nn.functional.one_hot(y, 10).double()
    others = p.scatter(1, y[:, None], 0.0)
    ref_grad[torch.arange(64), y] = -others.sum(1)  # −Σ_{j≠c} p_j, summed without cancellation
    z = z64.float().requires_grad_(True)
    obj = AttackObjective("ce", y)
    val = obj.value(z)
    (gz,) = torch.autograd.grad(val.sum(), z)
    torch.testing.assert_close(val.double(), ref, rtol=1e-5, atol=1e-6)
    # every entry, also ∂/∂z_c of a confident sample (~1e-12), to float32 relative precision;
    # the textbook logsumexp(z) − z_c gets that entry from p_c − 1 and misses it by ~1e-7
    torch.testing.assert_close(gz.double(), ref_grad, rtol=1e-4, atol=0)
    # a batch of logits with leading sample dimensions gives the same values
    val2 = obj.value(torch.stack([z.detach(), z.detach()]))
    assert torch.equal(val2[0], val.detach()) and torch.equal(val2[1], val.detach())


def test_single_model_ensemble_equals_that_model(cnn64, batch):
    x, y = batch
    a = MIFGSM(eps=0.1, alpha=0.02, steps=4)(cnn64, x, y)
    for combine in ("mean_logits", "sum_logits", "mean_loss"):
        b = MIFGSM(eps=0.1, alpha=0.02, steps=4)(Ensemble([cnn64], combine=combine), x, y)
        assert torch.equal(a.x_adv, b.x_adv), combine


def test_loss_ensemble_gradient_is_mean_of_member_gradients(batch):
    x, y = batch
    m1, m2 = TinyCNN(seed=1).double().eval(), TinyCNN(seed=2).double().eval()
    ens = Ensemble([m1, m2], combine="mean_loss")
    est = PlainGradient().estimate(ens, x, AttackObjective.for_model(ens, "ce", y))
    g1 = PlainGradient().estimate(m1, x, AttackObjective("ce", y)).grad
    g2 = PlainGradient().estimate(m2, x, AttackObjective("ce", y)).grad
    torch.testing.assert_close(est.grad, (g1 + g2) / 2)
    # mean_logits is a different objective
    ens2 = Ensemble([m1, m2], combine="mean_logits")
    est2 = PlainGradient().estimate(ens2, x, AttackObjective.for_model(ens2, "ce", y))
    assert not torch.allclose(est2.grad, est.grad)


# ---------------------------------------------------------------------------------------------
# constraints to the last bit
# ---------------------------------------------------------------------------------------------

def _assert_linf(x, x_adv, eps):
    assert bool(((x_adv - x).abs() <= eps).all())
    assert bool(((x_adv.double() - x.double()).abs() <= eps).all())
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


@pytest.mark.parametrize("eps", [8 / 255, 1 / 3, 0.1, 0.3, 1e-7, 0.7, 2.0, 0.0])
def test_projection_linf_exact_float32(eps):
    g = torch.Generator().manual_seed(0)
    # adversarial values: near 0, near 1, just off representable eps offsets, subnormal-ish
    x = torch.cat([torch.rand(4000, generator=g), torch.tensor([0.0, 1.0, 1e-30, 1 - 2**-24]),
                   torch.full((10,), 0.5), torch.full((10,), eps % 1)]).float().view(-1, 1, 1, 1)
    far = x + torch.randn(x.shape, generator=g) * 3
    near = x + eps * torch.sign(torch.randn(x.shape, generator=g))  # lands on x ± eps
    for x_new in (far, near, x + eps, x - eps, x + eps * (1 + 1e-7)):
        out = project_linf(x, x_new.float(), eps)
        assert out.dtype == torch.float32
        _assert_linf(x, out, eps)


def test_projection_l2_exact():
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        x = torch.rand(64, 3, 5, 5, generator=g).to(dtype)
        x_new = x + torch.randn(x.shape, generator=g).to(dtype) * 0.5
        for eps in (0.1, 1 / 3, 8 / 255 * 10):
            out = project_l2(x, x_new, eps)
            d = (out - x).flatten(1)
            assert bool((d.norm(dim=1) <= eps).all())
            assert bool((d.double().norm(dim=1) <= eps).all())
            assert float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.mark.parametrize("make", [
    lambda e: FGSM(eps=e),
    lambda e: IGSM(eps=e, alpha=e / 3, steps=5),
    lambda e: PGD(eps=e, alpha=e / 2, steps=5),
    lambda e: MIFGSM(eps=e, alpha=e / 2, steps=5),
    lambda e: IGSM(eps=e, alpha=e, steps=3, gradient=SmoothedGradient(0.1, 3)),
])
@pytest.mark.parametrize("eps", [8 / 255, 1 / 3, 0.3])
def test_every_output_respects_ball_and_box_float32(make, eps):
    m = TinyCNN(seed=0).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(32, 1, 8, 8, generator=g)
    x[:4] = 0.0
    x[4:8] = 1.0
    x[8:12] = torch.round(x[8:12] * 255) / 255  # 8-bit images
    y = torch.randint(0, 4, (32,), generator=g)
    res = make(eps)(m, x, y)
    _assert_linf(x, res.x_adv, eps)


def test_l2_attacks_respect_ball_and_box(cnn64, batch):
    x, y = batch
    for atk in (PGD(eps=0.5, alpha=0.2, steps=6, norm=2), FGSM(eps=0.5, norm=2),
                MIFGSM(eps=0.5, alpha=0.2, steps=4, norm="l2")):
        res = atk(cnn64, x, y)
        assert bool((res.norms(2) <= 0.5).all())
        assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
        assert bool(res.success.any())


def test_zero_eps_is_identity(cnn64, batch):
    x, y = batch
    for atk in (FGSM(eps=0.0), PGD(eps=0.0, alpha=0.1, steps=3), PGD(eps=0.0, steps=2, norm=2)):
        assert torch.equal(atk(cnn64, x, y).x_adv, x)


# ---------------------------------------------------------------------------------------------
# targeted, success, early stop
# ---------------------------------------------------------------------------------------------

def test_targeted_attack_on_affine_model_moves_toward_target():
    model = Affine((1, 6, 6), 5, seed=1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 6, 6, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    t = (y + 1 + torch.randint(0, 4, (20,), generator=g)) % 5
    for atk in (IGSM(eps=0.3, alpha=0.05, steps=10), MIFGSM(eps=0.3, alpha=0.05, steps=10),
                PGD(eps=2.0, alpha=0.5, steps=10, norm=2)):
        res = atk(model, x, y, target=t)
        with torch.no_grad():
            z0, z1 = model(x), model(res.x_adv)
        p0 = z0.log_softmax(1).gather(1, t[:, None])
        p1 = z1.log_softmax(1).gather(1, t[:, None])
        assert bool((p1 > p0).all()), type(atk).__name__
        assert bool(res.success.any())
        assert bool((res.success == (res.adv_pred == t)).all())


def test_margin_loss_and_early_stop(cnn64, batch):
    x, y = batch
    full = IGSM(eps=0.3, alpha=0.02, steps=20, loss="margin")(cnn64, x, y)
    es = IGSM(eps=0.3, alpha=0.02, steps=20, loss="margin", early_stop=True)(cnn64, x, y)
    att = ~full.skipped
    assert bool(es.success[att].all())
    # early stopping spends fewer gradients on the samples that succeed early
    assert bool((es.grad_evals <= full.grad_evals).all())
    assert int(es.grad_evals.sum()) < int(full.grad_evals.sum())
    assert bool((es.iterations[att] < 20).any())
    # frozen samples: the iterate stops changing once adversarial -> still adversarial
    es_sg = IGSM(eps=0.3, alpha=0.02, steps=10, early_stop=True,
                 gradient=SmoothedGradient(0.05, 2))(cnn64, x, y)
    # cost: clean + final pass, per step one check forward + 2 noisy forwards, one last check
    it = es_sg.iterations[att]
    assert bool((es_sg.forward_evals[att] == 2 + 3 * it + (it < 10).long()).all())
    assert bool((es_sg.grad_evals[att] == 2 * it).all())


# ---------------------------------------------------------------------------------------------
# cost accounting, budget, chunking, randomness
# ---------------------------------------------------------------------------------------------

def test_cost_accounting_and_budget(cnn64, batch):
    x, y = batch
    atk = IGSM(eps=15 / 255, alpha=5 / 255, budget=100, gradient=SmoothedGradient(15 / 255, 20))
    assert atk.steps == 5
    res = atk(cnn64, x, y)
    att = ~res.skipped
    assert bool((res.grad_evals[att] == 5 * 20).all())
    assert bool((res.grad_evals[~att] == 0).all())
    assert bool((res.forward_evals[att] == 5 * 20 + 2).all())
    plain = IGSM(eps=15 / 255, alpha=1 / 255, budget=100)
    assert plain.steps == 100
    assert IGSM(eps=0.1, alpha=0.01, budget=45, gradient=SmoothedGradient(0.1, 20)).steps == 2
    r = IGSM(eps=0.1, alpha=0.01, steps=3, gradient=SmoothedGradient(0.1, 7))(cnn64, x, y)
    assert bool((r.grad_evals[~r.skipped] == 21).all())
    assert r.info["grad_evals_per_step"] == 7


class _NoSharedForward(IGSM):
    """IGSM with the base class's plain clean forward (no graph kept for the first step)."""

    def _clean_forward(self, model, x):
        return Attack._clean_forward(self, model, x)


def test_first_step_reuses_the_clean_forward(cnn64, batch):
    x, y = batch
    shared = IGSM(eps=0.1, alpha=0.02, steps=6)(cnn64, x, y)
    plain = _NoSharedForward(eps=0.1, alpha=0.02, steps=6)(cnn64, x, y)
    att = ~shared.skipped
    assert bool(att.any()) and bool((~att).any())  # both kinds of sample in the batch
    # same iterates; one forward per attacked image saved (clean + 5 step forwards + final)
    torch.testing.assert_close(shared.x_adv, plain.x_adv, rtol=0, atol=1e-12)
    assert torch.equal(shared.success, plain.success)
    assert bool((plain.forward_evals[att] == 6 + 2).all())
    assert bool((shared.forward_evals[att] == 6 + 1).all())
    assert bool((shared.grad_evals[att] == 6).all())
    # the shared backward also ran through the already-misclassified images: counted
    assert bool((shared.grad_evals[~att] == 1).all()) and bool((plain.grad_evals[~att] == 0).all())
    assert bool((shared.forward_evals[~att] == 1).all())
    # a random start moves the first iterate away from x: nothing to share
    rs = PGD(eps=0.1, alpha=0.02, steps=6, random_start=True)(cnn64, x, y)
    assert bool((rs.forward_evals[att] == 6 + 2).all()) and bool((rs.grad_evals[~att] == 0).all())
    # with early stopping the shared logits also decide who is already fooled at step one
    es = IGSM(eps=0.3, alpha=0.05, steps=10, early_stop=True)(cnn64, x, y)
    es_plain = _NoSharedForward(eps=0.3, alpha=0.05, steps=10, early_stop=True)(cnn64, x, y)
    assert torch.equal(es.iterations, es_plain.iterations)
    torch.testing.assert_close(es.x_adv, es_plain.x_adv, rtol=0, atol=1e-12)


def _plain_cnn():
    """A model of torch.nn modules only (eligible for the engine's threads)."""
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 4)).double().eval()


@pytest.mark.parametrize("make, targeted", [
    (lambda t: IGSM(eps=0.1, alpha=0.02, steps=6, threads=t), False),
    (lambda t: PGD(eps=0.1, alpha=0.02, steps=6, random_start=True, threads=t), False),
    (lambda t: PGD(eps=0.8, alpha=0.2, steps=6, norm=2, threads=t), False),
    (lambda t: MIFGSM(eps=0.1, alpha=0.02, steps=6, threads=t), False),
    (lambda t: IGSM(eps=0.3, alpha=0.05, steps=10, early_stop=True, threads=t), False),
    (lambda t: FGSM(eps=0.1, threads=t), False),
    (lambda t: PGD(eps=0.2, alpha=0.05, steps=6, loss="margin", threads=t), True),
])
def test_threads_give_the_single_thread_result(make, targeted, batch):
    x, y = batch
    model = _plain_cnn()
    tgt = (y + 1) % 4 if targeted else None
    seen: set[threading.Thread] = set()  # thread objects: idents are reused
    handle = model[0].register_forward_hook(lambda *a: seen.add(threading.current_thread()))
    before = torch.get_num_threads()
    one = make(1)(model, x, y, target=tgt)
    assert len(seen) == 1
    seen.clear()
    many = make(3)(model, x, y, target=tgt)
    handle.remove()
    # the clean forward and the attack loop each run in 3 threads (main + 2 workers started per
    # phase), so at least 3 distinct thread objects ran the model
    assert len(seen) >= 3 and torch.get_num_threads() == before
    att = ~one.skipped
    assert bool(att.any()) and bool((~att).any())  # non-contiguous shares of active samples
    torch.testing.assert_close(many.x_adv, one.x_adv, rtol=0, atol=1e-12)
    for name in ("success", "iterations", "forward_evals", "grad_evals", "adv_pred"):
        assert torch.equal(getattr(many, name), getattr(one, name)), name
    with torch.no_grad():  # the threads' final logits stand in for the verification forward
        assert torch.equal(many.adv_pred, model(many.x_adv).argmax(1))
    assert float((many.x_adv - x).abs().amax()) <= 0.8  # sanity: the attack ran


class _Refuses(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        raise RuntimeError("forward refused")


def test_auto_threads_choice_and_thread_count_hygiene(batch):
    x, y = batch
    model = _plain_cnn()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert IGSM(eps=0.1)._workers(model, x) == 2
        assert IGSM(eps=0.1)._workers(model, x[:15]) == 1  # fewer than 8 images per thread
        assert IGSM(eps=0.1, threads=1)._workers(model, x) == 1
        assert IGSM(eps=0.1, threads=3)._workers(model, x) == 3
        assert IGSM(eps=0.1)._workers(TinyCNN(), x) == 1  # a class from another package
        sg = IGSM(eps=0.1, gradient=SmoothedGradient(0.1, 2))
        assert sg._workers(model, x) == 1  # noise is drawn per batch
        handle = model.register_forward_hook(lambda *a: None)
        assert IGSM(eps=0.1)._workers(model, x) == 1  # user code in a hook
        handle.remove()
        # an error in a worker thread reaches the caller; the thread count is restored
        with pytest.raises(RuntimeError, match="forward refused"):
            IGSM(eps=0.1, threads=2)(_Refuses(model), x, y)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        assert IGSM(eps=0.1)._workers(model, x) == 1
    finally:
        torch.set_num_threads(before)


def test_fast_model_copy_channels_last_and_verification(batch):
    from advsmooth.attacks.execution import fold_batchnorm

    x, y = batch
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(6 * 4 * 4, 4)).double().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # no BatchNorm: a copy only for the channels-last layout (CPU convolutions), cached apart
    assert fold_batchnorm(model, x[:2]) is model
    fast = fold_batchnorm(model, x[:2], channels_last=True)
    assert fast is not model and fold_batchnorm(model, x[:2], channels_last=True) is fast
    assert fast.get_submodule("0").weight.is_contiguous(memory_format=torch.channels_last)
    assert model[0].weight.is_contiguous()  # the model itself is left as it was
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=0, atol=1e-12)
    a = PGD(eps=0.1, alpha=0.02, steps=5, random_start=False, threads=1)(model, x, y)
    b = PGD(eps=0.1, alpha=0.02, steps=5, random_start=False, threads=1,
            fast_model=False)(model, x, y)
    torch.testing.assert_close(a.x_adv, b.x_adv, rtol=0, atol=1e-12)
    assert torch.equal(a.success, b.success) and bool(a.success.any())
    att = ~a.skipped
    # the gradient steps differentiate the copy: the clean forward (on the model itself) cannot
    # lend them its graph, so the copy costs one forward more per attacked image
    assert bool((a.forward_evals[att] == 5 + 2).all())
    assert bool((b.forward_evals[att] == 5 + 1).all())
    assert bool((a.grad_evals[~att] == 0).all()) and bool((b.grad_evals[~att] == 1).all())
    with torch.no_grad():  # success is the model's own verdict
        assert torch.equal(a.adv_pred, model(a.x_adv).argmax(1))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert "fast_model=False" in repr(PGD(eps=0.1, fast_model=False))
    assert "fast_model" not in repr(PGD(eps=0.1))
    with pytest.raises(ValueError, match="fast_model"):
        PGD(eps=0.1, fast_model=1)


def test_linf_bounds_are_exact_and_bracket_x():
    g = torch.Generator().manual_seed(5)
    x = torch.cat([torch.rand(5000, generator=g), torch.tensor([0.0, 1.0, 2**-30])]).float()
    for eps in (8 / 255, 1 / 3, 0.1, 1e-7):
        lo, hi = linf_bounds(x, eps)
        assert bool((lo <= x).all()) and bool((x <= hi).all())
        assert float(lo.min()) >= 0 and float(hi.max()) <= 1
        assert float((x.double() - lo.double()).max()) <= eps
        assert float((hi.double() - x.double()).max()) <= eps
        # and tight: float32 rounding away from the exact bounds, no more
        exact_lo, exact_hi = (x.double() - eps).clamp(min=0), (x.double() + eps).clamp(max=1)
        assert float((lo.double() - exact_lo).abs().max()) <= 2e-7
        assert float((hi.double() - exact_hi).abs().max()) <= 2e-7


def test_chunk_size_does_not_change_sg_results(cnn64, batch):
    x, y = batch
    outs = []
    for chunk in (None, 1, 3, 20):
        atk = MIFGSM(eps=0.1, alpha=0.02, steps=4,
                     gradient=SmoothedGradient(0.1, 7, chunk_size=chunk), seed=5)
        outs.append(atk(cnn64, x, y).x_adv)
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=0, atol=1e-12)
    # a different seed gives different noise
    other = MIFGSM(eps=0.1, alpha=0.02, steps=4, gradient=SmoothedGradient(0.1, 7), seed=6)
    assert not torch.equal(other(cnn64, x, y).x_adv, outs[0])


def test_nonlinear_estimator_chunked_equals_unchunked(cnn64, batch):
    x, y = batch

    class LogitAverage(SmoothedGradient):
        decomposable = False

        def combine(self, objective, raw):
            return objective.value(raw.mean(0))

    obj = AttackObjective("ce", y)
    e1 = LogitAverage(0.1, 6).estimate(cnn64, x, obj, generator=torch.Generator().manual_seed(0))
    e2 = LogitAverage(0.1, 6, chunk_size=4).estimate(cnn64, x, obj,
                                                     generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(e1.grad, e2.grad)
    assert (e1.forward_evals, e2.forward_evals, e2.grad_evals) == (6, 12, 6)
    # and it differs from the expected-loss (decomposable) estimator
    e3 = SmoothedGradient(0.1, 6).estimate(cnn64, x, obj,
                                           generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(e1.grad, e3.grad)


def test_model_and_global_rng_untouched(batch):
    x, y = batch
    model = TinyCNN(seed=4).double()
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x0 = x.clone()
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    for atk in (PGD(eps=0.1, steps=3), MIFGSM(eps=0.1, steps=3, gradient=SmoothedGradient(0.1, 3)),
                FGSM(eps=0.1, norm=2)):
        atk(model, x, y)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.equal(x, x0)


def test_same_seed_same_result_pgd(cnn64, batch):
    x, y = batch
    a = PGD(eps=0.1, steps=3, seed=1)(cnn64, x, y)
    b = PGD(eps=0.1, steps=3, seed=1)(cnn64, x, y)
    assert torch.equal(a.x_adv, b.x_adv)


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=-0.1), "eps"),
    (dict(eps=0.1, steps=0), "steps"),
    (dict(eps=0.1, norm="l3"), "norm"),
    (dict(eps=0.1, norm=1), "norm"),
    (dict(eps=0.1, alpha=-1.0), "alpha"),
    (dict(eps=0.1, loss="mse"), "loss"),
    (dict(eps=0.1, budget=0), "budget"),
    (dict(eps=0.1, budget=10, steps=3), "budget"),
    (dict(eps=0.1, budget=5, gradient=SmoothedGradient(0.1, 20)), "budget"),
    (dict(eps=0.1, threads=0), "threads"),
    (dict(eps=0.1, threads=2, gradient=SmoothedGradient(0.1, 2)), "threads"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PGD(**kwargs)


def test_bad_estimator_arguments_raise():
    with pytest.raises(ValueError, match="samples"):
        SmoothedGradient(0.1, 0)
    with pytest.raises(ValueError, match="sigma"):
        SmoothedGradient(-0.1, 5)
    with pytest.raises(ValueError, match="chunk_size"):
        SmoothedGradient(0.1, 5, chunk_size=0)
    with pytest.raises(ValueError, match="decay"):
        MIFGSM(eps=0.1, decay=-1.0)
    with pytest.raises(ValueError, match="steps"):
        IGSM(eps=0.1, steps=0)
    with pytest.raises(TypeError, match="GradientEstimator"):
        IGSM(eps=0.1, gradient="sg")
    assert isinstance(SmoothedGradient(0.1, 2), GradientEstimator)


def test_repr_readable():
    r = repr(IGSM(eps=0.1, alpha=0.01, steps=3, gradient=SmoothedGradient(0.05, 4)))
    assert r.startswith("IGSM(eps=0.1, alpha=0.01, steps=3") and "SmoothedGradient(sigma=0.05" in r


def test_rescale_linf_sets_every_perturbation_to_eps(cnn64, batch):
    from advsmooth.attacks import DeepFool, RescaleLinf

    x, y = batch
    inner = DeepFool(candidates=4)
    base = inner(cnn64, x, y)
    res = RescaleLinf(inner, 0.05)(cnn64, x, y)
    att = ~res.skipped
    linf = (res.x_adv - x).flatten(1).abs().amax(1)
    assert bool((linf <= 0.05).all()) and float(linf[att].max()) == pytest.approx(0.05)
    assert bool((res.x_adv >= 0).all() and (res.x_adv <= 1).all())
    # the direction is the inner attack's (before the box clamp): same sign pattern
    r0, r1 = base.x_adv - x, res.x_adv - x
    moved = (r1 != 0) & att.view(-1, 1, 1, 1)
    assert bool((torch.sign(r0[moved]) == torch.sign(r1[moved])).all())
    # success is re-judged at the rescaled images; costs include the inner attack's
    with torch.no_grad():
        assert torch.equal(res.adv_pred, cnn64(res.x_adv).argmax(1))
    assert bool((res.grad_evals >= base.grad_evals).all())
    assert "RescaleLinf(attack=DeepFool(" in repr(RescaleLinf(inner, 0.05))
    with pytest.raises(ValueError, match="eps"):
        RescaleLinf(inner, -1.0)
    with pytest.raises(TypeError, match="Attack"):
        RescaleLinf("deepfool", 0.1)
