"""The execution layer: one Execution object configures how an attack runs, never what it
computes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from advsmooth.attacks import IGSM, PGD, Execution, SmoothedGradient
from advsmooth.attacks.execution import MIN_IMAGES_PER_THREAD, LayoutHint


def _model() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 4)).double().eval()


@pytest.mark.parametrize("kwargs, match", [
    (dict(threads=0), "threads"),
    (dict(fast_model=1), "fast_model"),
    (dict(channels_last="yes"), "channels_last"),
    (dict(chunk=0), "chunk"),
])
def test_execution_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Execution(**kwargs)


def test_attacks_take_one_execution_object_and_the_shortcuts_agree():
    a = PGD(eps=0.1, execution=Execution(threads=1, fast_model=False))
    b = PGD(eps=0.1, threads=1, fast_model=False)
    assert a.execution == b.execution == Execution(threads=1, fast_model=False)
    assert repr(a) == repr(b) and "threads=1" in repr(a) and "fast_model=False" in repr(a)
    assert "threads" not in repr(PGD(eps=0.1))
    assert PGD(eps=0.1, threads=2, execution=Execution(threads=1)).execution.threads == 2
    with pytest.raises(TypeError, match="Execution"):
        PGD(eps=0.1, execution={"threads": 1})
    with pytest.raises(ValueError, match="chunk_size"):
        PGD(eps=0.1, execution=Execution(chunk=4))
    with pytest.raises(ValueError, match="deterministic"):
        IGSM(eps=0.1, execution=Execution(threads=2), gradient=SmoothedGradient(0.1, 2))


def test_workers_follow_the_settings():
    model, x = _model(), torch.zeros(4 * MIN_IMAGES_PER_THREAD, 3, 8, 8, dtype=torch.float64)
    assert Execution(threads=1).workers(model, x) == 1
    assert Execution(threads=3).workers(model, x) == 3
    assert Execution(threads=9).workers(model, x) == 4  # at least MIN_IMAGES_PER_THREAD each
    assert Execution().workers(model, x, auto=False) == 1
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert Execution().workers(model, x) == 2
        assert Execution().workers(model, x[:MIN_IMAGES_PER_THREAD]) == 1
    finally:
        torch.set_num_threads(prev)


def test_settings_do_not_change_the_result():
    """Threads, the fast copy and the input layout change how, not what (float64)."""
    model = _model()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (32,), generator=g)
    runs = [PGD(eps=0.1, alpha=0.02, steps=4, random_start=False, execution=e)(model, x, y)
            for e in (Execution(threads=1, fast_model=False, channels_last=False),
                      Execution(threads=2, channels_last=True), Execution())]
    for r in runs[1:]:
        torch.testing.assert_close(r.x_adv, runs[0].x_adv, rtol=0, atol=1e-12)
        assert torch.equal(r.success, runs[0].success)


def test_layout_hint_falls_back_for_a_model_that_rejects_channels_last():
    class Viewer(nn.Module):
        def forward(self, x):
            return x.view(x.shape[0], -1)[:, :4]

    hint = LayoutHint()
    x = torch.rand(2, 3, 4, 4).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert hint(Viewer(), torch.rand(2, 3, 4, 4)).shape == (2, 4)
    assert hint.mode is False and hint(Viewer(), x.contiguous()).shape == (2, 4)
    with pytest.raises(RuntimeError):
        LayoutHint(True)(Viewer(), torch.rand(2, 3, 4, 4))


class _ReluPool(nn.Module):
    """ReLU → max-pooling as functions and as modules (rewritten), and a ReLU whose output also
    feeds the head (a second user: left alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 4, 3, padding=1)
        self.act, self.pool = nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1)
        self.head = nn.Linear(4 * 2 * 2 + 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.max_pool2d(torch.nn.functional.relu(self.conv1(x)), 2)
        x = self.pool(self.act(self.conv2(x)))
        r = torch.relu(self.conv3(x))
        kept = torch.nn.functional.max_pool2d(r, 2)
        return self.head(torch.cat([kept.flatten(1), r.mean(dim=(2, 3))], dim=1))


def _same_values_and_gradients(model: nn.Module, other: nn.Module, x: torch.Tensor) -> None:
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    za, zb = model(xa), other(xb)
    assert torch.equal(za, zb)
    for k in range(za.shape[1]):
        ga, = torch.autograd.grad(za[:, k].sum(), xa, retain_graph=True)
        gb, = torch.autograd.grad(zb[:, k].sum(), xb, retain_graph=True)
        assert torch.equal(ga, gb)


def test_pool_before_relu_gives_the_same_values_and_gradients():
    from advsmooth.attacks.execution import fold_batchnorm, pool_before_relu
    from advsmooth.models.zoo import LeNet

    torch.manual_seed(3)
    model = _ReluPool().double().eval()
    gm = torch.fx.symbolic_trace(model)
    assert pool_before_relu(gm) == 2  # the third ReLU also feeds the mean: left alone
    order = [n.name for n in gm.graph.nodes if n.op != "placeholder"]
    assert order.index("max_pool2d") < order.index("relu_3")  # pooled, then rectified
    x = torch.rand(6, 1, 16, 16, dtype=torch.double)
    x[:, :, :4] = 0.0  # flat regions: ties and all-negative windows
    _same_values_and_gradients(model, gm, x)
    # the fast copy of a zoo LeNet (F.relu → F.max_pool2d twice) gets the rewrite, and its
    # values and gradients are bit for bit those of the same model in the same layout
    lenet = LeNet(in_shape=(1, 16, 16), num_classes=3).double().eval()
    assert fold_batchnorm(lenet, x[:2]) is lenet  # no copy for the rewrite alone
    fast = fold_batchnorm(lenet, x[:2], channels_last=True)
    assert fast is not lenet and isinstance(fast, torch.fx.GraphModule)
    pools = [n for n in fast.graph.nodes if n.target is torch.nn.functional.max_pool2d]
    assert len(pools) == 2
    assert all([u.target for u in p.users] == [torch.nn.functional.relu] for p in pools)
    _same_values_and_gradients(copy.deepcopy(lenet).to(memory_format=torch.channels_last),
                               fast, x)
