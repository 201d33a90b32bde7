"""SmoothFool and SmoothClip (docs/algorithms.md: SmoothClip, SmoothFool)."""

from __future__ import annotations

import pytest
import torch
from conftest import Affine, TinyCNN, conv_bn_net

from advsmooth.attacks import DeepFool, SmoothFool, smooth_clip
from advsmooth.filters import LowPassFilter, roughness


def _mid(n=6, shape=(1, 8, 8), seed=0, spread=0.4):
    g = torch.Generator().manual_seed(seed)
    return 0.5 - spread / 2 + spread * torch.rand(n, *shape, generator=g, dtype=torch.float64)


# -- SmoothClip -------------------------------------------------------------------------------

def test_smooth_clip_leaves_in_range_perturbations_unchanged():
    x = _mid()
    r = 0.05 * (torch.rand_like(x) - 0.5)
    g = LowPassFilter("gaussian", 2.0)
    r_c, iters, fb = smooth_clip(x, r, g, 0.5)
    assert torch.equal(r_c, r) and r_c.data_ptr() != r.data_ptr()
    assert (iters == 0).all() and not fb.any()


def test_smooth_clip_output_in_range_and_smoother_than_clipping():
    """Plain clipping imprints the image texture into r (r = clamp(x+r) − x = −x + const where
    clipped); SmoothClip subtracts smoothed masks instead. Smoother on average, not for every
    sample (see docs/smoothfool.md): measured 14/16 samples here."""
    gen = torch.Generator().manual_seed(0)
    n = 16
    x = torch.rand(n, 3, 16, 16, generator=gen, dtype=torch.float64)  # textured images
    g = LowPassFilter("gaussian", 3.0)
    noise = torch.randn(n, 3, 16, 16, dtype=torch.float64, generator=gen)
    r = LowPassFilter("gaussian", 3.0, padding="replicate")(noise)
    r = 0.3 * r / r.abs().flatten(1).amax(1).view(n, 1, 1, 1)  # smooth, partly out of range
    r_c, iters, fb = smooth_clip(x, r, g, 0.5)
    z = x + r_c
    assert z.min() >= 0 and z.max() <= 1
    assert (iters > 0).all() and not fb.any()
    r_plain = (x + r).clamp(0, 1) - x
    sc, plain = roughness(r_c, normalized=True), roughness(r_plain, normalized=True)
    assert sc.mean() < 0.9 * plain.mean()
    assert (sc < plain).float().mean() >= 0.75


def test_smooth_clip_fallback_and_paper_mode():
    x = _mid(2)
    r = torch.ones_like(x)  # every pixel far above 1
    g = LowPassFilter("gaussian", 1.0)
    r_c, iters, fb = smooth_clip(x, r, g, 0.1, max_iter=3)
    assert fb.all() and (iters == 3).all()
    assert (x + r_c).max() <= 1
    r_p, it_p, fb_p = smooth_clip(x, r, g, 1.0, max_iter=5, normalize_mask=False, min_step=0.0,
                                  final_clamp=False)
    assert not fb_p.any() and (it_p == 5).all() and (x + r_p).max() > 1  # geometric, unfinished
    assert ((x + r_p).max() - 1) < ((x + r).max() - 1)


def test_smooth_clip_lower_bound_and_validation():
    x = _mid(2)
    r = -torch.ones_like(x) * 0.8
    r_c, _, _ = smooth_clip(x, r, LowPassFilter("gaussian", 1.5), 0.5)
    assert (x + r_c).min() >= 0
    with pytest.raises(ValueError, match="step"):
        smooth_clip(x, r, LowPassFilter("gaussian", 1.5), 0.0)
    with pytest.raises(ValueError, match="shape"):
        smooth_clip(x, r[:1], LowPassFilter("gaussian", 1.5), 0.5)


# -- SmoothFool -------------------------------------------------------------------------------

def test_delta_kernel_equals_deepfool_on_affine_model():
    model = Affine((1, 8, 8), 5, seed=1)
    x = _mid(8)
    df = DeepFool()(model, x)
    sf = SmoothFool(sigma=0.3)(model, x)
    assert (sf.iterations == 1).all() and sf.success.all()
    assert (sf.extras["clip_iters_total"] == 0).all()
    assert torch.allclose(sf.x_adv, df.x_adv, atol=1e-12)


@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_binary_affine_closed_form(sigma):
    model = Affine((1, 8, 8), 2, seed=3)
    x = _mid(6, spread=0.1)
    g = LowPassFilter("gaussian", sigma)
    df = DeepFool()(model, x)
    sf = SmoothFool(sigma=sigma)(model, x)
    assert (sf.extras["clip_iters_total"] == 0).all()  # the closed form assumes no clipping
    assert sf.success.all() and (sf.iterations == 1).all()
    w = (model.weight[1] - model.weight[0]).detach().view(1, 1, 8, 8)
    wt = g(w).flatten()
    r_df = df.perturbation.flatten(1)
    expected = (r_df @ w.flatten())[:, None] / (w.flatten() @ wt) * wt[None]
    assert torch.allclose(sf.perturbation.flatten(1), expected, atol=1e-12)
    # smoother than DeepFool, and larger in l2
    assert (roughness(sf.perturbation, normalized=True)
            < roughness(df.perturbation, normalized=True)).all()
    assert (sf.norms() > df.norms()).all()


def test_batch_equals_one_by_one_and_iterates_in_range():
    model = TinyCNN().double().eval()
    x = 0.2 + 0.6 * torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2),
                               dtype=torch.float64)
    atk = SmoothFool(sigma=1.5, max_iter=30)
    res = atk(model, x)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.success.all() and (res.extras["clip_iters_total"] > 0).any()
    for i in range(4):
        one = atk(model, x[i:i + 1])
        assert torch.allclose(one.x_adv[0], res.x_adv[i], atol=1e-9)
        assert int(one.iterations[0]) == int(res.iterations[i])
        assert bool(one.success[0]) == bool(res.success[i])


def test_costs_include_inner_deepfool():
    model = TinyCNN(num_classes=4).double().eval()
    x = 0.2 + 0.6 * torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(4),
                               dtype=torch.float64)
    # every face at every DeepFool iteration, so the count is exact (the default nearest-face
    # DeepFool differentiates fewer after each run's first iteration)
    res = SmoothFool(sigma=1.0, max_iter=20, deepfool=DeepFool(faces="all"))(model, x)
    it, dfi = res.iterations, res.extras["deepfool_iters_total"]
    att = ~res.skipped
    assert torch.equal(res.grad_evals[att], (3 * dfi + it)[att])  # Kc−1 = 3 per DF iteration
    assert torch.equal(res.forward_evals[att], (2 * dfi + 2 * it + 2)[att])
    assert (dfi[att] >= it[att]).all()


def test_orthogonal_smoothed_normal_fails_cleanly():
    # a checkerboard normal is annihilated by the 2x2 box filter (circular padding): <w, g*w> = 0
    class Checker(torch.nn.Module):
        def __init__(self):
            super().__init__()
            i = torch.arange(8)
            cb = ((i[:, None] + i[None, :]) % 2 * 2 - 1).double().flatten()
            self.w = torch.nn.Parameter(torch.stack([torch.zeros(64, dtype=torch.float64), cb]))

        def forward(self, x):
            return x.flatten(1) @ self.w.T + torch.tensor([0.1, 0.0], dtype=x.dtype)

    g = LowPassFilter("uniform", 2, padding="circular")
    x = torch.full((2, 1, 8, 8), 0.5, dtype=torch.float64)
    res = SmoothFool(filter=g)(Checker(), x)
    assert res.extras["failed"].all() and not res.success.any()
    assert torch.equal(res.x_adv, x) and (res.iterations == 1).all()


def test_other_kernels_and_plain_clamp():
    model = TinyCNN().double().eval()
    x = 0.2 + 0.6 * torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(5),
                               dtype=torch.float64)
    for atk in (SmoothFool(kernel="linear", size=3, max_iter=10),
                SmoothFool(kernel="uniform", size=2, max_iter=10),
                SmoothFool(sigma=1.0, use_smoothclip=False, max_iter=10),
                SmoothFool(sigma=1.0, xp_scale=1.5, step_scale=1.1, max_iter=10)):
        res = atk(model, x)
        assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
        assert torch.isfinite(res.x_adv).all()


@pytest.mark.parametrize("kwargs,name", [
    ({"sigma": 0.0}, "sigma"), ({"sigma": -1.0}, "sigma"), ({"kernel": "box"}, "kernel"),
    ({"kernel": "uniform"}, "size"), ({"kernel": "linear", "size": 0}, "size"),
    ({"clip_step": 0}, "clip_step"), ({"max_iter": 0}, "max_iter"),
    ({"use_smoothclip": "yes"}, "use_smoothclip"), ({"xp_scale": 0.0}, "xp_scale"),
    ({"step_scale": -1.0}, "step_scale"), ({"deepfool": "df"}, "deepfool"),
    ({"filter": 3}, "filter"), ({"padding": "mirror"}, "padding"),
    ({"clip_min_step": -0.1}, "clip_min_step"), ({"clip_max_iter": -1}, "clip_max_iter"),
])
def test_bad_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SmoothFool(**kwargs)


def test_targeted_not_supported():
    model = TinyCNN().double().eval()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="targeted"):
        SmoothFool()(model, x, target=torch.tensor([0, 1]))


def test_face_memory_saves_gradients_and_changes_nothing_else(monkeypatch):
    """The inner DeepFool of each outer iteration starts from what the last one learnt about the
    faces: the perturbations are bit for bit those of fresh inner runs, with fewer gradients
    (on the model itself: the fast copy's channels-last convolutions round differently when a
    fallback differentiates a sub-batch)."""
    from advsmooth import data, models

    model = models.load("digits-lenet", verbose=False)
    x, y = data.load("digits", "test", sample=40, seed=0)
    attack = SmoothFool(sigma=5.0, clip_step=0.5, progress_bar=False,
                        deepfool=DeepFool(fold_batchnorm=False))
    fast = attack(model, x, y)
    run = DeepFool.run

    def fresh(self, *args, memory=None, **kwargs):  # every inner run from scratch
        return run(self, *args, **kwargs)

    monkeypatch.setattr(DeepFool, "run", fresh)
    slow = attack(model, x, y)
    assert torch.equal(fast.x_adv, slow.x_adv)
    assert torch.equal(fast.success, slow.success)
    assert torch.equal(fast.iterations, slow.iterations)
    assert fast.grad_evals.sum() < 0.7 * slow.grad_evals.sum()


def test_deepfool_run_with_a_face_memory():
    """A second run from the same points, given the first run's memory, returns the same
    perturbation at no more gradients (its first iteration may differentiate only the nearest
    faces; here the norms' ages make it fall back to all of them); the memory counts the
    iterations and keeps the norms by class."""
    from advsmooth import data, models
    from advsmooth.attacks.deepfool import FaceMemory

    model = models.load("digits-lenet", verbose=False)
    x, _ = data.load("digits", "test", sample=16, seed=1)
    with torch.no_grad():
        z0 = model(x)
    df = DeepFool()
    grads = torch.zeros(16)

    def count(idx, k):
        grads[idx] += k

    mem = FaceMemory.empty(16, 10)
    first = df.run(model, x, z0, count_grad=count, memory=mem)
    assert torch.equal(mem.clock, first.iterations)
    k0 = z0.argmax(1)
    assert bool(torch.isinf(mem.norm.gather(1, k0[:, None])).all())  # no face of a class to itself
    known = torch.isfinite(mem.norm)
    assert bool((known.sum(1) == 9).all())
    g_first = grads.clone()
    grads.zero_()
    second = df.run(model, x, z0, count_grad=count, memory=mem)
    assert torch.equal(second.r_tot, first.r_tot)
    assert bool((grads <= g_first).all())
    assert torch.equal(mem.clock, 2 * first.iterations)
    with pytest.raises(IndexError):
        mem.rows(torch.tensor([16]))


def test_the_inner_deepfool_differentiates_the_fast_copy_and_the_model_decides(monkeypatch):
    """Steps 1-2 run on the execution layer's BatchNorm-folded copy (as DeepFool does); the
    result is the plain model's up to float rounding, and success is the model's own verdict."""
    import advsmooth.attacks.execution as execution

    model = conv_bn_net(4, seed=5, spread=0.3)
    x = _mid(8, (3, 8, 8), seed=6)
    copies = []

    def spy(m, probe=None, **kw):
        out = real(m, probe, **kw)
        copies.append(out)
        return out

    real = execution.fold_batchnorm
    monkeypatch.setattr(execution, "fold_batchnorm", spy)
    res = SmoothFool(sigma=1.0, clip_step=0.5, progress_bar=False)(model, x)
    assert len(copies) == 1 and copies[0] is not model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in copies[0].modules())
    plain = SmoothFool(sigma=1.0, clip_step=0.5, progress_bar=False,
                       deepfool=DeepFool(fold_batchnorm=False))(model, x)
    assert len(copies) == 1  # fold_batchnorm=False: the model itself
    assert res.success.all() and torch.equal(res.success, plain.success)
    assert torch.allclose(res.x_adv, plain.x_adv, atol=1e-9)
    with torch.no_grad():
        assert torch.equal(res.adv_pred, model(res.x_adv).argmax(1))
