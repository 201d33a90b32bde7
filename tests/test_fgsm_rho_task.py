"""The ``fgsm_rho`` study task (DeepFool Tables 1/2, 90 %-rule FGSM by bisection): its rows are
``metrics.fgsm_rho`` on the correctly classified images of the same seeded sample an attack cell
draws, and bad parameters fail at validation time."""

from __future__ import annotations

import math

import pytest
import torch

from advsmooth import data, models
from advsmooth.experiments import Store, parse_spec, run_spec
from advsmooth.experiments.tasks import get_task
from advsmooth.metrics import fgsm_rho, predict_batched


def test_rows_are_fgsm_rho_on_the_correct_images_of_the_attack_cells_sample(tmp_path):
    spec = parse_spec({
        "name": "rho", "seed": 5, "batch_size": 20,
        "datasets": [{"name": "digits", "sample": 40}],
        "models": [{"name": "digits-lenet"}],
        "attacks": [{"name": "fgsm", "params": {"eps": 0.1}}],
        "studies": [{"task": "fgsm_rho", "label": "f", "params": {
            "dataset": "digits", "sample": 40, "data_seed": 5, "models": ["digits-lenet"],
            "grid": 50}}]})
    run_spec(spec, tmp_path, progress=False)
    with Store(tmp_path, readonly=True) as store:
        cells = {c["kind"]: c for c in store.cells()}
        (row,) = store.study_rows(cells["study"]["cell_id"])
        attacked = store.samples(cells["attack"]["cell_id"])
    x, y = data.load("digits", "test", sample=40, seed=5)
    assert torch.equal(torch.as_tensor(attacked["label"]), y)  # the attack cell's images
    model = models.load("digits-lenet").eval()
    ok = predict_batched(model, x) == y
    want2 = fgsm_rho(model, x[ok], y[ok], p=2, grid=50)
    want_inf = fgsm_rho(model, x[ok], y[ok], p="inf", grid=50)
    assert row["model"] == "digits-lenet" and row["n"] == 40
    assert row["n_correct"] == int(ok.sum()) == int(cells["attack"]["n_correct"])
    assert row["eps"] == want2["eps"] == want_inf["eps"] and row["rate"] >= 0.9
    assert row["rho_adv"] == pytest.approx(want2["rho"])
    assert row["rho_inf"] == pytest.approx(want_inf["rho"])
    assert math.isfinite(row["rho_adv"]) and 0 < row["rho_adv"] and 0 < row["rho_inf"]


@pytest.mark.parametrize("params, match", [
    ({}, "missing parameter"),
    ({"models": "digits-lenet", "bogus": 1}, "unknown parameter"),
    ({"models": "no-such-model"}, "no-such-model"),
    ({"models": "digits-lenet", "target_rate": 1.5}, "target_rate"),
    ({"models": "digits-lenet", "eps_max": 0}, "eps_max"),
    ({"models": "digits-lenet", "grid": 0}, "grid"),
    ({"models": "digits-lenet", "n": 5, "sample": 5}, "at most one"),
])
def test_bad_parameters_are_rejected(params, match):
    with pytest.raises(ValueError, match=match):
        get_task("fgsm_rho").check(params)
