"""Tests of ``advsmooth attack`` and the attack registry (embedded digits data and model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from advsmooth.attacks import registry
from advsmooth.cli import main

COMMON = ["--model", "digits-lenet", "--data", "digits", "--seed", "1"]


def _run(capsys, *argv):
    code = main(["attack", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _check_outputs(out_dir, n):
    data = np.load(out_dir / "adversarial.npz")
    for key in ("x", "x_adv", "y", "pred", "clean_pred", "success", "indices"):
        assert key in data.files
    assert data["x"].shape == (n, 1, 28, 28) and data["x_adv"].shape == (n, 1, 28, 28)
    assert data["y"].shape == (n,) and data["success"].dtype == np.bool_
    assert len(set(data["indices"].tolist())) == n
    summary = json.loads((out_dir / "summary.json").read_text())
    with Image.open(out_dir / "examples.png") as im:
        assert im.size[0] > 100 and im.size[1] > 100
    return data, summary


def test_deepfool_writes_npz_png_json(tmp_path, capsys):
    out = tmp_path / "df"
    code, stdout, _ = _run(capsys, "deepfool", *COMMON, "--n", "6", "--max-iter", "20",
                           "--out", str(out))
    assert code == 0
    for label in ("clean accuracy", "success rate", "median L2", "mean Linf",
                  "Omega_n x1e3", "gradient evals / attacked image", "time (s)"):
        assert label in stdout
    data, summary = _check_outputs(out, 6)
    s = summary["summary"]
    assert summary["attack"] == "deepfool" and summary["params"]["max_iter"] == 20
    assert s["n"] == 6
    correct = data["clean_pred"] == data["y"]
    assert s["accuracy"] == pytest.approx(correct.mean())
    # success in the file is re-checked on x_adv and agrees with the stored predictions
    assert np.array_equal(data["success"], data["pred"] != data["y"])
    assert s["success_rate"] == pytest.approx(data["success"][correct].mean())
    # the same seed selects the same samples
    code, _, _ = _run(capsys, "deepfool", *COMMON, "--n", "6", "--max-iter", "20",
                      "--out", str(tmp_path / "again"))
    again = np.load(tmp_path / "again" / "adversarial.npz")
    assert np.array_equal(again["indices"], data["indices"])


def test_smoothfool_and_iterative_smooth(tmp_path, capsys):
    code, _, _ = _run(capsys, "smoothfool", *COMMON, "--n", "3", "--sigma", "1.5",
                      "--max-iter", "30", "--param", "clip_step=1.0", "--out", str(tmp_path / "sf"))
    assert code == 0
    data, summary = _check_outputs(tmp_path / "sf", 3)
    assert "sigma" in summary["attack_repr"] or "filter" in summary["attack_repr"]
    assert data["x_adv"].min() >= 0 and data["x_adv"].max() <= 1  # SmoothClip keeps [0, 1]
    code, stdout, _ = _run(capsys, "iterative-smooth", *COMMON, "--n", "3", "--max-iter", "5",
                           "--param", "lr=0.01", "--out", str(tmp_path / "is"))
    assert code == 0 and "mean iterations" in stdout
    _, summary = _check_outputs(tmp_path / "is", 3)
    assert summary["summary"]["mean_iterations"] <= 5


def test_uap_writes_v_within_budget(tmp_path, capsys):
    out = tmp_path / "uap"
    code, stdout, _ = _run(capsys, "uap", *COMMON, "--n", "5", "--fit-n", "6", "--eps", "0.1",
                           "--param", "max_passes=1", "--param", "batch_update=3",
                           "--out", str(out))
    assert code == 0 and "universal fooling rate" in stdout
    data, summary = _check_outputs(out, 5)
    assert data["v"].shape == (1, 28, 28)
    assert np.abs(data["v"]).max() <= 0.1
    np.testing.assert_allclose(data["x_adv"], np.clip(data["x"] + data["v"], 0, 1), atol=1e-6)
    s = summary["summary"]
    assert s["passes"] == 1 and s["fit_n"] == 6 and s["v_linf"] <= 0.1
    assert s["universal_fooling_rate"] == pytest.approx(
        (data["pred"] != data["clean_pred"]).mean())


def test_smooth_uap_same_split_uses_disjoint_samples(tmp_path, capsys):
    code, stdout, _ = _run(capsys, "smooth-uap", *COMMON, "--n", "3", "--fit-n", "3",
                           "--fit-split", "test", "--sigma", "2", "--eps", "0.1",
                           "--max-iter", "20", "--param", "max_passes=1",
                           "--param", "batch_update=3", "--out", str(tmp_path / "suap"))
    assert code == 0
    data, summary = _check_outputs(tmp_path / "suap", 3)
    assert np.abs(data["v"]).max() <= 0.1
    assert summary["summary"]["fit_split"] == "test"


@pytest.mark.parametrize("argv,needle", [
    (["deepfool", *COMMON, "--sigma", "2"], "does not take --sigma"),
    (["nope", *COMMON], "unknown attack"),
    (["deepfool", *COMMON, "--param", "foo=1"], "no parameter 'foo'"),
    (["deepfool", *COMMON, "--param", "oops"], "KEY=VALUE"),
    (["deepfool", *COMMON, "--norm", "banana"], "--norm"),
    (["deepfool", *COMMON, "--n", "-1"], "--n"),
    (["deepfool", *COMMON, "--max-iter", "0"], "--max-iter must be"),
    (["deepfool", "--model", "digits-lenet", "--data", "nodata"], "unknown dataset"),
    (["color-shift", *COMMON, "--n", "2"], "RGB"),
    (["uap", *COMMON, "--fit-n", "0"], "--fit-n"),
])
def test_bad_options_exit_2_with_one_line(capsys, argv, needle):
    code, _, err = _run(capsys, *argv)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("advsmooth attack: error:")
    assert needle in lines[0]


def test_registry_build_register_and_errors():
    assert {"deepfool", "smoothfool", "uap", "smooth-uap", "iterative-smooth",
            "color-shift"} <= set(registry.names())
    df = registry.build("deepfool", max_iter=7)
    assert type(df).__name__ == "DeepFool" and df.max_iter == 7
    uap = registry.build("uap", xi=0.2, norm=2, max_iter=3)
    assert uap.xi == 0.2 and uap.norm == 2 and uap.base.max_iter == 3
    suap = registry.build("smooth-uap", sigma=3.0)
    assert suap.smooth and suap.target_fooling_rate == 0.9
    with pytest.raises(ValueError, match="no parameter"):
        registry.build("deepfool", sigma=1)
    with pytest.raises(ValueError, match="unknown attack"):
        registry.build("nope")
    entry = registry.AttackEntry("advsmooth.attacks.deepfool:DeepFool", ("norm",),
                                 defaults={"max_iter": 3})
    registry.register("test-df3", entry)
    try:
        assert registry.build("test-df3").max_iter == 3
        with pytest.raises(ValueError, match="already registered"):
            registry.register("test-df3", entry)
    finally:
        registry.REGISTRY.pop("test-df3")
    with pytest.raises(ValueError, match="kind"):
        registry.register("x", registry.AttackEntry(lambda: None, kind="weird"))


def test_attack_and_evaluate_random_subset_take_the_same_images():
    """docs/cli.md: `attack --n N --seed S` and `evaluate --n N --random-subset --seed S` take
    the same images (one seeded picker)."""
    import torch

    from advsmooth.cli import build_parser
    from advsmooth.cli._model_data import load_model_data
    from advsmooth.cli.cmd_attack import attack_spec
    from advsmooth.data import load
    from advsmooth.experiments.runner import select_indices

    p = build_parser()
    a = p.parse_args(["attack", "fgsm", "--model", "digits-lenet", "--data", "digits", "--n", "7",
                      "--seed", "5"])
    spec = attack_spec(a, {})
    idx = select_indices(spec.datasets[0], spec.seed)
    e = p.parse_args(["evaluate", "--model", "digits-lenet", "--data", "digits", "--n", "7",
                      "--random-subset", "--seed", "5", "--eps", "0.1"])
    _, x, _, _ = load_model_data(e)
    x_all, _ = load("digits", "test")
    assert torch.equal(x, x_all[idx])
