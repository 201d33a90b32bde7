"""Experiment specs (validation with file / key path / expectation, exit status 2), grid
expansion, per-batch seeding, study tasks, and an in-process run that resumes without redoing
work."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import needs_shared

from advsmooth.cli import main
from advsmooth.experiments import (
    SpecError,
    Store,
    batch_seed,
    expand_cells,
    get_task,
    load_spec,
    parse_spec,
    register_task,
    run_spec,
    spec_hash,
)

GOOD = """
name = "tiny"
seed = 3
batch_size = 4
[[datasets]]
name = "digits"
sample = 10
[[models]]
name = "digits-lenet"
[[attacks]]
name = "fgsm"
grid = { eps = [0.05, 0.2] }
"""


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def errors_of(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    assert str(tmp_path / "spec.toml") in str(info.value)
    return info.value.errors


def test_good_spec_expands_grid(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    cells = expand_cells(spec)
    assert [c.label for c in cells] == ["fgsm[eps=0.05]", "fgsm[eps=0.2]"]
    assert [c.params for c in cells] == [{"eps": 0.05}, {"eps": 0.2}]
    assert len({c.cell_id for c in cells}) == 2
    # ids depend on content, not on labels; the spec hash on the whole validated spec
    relabelled = load_spec(write(tmp_path, GOOD.replace('name = "fgsm"',
                                                        'name = "fgsm"\nlabel = "F"'), "b.toml"))
    assert [c.cell_id for c in expand_cells(relabelled)] == [c.cell_id for c in cells]
    assert spec_hash(relabelled) != spec_hash(spec)


def test_unknown_key_reports_path(tmp_path):
    errs = errors_of(tmp_path, GOOD.replace("sample = 10", "sample = 10\nsampel = 3"))
    assert ("datasets[0].sampel", "unknown key (not part of the spec format; check the "
            "spelling) (got 3)") in errs


def test_wrong_type_and_impossible_values(tmp_path):
    text = GOOD.replace("batch_size = 4", 'batch_size = "four"').replace("sample = 10",
                                                                         "sample = 0")
    errs = dict(errors_of(tmp_path, text))
    assert "integer" in errs["batch_size"] and "'four'" in errs["batch_size"]
    assert "greater than or equal to 1" in errs["datasets[0].sample"]


def test_semantic_errors(tmp_path):
    text = (GOOD.replace('name = "digits-lenet"', 'name = "no-such-model"')
            .replace('grid = { eps = [0.05, 0.2] }', 'grid = { eps = [0.05, -1.0] }')
            .replace('sample = 10', 'sample = 10\nsplit = "validation"'))
    errs = dict(errors_of(tmp_path, text))
    assert "unknown model 'no-such-model'" in errs["models[0].name"]
    assert "expected one of ['train', 'test']" in errs["datasets[0].split"]
    key = next(k for k in errs if k.startswith("attacks[0]"))
    assert "eps" in key and "-1.0" in key and "eps" in errs[key]


def test_unknown_attack_and_study(tmp_path):
    text = GOOD.replace('name = "fgsm"', 'name = "nope"') + '\n[[studies]]\ntask = "nope"\n'
    errs = dict(errors_of(tmp_path, text))
    assert "unknown attack 'nope'" in errs["attacks[0].name"]
    assert "unknown study task 'nope'" in errs["studies[0].task"]


def test_report_references_are_checked(tmp_path):
    text = GOOD + '[report]\ntables = ["summary", {kind="pivot", metrics=["fr"]}]\n' \
        '[[report.plots]]\nkind = "curve"\nx = "sigma"\ny = "fooling_rate"\n'
    errs = dict(errors_of(tmp_path, text))
    assert "report.tables[1].metrics[0]" in errs
    assert "report.plots[0].x" in errs and "'sigma'" in errs["report.plots[0].x"]


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(write(tmp_path, "name = \n"))
    with pytest.raises(FileNotFoundError):
        load_spec(tmp_path / "absent.toml")


def test_cli_exit_status_2(tmp_path, capsys):
    p = write(tmp_path, GOOD.replace("seed = 3", "seed = -1"))
    assert main(["run", str(p), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{p}: seed: Input should be greater than or equal to 0 (got -1)" in err
    assert not (tmp_path / "out").exists()  # validated before anything runs
    assert main(["run", str(write(tmp_path, GOOD, "ok.toml")), "--check"]) == 0
    assert "2 cell(s)" in capsys.readouterr().out


def test_batch_seed_is_a_pure_function():
    assert batch_seed(0, "abc", 1) == batch_seed(0, "abc", 1)
    assert len({batch_seed(0, "abc", b) for b in range(50)}) == 50
    assert batch_seed(1, "abc", 0) != batch_seed(0, "abc", 0)
    assert 0 <= batch_seed(2**40, "x", 10**6) < 2**63


def test_study_task_registry_and_run(tmp_path):
    def squares(params, ctx):
        g = ctx.generator
        import torch

        noise = torch.rand(1, generator=g).item()
        return [{"k": k, "square": k * k, "noise": noise} for k in range(params["n"])]

    def check(params):
        if not isinstance(params.get("n"), int) or params["n"] < 1:
            raise ValueError("n must be an integer >= 1")

    register_task("test-squares", squares, check=check, replace=True)
    assert get_task("test-squares").fn is squares
    with pytest.raises(ValueError, match="already registered"):
        register_task("test-squares", squares)
    with pytest.raises(SpecError, match=r"studies\[0\]\.params: n must be an integer"):
        parse_spec({"name": "s", "studies": [{"task": "test-squares", "params": {"n": 0}}]})
    spec = parse_spec({"name": "s", "studies": [{"task": "test-squares", "grid": {"n": [2, 3]}}]})
    r = run_spec(spec, tmp_path / "o", progress=False)
    assert r.computed_batches == 2
    with Store(tmp_path / "o", readonly=True) as st:
        cells = st.cells()
        rows = [st.study_rows(c["cell_id"]) for c in cells]
    assert [len(x) for x in rows] == [2, 3]
    assert rows[1][2] == {"k": 2, "square": 4, "noise": rows[1][0]["noise"]}
    assert all(c["status"] == "done" for c in cells)


def test_run_and_resume_in_process(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    out = tmp_path / "run"
    first = run_spec(spec, out, progress=False)
    assert (first.computed_batches, first.skipped_batches) == (6, 0)  # 2 cells × ceil(10/4)
    with Store(out, readonly=True) as st:
        snap = st.snapshot()
        cells = st.cells()
        log = st.batch_log()
    assert len(snap["samples"]) == 20 and {c["status"] for c in cells} == {"done"}
    for c in cells:
        assert c["n"] == 10 and 0 <= c["fooling_rate"] <= 1
        assert c["spec_hash"] == spec_hash(spec) and c["torch_version"] and c["data_hash"]
        assert c["checkpoint_hash"] and c["device"] == "cpu" and c["seed"] == 3
    # a larger eps fools at least as many samples (FGSM, same samples)
    assert cells[1]["fooling_rate"] >= cells[0]["fooling_rate"]
    again = run_spec(spec, out, progress=False)
    assert (again.computed_batches, again.skipped_batches) == (0, 6)
    with Store(out, readonly=True) as st:
        assert st.snapshot() == snap
        assert st.batch_log() == log  # nothing recomputed


def test_cli_sample_override(tmp_path, capsys):
    from advsmooth.cli.cmd_run import with_sample

    spec = load_spec(write(tmp_path, GOOD))
    small = with_sample(spec, 3)
    assert all(d.sample == 3 and d.n is None for d in small.datasets)
    assert spec_hash(small) != spec_hash(spec)  # never mixes with the full run's store
    with pytest.raises(ValueError, match="--sample"):
        with_sample(spec, 0)
    out = tmp_path / "quick"
    assert main(["run", str(write(tmp_path, GOOD, "s.toml")), "--out", str(out), "--sample", "3",
                 "--no-progress"]) == 0
    with Store(out, readonly=True) as st:
        cells = st.cells()
        samples = st.snapshot()["samples"]
    assert cells and all(c["n"] == 3 and c["spec_hash"] == spec_hash(small) for c in cells)
    assert len(samples) == 3 * len(cells)


@pytest.mark.parametrize("task, params, match", [
    ("deepfool_finetuning", {"n_trian": 10}, "n_trian"),
    ("deepfool_finetuning", {"include": ["dpefool"]}, "include"),
    ("deepfool_finetuning", {"n_train": "10"}, "n_train"),
    ("pni_smoothing", {"root": "elsewhere"}, "root"),
    ("smoothfool_table3", {"sigma_g": [1.0]}, "sigma_g"),
])
def test_planned_study_tasks_take_their_settings_fields(task, params, match):
    with pytest.raises(SpecError, match=match):
        parse_spec({"name": "t", "studies": [{"task": task, "params": params}]})
    parse_spec({"name": "t", "studies": [{"task": task, "params": {"n_test": 20}}]})  # accepted
    with pytest.warns(FutureWarning, match="out_dir"):  # the old out_dir is ignored, with a note
        parse_spec({"name": "t", "studies": [{"task": task, "params": {"out_dir": "x"}}]})
    # a step_images plot must name a step of the study's plan
    with pytest.raises(SpecError, match="step"):
        parse_spec({"name": "t", "studies": [{"task": task, "label": "s", "params": {}}],
                    "report": {"plots": [{"kind": "step_images", "source": "s",
                                          "step": "no.such"}]}})


def _finetune_rows(tmp_path, params):
    from advsmooth.experiments import run_spec

    spec = parse_spec({"name": "ft", "seed": 0, "studies": [{
        "task": "deepfool_finetuning", "label": "ft", "params": params}]})
    run_spec(spec, tmp_path / "run", progress=False)
    with Store(tmp_path / "run", readonly=True) as store:
        return store.study_rows(store.cells()[0]["cell_id"])


@needs_shared("data/mnist_train.npz", "data/mnist_test.npz", "models/mnist_lenet_clean.pt")
def test_deepfool_finetuning_task_runs_into_the_store(tmp_path):
    # a tiny version of experiments/mnist_deepfool_finetuning.toml (clean fine-tuning only)
    rows = _finetune_rows(tmp_path, {"n_train": 20, "n_rho": 4, "n_test": 30, "epochs": 1,
                                     "max_iter": 10, "include": ["clean"], "example_alphas": []})
    assert [r["epoch"] for r in rows] == [0, 1] and {r["run"] for r in rows} == {"clean"}
    assert rows[0]["rho_rel"] == pytest.approx(1.0) and rows[1]["rho_adv"] > 0
    assert 0.0 <= rows[1]["test_error"] <= 1.0
    assert not any(p.suffix in (".md", ".csv", ".png") for p in tmp_path.rglob("*"))


@needs_shared("data/cifar10_train_1.npz", "data/cifar10_test.npz", "models/cifar10_resnet20.pt")
def test_deepfool_finetuning_runs_on_the_cifar10_training_split(tmp_path):
    # a tiny version of experiments/cifar10_deepfool_finetuning.toml (DeepFool alpha = 1 only)
    rows = _finetune_rows(tmp_path, {"model": "cifar10-resnet20", "dataset": "cifar10",
                                     "n_train": 16, "n_rho": 4, "n_test": 20, "epochs": 1,
                                     "max_iter": 10, "include": ["deepfool"], "alphas": [1],
                                     "example_alphas": []})
    assert [r["epoch"] for r in rows] == [0, 1] and rows[0]["run"] == "DeepFool α=1"
    assert rows[0]["rho_rel"] == pytest.approx(1.0) and rows[1]["rho_adv"] > 0
    assert 0.0 <= rows[1]["test_error"] <= 1.0


@needs_shared("data/mnist_train.npz", "data/mnist_test.npz", "models/mnist_lenet_clean.pt")
def test_deepfool_finetuning_fig9_measures_fgsm_robustness(tmp_path):
    # DeepFool Fig. 9 analogue: FGSM fine-tuning, robustness measured by DeepFool and by FGSM
    from advsmooth import data, metrics, models

    rows = _finetune_rows(tmp_path, {"n_train": 40, "n_rho": 20, "n_test": 30, "epochs": 1,
                                     "max_iter": 10, "include": ["fgsm"], "lr_factor": 0.1,
                                     "measure_fgsm": True, "example_alphas": []})
    assert [r["epoch"] for r in rows] == [0, 1] and rows[0]["run"].startswith("FGSM")
    # epoch 0 is the starting model: its rho_FGSM is metrics.fgsm_rho on the same images
    x, y = data.load("mnist", "test", None, sample=20, seed=1)
    ref = metrics.fgsm_rho(models.load("mnist-lenet", verbose=False), x, y)["rho"]
    assert rows[0]["rho_fgsm"] == pytest.approx(ref, rel=1e-6)
    assert rows[0]["rho_fgsm_rel"] == pytest.approx(1.0)
    assert rows[1]["rho_fgsm_rel"] == pytest.approx(rows[1]["rho_fgsm"] / ref, rel=1e-6)


def test_transfer_task_ensemble_source_is_the_mean_logit_ensemble(tmp_path):
    # sg paper Tables 4/6/7: a source "a+b" is the ensemble of a and b; members are white-box
    import torch

    from advsmooth import data, models
    from advsmooth.experiments import run_spec
    from advsmooth.experiments.tasks import batch_seed, build_attack
    from advsmooth.metrics import transfer_matrix
    from advsmooth.models import Ensemble

    names = ["digits-lenet", "digits-fc", "digits-resnet20"]
    params = {"dataset": "digits", "sample": 40, "data_seed": 3, "n": 30,
              "sources": ["digits-lenet+digits-fc"], "targets": names, "attack": "igsm",
              "attack_params": {"eps": 0.2, "alpha": 0.05, "steps": 3}, "targeted": True}
    spec = parse_spec({"name": "ens", "seed": 0, "studies": [{
        "task": "transfer", "label": "e", "params": params}]})
    run_spec(spec, tmp_path / "run", progress=False)
    with Store(tmp_path / "run", readonly=True) as store:
        cell = store.cells()[0]
        rows = store.study_rows(cell["cell_id"])
    seed = batch_seed(cell["seed"], cell["cell_id"], 0)  # the study's ctx.seed
    assert [r["target"] for r in rows] == names
    assert [r["white_box"] for r in rows] == [True, True, False]
    # the same matrix computed directly with models.Ensemble
    ms = {n: models.load(n, verbose=False).eval() for n in names}
    x, y = data.load("digits", "test", sample=40, seed=3)
    tm = transfer_matrix([("e", Ensemble([ms["digits-lenet"], ms["digits-fc"]]))],
                         list(ms.items()), build_attack("igsm", params["attack_params"]),
                         (x, y), targeted=True, n=30, seed=seed % 2**31,
                         target_seed=seed % 2**31)
    assert [r["top1"] for r in rows] == pytest.approx((100 * tm.top1[0]).tolist())
    assert torch.is_tensor(x) and rows[0]["n"] == tm.n
    for bad in ("digits-lenet+", "digits-lenet+digits-lenet", "digits-lenet+nope"):
        with pytest.raises(SpecError):
            parse_spec({"name": "ens", "studies": [{"task": "transfer", "params": {
                **params, "sources": [bad]}}]})


def test_deepfool_finetuning_runs_on_the_embedded_digits(tmp_path):
    # the digits version of DeepFool Figs 6-9 needs no ../shared: digits-lenet on digits
    import torch

    from advsmooth import data, metrics, models
    from advsmooth.attacks import DeepFool
    from advsmooth.experiments.artefacts import Artefacts, plan_order
    from advsmooth.experiments.tasks import get_task
    from advsmooth.report import build_report

    params = {"model": "digits-lenet", "dataset": "digits", "n_train": 60, "n_rho": 12,
              "n_test": 40, "epochs": 1, "max_iter": 10, "alphas": [2],
              "include": ["deepfool", "clean"], "measure_fgsm": True, "example_alphas": [1, 2]}
    rows = _finetune_rows(tmp_path, params)
    assert [(r["run"], r["epoch"]) for r in rows] == [("DeepFool α=2", 0), ("DeepFool α=2", 1),
                                                      ("clean", 0), ("clean", 1)]
    x, y = data.load("digits", "test", None, sample=12, seed=1)
    model = models.load("digits-lenet", verbose=False)
    ref = metrics.fgsm_rho(model, x, y)["rho"]
    assert rows[0]["rho_fgsm"] == pytest.approx(ref, rel=1e-6) == rows[2]["rho_fgsm"]
    # the α = 2 run trained on the DeepFool set of the starting model (iterates in [0, 1]),
    # crafted once as a store artefact; the fine-tuned weights and Fig. 8 are artefacts too
    steps = {s.kind: s for s, _ in plan_order(get_task("deepfool_finetuning").plan(params, 0))}
    arts = Artefacts(tmp_path / "run", readonly=True)
    r = arts.load(steps["deepfool_ft.set"]).tensors["r"]
    x_tr, y_tr = data.load("digits", "train", None, sample=60, seed=0)
    df = DeepFool(norm=2, overshoot=0.02, max_iter=10, clip=True)
    assert torch.allclose(r, df(model, x_tr, y_tr).perturbation, atol=1e-6)
    tuned = arts.load(steps["deepfool_ft.run"]).tensors
    assert set(tuned) == set(model.state_dict())
    assert any(not torch.equal(tuned[k], v) for k, v in model.state_dict().items())
    fig8 = arts.load(steps["deepfool_ft.example"])
    assert fig8.tensors["images"].shape == (3, 1, 28, 28) and len(fig8.info["titles"]) == 3
    arts.close()
    # the report draws Fig. 8 from the artefact and Fig. 9 as a curve of two row fields
    spec = parse_spec({"name": "ft", "seed": 0, "studies": [{
        "task": "deepfool_finetuning", "label": "ft", "params": params}], "report": {"plots": [
            {"kind": "step_images", "source": "ft", "step": "deepfool_ft.example"},
            {"kind": "curve", "source": "ft", "x": "epoch", "y": ["rho_rel", "rho_fgsm_rel"],
             "hue": ["run"]}]}})
    from advsmooth.experiments import run_spec

    run_spec(spec, tmp_path / "run", progress=False)  # nothing left to compute
    build_report(tmp_path / "run")
    figs = sorted(p.name for p in (tmp_path / "run" / "report" / "figures").glob("*.png"))
    assert len(figs) == 2 and any("deepfool_ft_example" in f for f in figs), figs
    with pytest.raises(ValueError, match="dataset"):
        get_task("deepfool_finetuning").plan({"dataset": "svhn"}, 0)


@needs_shared("data/mnist_train.npz", "data/mnist_test.npz", "models/mnist_lenet_pgdadv.pt")
def test_pni_smoothing_task_rows_and_trained_weights(tmp_path):
    from advsmooth.experiments import run_spec
    from advsmooth.experiments.artefacts import Artefacts, plan_order
    from advsmooth.experiments.tasks import get_task

    params = {"n_train": 20, "n_test": 6, "steps": 1, "sigmas": [0.0, 0.1], "samples": 2,
              "epgd_samples": 1}
    spec = parse_spec({"name": "pni", "seed": 0, "studies": [{
        "task": "pni_smoothing", "label": "pni", "params": params}]})
    run_spec(spec, tmp_path / "run", progress=False)
    with Store(tmp_path / "run", readonly=True) as store:
        rows = store.study_rows(store.cells()[0]["cell_id"])
    assert [(r["model"][:3], r["sigma"]) for r in rows] == [("PNI", 0.0), ("PNI", 0.1),
                                                            ("LeN", 0.0), ("LeN", 0.1)]
    for r in rows:
        assert r["M"] == 2 and all(0.0 <= r[k] <= 1.0 for k in ("clean", "PGD", "EPGD"))
        if r["sigma"] == 0.0:
            assert r["EPGD"] == r["PGD"]  # σ = 0: EPGD is PGD
    # the trained PNI weights are an artefact: its noise scales moved from their 0.25 start
    train = next(s for s, _ in plan_order(get_task("pni_smoothing").plan(params, 0))
                 if s.kind == "pni.train")
    arts = Artefacts(tmp_path / "run", readonly=True)
    out = arts.load(train)
    arts.close()
    assert out is not None and len(out.info["mean_abs_alpha"]) > 0
    assert any(abs(a - 0.25) > 1e-6 for a in out.info["mean_abs_alpha"])
