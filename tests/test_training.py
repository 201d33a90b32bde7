"""advsmooth.models.training: loss decreases, files, exact resume, methods, in-place contract."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advsmooth import data, models
from advsmooth.models import training


@pytest.fixture(scope="module")
def small_digits():
    """A small, fast training problem: 300 digits downsampled to 1×14×14."""
    x, y = data.load("digits", split="train", sample=300, seed=0)
    return F.avg_pool2d(x, 2), y


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.create("lenet5", (1, 14, 14), 10)


def _weights(m: nn.Module) -> list[torch.Tensor]:
    return [v.detach().clone() for v in m.state_dict().values()]


def test_loss_decreases_files_and_log(small_digits, tmp_path):
    model = _net()
    out = tmp_path / "run"
    ret = training.train(model, small_digits, epochs=3, lr=3e-3, batch_size=32, seed=0,
                         out_dir=out, eval_data=small_digits)
    assert ret is model and not model.training  # trained in place, returned in eval mode
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in lines] == [1, 2, 3]
    assert lines[-1]["loss"] < lines[0]["loss"]
    for e in lines:
        assert {"epoch", "loss", "train_acc", "clean_acc", "lr", "time_s"} <= set(e)
        assert 0 <= e["train_acc"] <= 1 and 0 <= e["clean_acc"] <= 1
    assert lines[-1]["clean_acc"] == pytest.approx(training.evaluate(model, small_digits))
    for f in ("epoch_001.pt", "epoch_002.pt", "epoch_003.pt", "last.pt"):
        assert (out / f).is_file()
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and state["format"] == training.CHECKPOINT_FORMAT
    assert {"model", "optimizer", "rng", "config", "history"} <= set(state)
    assert state["optimizer"]["state"]  # Adam moments are saved
    assert len(state["history"]) == 3
    # the epoch checkpoint loads into a fresh model through the safe loader
    fresh = models.load_checkpoint(_net(5), out / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(_weights(fresh), _weights(model)))


def test_training_deterministic_and_global_rng_untouched(small_digits):
    net = _net()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = training.train(net, small_digits, epochs=1, batch_size=64, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = training.train(_net(), small_digits, epochs=1, batch_size=64, seed=7)
    c = training.train(_net(), small_digits, epochs=1, batch_size=64, seed=8)
    assert all(torch.equal(u, v) for u, v in zip(_weights(a), _weights(b)))
    assert not all(torch.equal(u, v) for u, v in zip(_weights(a), _weights(c)))


class _Interrupt(Exception):
    pass


def test_resume_equals_uninterrupted(small_digits, tmp_path):
    kw = {"epochs": 3, "lr": 3e-3, "batch_size": 32, "seed": 1, "optimizer": "sgd",
          "schedule": "cosine"}
    full = training.train(_net(), small_digits, out_dir=tmp_path / "full", **kw)

    def crash_at_2(model, epoch):
        if epoch == 2:
            raise _Interrupt
        return {"probe": epoch}

    with pytest.raises(_Interrupt):
        training.train(_net(), small_digits, out_dir=tmp_path / "part", callbacks=[crash_at_2],
                       **kw)
    assert torch.load(tmp_path / "part" / "last.pt", weights_only=True)["epoch"] == 1
    # resume into a differently initialised model: everything comes from last.pt
    resumed = training.train(_net(99), small_digits, out_dir=tmp_path / "part", resume=True,
                             **kw)
    assert all(torch.equal(u, v) for u, v in zip(_weights(full), _weights(resumed)))
    log = [json.loads(s) for s in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3] and log[0]["probe"] == 1
    full_log = [json.loads(s)
                for s in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [e["loss"] for e in log] == [e["loss"] for e in full_log]


def test_resume_extends_epochs_and_checks_settings(small_digits, tmp_path):
    one = training.train(_net(), small_digits, epochs=1, batch_size=50, seed=2, out_dir=tmp_path)
    two = training.train(_net(3), small_digits, epochs=2, batch_size=50, seed=2,
                         out_dir=tmp_path, resume=True)
    ref = training.train(_net(), small_digits, epochs=2, batch_size=50, seed=2)
    assert all(torch.equal(u, v) for u, v in zip(_weights(two), _weights(ref)))
    assert one is not two
    with pytest.raises(ValueError, match="batch_size"):
        training.train(_net(), small_digits, epochs=3, batch_size=10, seed=2, out_dir=tmp_path,
                       resume=True)
    # resume without a checkpoint starts fresh
    fresh = training.train(_net(), small_digits, epochs=1, batch_size=50, seed=2,
                           out_dir=tmp_path / "new", resume=True)
    assert all(torch.equal(u, v) for u, v in zip(_weights(fresh), _weights(one)))


def test_dataset_input_matches_tensor_input(small_digits):
    x, y = small_digits
    ds = torch.utils.data.TensorDataset(x, y)
    a = training.train(_net(), small_digits, epochs=1, batch_size=64, seed=0)
    b = training.train(_net(), ds, epochs=1, batch_size=64, seed=0)
    assert all(torch.allclose(u, v, atol=1e-6) for u, v in zip(_weights(a), _weights(b)))


def test_custom_method_hook_receives_generator(small_digits):
    calls = []

    class Noisy(training.TrainingMethod):
        name = "noisy-test"

        def __init__(self, sigma: float = 0.1) -> None:
            self.sigma = sigma

        def loss(self, model, x, y, generator):
            calls.append((model.training, generator.initial_seed()))
            noise = torch.randn(x.shape, generator=generator) * self.sigma
            return F.cross_entropy(model(x + noise), y)

        def config(self):
            return {"sigma": self.sigma}

    training.METHODS["noisy-test"] = Noisy
    try:
        training.train(_net(), small_digits, method="noisy-test", sigma=0.2, epochs=2,
                       batch_size=100, seed=0)
    finally:
        del training.METHODS["noisy-test"]
    assert len(calls) == 6 and all(mode for mode, _ in calls)
    assert len({s for _, s in calls}) == 2  # one generator seed per epoch
    assert "sigma=0.2" in repr(Noisy(0.2))


def test_validation_errors(small_digits):
    with pytest.raises(ValueError, match="unknown training method"):
        training.train(_net(), small_digits, method="nope")
    with pytest.raises(ValueError, match="lr"):
        training.train(_net(), small_digits, lr=0)
    with pytest.raises(ValueError, match="epochs"):
        training.train(_net(), small_digits, epochs=-1)
    with pytest.raises(ValueError, match="resume"):
        training.train(_net(), small_digits, resume=True)
    with pytest.raises(TypeError, match="data"):
        training.train(_net(), [1, 2, 3])
    with pytest.raises(ValueError, match="optimizer"):
        training.train(_net(), small_digits, optimizer="rmsprop")
    assert "standard" in training.METHODS
