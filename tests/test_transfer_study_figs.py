"""Figures 6 and 7 of the digits transferability study (advsmooth.studies.transfer).

The study loads the digits zoo models (trained on first use and cached, like the other digits
tests) and width-500 FC nets of depth 0/2/4/8; the FC nets are replaced here by copies of the zoo
``digits-fc`` so that no test trains them.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from advsmooth import data, models
from advsmooth.attacks import IGSM, AttackObjective, SmoothedGradient
from advsmooth.metrics import transfer_matrix
from advsmooth.studies import transfer as ts


@pytest.fixture
def fc_standins(monkeypatch):
    """``digits_fc(depth)`` → a fresh copy of the zoo ``digits-fc`` (no training)."""
    base = models.load("digits-fc", verbose=False)

    def fake(depth, **kw):
        return copy.deepcopy(base).eval()

    monkeypatch.setattr(ts, "digits_fc", fake)
    return base


def _eval_set(n: int, seed: int):
    """The study's evaluation set with the stand-in FC nets (correct for lenet, resnet20, fc)."""
    named = [models.load(k, verbose=False) for k in ("digits-lenet", "digits-resnet20",
                                                      "digits-fc")]
    xt, yt = data.load("digits", split="test")
    return ts._subset_correct(named, xt, yt, n, seed)


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


def _png_ok(path) -> bool:
    b = path.read_bytes()
    return b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) > 2000


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
    named = {k: torch.nn.Linear(1, 1) for k in ("digits-lenet", "digits-resnet20", "digits-fc",
                                                 "fc-d0", "fc-d2", "fc-d4", "fc-d8")}
    ens = ts._table4_ensembles(named)
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
def test_fig_arguments_are_checked_before_any_work(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        ts.run_transfer_study("digits", tmp_path / "out", 4, **kw)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Figure 6
# ---------------------------------------------------------------------------------------------

def test_fig6_gradients_are_the_smoothed_gradient_class_and_manual_noisy_gradients():
    lenet = models.load("digits-lenet", verbose=False)
    x, y = _eval_set(5, 1)
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


def test_fig6_part(tmp_path, fc_standins):
    ms = (1, 3, 12)
    seed = 2
    rep = ts.run_transfer_study("digits", tmp_path / "a", 8, seed, parts=("fig6",), fig6_ms=ms,
                                log=lambda s: None)
    png = tmp_path / "a" / "fig6_smoothed_gradient_saliency.png"
    assert _png_ok(png)
    assert rep["figures"] == {"fig6_smoothed_gradient_saliency": str(png)}
    assert rep["tables"] == {} and "fig7" not in rep["results"]
    assert "fig6_smoothed_gradient_saliency.png" in (tmp_path / "a" / "summary.md").read_text()
    f6 = rep["results"]["fig6"]
    assert f6["ms"] == [1, 3, 12] and f6["sigma"] == 0.1 and f6["source"] == "digits-lenet"
    assert f6["n_images"] == 8 and f6["n_shown"] == 4
    for key in ("cos_plain", "cos_ref", "rel_tv"):
        assert len(f6[key]) == len(ms) and all(math.isfinite(v) for v in f6[key])
    assert all(abs(v) <= 1 + 1e-12 for v in f6["cos_plain"] + f6["cos_ref"])
    assert f6["cos_ref"][-1] == pytest.approx(1.0)
    assert f6["plain"]["cos_ref"] == pytest.approx(f6["cos_plain"][-1])  # cos is symmetric
    # the numbers are those of fig6_gradients on the first evaluation images
    x, y = _eval_set(8, seed)
    assert f6["labels"] == y.tolist()
    lenet = models.load("digits-lenet", verbose=False)
    g, sg = ts.fig6_gradients(lenet, x, y, ms, sigma=0.1, seed=seed)
    for i, m in enumerate(ms):
        assert f6["cos_plain"][i] == pytest.approx(float(_cos(sg[m], g).mean()), abs=1e-9)
        assert f6["cos_ref"][i] == pytest.approx(float(_cos(sg[m], sg[12]).mean()), abs=1e-9)
        assert f6["rel_tv"][i] == pytest.approx(
            float(ts._relative_tv(sg[m].abs().sum(1)).mean()), abs=1e-9)
    # deterministic: a rerun gives the same numbers, another seed other noise
    again = ts.run_transfer_study("digits", tmp_path / "b", 8, seed, parts=("fig6",),
                                  fig6_ms=ms, log=lambda s: None)
    assert again["results"]["fig6"] == f6
    saved = json.loads((tmp_path / "a" / "results.json").read_text())["results"]["fig6"]
    assert saved == f6
    rows = [r for r in ts.study_rows(rep) if r["part"] == "fig6"]
    assert [r["m"] for r in rows] == [0, 1, 3, 12]
    assert rows[0]["rel_tv"] == f6["plain"]["rel_tv"] and rows[0]["cos_plain"] == 1.0
    assert [r["rel_tv"] for r in rows[1:]] == f6["rel_tv"]


# ---------------------------------------------------------------------------------------------
# Figure 7
# ---------------------------------------------------------------------------------------------

def test_fig7_part(tmp_path, fc_standins):
    alphas, steps = (0.5, 0.75), (2, 20)
    rep = ts.run_transfer_study("digits", tmp_path, 10, 0, parts=("fig7",), fig7_alphas=alphas,
                                fig7_steps=steps, fig7_n=6, log=lambda s: None)
    f7 = rep["results"]["fig7"]
    assert "fig6" not in rep["results"]
    for key in ("fig7_targeted_ensembles_vs_alpha", "fig7_targeted_ensembles_vs_steps"):
        assert _png_ok(tmp_path / f"{key}.png") and key in rep["figures"]
    assert f7["targets"] == list(ts.FIG7_TARGETS) and f7["n"] == 6
    assert f7["alpha"]["alpha_eps"] == [0.5, 0.75] and f7["alpha"]["steps"] == [20, 20]
    assert f7["steps"]["alpha_eps"] == [0.75, 0.75] and f7["steps"]["steps"] == [2, 20]
    for sweep in ("alpha", "steps"):
        for metric in ("top1", "top5"):
            assert set(f7[sweep][metric]) == {"IGSM", "sg-IGSM"}
            for vals in f7[sweep][metric].values():
                assert len(vals) == 2 and all(0 <= v <= 100 for v in vals)
        for meth in ("IGSM", "sg-IGSM"):
            assert all(t5 >= t1 for t1, t5 in zip(f7[sweep]["top1"][meth],
                                                    f7[sweep]["top5"][meth]))
            # 2 ensembles × 3 targets × 6 images: multiples of 100/36
            for v in f7[sweep]["top1"][meth]:
                assert v * 36 / 100 == pytest.approx(round(v * 36 / 100), abs=1e-9)
    # the reference point (α = 0.75 ε, T = 20) is shared by both sweeps
    for meth in ("IGSM", "sg-IGSM"):
        assert f7["alpha"]["top1"][meth][1] == f7["steps"]["top1"][meth][1]
    # ... and equals the Table 4 computation (targeted, ε = 56/255, α = 0.75 ε, T = 20, m = 20,
    # σ = 40/255, same ensembles, same seed) restricted to the held-out targets
    x, y = _eval_set(10, 0)
    named = {k: models.load(k, verbose=False) for k in ("digits-lenet", "digits-resnet20",
                                                        "digits-fc")}
    for d in ts.FC_DEPTHS:
        named[f"fc-d{d}"] = ts.digits_fc(d)
    ens = ts._table4_ensembles(named)
    eps_t = 56 / 255
    for meth, grad in (("IGSM", None), ("sg-IGSM", SmoothedGradient(40 / 255, 20, chunk_size=1))):
        tm = transfer_matrix(list(ens.items()), list(named.items()),
                             IGSM(eps=eps_t, alpha=0.75 * eps_t, steps=20, gradient=grad),
                             (x[:6], y[:6]), targeted=True, seed=0, batch_size=100)
        cols = [tm.targets.index(t) for t in ts.FIG7_TARGETS]
        assert not tm.white_box[:, cols].any()
        assert f7["alpha"]["top1"][meth][1] == pytest.approx(tm.top1[:, cols].mean() * 100,
                                                             abs=1e-9)
        assert f7["alpha"]["top5"][meth][1] == pytest.approx(tm.top5[:, cols].mean() * 100,
                                                             abs=1e-9)
    # table files and rows
    md = (tmp_path / "fig7_targeted_ensembles.md").read_text()
    assert "| alpha | 0.5 | 20 |" in md and "| steps | 0.75 | 2 |" in md
    assert "### fig7_targeted_ensembles" in (tmp_path / "summary.md").read_text()
    csv_lines = (tmp_path / "fig7_targeted_ensembles.csv").read_text().splitlines()
    assert csv_lines[0] == "sweep,alpha_eps,steps,method,top1,top5" and len(csv_lines) == 1 + 8
    rows = [r for r in ts.study_rows(rep) if r["part"] == "fig7"]
    assert len(rows) == 8
    r = next(r for r in rows if r["sweep"] == "steps" and r["steps"] == 2
             and r["method"] == "sg-IGSM")
    assert r["alpha_eps"] == 0.75
    assert r["top1"] == pytest.approx(f7["steps"]["top1"]["sg-IGSM"][0])


def test_study_rows_of_fig6_and_fig7():
    report = {"tables": {}, "results": {
        "fig6": {"ms": [1, 5], "cos_plain": [0.9, 0.95], "cos_ref": [0.8, 1.0],
                 "rel_tv": [1.3, 1.0], "plain": {"cos_ref": 0.94, "rel_tv": 1.31}},
        "fig7": {"alpha": {"alpha_eps": [0.25, 0.75], "steps": [20, 20],
                           "top1": {"IGSM": [60.0, 50.0], "sg-IGSM": [61.0, 52.0]},
                           "top5": {"IGSM": [90.0, 85.0], "sg-IGSM": [91.0, 84.0]}},
                 "steps": {"alpha_eps": [0.75], "steps": [5],
                           "top1": {"IGSM": [55.0], "sg-IGSM": [56.0]},
                           "top5": {"IGSM": [80.0], "sg-IGSM": [81.0]}}}}}
    rows = ts.study_rows(report)
    assert [(r["m"], r["cos_plain"], r["cos_ref"], r["rel_tv"]) for r in rows
            if r["part"] == "fig6"] == [(0, 1.0, 0.94, 1.31), (1, 0.9, 0.8, 1.3),
                                        (5, 0.95, 1.0, 1.0)]
    f7 = [r for r in rows if r["part"] == "fig7"]
    assert len(f7) == 6
    assert {"part": "fig7", "sweep": "alpha", "method": "sg-IGSM", "alpha_eps": 0.75,
            "steps": 20, "top1": 52.0, "top5": 84.0} in f7
    assert {"part": "fig7", "sweep": "steps", "method": "IGSM", "alpha_eps": 0.75,
            "steps": 5, "top1": 55.0, "top5": 80.0} in f7


def test_cli_and_spec_run_every_part_and_take_the_figure_grids():
    from advsmooth.cli.cmd_transfer import DEFAULT_PARTS
    from advsmooth.experiments import SpecError, parse_spec
    from advsmooth.studies.transfer import DIGITS_PARTS

    assert tuple(DEFAULT_PARTS.split(",")) == DIGITS_PARTS
    params = {"preset": "digits", "out_dir": "x", "fig6_ms": [1, 4], "fig7_alphas": [0.5],
              "fig7_steps": [5], "fig7_n": 10}
    parse_spec({"name": "t", "studies": [{"task": "transfer_study", "params": params}]})
    with pytest.raises(SpecError, match="fig7_m"):
        parse_spec({"name": "t", "studies": [{"task": "transfer_study",
                                              "params": {**params, "fig7_m": 3}}]})
