"""Ensemble adversarial training (method "ensemble_at"): holdout sources, seeding, errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SHARED_MODELS, TinyCNN, needs_shared
from torch import nn

from advsmooth import defenses
from advsmooth.defenses import METHODS
from advsmooth.defenses.ensemble_at import EnsembleAdversarialTraining, sign_attack


class Recorder(nn.Module):
    """Wraps a classifier and counts the forward calls made with input gradients on."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.net = TinyCNN(seed=seed)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            self.calls += 1
        return self.net(x)


def _data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long() + 2 * (
        x[:, 0, :, :4].mean((1, 2)) > x[:, 0, :, 4:].mean((1, 2))).long()
    return x, y


def test_registered_by_name():
    assert METHODS["ensemble_at"] is EnsembleAdversarialTraining
    m = defenses.get_method("ensemble_at", holdout=[TinyCNN(seed=3)], eps=0.1)
    assert isinstance(m, EnsembleAdversarialTraining)
    assert m.source_names == ["current", "holdout0:TinyCNN"]


@pytest.mark.parametrize("holdout", [[], (), None])
def test_empty_holdout_raises(holdout):
    with pytest.raises(ValueError, match="holdout"):
        EnsembleAdversarialTraining(holdout=holdout or [])


def test_bad_config_raises():
    with pytest.raises(ValueError, match="holdout\\[0\\]"):
        EnsembleAdversarialTraining(holdout=[3])
    with pytest.raises(ValueError, match="schedule"):
        EnsembleAdversarialTraining(holdout=[TinyCNN()], schedule="sometimes")
    with pytest.raises(ValueError, match="attack"):
        EnsembleAdversarialTraining(holdout=[TinyCNN()], attack="pgd")
    with pytest.raises(ValueError, match="alpha"):
        EnsembleAdversarialTraining(holdout=[TinyCNN()], attack="rfgsm", eps=0.1, alpha=0.2)
    with pytest.raises(ValueError, match="eps"):
        EnsembleAdversarialTraining(holdout=[TinyCNN()], eps=-1)


def test_round_robin_uses_each_holdout_as_configured():
    x, y = _data()
    h1, h2 = Recorder(1), Recorder(2)
    w1 = [p.detach().clone() for p in h1.parameters()]
    meth = EnsembleAdversarialTraining(holdout=[h1, h2], eps=0.1, schedule="round_robin")
    model = TinyCNN(seed=0)
    defenses.train(model, (x, y), method=meth, epochs=2, batch_size=8, lr=1e-2, seed=0,
                   show_progress=False)
    nb = 2 * 8
    names = meth.source_names
    assert meth.sources == [names[i % 3] for i in range(nb)]
    # every batch assigned to a holdout crafted its examples on that holdout (one gradient call)
    assert h1.calls == meth.sources.count(names[1]) and h2.calls == meth.sources.count(names[2])
    assert h1.calls > 0 and h2.calls > 0
    # holdouts are static: never trained
    assert all(torch.equal(a, b) for a, b in zip(w1, h1.parameters()))


def test_random_schedule_is_seeded_and_reproducible():
    x, y = _data()

    def run(seed: int) -> tuple[list[str], list[torch.Tensor]]:
        h1, h2 = Recorder(1), Recorder(2)
        meth = EnsembleAdversarialTraining(holdout=[h1, h2], eps=0.1)
        model = TinyCNN(seed=0)
        defenses.train(model, (x, y), method=meth, epochs=2, batch_size=4, seed=seed,
                       show_progress=False)
        assert h1.calls == meth.sources.count(meth.source_names[1])
        assert h2.calls == meth.sources.count(meth.source_names[2])
        return meth.sources, [p.detach().clone() for p in model.parameters()]

    s0, p0 = run(0)
    s0b, p0b = run(0)
    s1, _ = run(1)
    assert s0 == s0b and all(torch.equal(a, b) for a, b in zip(p0, p0b))
    assert s0 != s1
    assert set(s0) == {"current", "holdout0:Recorder", "holdout1:Recorder"}


def test_without_current_only_holdouts():
    x, y = _data(32)
    meth = EnsembleAdversarialTraining(holdout=[Recorder(1)], eps=0.1, include_current=False)
    defenses.train(TinyCNN(), (x, y), method=meth, epochs=1, batch_size=8, show_progress=False)
    assert meth.sources == ["holdout0:Recorder"] * 4


def test_sign_attack_budget_and_box():
    x, y = _data(16)
    m = TinyCNN(seed=0).eval()
    xa = sign_attack(m, x, y, eps=0.1)
    assert (xa - x).abs().max() <= 0.1 + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    assert not torch.equal(xa, x)
    xr = sign_attack(m, x, y, eps=0.1, attack="rfgsm", alpha=0.05,
                     generator=torch.Generator().manual_seed(0))
    assert (xr - x).abs().max() <= 0.1 + 1e-6


def test_training_reduces_loss(tmp_path):
    x, y = _data(128)
    model = TinyCNN(seed=0)
    defenses.train(model, (x, y), method="ensemble_at", holdout=[TinyCNN(seed=5).eval()],
                   eps=0.02, epochs=6, batch_size=16, lr=1e-2, seed=0, out_dir=tmp_path,
                   show_progress=False)
    log = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert log[-1]["loss"] < log[0]["loss"]
    cfg = torch.load(tmp_path / "last.pt", weights_only=True)["config"]["method_config"]
    assert cfg["holdout"] == ["holdout0:TinyCNN"] and cfg["eps"] == 0.02


@needs_shared("models/mnist_mlp300_100.pt")
def test_holdout_by_name_loads_static_model():
    meth = EnsembleAdversarialTraining(holdout=["mnist-mlp"], eps=0.3, models_dir=SHARED_MODELS)
    h = meth._static(0, torch.device("cpu"))
    assert not h.training and not any(p.requires_grad for p in h.parameters())
    assert meth.source_names == ["current", "mnist-mlp"]
