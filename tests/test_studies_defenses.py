"""The Table 3 study: GreyShift, the study task and dataset settings (no ../shared needed), and
tiny real CIFAR-10 / MNIST runs (skipped without ../shared)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import SHARED_DATA, SHARED_MODELS, TinyCNN, needs_shared

from advsmooth.defenses.magnet import Autoencoder
from advsmooth.experiments import tasks
from advsmooth.attacks import GreyShift


def test_grey_shift_is_seeded_in_the_box_and_successes_are_real():
    model = TinyCNN(channels=1, seed=0).eval()
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    a = GreyShift(trials=30, max_shift=0.8, seed=3)
    r1, r2 = a(model, x, y), a(model, x, y)
    assert torch.equal(r1.x_adv, r2.x_adv) and torch.equal(r1.success, r2.success)
    assert r1.x_adv.min() >= 0 and r1.x_adv.max() <= 1
    assert bool(r1.success.any())
    pred = model(r1.x_adv).argmax(1)
    assert torch.equal(pred != y, r1.success)
    assert torch.equal(r1.x_adv[~r1.success], x[~r1.success])
    with pytest.raises(ValueError, match="trials"):
        GreyShift(trials=0)


def test_autoencoder_activation_is_validated():
    with pytest.raises(ValueError, match="activation"):
        Autoencoder(1, activation="tanh")


def test_table3_task_is_registered_and_checks_params():
    task = tasks.get_task("smoothfool_table3")
    task.check({"out_dir": "x", "n_test": 5})
    with pytest.raises(ValueError, match="unknown"):
        task.check({"out_dir": "x", "n_tset": 5})
    with pytest.raises(ValueError, match="missing"):
        task.check({"n_test": 5})


# ---------------------------------------------------------------------------------------------
# dataset settings (no ../shared needed) and tiny real runs (skipped without ../shared)
# ---------------------------------------------------------------------------------------------

def test_table3_settings_keep_the_mnist_defaults_and_add_cifar10():
    from advsmooth.studies.defenses import table3_settings

    # the original MNIST study's defaults (its cached defences stay valid)
    assert table3_settings("mnist") == {
        "n_clean": 10000, "n_train": 2000, "n_train_sat": 200, "n_train_hgd": 2000, "n_ae": 5000,
        "n_val": 1000, "eps": 0.3, "clip_step": 1.0, "ae_epochs": 5}
    c = table3_settings("cifar10")
    assert c["eps"] == pytest.approx(8 / 255) and c["clip_step"] == 0.5
    # the evaluation part and every training slice fit in the 10,000 CIFAR-10 test images
    assert c["n_clean"] + c["n_train"] + c["n_train_hgd"] + c["n_ae"] + c["n_val"] <= 10000
    assert table3_settings("cifar10", eps=0.01, n_train=None)["eps"] == 0.01
    assert table3_settings("cifar10", n_train=None)["n_train"] == c["n_train"]
    with pytest.raises(ValueError, match="dataset"):
        table3_settings("svhn")
    with pytest.raises(ValueError, match="unknown"):
        table3_settings("mnist", n_tset=3)


def test_table3_rejects_bad_arguments_before_any_work(tmp_path):
    from advsmooth.studies.defenses import smoothfool_table3

    with pytest.raises(ValueError, match="dataset"):
        smoothfool_table3(tmp_path, dataset="svhn")
    with pytest.raises(ValueError, match="white_box_attacks"):   # GS is MNIST's column
        smoothfool_table3(tmp_path, dataset="cifar10", white_box_attacks=["GS"])
    with pytest.raises(ValueError, match="n_test"):
        smoothfool_table3(tmp_path, dataset="cifar10", n_test=50, n_clean=10)
    assert not (tmp_path / "runs").exists()


def _fractions_ok(row, names):
    return all(0.0 <= row[n] <= 1.0 for n in names)


@needs_shared("data/cifar10_test.npz", "models/cifar10_resnet20.pt", "models/cifar10_resnet32.pt",
              "models/cifar10_resnet44.pt")
def test_table3_cifar10_tiny_run(tmp_path):
    from advsmooth.studies.defenses import smoothfool_table3

    rows = smoothfool_table3(
        tmp_path, dataset="cifar10", n_test=6, n_clean=20, n_train=20, n_train_sat=4,
        n_train_hgd=10, n_ae=32, n_val=100, hgd_epochs=1, ae_epochs=60, sigmas_g=(1.0,),
        sf_max_iter=10, white_box_attacks=["IGSM"], root=SHARED_DATA, models_dir=SHARED_MODELS)
    # (the autoencoder needs ~60 tiny epochs to leave the mean-image plateau, else MagNet
    # classifies nothing correctly and its fooling rates are NaN)
    attacks_ = ["IGSM", "DF", "CS", "SF σg=1"]
    defences = ["FGSM-AT", "PGD-AT", "Ens-AT", "SAT", "HGD", "MagNet", "MagNet (reformer only)"]
    by = {(r["defence"], r["setting"]): r for r in rows}
    assert set(by) == ({("none", "white-box")} | {(d, s) for d in defences
                                                   for s in ("transfer", "white-box")})
    for r in rows:
        assert "GS" not in r and all(a in r for a in attacks_)
        assert 0.0 <= r["clean_acc"] <= 1.0
    for d in defences:                       # every defence × attack, transferred: a fraction
        assert _fractions_ok(by[(d, "transfer")], attacks_), by[(d, "transfer")]
        wb = by[(d, "white-box")]            # white-box: only IGSM was run
        assert 0.0 <= wb["IGSM"] <= 1.0 and all(math.isnan(wb[a]) for a in attacks_[1:])
    assert _fractions_ok(by[("none", "white-box")], attacks_)
    # the evaluation images (attacked ⊂ clean) are disjoint from every training slice
    summary = json.loads((tmp_path / "summary.json").read_text())
    split = summary["split"]
    assert summary["settings"]["dataset"] == "cifar10"
    assert summary["settings"]["eps"] == pytest.approx(8 / 255)
    assert summary["settings"]["clip_step"] == 0.5
    assert set(split["test"]) <= set(split["clean"]) and len(split["test"]) == 6
    parts = [set(split[k]) for k in ("clean", "train", "hgd", "ae", "val")]
    assert [len(p) for p in parts] == [20, 20, 10, 32, 100]
    assert len(set().union(*parts)) == sum(len(p) for p in parts)   # pairwise disjoint
    # CIFAR-10 titles, CS note, and PGD-AT trained here (cached with the slice's position)
    md = (tmp_path / "smoothfool_table3.md").read_text()
    assert "CIFAR-10 ResNet-20s" in md and "MNIST" not in md and "ColorShift" in md
    assert "CIFAR-10" in (tmp_path / "defences.md").read_text()
    cfg = torch.load(tmp_path / "runs" / "pgd_at.pt", weights_only=False)["config"]
    assert cfg["dataset"] == "cifar10" and cfg["offset"] == 20 and cfg["steps"] == 7
    assert cfg["eps"] == pytest.approx(8 / 255) and cfg["alpha"] == pytest.approx(2 / 255)
    assert (tmp_path / "smoothfool_table3_transfer.png").exists()


@needs_shared("data/mnist_train.npz", "data/mnist_test.npz", "models/mnist_lenet_clean.pt",
              "models/mnist_lenet_pgdadv.pt", "models/mnist_mlp300_100.pt")
def test_table3_mnist_tiny_run_keeps_the_original_cache_configs(tmp_path):
    from advsmooth.studies.defenses import smoothfool_table3

    rows = smoothfool_table3(
        tmp_path, n_test=5, n_clean=50, n_train=20, n_train_sat=4, n_train_hgd=10, n_ae=20,
        n_val=100, hgd_epochs=1, ae_epochs=1, sigmas_g=(1.0,), sf_max_iter=10, white_box=False,
        root=SHARED_DATA, models_dir=SHARED_MODELS)
    assert all("GS" in r and "CS" not in r for r in rows)
    assert {r["setting"] for r in rows if r["defence"] != "none"} == {"transfer"}
    # the configs of the original MNIST study (eps 0.3, clip_step 1 by default): caches stay valid
    runs = tmp_path / "runs"

    def cfg(name):
        return torch.load(runs / f"{name}.pt", weights_only=False)["config"]

    base = {"n_train": 20, "epochs": 1, "lr": 1e-4, "seed": 0}
    assert cfg("fgsm_at") == {**base, "eps": 0.3}
    assert cfg("ensemble_at") == {**base, "eps": 0.3}
    assert cfg("sat") == {**base, "n_train": 4, "clip_step": 1.0}
    assert cfg("hgd") == {"n": 10, "epochs": 1, "eps": 0.3, "seed": 0}
    assert cfg("magnet_ae") == {"n": 20, "epochs": 1, "seed": 0, "arch": "leaky-w8/w3-lr1e-3"}
    assert not (runs / "pgd_at.pt").exists()          # PGD-AT is the shared mnist-lenet-pgd
    md = (tmp_path / "smoothfool_table3.md").read_text()
    assert md.startswith("# Fooling rates against defended MNIST LeNets")
