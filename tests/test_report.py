"""``advsmooth report DIR``: tables (md/csv/json) consistent with the store, figures (png+svg),
a self-contained report.html that renders in headless Chromium with every figure loaded."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess

import pytest

from advsmooth.cli import main
from advsmooth.experiments import Store, parse_spec, register_task, run_spec

pytest.importorskip("matplotlib")


def _grid_study(params, ctx):
    return [{"source": s, "target": t, "rate": 10.0 * s + t} for s in range(2) for t in range(3)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    register_task("test-grid", _grid_study, replace=True)
    spec = parse_spec({
        "name": "rep", "seed": 1, "batch_size": 6, "save_adversarial": True,
        "datasets": [{"name": "digits", "sample": 12}],
        "models": [{"name": "digits-lenet"}],
        "attacks": [{"name": "fgsm", "grid": {"eps": [0.02, 0.1, 0.3]}}],
        "studies": [{"task": "test-grid", "label": "grid"}],
        "report": {
            "tables": ["summary", "per_class",
                       {"kind": "summary", "name": "big_eps", "where": {"eps": 0.3}},
                       {"kind": "sigma_threshold", "param": "eps", "levels": [0.5]},
                       {"kind": "pivot", "rows": ["model"], "columns": ["label"],
                        "metrics": ["fooling_rate"]},
                       {"kind": "study", "source": "grid", "rows": ["source"],
                        "columns": ["target"], "value": "rate"},
                       {"kind": "study", "source": "grid", "name": "grid_s1",
                        "where": {"source": 1}}],
            "plots": [{"kind": "curve", "x": "eps", "y": "fooling_rate"},
                      {"kind": "heatmap", "source": "grid", "rows": "source",
                       "columns": "target", "value": "rate"},
                      {"kind": "perturbation_grid", "samples": 3}]}})
    out = tmp_path_factory.mktemp("report") / "run"
    run_spec(spec, out, progress=False)
    assert main(["report", str(out)]) == 0
    return out


def test_report_files_and_tables(run_dir):
    rdir = run_dir / "report"
    for name in ("summary", "per_class", "sigma_threshold", "pivot", "study_grid", "provenance"):
        for ext in ("md", "csv", "json"):
            assert (rdir / "tables" / f"{name}.{ext}").stat().st_size > 0
    figs = sorted(p.name for p in (rdir / "figures").iterdir())
    assert "cells_fooling_rate_vs_eps.png" in figs and "cells_fooling_rate_vs_eps.svg" in figs
    assert "grid_rate_heatmap.png" in figs and "grid_rate_heatmap.svg" in figs
    assert sum(f.startswith("perturbations_") and f.endswith(".png") for f in figs) == 3
    # the summary table holds the store's numbers (FR in %)
    with Store(run_dir, readonly=True) as st:
        cells = [c for c in st.cells() if c["kind"] == "attack"]
    summary = json.loads((rdir / "tables" / "summary.json").read_text())
    fr_col = summary["columns"].index("FR (%)")
    assert [r[fr_col] for r in summary["rows"]] == pytest.approx(
        [100 * c["fooling_rate"] for c in cells])
    # per-class rows: one per cell, 10 classes
    rows = list(csv.reader((rdir / "tables" / "per_class.csv").open()))
    assert rows[0][3:] == [str(k) for k in range(10)] and len(rows) == 1 + len(cells)
    # the study matrix is pivoted: sources down, targets across
    grid = json.loads((rdir / "tables" / "study_grid.json").read_text())
    assert grid["columns"] == ["source", "0", "1", "2"]
    assert grid["rows"] == [["0", 0.0, 1.0, 2.0], ["1", 10.0, 11.0, 12.0]]
    big = json.loads((rdir / "tables" / "big_eps.json").read_text())
    assert [r[2] for r in big["rows"]] == ["fgsm[eps=0.3]"]
    s1 = json.loads((rdir / "tables" / "grid_s1.json").read_text())
    assert s1["rows"] == [[1, 0, 10.0], [1, 1, 11.0], [1, 2, 12.0]]
    md = (rdir / "report.md").read_text()
    assert "### Summary per attack cell" in md and "| dataset | model | attack |" in md


def test_html_is_self_contained(run_dir):
    page = (run_dir / "report" / "report.html").read_text()
    assert page.count("<img ") == 5 and page.count('src="data:image/png;base64,') == 5
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)
    assert page.count('<table class="results"') == 8


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed")
def test_html_renders_in_headless_chromium(run_dir, tmp_path):
    html = run_dir / "report" / "report.html"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=10000", "--dump-dom", html.resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", res.stdout)
    assert body is not None, res.stderr[-2000:]
    tag = body.group(0)
    assert 'data-figures-loaded="yes"' in tag, tag
    assert 'data-figure-count="5"' in tag and 'data-tables="8"' in tag
    assert "Summary per attack cell" in res.stdout and "Provenance of every cell" in res.stdout


def _drawing_study(params, ctx):
    """A study that draws its own figure into its out_dir (like the transfer study)."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(params["out_dir"])
    (out / "sub").mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [params["k"], 0])
    fig.savefig(out / "sub" / "drawn.png")
    plt.close(fig)
    return [{"k": params["k"]}]


def test_image_plot_embeds_a_study_figure(tmp_path, monkeypatch, capsys):
    import base64

    from advsmooth.experiments import SpecError

    register_task("test-draw", _drawing_study, replace=True)
    monkeypatch.chdir(tmp_path)
    spec = {"name": "img", "seed": 0,
            "studies": [{"task": "test-draw", "label": "draw",
                         "params": {"out_dir": "files", "k": 3}}],
            "report": {"plots": [{"kind": "image", "source": "draw", "file": "sub/drawn.png",
                                  "title": "drawn by the study"},
                                 {"kind": "image", "source": "draw", "file": "missing.png"}]}}
    run_spec(parse_spec(spec), tmp_path / "run", progress=False)
    assert main(["report", str(tmp_path / "run")]) == 0
    assert "'missing.png' of study 'draw' not found" in capsys.readouterr().err
    drawn = (tmp_path / "files" / "sub" / "drawn.png").read_bytes()
    page = (tmp_path / "run" / "report" / "report.html").read_text()
    assert page.count("<img ") == 1
    assert base64.b64encode(drawn).decode("ascii") in page and "drawn by the study" in page
    assert (tmp_path / "run" / "report" / "figures" / "draw_drawn.png").read_bytes() == drawn
    # found from another working directory too (relative to the run directory's parent)
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert main(["report", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "report" / "report.html").read_text().count("<img ") == 1
    # validation: the file must stay inside out_dir, needs a source whose study has an out_dir
    bad = [({"kind": "image", "source": "draw", "file": "../x.png"}, "out_dir"),
           ({"kind": "image", "file": "x.png"}, "source"),
           ({"kind": "image", "source": "draw", "file": "x.jpg"}, "file"),
           ({"kind": "curve", "x": "k", "y": "k", "source": "draw", "file": "x.png"}, "image")]
    for plot, needle in bad:
        with pytest.raises(SpecError) as exc:
            parse_spec({**spec, "report": {"plots": [plot]}})
        assert needle in str(exc.value)
    no_dir = {**spec, "studies": [{"task": "test-draw", "label": "draw", "params": {"k": 1}}],
              "report": {"plots": [{"kind": "image", "source": "draw", "file": "x.png"}]}}
    with pytest.raises(SpecError, match="out_dir"):
        parse_spec(no_dir)


def _map_plan(params, seed):
    from advsmooth.experiments.artefacts import Step

    return [Step("test.map", {"k": k}) for k in (1, 2)]


def test_artefact_plot_draws_a_planned_steps_artefact(tmp_path, monkeypatch):
    """``kind = "artefact"``: the report reads the artefact of each matching step of the study's
    plan (hash checked) and hands it to the drawing of its step kind."""
    import torch

    from advsmooth.experiments import SpecError
    from advsmooth.experiments.artefacts import StepOutput, register_step
    from advsmooth.report import artefact_plots

    @register_step("test.map")
    def _map(s, ctx):
        return StepOutput(rows=[{"k": s["k"]}], tensors={"m": torch.full((3, 3), float(s["k"]))})

    seen = []

    def draw(out, path, title):
        import matplotlib.pyplot as plt

        seen.append(float(out.tensors["m"].sum()))
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.imshow(out.tensors["m"].numpy())
        fig.savefig(path)
        plt.close(fig)

    monkeypatch.setitem(artefact_plots.DRAWERS, "test.map", draw)
    register_task("test-map", plan=_map_plan, replace=True)
    spec = {"name": "art", "seed": 0, "studies": [{"task": "test-map", "label": "maps"}],
            "report": {"plots": [{"kind": "artefact", "source": "maps", "step": "test.map",
                                  "where": {"k": 2}, "title": "the k = 2 map"}]}}
    run_spec(parse_spec(spec), tmp_path, progress=False)
    assert main(["report", str(tmp_path)]) == 0
    assert seen == [18.0]  # only the step matching `where`, read back from the store
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("<img ") == 1 and "the k = 2 map" in page
    # a tampered artefact file is not drawn (and never deserialised)
    for f in (tmp_path / "artefacts" / "steps" / "test.map").glob("*.pt"):
        f.write_bytes(b"not a tensor file")
    seen.clear()
    assert main(["report", str(tmp_path)]) == 0
    assert seen == [] and "<img " not in (tmp_path / "report" / "report.html").read_text()
    with pytest.raises(SpecError, match="step"):
        parse_spec({**spec, "report": {"plots": [{"kind": "artefact", "source": "maps"}]}})


def test_transfer_study_drawings_render_their_artefacts(tmp_path):
    import torch

    from advsmooth.experiments.artefacts import StepOutput
    from advsmooth.report.artefact_plots import DRAWERS

    g = torch.Generator().manual_seed(0)
    outs = {
        "transfer.boundary": StepOutput(
            tensors={"labels": torch.randint(0, 10, (2, 7, 7), generator=g),
                     "u": torch.linspace(-1, 1, 7), "v": torch.linspace(-1, 1, 7)},
            info={"models": ["a", "b"], "y": 3, "sign": False, "source": "a"}),
        "transfer.fig6": StepOutput(
            tensors={"image": torch.rand(2, 8, 8, generator=g),
                     "plain": torch.rand(2, 8, 8, generator=g),
                     "m5": torch.rand(2, 8, 8, generator=g)},
            info={"ms": [5], "labels": [1, 2], "source": "a", "sigma": 0.1}),
        "transfer.fig1": StepOutput(
            rows=[{"source": "a", "test_error": 2.0, "params": 1e4, "igsm_success": 40.0},
                  {"source": "b", "test_error": 3.0, "params": 1e5, "igsm_success": 60.0}],
            info={"target": "c"})}
    for kind, out in outs.items():
        path = tmp_path / f"{kind}.png"
        DRAWERS[kind](out, path, None)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_table_numbers_drop_float_noise_and_trailing_zeros():
    """Cells print at a fixed precision without trailing zeros, so a value a rounding error away
    from an integer (0.58 × 100) prints like the integers beside it."""
    from advsmooth.report.tables import Table

    f = Table._fmt
    assert f(0.58 * 100) == "58" and f(0.811 * 1000) == "811"
    assert f(99.5) == "99.5" and f(48.386) == "48.39" and f(4266.94) == "4266.9"
    assert f(4266.0) == "4266" and f(7.123456) == "7.123" and f(120.0) == "120"
    assert f(float("nan")) == "–" and f(None) == "–"
