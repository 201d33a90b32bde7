"""EPGD / SmoothAdv-PGD gradient estimators in the iterative engine."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TinyCNN

from advsmooth.attacks import PGD, ExpectationGradient, SmoothAdvGradient
from advsmooth.attacks.gradients import AttackObjective
from advsmooth.defenses import SmoothedClassifier

VARIANTS = ("prob_average", "logit_average", "expected_loss")


@pytest.fixture
def setup():
    model = TinyCNN(channels=1, num_classes=4, seed=5).double().eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("variant", VARIANTS)
def test_m1_sigma0_equals_pgd(setup, variant):
    model, x, y = setup
    kw = dict(eps=0.1, alpha=0.02, steps=5, random_start=True, seed=7)
    ref = PGD(**kw)(model, x, y)
    res = PGD(gradient=ExpectationGradient(0.0, 1, variant=variant), **kw)(model, x, y)
    assert torch.equal(res.x_adv, ref.x_adv)
    assert torch.equal(res.grad_evals, ref.grad_evals)


def _manual_grad(model, x, y, noise, variant):
    xv = x.clone().requires_grad_(True)
    m = noise.shape[0]
    z = model((xv.unsqueeze(0) + noise).reshape(-1, *x.shape[1:])).reshape(m, x.shape[0], -1)
    yy = y.expand(m, -1)
    if variant == "prob_average":
        p = z.softmax(-1).gather(-1, yy[..., None])[..., 0].mean(0)
        loss = -p.log()
    elif variant == "logit_average":
        loss = torch.nn.functional.cross_entropy(z.mean(0), y, reduction="none")
    else:
        loss = torch.nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]), yy.reshape(-1),
                                                 reduction="none").reshape(m, -1).mean(0)
    (g,) = torch.autograd.grad(loss.sum(), xv)
    return g, loss.detach()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chunk", [None, 3])
def test_estimator_matches_formula(setup, variant, chunk):
    model, x, y = setup
    sigma, m = 0.2, 5
    est = ExpectationGradient(sigma, m, variant=variant, chunk_size=chunk)
    obj = AttackObjective("ce", y)
    out = est.estimate(model, x, obj, generator=torch.Generator().manual_seed(4))
    noise = torch.randn((m, *x.shape), generator=torch.Generator().manual_seed(4),
                        dtype=x.dtype) * sigma
    g, loss = _manual_grad(model, x, y, noise, variant)
    torch.testing.assert_close(out.grad, g)
    torch.testing.assert_close(out.value, loss)
    assert out.grad_evals == m


def test_variants_differ_with_noise_and_coincide_without(setup):
    model, x, y = setup
    obj = AttackObjective("ce", y)
    grads = [ExpectationGradient(0.3, 6, variant=v).estimate(
        model, x, obj, generator=torch.Generator().manual_seed(1)).grad for v in VARIANTS]
    assert not torch.allclose(grads[0], grads[1]) and not torch.allclose(grads[0], grads[2])
    flat = [ExpectationGradient(0.0, 6, variant=v).estimate(model, x, obj).grad for v in VARIANTS]
    torch.testing.assert_close(flat[0], flat[1])
    torch.testing.assert_close(flat[0], flat[2])


@pytest.mark.parametrize("grad", [ExpectationGradient(0.25, 4), SmoothAdvGradient(0.25, 4),
                                  ExpectationGradient(0.25, 4, variant="expected_loss")])
def test_ball_box_cost_and_hygiene(setup, grad):
    model, x, y = setup
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    x0 = x.clone()
    res = PGD(eps=0.05, alpha=0.02, steps=3, random_start=True, gradient=grad)(model, x, y)
    assert float((res.x_adv - x).abs().max()) <= 0.05
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert torch.equal(x, x0)
    assert torch.equal(torch.get_rng_state(), rng)
    att = ~res.skipped
    assert bool((res.grad_evals[att] == 3 * 4).all())
    assert all(p.requires_grad for p in model.parameters()) and not model.training


def test_against_smoothed_classifier_takes_its_sigma(setup):
    model, x, y = setup
    sm = SmoothedClassifier(model, 0.2, 8, vote="prediction", seed=0)
    obj = AttackObjective("ce", y)
    g_sm = ExpectationGradient(None, 4).estimate(sm, x, obj,
                                                 generator=torch.Generator().manual_seed(3)).grad
    g_base = ExpectationGradient(0.2, 4).estimate(model, x, obj,
                                                  generator=torch.Generator().manual_seed(3)).grad
    torch.testing.assert_close(g_sm, g_base)
    res = PGD(eps=0.1, alpha=0.03, steps=2, gradient=ExpectationGradient(None, 4))(sm, x, y)
    assert float((res.x_adv - x).abs().max()) <= 0.1
    with pytest.raises(ValueError, match="SmoothedClassifier"):
        ExpectationGradient(None, 4).estimate(model, x, obj)


def test_normalized_noise_space(setup):
    model, x, y = setup
    obj = AttackObjective("ce", y)
    a = ExpectationGradient(0.4, 3, noise_space="normalized", std=0.5).estimate(
        model, x, obj, generator=torch.Generator().manual_seed(0))
    b = ExpectationGradient(0.2, 3).estimate(model, x, obj,
                                             generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.grad, b.grad)


def test_targeted_prob_average_pulls_towards_target(setup):
    model, x, y = setup
    t = (y + 1) % 4
    obj = AttackObjective("ce", y, t)
    est = ExpectationGradient(0.1, 4).estimate(model, x, obj,
                                               generator=torch.Generator().manual_seed(0))
    noise = torch.randn((4, *x.shape), generator=torch.Generator().manual_seed(0),
                        dtype=x.dtype) * 0.1
    z = model((x.unsqueeze(0) + noise).reshape(-1, 1, 8, 8)).reshape(4, 6, 4)
    logp_t = torch.log(z.softmax(-1).gather(-1, t.expand(4, -1)[..., None])[..., 0].mean(0))
    torch.testing.assert_close(est.value, logp_t)
    assert math.isfinite(float(est.grad.abs().sum()))


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        ExpectationGradient(0.1, 4, variant="mean")
    with pytest.raises(ValueError, match="sigma"):
        ExpectationGradient(-0.1, 4)
    with pytest.raises(ValueError, match="samples"):
        ExpectationGradient(0.1, 0)
    with pytest.raises(ValueError, match="noise_space"):
        ExpectationGradient(0.1, 4, noise_space="latent")
    with pytest.raises(ValueError, match="std"):
        ExpectationGradient(0.1, 4, std=0.5)
    assert "variant='prob_average'" in repr(ExpectationGradient(0.1, 8))
    assert "SmoothAdvGradient(sigma=0.1" in repr(SmoothAdvGradient(0.1, 8))


def test_study_rows_sweep_and_budget():
    from advsmooth.studies.smoothing import run_smoothing_study

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)).eval()
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    rows = run_smoothing_study(model, (x, y), sigma=0.2, samples=4, votes=("prediction", "soft"),
                               attacks=("none", "pgd", "epgd"), eps=0.05, steps=2, m_backward=2,
                               draws=2, sweep=True, sweep_sigmas=(0.0, 0.2), sweep_samples=(1, 4),
                               budgets=(2, 4))
    main = [r for r in rows if r["table"] == "main"]
    assert {(r["attack"], r["classifier"]) for r in main} == {
        (a, c) for a in ("none", "pgd", "epgd") for c in ("base", "prediction", "soft")}
    clean_base = next(r for r in main if r["attack"] == "none" and r["classifier"] == "base")
    assert clean_base["acc_mean"] == 1.0   # labels are the model's predictions
    epgd = next(r for r in main if r["attack"] == "epgd" and r["classifier"] == "base")
    assert epgd["grad_evals"] == pytest.approx(2 * 2)
    # σ = 0 in the sweep reproduces the base model on clean inputs, for every M
    for r in rows:
        if r["table"] == "sweep" and r["sigma"] == 0.0 and r["input"] == "clean":
            assert r["acc_mean"] == 1.0 and r["acc_std"] == 0.0
    budget = [r for r in rows if r["table"] == "budget"]
    assert {(r["attack"], r["budget"]) for r in budget} == {
        (a, b) for a in ("pgd", "epgd", "smoothadv") for b in (2, 4)}
    assert all(r["steps"] * r["M_backward"] == r["budget"] for r in budget)


def test_planned_study_gives_the_in_memory_rows_and_crafts_once(tmp_path):
    """The runner's steps (task ``smoothing``) give the rows of :func:`run_smoothing_study`;
    the sweep reuses the main table's adversarial set (one ``smoothing.craft`` artefact)."""
    from advsmooth import data, models
    from advsmooth.experiments import Store, parse_spec, run_spec
    from advsmooth.experiments.studies_builtin import smoothing_spec
    from advsmooth.studies.smoothing import run_smoothing_study

    params = {"model": "digits-lenet", "data": "digits", "n": 10, "sigma": 0.2, "samples": 4,
              "votes": ["prediction"], "attacks": ["none", "pgd"], "eps": 0.1, "steps": 2,
              "draws": 2, "sweep": True, "sweep_sigmas": [0.0, 0.2], "sweep_samples": [1, 4],
              "budgets": [2], "m_backward": 2, "seed": 3}
    run_spec(parse_spec(smoothing_spec(params)), tmp_path, progress=False)
    with Store(tmp_path, readonly=True) as st:
        rows = st.study_rows(st.cells()[0]["cell_id"])
        crafted = st.conn.execute(
            "SELECT COUNT(*) FROM artefacts WHERE kind='smoothing.craft'").fetchone()[0]
    assert crafted == 2  # none and pgd, the sweep's pgd set is the main table's
    x, y = data.load("digits", "test", sample=10, seed=0)
    kw = {k: v for k, v in params.items() if k not in ("model", "data", "n")}
    ref = run_smoothing_study(models.load("digits-lenet", verbose=False), (x, y), **kw)
    strip = [{k: v for k, v in r.items() if k != "attack_seconds"} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k != "attack_seconds"} for r in ref]
    assert [r["table"] for r in rows].count("sweep") == 2 * 2 * 2


def test_cli_smooth_rejects_bad_vote(capsys):
    from advsmooth.cli import main

    assert main(["smooth", "--model", "digits-lenet", "--data", "digits", "--vote", "foo"]) == 2
    assert "vote" in capsys.readouterr().err


def test_cli_smooth_runs_a_one_study_spec_into_a_store_and_report(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from advsmooth.cli import main
    from advsmooth.experiments import Store

    out = tmp_path / "sm"
    assert main(["smooth", "--model", "digits-lenet", "--data", "digits", "--n", "8",
                 "--attack", "none,pgd", "--steps", "2", "--samples", "4", "--draws", "1",
                 "--vote", "prediction", "--sweep", "--sweep-sigmas", "0,0.2",
                 "--sweep-samples", "1,4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    with Store(out, readonly=True) as st:
        (cell,) = st.cells()
        rows = st.study_rows(cell["cell_id"])
    assert cell["task"] == "smoothing" and cell["status"] == "done"
    main_rows = [r for r in rows if r["table"] == "main"]
    assert len(main_rows) == 4  # (none, pgd) x (base, prediction)
    for r in main_rows:  # the printed table is the store's
        assert f"| {r['attack']} | {r['classifier']} |" in printed
    page = (out / "report" / "report.html").read_text()
    assert page.count("<img ") == 1 and "accuracy vs sigma" in page


def test_train_recipe_fills_defaults_and_rejects_what_the_trainer_cannot_take():
    from advsmooth.studies.smoothing import TRAIN_DEFAULTS, SmoothingSettings, train_recipe

    assert train_recipe(None) is None
    r = train_recipe({"eps": 0.1, "steps": 2})
    assert r == {**TRAIN_DEFAULTS, "eps": 0.1, "steps": 2}
    assert r["seed"] == 0 and "seed" not in TRAIN_DEFAULTS["noise"]
    assert train_recipe(r) == r  # idempotent: a step re-validates its stored recipe
    bad = [({"method": "nope"}, "unknown training method"),
           ({"stpes": 3}, "stpes"),                      # a keyword the method does not take
           ({"noise": {"kind": "xyz"}}, "kind"),          # a bad inject_noise value
           ({"noise": {"wherever": 1}}, "wherever"),      # a keyword inject_noise does not take
           ({"noise": "pni"}, "train.noise"),
           ({"epochs": 0}, "train.epochs"),
           ({"seed": -1}, "train.seed"),
           ({"lr": 0.0}, "train.lr")]
    for recipe, match in bad:
        with pytest.raises(ValueError, match=match):
            train_recipe(recipe)
    # valid noise settings of other shapes pass (CNI-W on convolutions only; element-wise
    # activation noise sized by input_shape)
    for noise in ({"kind": "cni", "layers": "conv"},
                  {"where": "activations", "granularity": "elementwise",
                   "input_shape": [3, 32, 32]}):
        assert train_recipe({"noise": noise})["noise"] == noise
    with pytest.raises(ValueError, match="train must be a table"):
        SmoothingSettings(model="m", train=[1, 2])


def test_noise_trained_base_is_one_shared_store_step(tmp_path):
    """``train``: the base is the zoo model with PNI layers trained by the recipe, once for the
    two studies that share the recipe, and a re-run trains nothing."""
    from advsmooth.experiments import Store, parse_spec, run_spec
    from advsmooth.studies.smoothing import SmoothingSettings, plan

    recipe = {"n_train": 48, "epochs": 1, "eps": 0.1, "steps": 1, "batch_size": 16}
    params = {"model": "digits-lenet", "data": "digits", "n": 8, "sigma": 0.1, "samples": 2,
              "votes": ["prediction"], "attacks": ["none", "pgd"], "eps": 0.1, "steps": 2,
              "draws": 1, "seed": 1, "train": recipe}
    spec = {"name": "nt", "seed": 0, "studies": [
        {"task": "smoothing", "label": "a", "params": params},
        {"task": "smoothing", "label": "b",
         "params": {**params, "attacks": ["none"], "seed": 2}}]}  # the recipe's seed decides
    run_spec(parse_spec(spec), tmp_path, progress=False)
    run_spec(parse_spec(spec), tmp_path, progress=False)  # resumes: nothing to do
    with Store(tmp_path, readonly=True) as st:
        trained = st.conn.execute("SELECT COUNT(*) FROM artefacts "
                                  "WHERE kind='smoothing.train'").fetchone()[0]
        cells = {c["label"]: c["cell_id"] for c in st.cells()}
        rows = st.study_rows(cells["a"])
    assert trained == 1
    (train_row,) = [r for r in rows if r["table"] == "train"]
    assert train_row["n_train"] == 48 and train_row["method"] == "pni"
    assert train_row["mean_abs_alpha"] > 0  # the PNI-W scales exist
    steps = plan(SmoothingSettings(**params))
    assert steps[0].kind == "smoothing.train"
    assert all(st.kind == "smoothing.train" or st.after for st in steps)


def test_noise_trained_base_rows_match_the_in_memory_study(tmp_path):
    """A deterministic recipe (Gaussian + adversarial training, no noise layers): the store's
    rows equal :func:`run_smoothing_study`'s, and the trained base is not the zoo model."""
    from advsmooth import models
    from advsmooth.experiments import Store, parse_spec, run_spec
    from advsmooth.studies.smoothing import run_smoothing_study

    recipe = {"method": "noise_adv", "noise": None, "sigma": 0.1, "q": 0.5, "eps": 0.1,
              "steps": 1, "n_train": 48, "epochs": 1, "batch_size": 16, "lr": 0.01}
    params = {"model": "digits-lenet", "data": "digits", "n": 8, "sigma": 0.1, "samples": 2,
              "votes": ["prediction"], "attacks": ["none", "pgd"], "eps": 0.1, "steps": 2,
              "draws": 1, "seed": 1, "train": recipe}
    run_spec(parse_spec({"name": "nt", "seed": 0, "studies": [
        {"task": "smoothing", "label": "a", "params": params}]}), tmp_path, progress=False)
    with Store(tmp_path, readonly=True) as st:
        rows = st.study_rows(st.cells()[0]["cell_id"])
    zoo = models.load("digits-lenet", verbose=False)
    kw = {k: v for k, v in params.items() if k not in ("model", "data")}
    ref = run_smoothing_study(zoo, "digits", **kw)
    untrained = run_smoothing_study(zoo, "digits", **{**kw, "train": None})

    def strip(rs: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "attack_seconds"}
                for r in rs if r["table"] == "main"]
    assert strip(rows) == strip(ref)
    assert strip(ref) != strip(untrained)


def test_normalized_noise_on_a_batchnorm_model_with_a_normalize_layer():
    """The engine differentiates a BatchNorm-folded copy; its Normalize layer survives the fold,
    so EPGD with σ in the normalised space finds the std there (it used to raise) and gives
    the attack of the unfolded model up to float rounding."""
    from advsmooth.attacks.execution import fold_batchnorm
    from advsmooth.attacks.noise_space import find_std
    from advsmooth.models import Normalize

    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]),
                          nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 4)).eval()
    model[2].running_mean.uniform_(-0.5, 0.5)
    model[2].running_var.uniform_(0.5, 2.0)
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    copy = fold_batchnorm(model, x[:4], channels_last=True)
    assert copy is not model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in copy.modules())
    assert torch.equal(find_std(copy).flatten(), torch.tensor([0.2, 0.25, 0.3]))
    grad = ExpectationGradient(0.25, 4, noise_space="normalized")
    fast = PGD(eps=0.05, steps=3, seed=0, gradient=grad)(model, x, y)
    plain = PGD(eps=0.05, steps=3, seed=0, gradient=grad, fast_model=False)(model, x, y)
    assert torch.allclose(fast.x_adv, plain.x_adv, atol=1e-5)
