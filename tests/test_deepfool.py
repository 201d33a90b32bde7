"""DeepFool (Moosavi-Dezfooli et al., arXiv:1511.04599): closed forms on affine models, batching,
costs, options."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import Affine, TinyCNN, conv_bn_net
from torch import nn

from advsmooth.attacks import DeepFool


def _x(n=8, shape=(1, 6, 6), seed=0, dtype=torch.float64):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _closed_form(model: Affine, x: torch.Tensor, q: float):
    """Nearest face of an affine classifier: (l, d, w') per sample, dual norm q."""
    w, b = model.weight.detach(), model.bias.detach()
    z = x.flatten(1) @ w.T + b
    k0 = z.argmax(1)
    out = []
    for i in range(x.shape[0]):
        wd = w - w[k0[i]]
        fd = z[i] - z[i, k0[i]]
        d = fd.abs() / torch.linalg.vector_norm(wd, ord=q, dim=1)
        d[k0[i]] = math.inf
        l = int(d.argmin())
        out.append((l, float(d[l]), wd[l]))
    return out


def test_affine_l2_closed_form_in_one_iteration():
    model = Affine((1, 6, 6), 5, seed=1)
    x = _x()
    res = DeepFool(norm=2, stabilizer=0.0)(model, x)
    assert res.success.all() and (res.iterations == 1).all()
    r_tot = res.extras["r_tot"].flatten(1)
    for i, (l, d, wd) in enumerate(_closed_form(model, x, 2.0)):
        r_star = d * wd / wd.norm()
        assert torch.allclose(r_tot[i], r_star, atol=1e-12)
        assert int(res.extras["face"][i]) == l
    assert torch.allclose(res.perturbation, 1.02 * res.extras["r_tot"], atol=1e-14)


def test_affine_linf_closed_form_in_one_iteration():
    model = Affine((1, 6, 6), 5, seed=2)
    x = _x()
    delta = 1e-4
    res = DeepFool(norm="inf", stabilizer=delta)(model, x)
    assert res.success.all() and (res.iterations == 1).all()
    r_tot = res.extras["r_tot"].flatten(1)
    for i, (_, d, wd) in enumerate(_closed_form(model, x, 1.0)):
        assert torch.allclose(r_tot[i], (d + delta) * wd.sign(), atol=1e-12)


@pytest.mark.parametrize("p", [1.5, 3.0, 7.0])
def test_general_p_holder(p):
    model = Affine((1, 6, 6), 5, seed=3)
    x = _x()
    delta = 1e-4
    res = DeepFool(norm=p, stabilizer=delta)(model, x)
    assert res.success.all() and (res.iterations == 1).all()
    q = p / (p - 1)
    r_tot = res.extras["r_tot"].flatten(1)
    for i, (_, d, wd) in enumerate(_closed_form(model, x, q)):
        assert torch.linalg.vector_norm(r_tot[i], ord=p).item() == pytest.approx(d + delta,
                                                                                 rel=1e-10)
        # the step reaches the face exactly (plus the stabiliser): <w', r> = |f'| + δ||w'||_q
        assert (wd @ r_tot[i]).item() == pytest.approx(
            d * torch.linalg.vector_norm(wd, ord=q).item()
            + delta * torch.linalg.vector_norm(wd, ord=q).item(), rel=1e-9)


class BinaryAffine(nn.Module):
    def __init__(self, keepdim: bool) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.w = nn.Parameter(torch.randn(36, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
        self.keepdim = keepdim

    def forward(self, x):
        s = x.flatten(1) @ self.w + self.b
        return s[:, None] if self.keepdim else s


@pytest.mark.parametrize("keepdim", [False, True])
def test_binary_affine_exact_projection(keepdim):
    model = BinaryAffine(keepdim)
    x = _x(10)
    res = DeepFool(stabilizer=0.0)(model, x)
    w = model.w.detach()
    s = x.flatten(1) @ w + model.b.detach()
    r_star = -(s / (w @ w))[:, None] * w
    assert torch.allclose(res.extras["r_tot"].flatten(1), r_star, atol=1e-12)
    assert res.success.all() and (res.iterations == 1).all()
    assert ((x + res.perturbation).flatten(1) @ w + model.b.detach() > 0).long().ne(
        (s > 0).long()).all()
    assert (res.grad_evals == 1).all()  # one face per iteration


def test_targeted_reaches_target():
    model = Affine((1, 6, 6), 6, seed=4)
    x = _x(12)
    with torch.no_grad():
        pred = model(x).argmax(1)
    target = (pred + 3) % 6
    res = DeepFool()(model, x, target=target)
    assert res.success.all()
    assert torch.equal(res.adv_pred, target)
    assert (res.grad_evals == res.iterations).all()


def test_batch_equals_one_by_one():
    model = TinyCNN(channels=3).double().eval()
    x = _x(7, (3, 8, 8), seed=3)
    res = DeepFool(max_iter=20)(model, x)
    for i in range(7):
        one = DeepFool(max_iter=20)(model, x[i:i + 1])
        assert torch.allclose(one.x_adv[0], res.x_adv[i], atol=1e-10)
        assert int(one.iterations[0]) == int(res.iterations[i])
        assert int(one.grad_evals[0]) == int(res.grad_evals[i])


def test_jacobian_methods_agree():
    model = TinyCNN().double().eval()
    x = _x(6, (1, 8, 8))
    ref = DeepFool(jacobian="loop")(model, x)
    res = DeepFool(jacobian="threads")(model, x)
    assert torch.allclose(res.x_adv, ref.x_adv, atol=1e-10)
    assert torch.equal(res.iterations, ref.iterations)


class _FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("backward refused")


class _Refuses(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(_FailingBackward.apply(x))


def test_threaded_jacobian_choice_and_thread_count_hygiene():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 5)).double().eval()
    x = _x(6, (1, 8, 8))
    assert DeepFool()._method(TinyCNN(), x.device) == "loop"  # a class from another package
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert DeepFool()._method(model, x.device) == "threads"
        assert DeepFool()(model, x).info["jacobian"] == "threads"
        assert torch.get_num_threads() == 2
        # user Python code in the model (a module of another package, hooks) -> plain loop
        assert DeepFool()._method(_Refuses(model), x.device) == "loop"
        handle = model.register_forward_hook(lambda *a: None)
        assert DeepFool()._method(model, x.device) == "loop"
        handle.remove()
        assert DeepFool(jacobian="loop")._method(model, x.device) == "loop"
        # an error in a worker thread reaches the caller; the thread count is restored
        with pytest.raises(RuntimeError, match="backward refused"):
            DeepFool(jacobian="threads")(_Refuses(model), x)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        assert DeepFool()._method(model, x.device) == "loop"
    finally:
        torch.set_num_threads(before)


def _trained_tiny_cnn():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(128, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long() \
        + 2 * (x[:, 0, :, :4].mean((1, 2)) > x[:, 0, :, 4:].mean((1, 2))).long()
    model = TinyCNN(num_classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    return model, x, y


def test_success_and_costs_on_trained_model():
    model, x, y = _trained_tiny_cnn()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.8
    atk = DeepFool(faces="all")
    res = atk(model, x[:40], y[:40])
    assert res.success.all()
    att = ~res.skipped
    # already misclassified: untouched, 0 iterations, only the clean forward
    assert torch.equal(res.x_adv[~att], x[:40][~att])
    assert (res.iterations[~att] == 0).all() and (res.grad_evals[~att] == 0).all()
    assert (res.forward_evals[~att] == 1).all()
    per_it = atk.gradients_per_iteration(4)
    assert per_it == 3
    assert torch.equal(res.grad_evals[att], res.iterations[att] * per_it)
    # per iteration: the forward with graph + the stopping check; the last check (on the model
    # itself, at exactly x_adv) is the verification, so no extra final pass
    assert torch.equal(res.forward_evals[att], 2 * res.iterations[att] + 1)
    with torch.no_grad():
        assert torch.equal(res.adv_pred, model(res.x_adv).argmax(1))
    assert (res.iterations[att] >= 1).all()
    # the perturbation is (1 + η) r_tot, and removing the overshoot mostly undoes the attack
    assert torch.allclose(res.perturbation, 1.02 * res.extras["r_tot"], atol=1e-6)
    assert torch.equal(res.extras["label_orig"][att], y[:40][att])


def test_candidates_limit_the_faces():
    model = Affine((1, 6, 6), 10, seed=6)
    x = _x(10)
    with torch.no_grad():
        z = model(x)
    res = DeepFool(candidates=3)(model, x)
    top3 = z.topk(3, dim=1).indices
    assert (res.extras["face"][:, None] == top3[:, 1:]).any(1).all()
    assert (res.grad_evals == 2 * res.iterations).all()


def test_clip_keeps_images_in_range_and_overshoot_option():
    model = TinyCNN().double().eval()
    x = _x(8, (1, 8, 8), seed=9)
    res = DeepFool(clip=True)(model, x)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.success.all()
    res2 = DeepFool(linearize_with_overshoot=False)(model, x)
    assert res2.success.all()


class _Recorder(nn.Module):
    """Wraps a model and records the inputs of its forward passes that track gradients."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.grad_inputs = []

    def forward(self, x):
        if x.requires_grad:
            self.grad_inputs.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("lwo", [True, False])
def test_linearisation_point(lwo):
    """Iteration 2 linearises at x + (1+η)·r_tot (LTS4, default) or x + r_tot (paper)."""
    model = TinyCNN(num_classes=10, seed=4).double().eval()
    x = _x(12, (1, 8, 8), seed=2)
    first = DeepFool(max_iter=1, linearize_with_overshoot=lwo)(model, x)
    again = first.iterations == 1
    assert (~first.success & again).any()  # some samples need a second iteration
    rec = _Recorder(model)
    DeepFool(max_iter=2, linearize_with_overshoot=lwo, chunk_size=None)(rec, x)
    second = rec.grad_inputs[1]  # the active samples of iteration 2, in batch order
    todo = (~first.success).nonzero()[:, 0]
    r1 = first.extras["r_tot"][todo]
    expected = x[todo] + (1.02 if lwo else 1.0) * r1
    assert second.shape == expected.shape
    assert torch.allclose(second, expected, atol=1e-12)


def test_chunk_size_does_not_change_results():
    model = TinyCNN(channels=3, num_classes=10, seed=1).double().eval()
    x = _x(11, (3, 8, 8), seed=5)
    ref = DeepFool(chunk_size=None)(model, x)
    for chunk in (1, 3, 64):
        res = DeepFool(chunk_size=chunk)(model, x)
        assert torch.allclose(res.x_adv, ref.x_adv, atol=1e-10), chunk
        assert torch.equal(res.iterations, ref.iterations)
        assert torch.equal(res.grad_evals, ref.grad_evals)
        assert torch.equal(res.forward_evals, ref.forward_evals)


def test_nearest_faces_costs_and_fallback(monkeypatch):
    from advsmooth.attacks import deepfool as df_mod

    model = TinyCNN(num_classes=10, seed=4).double().eval()
    x = _x(16, (1, 8, 8), seed=2)
    exact = DeepFool(faces="all")(model, x)
    assert (exact.iterations >= 2).any()
    assert torch.equal(exact.grad_evals, 9 * exact.iterations)
    # the default: the same result, fewer gradients
    near = DeepFool()(model, x)
    assert torch.allclose(near.x_adv, exact.x_adv, atol=1e-10)
    assert torch.equal(near.iterations, exact.iterations)
    assert (near.grad_evals <= exact.grad_evals).all()
    assert (near.grad_evals < exact.grad_evals).any()
    # a margin nothing can meet: every later iteration differentiates the remaining faces too
    # (one more forward), so the run is the exact algorithm
    monkeypatch.setattr(df_mod, "_MARGIN", 1e9)
    full = DeepFool()(model, x)
    assert torch.allclose(full.x_adv, exact.x_adv, atol=1e-10)
    assert torch.equal(full.iterations, exact.iterations)
    assert torch.equal(full.grad_evals, exact.grad_evals)
    later = (exact.iterations - 1).clamp_min(0)
    assert torch.equal(full.forward_evals, exact.forward_evals + later)
    # a margin always met and normals deemed steady: exactly 2 faces after the first iteration
    monkeypatch.setattr(df_mod, "_MARGIN", 1e-9)
    monkeypatch.setattr(df_mod, "_STEADY", math.inf)
    fast = DeepFool()(model, x)
    att = fast.iterations > 0
    assert torch.equal(fast.grad_evals[att], 9 + 2 * (fast.iterations[att] - 1))
    assert torch.equal(fast.forward_evals, 2 * fast.iterations + 1)
    # normals never steady enough: every face again, the exact algorithm
    monkeypatch.setattr(df_mod, "_STEADY", 0.0)
    wary = DeepFool()(model, x)
    assert torch.equal(wary.grad_evals, exact.grad_evals)
    assert torch.allclose(wary.x_adv, exact.x_adv, atol=1e-10)
    assert DeepFool().gradients_per_iteration(10, first=False) == 2
    assert DeepFool(faces="all").gradients_per_iteration(10, first=False) == 9
    assert DeepFool().gradients_per_iteration(10) == 9


class _ViewNet(nn.Module):
    """A CNN that flattens with .view, which fails on channels-last activations."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.shape[0], -1))


def test_channels_last_matches_and_falls_back():
    model = TinyCNN(channels=3, num_classes=10, seed=1).double().eval()
    x = _x(6, (3, 8, 8), seed=7)
    a = DeepFool(channels_last=True)(model, x)
    b = DeepFool(channels_last=False)(model, x)
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-10)
    assert a.x_adv.is_contiguous()
    view = _ViewNet().double().eval()
    with pytest.raises(RuntimeError):
        DeepFool(channels_last=True)(view, x)
    auto = DeepFool()(view, x)
    plain = DeepFool(channels_last=False)(view, x)
    assert torch.allclose(auto.x_adv, plain.x_adv, atol=1e-12)
    assert auto.success.all()


def test_vanishing_normals_fail_gracefully():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64))

        def forward(self, x):
            return self.b.expand(x.shape[0], 3) + 0 * x.flatten(1)[:, :1]

    res = DeepFool()(Flat(), _x(3))
    assert not res.success.any()
    assert res.extras["failed"].all()
    assert torch.isfinite(res.x_adv).all() and (res.iterations == 1).all()


def test_float32_model_and_repr():
    model = TinyCNN().eval()
    x = _x(5, (1, 8, 8), dtype=torch.float32)
    res = DeepFool()(model, x)
    assert res.x_adv.dtype == torch.float32 and res.success.all()
    assert "DeepFool(norm=2, overshoot=0.02" in repr(DeepFool())
    assert "norm='inf'" in repr(DeepFool(norm="inf"))


@pytest.mark.parametrize("kwargs,name", [
    ({"norm": 1}, "norm"), ({"norm": "l3"}, "norm"), ({"norm": 0.5}, "norm"),
    ({"overshoot": -0.1}, "overshoot"), ({"max_iter": 0}, "max_iter"),
    ({"max_iter": 2.5}, "max_iter"), ({"candidates": 1}, "candidates"),
    ({"stabilizer": -1.0}, "stabilizer"), ({"clip": 1}, "clip"),
    ({"jacobian": "fast"}, "jacobian"), ({"linearize_with_overshoot": "yes"}, "linearize"),
    ({"faces": "some"}, "faces"), ({"box": "clip"}, "box"), ({"chunk_size": 0}, "chunk_size"),
    ({"channels_last": "yes"}, "channels_last"),
])
def test_bad_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DeepFool(**kwargs)


def test_keyword_only():
    with pytest.raises(TypeError):
        DeepFool(2)  # type: ignore[misc]


def test_one_channel_conv_model_runs_on_a_channels_last_copy():
    """Without a BatchNorm to fold, a CPU conv model is still attacked through a copy whose
    convolution tensors are channels-last (one-channel inputs cannot carry the layout; the
    weights make the activations channels-last), with the same results up to rounding."""
    from advsmooth.attacks.execution import fold_batchnorm

    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 3 * 3, 10)).double().eval()
    x = _x(8, (1, 6, 6), seed=12)
    fast = fold_batchnorm(model, x[:2], channels_last=True)
    assert fast is not model
    assert fast.get_submodule("0").weight.is_contiguous(memory_format=torch.channels_last)
    a = DeepFool()(model, x)
    b = DeepFool(fold_batchnorm=False)(model, x)
    assert a.success.all() and torch.allclose(a.x_adv, b.x_adv, atol=1e-8)
    assert torch.equal(a.iterations, b.iterations)
    with torch.no_grad():  # success is the given model's verdict
        assert torch.equal(a.adv_pred, model(a.x_adv).argmax(1))


def test_fold_batchnorm_option():
    from advsmooth.attacks.execution import fold_batchnorm

    model = conv_bn_net(10, seed=2)
    x = _x(6, (3, 8, 8), seed=11)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model, x[:2])
    assert folded is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-10)
    a = DeepFool()(model, x)  # default: folded
    b = DeepFool(fold_batchnorm=False)(model, x)
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-8) and a.success.all()
    # the attack iterates on the folded copy, but success is the original model's verdict
    with torch.no_grad():
        assert torch.equal(a.adv_pred, model(a.x_adv).argmax(1))
    assert torch.equal(a.forward_evals, 2 * a.iterations + 1)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # a training-mode model or a wrapper with Python-side state is attacked as given
    # the folded copy is reused while the model is unchanged, rebuilt after an update
    assert fold_batchnorm(model, x[:2]) is folded
    with torch.no_grad():
        model[0].weight.mul_(1.5)
    refolded = fold_batchnorm(model, x[:2])
    assert refolded is not folded
    with torch.no_grad():
        assert torch.allclose(refolded(x), model(x), atol=1e-10)
    model.train()
    assert fold_batchnorm(model, x) is model
    model.eval()
    wrapped = _Recorder(model)
    assert fold_batchnorm(wrapped, x) is wrapped
    handle = model.register_forward_hook(lambda *a: None)  # hooks would be lost in a copy
    assert fold_batchnorm(model, x) is model
    handle.remove()
    with pytest.raises(ValueError, match="fold_batchnorm"):
        DeepFool(fold_batchnorm=1)
