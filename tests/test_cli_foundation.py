"""CLI: advsmooth data / models / train / demo, in-process through advsmooth.cli.main."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advsmooth import models
from advsmooth.cli import main


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    """Same folder as in test_models.py, so digits-lenet trains at most once per session."""
    return tmp_path_factory.getbasetemp() / "advsmooth-digits-cache"


@pytest.fixture
def toy_npz(tmp_path):
    g = np.random.default_rng(0)
    y = np.arange(40) % 2
    x = g.integers(0, 60, (40, 8, 8), dtype=np.uint8)
    x[y == 1, 2:6, 2:6] = 250  # class 1 has a bright square: learnable in one epoch
    path = tmp_path / "toy.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.mark.parametrize("cmd", ["data", "models", "train", "demo"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: advsmooth " + cmd in capsys.readouterr().out


def test_data_lists_registry(capsys):
    assert main(["data"]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "1x28x28" in out and "cifar10" in out
    assert main(["data", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    digits = next(r for r in rows if r["name"] == "digits")
    assert digits["sizes"] == {"train": 1438, "test": 359} and digits["available"]["test"]


def test_models_lists_zoo(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ADVSMOOTH_CACHE", str(tmp_path / "c"))
    assert main(["models", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cifar10-resnet20" in out and "no (checkpoint missing)" in out
    assert "digits-lenet" in out and "trains on first use" in out
    assert main(["models", "--json"]) == 0
    assert any(r["name"] == "mnist-mlp" for r in json.loads(capsys.readouterr().out))
    # models trained on first use from a dataset whose train split is not found here
    from advsmooth.models import registry

    monkeypatch.setattr(registry, "_trainable_here", lambda name: False)
    assert main(["models", "--models-dir", str(tmp_path)]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("cifar10-vgg"))
    assert "no (train split missing)" in row


@pytest.mark.parametrize("argv,needle", [
    (["data", "--data-root", "/nonexistent/advsmooth"], "no such directory"),
    (["models", "--models-dir", "/nonexistent/advsmooth"], "no such directory"),
    (["train", "alexnet", "--data", "digits", "--epochs", "1"], "unknown architecture"),
    (["train", "lenet", "--data", "nope"], "unknown dataset"),
    (["train", "lenet", "--data", "npz:/nonexistent/x.npz"], "x.npz"),
    (["train", "lenet", "--data", "digits", "--method", "magic"], "unknown training method"),
    (["train", "lenet", "--data", "digits", "--device", "tpu"], "--device"),
    (["demo", "--model", "mnist-lenet"], "digits-"),
])
def test_user_errors_exit_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and err.startswith("advsmooth ")


@pytest.mark.parametrize("argv", [
    ["train", "lenet", "--data", "digits", "--epochs", "-1"],
    ["train", "lenet", "--data", "digits", "--lr", "0"],
    ["train", "lenet", "--data", "digits", "--batch-size", "x"],
    ["train", "lenet"],
])
def test_bad_values_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_train_end_to_end_and_resume(toy_npz, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "mlp", "--data", f"npz:{toy_npz}", "--epochs", "2", "--lr", "0.01",
            "--batch-size", "8", "--out", str(out), "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    msg = capsys.readouterr().out
    assert "trained mlp" in msg and str(out / "model.pt") in msg
    for f in ("epoch_001.pt", "epoch_002.pt", "last.pt", "metrics.jsonl", "model.pt",
              "model.pt.json"):
        assert (out / f).is_file()
    model = models.load(str(out / "model.pt"))
    meta = json.loads((out / "model.pt.json").read_text())
    assert meta["arch"] == "mlp" and meta["in_shape"] == [1, 8, 8] and meta["num_classes"] == 2
    x = torch.from_numpy(np.load(toy_npz)["x"]).float().div(255).unsqueeze(1)
    assert model(x).shape == (40, 2)
    before = [v.clone() for v in model.state_dict().values()]
    # resuming a finished run with more epochs continues from last.pt
    assert main([*argv[:4], "--epochs", "3", *argv[6:], "--resume"]) == 0
    log = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in log] == [1, 2, 3]
    after = models.load(str(out / "model.pt"))
    assert any(not torch.equal(a, b) for a, b in zip(before, after.state_dict().values()))


def test_demo_runs_attacks_and_writes_report(digits_cache, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ADVSMOOTH_CACHE", str(digits_cache))
    out_dir = tmp_path / "demo"
    assert main(["demo", "--n", "6", "--out", str(out_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("digits-lenet: test accuracy")
    acc = float(out.split("test accuracy")[1].split("%")[0])
    assert acc >= 97.0
    # the summary table lists DeepFool and SmoothFool at every demo sigma_g
    assert "DeepFool" in out
    for sigma in ("1.0", "2.0", "5.0", "10.0"):
        assert f"SmoothFool[sigma={sigma}]" in out
    report = out_dir / "report"
    assert (report / "report.html").is_file() and (report / "tables" / "summary.md").is_file()
    assert (report / "figures" / "cells_fooling_rate_vs_sigma.png").is_file()
    # re-running resumes from the store: nothing is recomputed, the table is identical
    table = (report / "tables" / "summary.md").read_text()
    assert main(["demo", "--n", "6", "--out", str(out_dir), "--no-progress"]) == 0
    capsys.readouterr()
    def without_timing(md: str) -> list[str]:  # the last column is seconds per sample
        return [row.rsplit("|", 2)[0] for row in md.splitlines()]

    assert without_timing((report / "tables" / "summary.md").read_text()) == without_timing(table)
