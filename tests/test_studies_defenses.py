"""The Table 3 study: GreyShift, the planned study task and its settings (no ../shared needed),
and tiny real CIFAR-10 / MNIST runs through the runner, including a failed run that resumes
without retraining a finished defence (skipped without ../shared)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import SHARED_DATA, SHARED_MODELS, TinyCNN, needs_shared

from advsmooth.attacks import GreyShift
from advsmooth.defenses.magnet import Autoencoder
from advsmooth.experiments import artefacts, parse_spec, run_spec, tasks
from advsmooth.experiments.artefacts import plan_order
from advsmooth.experiments.store import Store
from advsmooth.studies.defenses import Table3Settings, table3_plan, table3_split, training_images


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
    assert task.plan is not None
    task.check({"n_test": 5})
    with pytest.raises(ValueError, match="n_tset"):
        task.check({"n_tset": 5})
    with pytest.raises(ValueError, match="sigmas_g"):
        task.check({"sigmas_g": "1"})
    with pytest.warns(FutureWarning, match="out_dir"):   # the old spec parameter is ignored
        task.check({"out_dir": "x", "n_test": 5})


# ---------------------------------------------------------------------------------------------
# dataset settings and the plan (no ../shared needed)
# ---------------------------------------------------------------------------------------------

def test_table3_settings_keep_the_mnist_defaults_and_add_cifar10():
    from advsmooth.studies.defenses import table3_settings

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
    # the settings dataclass resolves the dataset's defaults
    s = Table3Settings(dataset="cifar10", n_train=300)
    assert s.n_train == 300 and s.n_train_sat == 200 and s.n_clean == 2000
    assert s.eps == pytest.approx(8 / 255)


def test_table3_rejects_bad_arguments_before_any_work():
    with pytest.raises(ValueError, match="dataset"):
        table3_plan({"dataset": "svhn"})
    with pytest.raises(ValueError, match="white_box_attacks"):   # GS is MNIST's column
        table3_plan({"dataset": "cifar10", "white_box_attacks": ["GS"]})
    with pytest.raises(ValueError, match="n_test"):
        table3_plan({"dataset": "cifar10", "n_test": 50, "n_clean": 10})
    with pytest.raises(ValueError, match="n_train_sat"):
        table3_plan({"n_train": 10, "n_train_sat": 20})
    with pytest.raises(ValueError, match="exceeds the 10000"):   # one pool: the test split
        table3_plan({"dataset": "cifar10", "n_ae": 9000, "train_split": "test"})
    table3_plan({"dataset": "cifar10", "n_ae": 9000})   # slices from the 50,000 training images
    with pytest.raises(ValueError, match="exceeds the 50000"):
        table3_plan({"dataset": "cifar10", "n_ae": 48000})
    with pytest.raises(ValueError, match="train_split"):
        table3_plan({"dataset": "cifar10", "train_split": "val"})
    with pytest.raises(ValueError, match="CIFAR-10 with train_split"):   # MNIST: shared PGD model
        table3_plan({"n_train_pgd": 5000})
    with pytest.raises(ValueError, match="CIFAR-10 with train_split"):   # would overlap the test
        table3_plan({"dataset": "cifar10", "train_split": "test", "epochs_pgd": 3})
    with pytest.raises(ValueError, match="n_train_pgd .* exceeds the 50000"):
        table3_plan({"dataset": "cifar10", "n_train_pgd": 50001})
    with pytest.raises(ValueError, match="epochs_pgd"):
        table3_plan({"dataset": "cifar10", "epochs_pgd": 0})
    with pytest.raises(ValueError, match="CIFAR-10 with train_split"):
        table3_plan({"n_train_ens": 5000})
    with pytest.raises(ValueError, match="n_train_fgsm .* exceeds the 50000"):
        table3_plan({"dataset": "cifar10", "n_train_fgsm": 50001})
    with pytest.raises(ValueError, match="epochs_ens"):
        table3_plan({"dataset": "cifar10", "epochs_ens": 0})


@pytest.mark.parametrize("defence, n_key, epochs_key, train_kind", [
    ("PGD-AT", "n_train_pgd", "epochs_pgd", "table3.pgd_at"),
    ("FGSM-AT", "n_train_fgsm", "epochs_fgsm", "table3.fgsm_at"),
    ("Ens-AT", "n_train_ens", "epochs_ens", "table3.ens_at"),
])
def test_table3_own_budget_changes_only_that_defences_steps(defence, n_key, epochs_key,
                                                              train_kind):
    """A defence's own budget (n_train_<d> / epochs_<d>) reaches its training, crafting and
    evaluation steps and no other, and leaves the keys of a spec without it as they were: a
    store keeps every other defence."""
    def keys(params):
        return {s.key: (s.kind, s.settings.get("on"), s.settings.get("defence"))
                for s, _ in plan_order(table3_plan(params))}

    base = {"dataset": "cifar10", "n_train": 300, "white_box_attacks": ["IGSM", "DF"]}
    before = keys(base)
    assert keys({**base, n_key: None, epochs_key: None}) == before
    after = keys({**base, n_key: 400, epochs_key: 3})
    new = [v for k, v in after.items() if k not in before]
    gone = [v for k, v in before.items() if k not in after]
    assert sorted(new, key=str) == sorted(gone, key=str)
    assert sorted(new, key=str) == sorted([(train_kind, None, None),
                                           ("table3.craft", defence, None),
                                           ("table3.craft", defence, None),
                                           ("table3.evaluate", None, defence)], key=str)
    own = [s for s, _ in plan_order(table3_plan({**base, n_key: 400})) if s.kind == train_kind]
    assert own[0].settings[n_key] == 400 and epochs_key not in own[0].settings


def test_table3_own_budget_reaches_training(monkeypatch):
    """The training step of each defence passes its own n and epochs to the fine-tuning (and the
    shared ones where not given)."""
    from advsmooth.studies import defenses as d

    seen = {}

    def fake(s, ctx, method, n=None, epochs=None, **kw):
        seen[s["defence_marker"]] = (n, epochs)

    monkeypatch.setattr(d, "_finetuned", fake)
    s = {"eps": 0.03, "n_train_fgsm": 700, "epochs_fgsm": 4, "n_train_pgd": 900}
    d._fgsm_at({**s, "defence_marker": "fgsm"}, None)
    d._pgd_at({**s, "defence_marker": "pgd"}, None)
    assert seen == {"fgsm": (700, 4), "pgd": (900, None)}


def _kinds(steps):
    return [s.kind for s, _ in plan_order(steps)]


def test_table3_plan_trains_each_defence_once_and_keys_ignore_the_attacks():
    p = {"n_test": 5, "sigmas_g": [1.0, 3.0], "white_box_attacks": ["IGSM"]}
    steps = table3_plan(p)
    assert [s.settings["defence"] for s in steps] == ["none", "FGSM-AT", "PGD-AT", "Ens-AT", "SAT",
                                                      "HGD", "MagNet"]
    kinds = _kinds(steps)
    # MNIST: PGD-AT is the shared mnist-lenet-pgd, Ens-AT's LeNet-5 holdout is trained here
    for k in ("table3.fgsm_at", "table3.holdout", "table3.ens_at", "table3.sat", "table3.hgd",
              "table3.magnet"):
        assert kinds.count(k) == 1, k
    assert "table3.pgd_at" not in kinds
    crafts = [s for s, _ in plan_order(steps) if s.kind == "table3.craft"]
    # 5 attacks transferred from the undefended model, IGSM white-box on each of 6 defences
    assert len(crafts) == 5 + 6
    assert {c.settings["attack"] for c in crafts if c.settings["on"] != "none"} == {"IGSM"}
    # the trained defences do not depend on the attacks: other attacks re-use them
    train = {s.key for s, _ in plan_order(steps) if s.kind != "table3.craft" and not s.rows}
    other = table3_plan({**p, "n_test": 7, "sigmas_g": [5.0], "sf_max_iter": 3})
    assert train <= {s.key for s, _ in plan_order(other)}
    cifar = _kinds(table3_plan({"dataset": "cifar10", "white_box": False}))
    assert "table3.pgd_at" in cifar and "table3.holdout" not in cifar


# ---------------------------------------------------------------------------------------------
# tiny real runs through the runner (skipped without ../shared)
# ---------------------------------------------------------------------------------------------

def _fractions_ok(row, names):
    return all(0.0 <= row[n] <= 1.0 for n in names)


def _run(tmp_path, params, name="t3"):
    spec = parse_spec({"name": name, "seed": 0, "studies": [{
        "task": "smoothfool_table3", "label": "t3",
        "params": {**params, "models_dir": str(SHARED_MODELS)}}]})
    run_spec(spec, tmp_path / "run", progress=False, data_root=str(SHARED_DATA))
    with Store(tmp_path / "run", readonly=True) as st:
        return st.study_rows(st.cells()[0]["cell_id"])


@needs_shared("data/cifar10_test.npz", "models/cifar10_resnet20.pt", "models/cifar10_resnet32.pt",
              "models/cifar10_resnet44.pt")
def test_table3_cifar10_tiny_run(tmp_path):
    params = {"dataset": "cifar10", "train_split": "test", "n_test": 6, "n_clean": 20,
              "n_train": 20, "n_train_sat": 4, "n_train_hgd": 10, "n_ae": 32, "n_val": 100,
              "hgd_epochs": 1, "ae_epochs": 60,
              "sigmas_g": [1.0], "sf_max_iter": 10, "white_box_attacks": ["IGSM"]}
    rows = _run(tmp_path, params)
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
    s = Table3Settings(**{**params, "sigmas_g": (1.0,), "white_box_attacks": ("IGSM",)})
    split = table3_split({"dataset": "cifar10", "seed": 0, "train_split": "test", **{
        k: getattr(s, k) for k in ("n_test", "n_clean", "n_train", "n_train_hgd", "n_ae",
                                   "n_val")}}, SHARED_DATA)
    assert set(split["idx_te"].tolist()) <= set(split["idx_clean"].tolist())
    parts = [set(split[f"idx_{k}"].tolist()) for k in ("clean", "train", "hgd", "ae", "val")]
    assert [len(p) for p in parts] == [20, 20, 10, 32, 100]
    assert len(set().union(*parts)) == sum(len(p) for p in parts)   # pairwise disjoint
    # PGD-AT was trained here (Madry recipe), stored as an artefact of the run
    arts = artefacts.Artefacts(tmp_path / "run", readonly=True)
    pgd = [s for s, _ in plan_order(table3_plan({**params, "models_dir": str(SHARED_MODELS)}))
           if s.kind == "table3.pgd_at"]
    assert len(pgd) == 1 and arts.load(pgd[0]) is not None
    assert pgd[0].settings["eps"] == pytest.approx(8 / 255)
    arts.close()


@needs_shared("data/mnist_train.npz", "data/mnist_test.npz", "models/mnist_lenet_clean.pt",
              "models/mnist_lenet_pgdadv.pt", "models/mnist_mlp300_100.pt")
def test_table3_mnist_failed_run_resumes_without_retraining(tmp_path, monkeypatch):
    params = {"n_test": 5, "n_clean": 50, "n_train": 20, "n_train_sat": 4, "n_train_hgd": 10,
              "n_ae": 20, "n_val": 100, "hgd_epochs": 1, "ae_epochs": 1, "sigmas_g": [1.0],
              "sf_max_iter": 10, "white_box": False}
    calls: list[str] = []

    def counting(kind):
        fn = artefacts._STEPS[kind]
        monkeypatch.setitem(artefacts._STEPS, kind,
                            lambda s, ctx: (calls.append(kind), fn(s, ctx))[1])

    for kind in ("table3.fgsm_at", "table3.holdout", "table3.ens_at", "table3.sat", "table3.hgd",
                 "table3.magnet", "table3.craft", "table3.evaluate"):
        counting(kind)
    evaluate = artefacts._STEPS["table3.evaluate"]

    def fail_on_ens_at(s, ctx):  # the last step of the plan (it waits for the holdout LeNet-5)
        if s["defence"] == "Ens-AT":
            raise RuntimeError("killed")
        return evaluate(s, ctx)

    monkeypatch.setitem(artefacts._STEPS, "table3.evaluate", fail_on_ens_at)
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path, params)
    trained = [k for k in calls if k not in ("table3.craft", "table3.evaluate")]
    assert sorted(trained) == sorted(["table3.fgsm_at", "table3.holdout", "table3.ens_at",
                                      "table3.sat", "table3.hgd", "table3.magnet"])
    crafted = calls.count("table3.craft")
    assert crafted == 4                      # IGSM, DF, GS, SF σg=1 on the undefended model
    # the resumed run trains nothing and crafts nothing again: only Ens-AT's row was missing
    calls.clear()
    monkeypatch.setitem(artefacts._STEPS, "table3.evaluate", evaluate)
    rows = _run(tmp_path, params)
    assert calls == ["table3.evaluate"]
    assert all("GS" in r and "CS" not in r for r in rows)
    assert {r["setting"] for r in rows if r["defence"] != "none"} == {"transfer"}
    assert [r["defence"] for r in rows] == ["none", "FGSM-AT", "PGD-AT", "Ens-AT", "SAT", "HGD",
                                           "MagNet", "MagNet (reformer only)"]
    for r in rows:
        assert 0.0 <= r["clean_acc"] <= 1.0


def test_report_draws_table3_bars_from_the_rows(tmp_path):
    # the report's bars plot: one bar per selected row (hue), one group per value field
    from advsmooth.report import build_report

    rows = [{"defence": d, "setting": s, "clean_acc": 0.9, "IGSM": 0.5 + k / 10, "DF": 0.25}
            for k, (d, s) in enumerate([("none", "white-box"), ("SAT", "transfer"),
                                        ("SAT", "white-box"), ("HGD", "transfer")])]
    tasks.register_task("test-table3-rows", lambda p, ctx: [dict(r) for r in rows],
                        replace=True)
    spec = parse_spec({"name": "bars", "studies": [{"task": "test-table3-rows", "label": "t3"}],
                       "report": {"plots": [
                           {"kind": "bars", "source": "t3", "values": ["IGSM", "DF"],
                            "hue": ["defence"], "where": {"setting": "transfer"},
                            "percent": True, "name": "tr"},
                           {"kind": "bars", "source": "t3", "values": ["IGSM"],
                            "where": {"setting": "none-such"}}]}})
    run_spec(spec, tmp_path, progress=False)
    build_report(tmp_path)
    figs = sorted(p.name for p in (tmp_path / "report" / "figures").iterdir())
    assert figs == ["tr.png", "tr.svg"]  # a plot with no matching row draws nothing
    svg = (tmp_path / "report" / "figures" / "tr.svg").read_text()
    assert "SAT" in svg and "HGD" in svg
    with pytest.raises(Exception, match="values"):
        parse_spec({"name": "bars", "studies": [{"task": "test-table3-rows", "label": "t3"}],
                    "report": {"plots": [{"kind": "bars", "source": "t3"}]}})


@needs_shared("data/cifar10_test.npz", "data/cifar10_train_1.npz", "data/cifar10_train_5.npz")
def test_table3_cifar10_trains_on_the_training_split():
    """train_split="train" (the default): the defences' slices are disjoint cuts of the 50,000
    training images, the evaluation images come from the test split."""
    from advsmooth import data

    sizes = {"n_test": 5, "n_clean": 12, "n_train": 30, "n_train_hgd": 10, "n_ae": 20,
             "n_val": 8}
    split = table3_split({"dataset": "cifar10", "seed": 0, **sizes}, SHARED_DATA)
    x_tr, y_tr = data.load("cifar10", "train", SHARED_DATA)
    x_te, _ = data.load("cifar10", "test", SHARED_DATA)
    parts = [split[f"idx_{k}"].tolist() for k in ("train", "hgd", "ae", "val")]
    assert [len(p) for p in parts] == [30, 10, 20, 8]
    assert len(set().union(*map(set, parts))) == 68                  # pairwise disjoint
    assert torch.equal(split["x_train"], x_tr[split["idx_train"]])
    assert torch.equal(split["y_train"], y_tr[split["idx_train"]])
    assert torch.equal(split["x_clean"], x_te[split["idx_clean"]])
    assert split["idx_te"].tolist() == split["idx_clean"][:5].tolist()
    # the seeded permutations reach beyond the first 10,000 training images
    assert max(max(p) for p in parts) >= 10000
    # PGD-AT's larger slice (n_train_pgd) reads on along the same permutation
    s = {"dataset": "cifar10", "seed": 0, **sizes}
    x_big, y_big = training_images(s, 50)
    x_small, y_small = training_images(s, 20)
    assert x_big.shape[0] == 50 and torch.equal(x_big[:30], split["x_train"])
    assert torch.equal(y_big[:30], split["y_train"]) and torch.equal(x_small, split["x_train"][:20])
