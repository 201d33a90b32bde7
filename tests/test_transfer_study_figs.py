"""Figures 6 and 7 of the digits transferability study (advsmooth.studies.transfer).

The study loads the digits zoo models (trained on first use and cached, like the other digits
tests) and width-500 FC nets of depth 0/2/4/8, trained by a step of the study; here they are
trained for one epoch only.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from advsmooth import data, models
from advsmooth.attacks import IGSM, AttackObjective, SmoothedGradient
from advsmooth.experiments import studies_builtin
from advsmooth.experiments.tasks import StudyContext, run_plan
from advsmooth.metrics import transfer_matrix
from advsmooth.studies import transfer as ts


@pytest.fixture
def quick_fc(monkeypatch):
    """The width-500 FC nets trained for one epoch instead of 30 (the recipe is part of the
    training step's settings, so these artefacts never stand in for the real ones)."""
    monkeypatch.setattr(ts, "_FC_RECIPE", {**ts._FC_RECIPE, "epochs": 1})


def _run(**kw):
    """Run the digits study's plan in memory; its rows and the context (for the artefacts)."""
    ctx = StudyContext(seed=0, device=torch.device("cpu"), progress=False)
    s = ts.TransferStudySettings(**kw)
    return run_plan(ts.plan(s), ctx), ctx, s


def _eval_set(ctx, s):
    """The study's evaluation set (the artefact of its ``transfer.eval_set`` step)."""
    t = ctx.step(ts.eval_step(s)).tensors
    return t["x"], t["y"]


def _ce_grad(model, x, y):
    """Input gradient of the summed cross-entropy w.r.t. ``y`` (the library's CE form: the
    textbook forms lose the small float32 gradients of confident images to cancellation)."""
    xv = x.detach().clone().requires_grad_(True)
    z = model(xv)
    ce = AttackObjective.for_model(model, "ce", y).value(z)
    torch.testing.assert_close(ce, F.cross_entropy(z, y, reduction="none"), rtol=1e-4, atol=1e-6)
    (g,) = torch.autograd.grad(ce.sum(), xv)
    return g


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def _cos(a, b):
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


# ---------------------------------------------------------------------------------------------
# parts and arguments
# ---------------------------------------------------------------------------------------------

def test_new_parts_run_by_default_and_are_accepted_by_specs():
    from advsmooth.experiments import parse_spec

    assert ts.DIGITS_PARTS == ("tables", "fig3", "fig4", "fig5", "fig6", "fig7")
    assert ts.FIG6_MS == (1, 5, 20, 50, 200) and ts.FIG7_STEPS == (5, 10, 20, 40)
    assert ts.FIG7_ALPHAS == (0.25, 0.5, 0.75, 1.0)
    assert ts.FIG7_ALPHA_REF in ts.FIG7_ALPHAS and ts.FIG7_T_REF in ts.FIG7_STEPS
    parse_spec({"name": "t", "studies": [{"task": "transfer_study", "params": {
        "preset": "digits", "out_dir": "x", "parts": ["fig6", "fig7"]}}]})


def test_fig7_targets_are_in_no_ensemble():
    named = {k: torch.nn.Linear(1, 1) for k in ts.DIGITS_MODELS}
    ens = {k: ts._source(k, named) for k in ts.ENSEMBLES}
    members = [m for e in ens.values() for m in e.members]
    for t in ts.FIG7_TARGETS:
        assert all(named[t] is not m for m in members)
    # every model that is in no ensemble is a target
    assert {k for k, v in named.items() if all(v is not m for m in members)} == set(
        ts.FIG7_TARGETS)


@pytest.mark.parametrize("kw, match", [
    ({"fig6_ms": ()}, "non-empty"),
    ({"fig6_ms": (1, 0)}, "fig6_ms"),
    ({"fig7_steps": (0,)}, "fig7_steps"),
    ({"fig7_alphas": (0.5, -1.0)}, "fig7_alphas"),
    ({"fig7_alphas": (float("nan"),)}, "fig7_alphas"),
    ({"fig7_n": 0}, "fig7_n"),
    ({"parts": ("fig8",)}, "part"),
])
def test_fig_arguments_are_checked_before_any_work(kw, match):
    with pytest.raises(ValueError, match=match):
        ts.TransferStudySettings(n=4, **kw)


# ---------------------------------------------------------------------------------------------
# Figure 6
# ---------------------------------------------------------------------------------------------

def test_fig6_gradients_are_the_smoothed_gradient_class_and_manual_noisy_gradients():
    lenet = models.load("digits-lenet", verbose=False)
    xt, yt = data.load("digits", split="test")
    x, y = ts._subset_correct([lenet], xt, yt, 5, 1)
    seed, sigma = 7, 0.1
    g, sg = ts.fig6_gradients(lenet, x, y, (1, 6), sigma=sigma, seed=seed)
    assert set(sg) == {1, 6} and g.shape == x.shape
    _close(g, _ce_grad(lenet, x, y))
    # G^(m): m noisy gradients, noise sigma·randn((m, N, C, H, W)) from a generator seeded `seed`
    for m in (1, 6):
        noise = sigma * torch.randn((m, *x.shape), generator=torch.Generator().manual_seed(seed))
        manual = torch.stack([_ce_grad(lenet, x + noise[i], y) for i in range(m)]).mean(0)
        _close(sg[m], manual)
        assert not torch.allclose(sg[m], g, atol=1e-4)  # the noise does change the gradient
    # ... which is what SmoothedGradient.estimate returns (any chunk size)
    ref = SmoothedGradient(sigma, 6, chunk_size=4).estimate(
        lenet, x, AttackObjective.for_model(lenet, "ce", y),
        generator=torch.Generator().manual_seed(seed)).grad
    torch.testing.assert_close(sg[6], ref, rtol=1e-5, atol=1e-8)
    assert lenet.training is False and all(p.requires_grad for p in lenet.parameters())


def test_relative_tv_is_zero_for_constants_and_scale_free():
    s = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    tv = ts._relative_tv(s)
    torch.testing.assert_close(ts._relative_tv(5 * s), tv)
    assert float(ts._relative_tv(torch.full((1, 8, 8), 2.0))[0]) == 0.0
    # a checkerboard of 0/1 on 4x4: 24 unit jumps, 8 ones
    cb = (torch.arange(4)[:, None] + torch.arange(4)[None, :]).remainder(2).double()[None]
    assert float(ts._relative_tv(cb)[0]) == pytest.approx(24 / 8)


def test_fig6_part(quick_fc):
    ms = (1, 3, 12)
    seed = 2
    rows, ctx, s = _run(n=8, seed=seed, parts=("fig6",), fig6_ms=ms)
    assert [r["part"] for r in rows] == ["fig6"] * 4 and [r["m"] for r in rows] == [0, 1, 3, 12]
    (step,) = ts.plan(s)
    out = ctx.step(step)
    assert out.info["ms"] == [1, 3, 12] and out.info["sigma"] == 0.1
    assert out.info["source"] == "digits-lenet" and out.info["n_images"] == 8
    for r in rows:
        assert all(math.isfinite(r[k]) for k in ("cos_plain", "cos_ref", "rel_tv"))
        assert abs(r["cos_plain"]) <= 1 + 1e-12 and abs(r["cos_ref"]) <= 1 + 1e-12
    assert rows[-1]["cos_ref"] == pytest.approx(1.0)
    assert rows[0]["cos_plain"] == 1.0
    assert rows[0]["cos_ref"] == pytest.approx(rows[-1]["cos_plain"])  # cos is symmetric
    # the numbers are those of fig6_gradients on the first evaluation images
    x, y = _eval_set(ctx, s)
    assert x.shape[0] == 8 and out.info["labels"] == y[:4].tolist()
    lenet = models.load("digits-lenet", verbose=False)
    g, sg = ts.fig6_gradients(lenet, x, y, ms, sigma=0.1, seed=seed)
    for r, m in zip(rows[1:], ms):
        assert r["cos_plain"] == pytest.approx(float(_cos(sg[m], g).mean()), abs=1e-9)
        assert r["cos_ref"] == pytest.approx(float(_cos(sg[m], sg[12]).mean()), abs=1e-9)
        assert r["rel_tv"] == pytest.approx(float(ts._relative_tv(sg[m].abs().sum(1)).mean()),
                                            abs=1e-9)
    # the artefact holds what the report draws: the shown images' saliency maps
    t = out.tensors
    assert set(t) == {"image", "plain", "m1", "m3", "m12"}
    torch.testing.assert_close(t["m3"], sg[3][:4].abs().sum(1))
    torch.testing.assert_close(t["image"], x[:4].mean(1))
    # deterministic: a rerun gives the same rows
    again, _, _ = _run(n=8, seed=seed, parts=("fig6",), fig6_ms=ms)
    assert again == rows


# ---------------------------------------------------------------------------------------------
# Figure 7
# ---------------------------------------------------------------------------------------------

def test_fig7_part(quick_fc):
    alphas, steps = (0.5, 0.75), (2, 20)
    rows, ctx, s = _run(n=10, seed=0, parts=("fig7",), fig7_alphas=alphas, fig7_steps=steps,
                        fig7_n=6)
    assert len(rows) == 8 and {r["part"] for r in rows} == {"fig7"}
    pts = {(r["sweep"], r["method"], r["alpha_eps"], r["steps"]): r for r in rows}
    assert set(pts) == {(sw, m, a, t) for m in ("IGSM", "sg-IGSM")
                        for sw, a, t in (("alpha", 0.5, 20), ("alpha", 0.75, 20),
                                         ("steps", 0.75, 2), ("steps", 0.75, 20))}
    for r in rows:
        assert 0 <= r["top1"] <= r["top5"] <= 100
        # 2 ensembles × 3 targets × 6 images: multiples of 100/36
        assert r["top1"] * 36 / 100 == pytest.approx(round(r["top1"] * 36 / 100), abs=1e-9)
    # the reference point (α = 0.75 ε, T = 20) is one step shared by both sweeps
    for meth in ("IGSM", "sg-IGSM"):
        assert pts[("alpha", meth, 0.75, 20)]["top1"] == pts[("steps", meth, 0.75, 20)]["top1"]
    (fig7,) = ts.plan(s)
    assert len(fig7.after) == 6  # 8 points, 2 of them shared
    assert ctx.step(fig7.after[0]).info["n"] == 6
    # ... and equals the Table 4 computation (targeted, ε = 56/255, α = 0.75 ε, T = 20, m = 20,
    # σ = 40/255, same ensembles, same seed) restricted to the held-out targets
    x, y = _eval_set(ctx, s)
    named = ts._models("digits", ctx)
    ens = {k: ts._source(k, named) for k in ts.ENSEMBLES}
    eps_t = 56 / 255
    for meth, grad in (("IGSM", None), ("sg-IGSM", SmoothedGradient(40 / 255, 20, chunk_size=1))):
        tm = transfer_matrix(list(ens.items()), list(named.items()),
                             IGSM(eps=eps_t, alpha=0.75 * eps_t, steps=20, gradient=grad),
                             (x[:6], y[:6]), targeted=True, seed=0, batch_size=100)
        cols = [tm.targets.index(t) for t in ts.FIG7_TARGETS]
        assert not tm.white_box[:, cols].any()
        r = pts[("alpha", meth, 0.75, 20)]
        assert r["top1"] == pytest.approx(tm.top1[:, cols].mean() * 100, abs=1e-7)
        assert r["top5"] == pytest.approx(tm.top5[:, cols].mean() * 100, abs=1e-7)


def test_cli_and_spec_run_every_part_and_take_the_figure_grids():
    from advsmooth.cli.cmd_transfer import DEFAULT_PARTS
    from advsmooth.experiments import SpecError, parse_spec

    assert tuple(DEFAULT_PARTS.split(",")) == ts.DIGITS_PARTS
    params = {"preset": "digits", "fig6_ms": [1, 4], "fig7_alphas": [0.5],
              "fig7_steps": [5], "fig7_n": 10}
    parse_spec({"name": "t", "studies": [{"task": "transfer_study", "params": params}]})
    with pytest.raises(SpecError, match="fig7_m"):
        parse_spec({"name": "t", "studies": [{"task": "transfer_study",
                                              "params": {**params, "fig7_m": 3}}]})


def test_plan_shares_its_prerequisites_and_orders_rows_like_the_paper():
    s = ts.TransferStudySettings()
    steps = ts.plan(s)
    kinds = [st.kind for st in steps]
    assert kinds[:11] == ["transfer.matrix"] * 11
    assert kinds[11:] == ["transfer.fig1", "transfer.fig3a", "transfer.boundary",
                          "transfer.boundary", "transfer.fig4", "transfer.fig4", "transfer.fig5",
                          "transfer.fig6", "transfer.fig7"]
    assert [st.settings["part"] for st in steps[:11]] == list(
        studies_builtin._TRANSFER_STUDY_TABLES["digits"])
    # every step needs the one evaluation set, which needs the four FC nets
    ev = {p.key for st in steps for p in st.after if p.kind == "transfer.eval_set"}
    assert len(ev) == 1
    fc = [p for st in steps for p in st.after if p.kind == "transfer.eval_set"][0].after
    assert [p.settings["depth"] for p in fc] == list(ts.FC_DEPTHS)
    # Figure 1 reads the Table 1 IGSM matrix (the same step, so computed once)
    assert steps[11].after[0].key == steps[1].key
    # the cifar10 preset: Tables 2b and 3
    c = ts.plan(ts.TransferStudySettings(preset="cifar10", budget_n=10))
    assert [st.settings["part"] for st in c] == list(studies_builtin._TRANSFER_STUDY_TABLES[
        "cifar10"])
    assert "budget_n" not in c[0].settings and c[1].settings["budget_n"] == 10
