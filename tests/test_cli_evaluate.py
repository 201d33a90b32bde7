"""``advsmooth evaluate`` / ``advsmooth certify``: outputs, bring-your-own models, and user errors
as one line with exit status 2."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from advsmooth.cli import main
from advsmooth.cli._common import parse_number
from advsmooth.cli._model_data import eps_list

FAST = ["--pgd-steps", "2", "--apgd-steps", "3", "--apgd-targets", "2",
        "--square-queries", "10", "--stages", "pgd-ce,apgd-ce,square"]


def _one_line_error(argv, capsys, needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("advsmooth "), err
    assert needle in err, err


def test_eps_fractions() -> None:
    assert parse_number("8/255") == pytest.approx(8 / 255)
    assert eps_list("2/255, 4/255,0.1") == pytest.approx([2 / 255, 4 / 255, 0.1])
    for bad in ("8/0", "x", "1/2/3", "-0.1", "nan"):
        with pytest.raises(ValueError, match="--eps"):
            eps_list(bad)


def test_evaluate_writes_table_json_html(tmp_path, capsys) -> None:
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", "digits-fc", "--data", "digits", "--n", "12",
                 "--eps", "4/255,0.1", "--out", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    assert "| 4/255 |" in text and "| 0.1 |" in text
    rep = json.loads((out / "evaluation.json").read_text())
    assert rep["eps"] == pytest.approx([4 / 255, 0.1]) and rep["n"] == 12
    assert rep["robust_accuracy"][1] <= rep["robust_accuracy"][0]
    page = (out / "evaluation.html").read_text()
    assert "<svg" in page and "Gradient-masking flags" in page
    assert (out / "evaluation.md").read_text().startswith("12 samples")
    assert rep["config"]["square_all"] is False
    assert main(["evaluate", "--model", "digits-fc", "--data", "digits", "--n", "12",
                 "--eps", "0.1", "--out", str(out), "--square-all", *FAST]) == 0
    rep = json.loads((out / "evaluation.json").read_text())
    assert rep["config"]["square_all"] is True
    assert all(s.get("not_attacked", 0) == 0 for s in rep["stages"])


@pytest.mark.parametrize("argv,needle", [
    (["--eps", "8/256x"], "--eps"),
    (["--eps", "0.1", "--stages", "pgd,apgd-ce"], "unknown stage 'pgd'"),
    (["--eps", "0.1", "--n", "-3"], "--n"),
    (["--eps", "0.1", "--model", "no_such_pkg.mod:make"], "cannot import"),
    (["--eps", "0.1", "--device", "tpu"], "--device"),
])
def test_evaluate_user_errors_are_one_line(argv, needle, capsys) -> None:
    base = ["evaluate", "--model", "digits-fc", "--data", "digits", "--n", "4"]
    _one_line_error(base + argv, capsys, needle)


def test_input_shape_is_checked_before_any_work(tmp_path, capsys) -> None:
    npz = tmp_path / "rgb.npz"
    np.savez(npz, x=np.zeros((4, 3, 8, 8), dtype=np.float32), y=np.zeros(4, dtype=np.int64))
    _one_line_error(["evaluate", "--model", "digits-fc", "--data", f"npz:{npz}", "--eps", "0.1"],
                    capsys, "takes 1x28x28 images")


def test_class_sorted_data_gets_a_one_line_cli_warning(tmp_path, capsys) -> None:
    """--n on class-sorted data says, in the command's words, that it took few classes and how
    to take a random subset; with --random-subset nothing is said."""
    from advsmooth import data

    x, y = data.load("digits", split="test")
    order = torch.argsort(y, stable=True)
    npz = tmp_path / "sorted.npz"
    np.savez(npz, x=x[order].numpy(), y=y[order].numpy())
    argv = ["evaluate", "--model", "digits-fc", "--data", f"npz:{npz}", "--n", "6",
            "--eps", "0.1", *FAST]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("advsmooth evaluate: warning: ") for line in err), err
    sorted_lines = [line for line in err if "sorted by class" in line]
    assert len(sorted_lines) == 1, err
    assert "--random-subset" in sorted_lines[0] and "1 of its classes" in sorted_lines[0]
    assert "UserWarning" not in sorted_lines[0]
    assert main([*argv, "--random-subset"]) == 0
    assert "sorted by class" not in capsys.readouterr().err
    check = ["check-defense", "--model", "digits-fc", "--data", f"npz:{npz}", "--n", "6",
             "--eps", "0.1", "--steps", "2", "--no-nattack", "--no-progress"]
    main(check)
    err = capsys.readouterr().err.strip().splitlines()
    sorted_lines = [line for line in err if "sorted by class" in line]
    assert len(sorted_lines) == 1, err
    assert sorted_lines[0].startswith("advsmooth check-defense: warning: ")
    main([*check, "--random-subset"])
    assert "sorted by class" not in capsys.readouterr().err


def test_bring_your_own_model_factory_and_checkpoint(tmp_path, monkeypatch, capsys) -> None:
    pkg = tmp_path / "byo_models_for_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))\n"
        "def not_a_model():\n"
        "    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("byo_models_for_test", None)
    torch.manual_seed(1)
    weights = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).state_dict()
    torch.save(weights, tmp_path / "w.pt")
    argv = ["evaluate", "--model", "byo_models_for_test:make", "--checkpoint",
            str(tmp_path / "w.pt"), "--data", "digits", "--n", "6", "--eps", "0.05", *FAST]
    assert main(argv) == 0
    assert "6 samples" in capsys.readouterr().out
    bad = list(argv)
    bad[2] = "byo_models_for_test:not_a_model"
    _one_line_error(bad, capsys, "not a torch.nn.Module")
    torch.save({"1.weight": torch.zeros(3, 3)}, tmp_path / "bad.pt")
    bad = list(argv)
    bad[4] = str(tmp_path / "bad.pt")
    _one_line_error(bad, capsys, "bad.pt")


def test_certify_table_and_files(tmp_path, capsys) -> None:
    out = tmp_path / "cert"
    assert main(["certify", "--model", "digits-fc", "--data", "digits", "--n", "6",
                 "--sigma", "0.25", "--n0", "10", "--N", "50", "--alpha", "0.01",
                 "--radii", "0,0.1,0.25", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "certified accuracy" in text and "abstained" in text
    rep = json.loads((out / "certification.json").read_text())
    acc = rep["certified_accuracy"]
    assert rep["radii"] == [0.0, 0.1, 0.25] and acc == sorted(acc, reverse=True)
    assert "<svg" in (out / "certification.html").read_text()


@pytest.mark.parametrize("argv,needle", [
    (["--sigma", "0.25", "--alpha", "1.5"], "--alpha"),
    (["--sigma", "0.25", "--radii", "0,x"], "--radii"),
])
def test_certify_user_errors_are_one_line(argv, needle, capsys) -> None:
    _one_line_error(["certify", "--model", "digits-fc", "--data", "digits", "--n", "4", *argv],
                    capsys, needle)
