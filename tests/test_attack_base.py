"""The attack contract (attacks/base.py), exercised through DeepFool and SmoothFool: model
hygiene, input validation, skipped inputs, result helpers."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyCNN

from advsmooth.attacks import AttackResult, DeepFool, SmoothFool, run_batched

ATTACKS = [DeepFool(max_iter=10), SmoothFool(sigma=1.0, max_iter=5)]
IDS = ["deepfool", "smoothfool"]


def _x(n=6, seed=0, dtype=torch.float32):
    return 0.2 + 0.6 * torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed),
                                  dtype=dtype)


@pytest.mark.parametrize("attack", ATTACKS, ids=IDS)
def test_model_and_input_untouched(attack):
    model = TinyCNN()
    model.train()  # BatchNorm in train mode: attacks must not update its running stats
    model.net[3].requires_grad_(False)  # a mixed requires_grad pattern to restore exactly
    model.net[3].eval()  # and a mixed train/eval pattern
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    modes = {k: m.training for k, m in model.named_modules()}
    x = _x()
    x_copy = x.clone()
    rng = torch.get_rng_state()
    res = attack(model, x)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(x, x_copy)
    assert res.x is x or torch.equal(res.x, x_copy)
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k  # incl. BN running_mean/var, num_batches_tracked
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags
    assert {k: m.training for k, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("attack", ATTACKS, ids=IDS)
def test_works_under_no_grad(attack):
    model = TinyCNN().eval()
    with torch.no_grad():
        res = attack(model, _x(3))
    assert res.success.any()


@pytest.mark.parametrize("attack", ATTACKS, ids=IDS)
def test_already_misclassified_inputs_are_returned_unchanged(attack):
    model = TinyCNN().eval()
    x = _x()
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[::2] = (pred[::2] + 1) % 4  # wrong labels: already "misclassified"
    res = attack(model, x, y)
    wrong = torch.zeros(6, dtype=torch.bool)
    wrong[::2] = True
    assert torch.equal(res.skipped, wrong)
    assert torch.equal(res.x_adv[wrong], x[wrong])
    assert res.success[wrong].all() and (res.iterations[wrong] == 0).all()
    assert (res.grad_evals[wrong] == 0).all() and (res.forward_evals[wrong] == 1).all()
    assert (res.iterations[~wrong] > 0).all()


@pytest.mark.parametrize("attack", ATTACKS, ids=IDS)
def test_invalid_inputs(attack):
    model = TinyCNN().eval()
    x = _x(4)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="4 dimensions"):
        attack(model, x[0])
    with pytest.raises(ValueError, match="floating-point"):
        attack(model, (x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="dtype"):
        attack(model, x.double())
    bad = x.clone()
    bad[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        attack(model, bad)
    bad[1, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        attack(model, bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack(model, x * 3)
    with pytest.raises(ValueError, match="class indices"):
        attack(model, x, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="class indices"):
        attack(model, x, torch.tensor([0, -1, 2, 3]))
    with pytest.raises(ValueError, match="entries"):
        attack(model, x, y[:3])
    with pytest.raises(ValueError, match="integer"):
        attack(model, x, y.float())
    with pytest.raises(TypeError):
        attack(model, x.numpy())
    meta_model = TinyCNN().to("meta")
    with pytest.raises(ValueError, match="meta"):
        attack(meta_model, x)


def test_target_equal_to_label_is_an_error():
    model = TinyCNN().eval()
    x = _x(4)
    with torch.no_grad():
        y = model(x).argmax(1)
    with pytest.raises(ValueError, match="target must differ"):
        DeepFool()(model, x, y, target=y)


def test_result_helpers_and_run_batched():
    model = TinyCNN().double().eval()
    x = _x(7, dtype=torch.float64)
    atk = DeepFool(max_iter=20)
    full = atk(model, x)
    parts = run_batched(atk, model, x, batch_size=3, progress_bar=False)
    assert torch.allclose(parts.x_adv, full.x_adv, atol=1e-10)
    assert torch.equal(parts.grad_evals, full.grad_evals)
    assert set(parts.extras) == set(full.extras)
    sub = full[torch.tensor([0, 2])]
    assert len(sub) == 2 and torch.equal(sub.x_adv, full.x_adv[[0, 2]])
    s = full.summary()
    assert s["success_rate"] == 1.0 and s["n"] == 7
    assert s["median_l2"] == pytest.approx(float(full.norms(2).median()), rel=1e-6)
    cat = AttackResult.cat([full[:3], full[3:]])
    assert torch.equal(cat.x_adv, full.x_adv)
    empty = atk(model, x[:0])
    assert len(empty) == 0
