"""``advsmooth report DIR``: tables, figures and one self-contained ``report.html`` from a store.

:func:`build_report` reads ``DIR/results.sqlite`` (and, for perturbation grids, the ``.npz``
artefacts under ``DIR/artefacts``) and writes ``DIR/report/``:

* ``tables/NAME.md``, ``tables/NAME.csv``, ``tables/NAME.json`` — every table;
* ``figures/NAME.png`` and ``figures/NAME.svg`` — every figure (labelled axes, legends);
* ``report.md`` — all tables and links to the figures;
* ``report.html`` — everything in one file, figures embedded as base64 PNG, no external
  resources (opens offline). ``<body data-figures-loaded="yes">`` is set by an inline script once
  every figure has decoded (used by the headless-browser test).

Without matplotlib (the optional extra ``plot``) the tables, ``report.md`` and ``report.html``
are still written; the result's ``"note"`` says that figures were left out and how to get them.
Every file is written atomically, so a killed report leaves the previous complete files (and
at most hidden temporary files, which the next report removes).
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._utils import MissingDependency, atomic_path, optional_import
from .tables import (
    METRIC_DISPLAY,
    Table,
    _pivot,
    _study_cells,
    attack_cells,
    build_tables,
    cell_field,
    filter_cells,
    study_rows_for,
)

__all__ = ["build_report", "build_figures", "render_html", "Figure"]


class Figure:
    """A figure of the report: a name, a caption and its PNG/SVG files."""

    def __init__(self, name: str, caption: str, files: Sequence[Path]) -> None:
        self.name = name
        self.caption = caption
        self.files = [Path(f) for f in files]

    @property
    def png(self) -> Path:
        return next(f for f in self.files if f.suffix == ".png")


def _axis_label(name: str) -> str:
    if name in METRIC_DISPLAY:
        return METRIC_DISPLAY[name][0]
    return {"sigma": "σ_g (pixels)", "eps": "ε", "samples": "M (noise samples)"}.get(name, name)


def _scaled(name: str, v: Any) -> Any:
    if v is None:
        return None
    return float(v) * METRIC_DISPLAY.get(name, ("", 1.0))[1]


def _series_attack(cells: Sequence[Mapping[str, Any]], x: str, y: str,
                   hue: Sequence[str]) -> dict[str, tuple[list[Any], list[Any]]]:
    series: dict[str, tuple[list[Any], list[Any]]] = {}
    for c in attack_cells(cells):
        xv = cell_field(c, x)
        if xv is None:
            continue
        label = " / ".join(str(cell_field(c, h)) for h in hue) or "all"
        xs, ys = series.setdefault(label, ([], []))
        xs.append(_scaled(x, xv) if x in METRIC_DISPLAY else xv)
        ys.append(_scaled(y, c.get(y)))
    return series


def _series_rows(rows: Sequence[Mapping[str, Any]], x: str, y: str,
                 hue: Sequence[str]) -> dict[str, tuple[list[Any], list[Any]]]:
    series: dict[str, tuple[list[Any], list[Any]]] = {}
    for r in rows:
        if x not in r or y not in r:
            continue
        label = " / ".join(str(r.get(h)) for h in hue) or y
        xs, ys = series.setdefault(label, ([], []))
        xs.append(r[x])
        ys.append(r[y])
    return series


def _study_image(out_dir: Path, cells: Sequence[Mapping[str, Any]], source: str,
                 file: str) -> Path | None:
    """The PNG ``file`` inside the ``out_dir`` parameter of the study cells labelled ``source``.

    A relative ``out_dir`` is looked up from the working directory (where ``advsmooth run``
    resolved it), then from the run directory and its parent; a missing file is reported on
    stderr and the figure left out (the tables still render)."""
    for c in _study_cells(cells, source):
        od = (c.get("params") or {}).get("out_dir")
        if not isinstance(od, str):
            continue
        bases = [Path(od)] if Path(od).is_absolute() else [
            Path.cwd() / od, out_dir / od, out_dir.parent / od]
        for b in bases:
            if (b / file).is_file():
                return b / file
        print(f"advsmooth report: image {file!r} of study {source!r} not found under "
              f"{', '.join(str(b) for b in bases)}; left out", file=sys.stderr)
    return None


def _default_plots(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The plots of a spec without ``[report]`` plots: a fooling-rate curve per numeric grid
    parameter with several values, and perturbation grids when adversarials were saved."""
    grid_keys: list[str] = []
    for a in spec.get("attacks", []):
        for k, vals in a.get("grid", {}).items():
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals) \
                    and k not in grid_keys and len(vals) > 1:
                grid_keys.append(k)
    plots: list[dict[str, Any]] = [{"kind": "curve", "x": k, "y": "fooling_rate"}
                                   for k in grid_keys]
    if spec.get("save_adversarial"):
        plots.append({"kind": "perturbation_grid", "samples": 4})
    return plots


class _Drawing:
    """What every figure of one report needs: the store, its folder, the figure folder, all
    cells, and the figure names taken so far (:meth:`unique` makes a name unused)."""

    def __init__(self, store: Any, out_dir: Path, fig_dir: Path,
                 cells: Sequence[Mapping[str, Any]]) -> None:
        self.store, self.out_dir, self.fig_dir, self.all_cells = store, out_dir, fig_dir, cells
        self.used: set[str] = set()

    def unique(self, base: str) -> str:
        nm, i = base, 2
        while nm in self.used:
            nm, i = f"{base}_{i}", i + 1
        self.used.add(nm)
        return nm


def _curve_figures(d: _Drawing, p: Mapping[str, Any], cells: Sequence[Mapping[str, Any]]
                   ) -> list[Figure]:
    """``y`` against ``x``: attack cells (one line per ``hue`` value, percentages on 0-100) or
    a study's rows (a list ``y`` draws one line per column)."""
    from . import plots_store

    x, y, source = p["x"], p["y"], p.get("source")
    if source is None:
        hue = p.get("hue") or ["dataset", "model", "attack"]
        series = _series_attack(cells, x, y, hue)
        ylim = (-2.0, 102.0) if y in ("fooling_rate", "accuracy", "adv_accuracy") else None
    else:
        hue = p.get("hue") or []
        rows = study_rows_for(d.store, cells, source, p.get("where") or {})
        series = {}
        for col in [y] if isinstance(y, str) else y:  # several columns: one line each
            for k, v in _series_rows(rows, x, col, hue).items():
                series[k if isinstance(y, str) or not hue else f"{k}: {col}"] = v
        ylim = None
        y = y if isinstance(y, str) else "_".join(y)
    if not series:
        return []
    name = d.unique(p.get("name") or f"{source or 'cells'}_{y}_vs_{x}")
    title = p.get("title") or f"{_axis_label(y)} vs {_axis_label(x)}"
    files = plots_store.curve_plot(series, d.fig_dir / name,
                                   xlabel=p.get("xlabel") or _axis_label(x),
                                   ylabel=p.get("ylabel") or _axis_label(y),
                                   title=title, logx=bool(p.get("logx")), ylim=ylim)
    return [Figure(name, title, files)]


def _heatmap_figures(d: _Drawing, p: Mapping[str, Any], cells: Sequence[Mapping[str, Any]]
                     ) -> list[Figure]:
    """A ``rows`` × ``columns`` matrix of ``value`` (attack cells or a study's rows), one
    figure per value of the ``facet`` field when it is set."""
    from . import plots_store

    rows_f, cols_f, val_f, facet = p["rows"], p["columns"], p["value"], p.get("facet")
    source = p.get("source")
    if source is None:
        records = [{rows_f: cell_field(c, rows_f), cols_f: cell_field(c, cols_f),
                    val_f: _scaled(val_f, c.get(val_f)),
                    **({facet: cell_field(c, facet)} if facet else {})}
                   for c in attack_cells(cells)]
    else:
        records = study_rows_for(d.store, cells, source, p.get("where") or {})
    facets: list[Any] = [None]
    if facet:
        facets = []
        for r in records:
            if r.get(facet) not in facets:
                facets.append(r.get(facet))
    figures: list[Figure] = []
    for fv in facets:
        rl, cl, vals = _pivot([r for r in records if fv is None or r.get(facet) == fv],
                              lambda r: str(r.get(rows_f)), lambda r: str(r.get(cols_f)),
                              lambda r: r.get(val_f))
        if not rl or not cl:
            continue
        base = p.get("name") or f"{source or 'cells'}_{val_f}_heatmap"
        name = d.unique(plots_store.file_stem(base + ("" if fv is None else f"_{fv}")))
        title = (p.get("title") or f"{_axis_label(val_f)}") + \
            ("" if fv is None else f" ({facet} = {fv})")
        files = plots_store.heatmap_plot(
            [[vals.get((rk, ck)) for ck in cl] for rk in rl], rl, cl, d.fig_dir / name,
            xlabel=p.get("xlabel") or cols_f, ylabel=p.get("ylabel") or rows_f,
            value_label=_axis_label(val_f), title=title)
        figures.append(Figure(name, title, files))
    return figures


def _image_figures(d: _Drawing, p: Mapping[str, Any], cells: Sequence[Mapping[str, Any]]
                   ) -> list[Figure]:
    """A PNG (and its SVG, if any) that a study wrote into its ``out_dir``, copied as it is."""
    from .plots_store import file_stem

    source = p.get("source")
    found = _study_image(d.out_dir, d.all_cells, source, p["file"])  # type: ignore[arg-type]
    if found is None:
        return []
    name = d.unique(p.get("name") or file_stem(f"{source}_{Path(p['file']).stem}"))
    d.fig_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for src, fmt in ((found, "png"), (found.with_suffix(".svg"), "svg")):
        if fmt == "png" or src.is_file():  # the SVG only when the study wrote one
            files.append(d.fig_dir / f"{name}.{fmt}")
            with atomic_path(files[-1]) as tmp:
                shutil.copyfile(src, tmp)
    return [Figure(name, p.get("title") or f"{source}: {p['file']}", files)]


def _artefact_figures(d: _Drawing, p: Mapping[str, Any], cells: Sequence[Mapping[str, Any]]
                      ) -> list[Figure]:
    """Figures drawn from the step artefacts of a planned study."""
    from .artefact_plots import artefact_figures

    return [Figure(*f) for f in artefact_figures(d.out_dir, d.all_cells, p, d.fig_dir, d.unique)]


def _study_figures(d: _Drawing, p: Mapping[str, Any], cells: Sequence[Mapping[str, Any]]
                   ) -> list[Figure]:
    """Bars of a planned study's rows, or the images stored by one of its steps."""
    from .study_figures import study_figure

    return [Figure(*f) for f in study_figure(p, d.store, d.out_dir, d.fig_dir, d.all_cells,
                                             d.unique)]


def _perturbation_figures(d: _Drawing, p: Mapping[str, Any], cells: Sequence[Mapping[str, Any]]
                          ) -> list[Figure]:
    """Clean, adversarial and perturbation images of the first ``samples`` saved adversarial
    examples of every attack cell."""
    from ..experiments.runner import read_adversarial
    from .figures import perturbation_grid

    k = int(p.get("samples") or 4)
    figures: list[Figure] = []
    for c in attack_cells(cells):
        art = read_adversarial(d.out_dir, c["cell_id"], ("x", "x_adv", "label", "adv_pred"), k)
        if art is None:
            continue
        name = d.unique((p.get("name") or "perturbations") + "_" + c["cell_id"][:8])
        title = f"{c['label']} on {c['model']} ({c['dataset']})"
        files = [perturbation_grid(art["x"], art["x_adv"], art["label"], art["adv_pred"],
                                   d.fig_dir / f"{name}.{fmt}", max_images=k, title=title)
                 for fmt in ("png", "svg")]
        figures.append(Figure(name, "Clean (top, true label), adversarial (middle, "
                              f"prediction) and perturbation (bottom): {title}", files))
    return figures


_FIGURES = {"curve": _curve_figures, "heatmap": _heatmap_figures, "image": _image_figures,
            "artefact": _artefact_figures, "bars": _study_figures,
            "step_images": _study_figures, "perturbation_grid": _perturbation_figures}


def build_figures(store: Any, out_dir: str | os.PathLike[str], fig_dir: str | os.PathLike[str],
                  spec: Mapping[str, Any] | None = None) -> list[Figure]:
    """Draw the figures requested by the spec's ``[report]`` plots (PNG + SVG).

    Without explicit plots: one fooling-rate curve per numeric grid parameter of the attacks,
    and a perturbation grid per attack cell when adversarial examples were saved.
    """
    if spec is None:
        spec = store.current_spec()[1]
    all_cells = store.cells()
    d = _Drawing(store, Path(out_dir), Path(fig_dir), all_cells)
    figures: list[Figure] = []
    for p in list(spec.get("report", {}).get("plots", [])) or _default_plots(spec):
        # a study's rows are filtered by where when they are read; attack cells here
        cells = all_cells if p.get("source") is not None else filter_cells(
            all_cells, p.get("where") or {})
        draw = _FIGURES.get(p["kind"])
        if draw is not None:
            figures += draw(d, p, cells)
    return figures


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table.results{border-collapse:collapse;font-size:.85em;margin:.5em 0 1em 0}
table.results th,table.results td{border:1px solid #bbb;padding:.25em .55em;text-align:right}
table.results th{background:#f0f0f0}
table.results td:first-child,table.results th:first-child{text-align:left}
figure{display:inline-block;margin:.5em 1em 1em 0;vertical-align:top}
figure img{max-width:520px;border:1px solid #ddd}
figcaption{font-size:.85em;max-width:520px;color:#444}
.notes{font-size:.8em;color:#555}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.8em}
"""

_SCRIPT = """
(function(){
  function check(){
    var imgs=document.images, ok=true;
    for(var i=0;i<imgs.length;i++){ if(!(imgs[i].complete && imgs[i].naturalWidth>0)) ok=false; }
    document.body.setAttribute('data-figure-count', String(imgs.length));
    var n=document.querySelectorAll('table.results').length;
    document.body.setAttribute('data-tables', String(n));
    document.body.setAttribute('data-figures-loaded', ok ? 'yes' : 'no');
  }
  window.addEventListener('load', check);
})();
"""


def render_html(title: str, tables: Sequence[Table], figures: Sequence[Figure], *,
                meta: Mapping[str, Any], spec_text: str = "") -> str:
    """One self-contained HTML page: inline CSS and script, figures as base64 ``data:`` URLs."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>",
        '<body data-figures-loaded="pending">',
        f"<h1>{html.escape(title)}</h1>",
        "<p>" + " · ".join(f"<b>{html.escape(str(k))}</b>: {html.escape(str(v))}"
                           for k, v in meta.items()) + "</p>",
    ]
    main_tables = [t for t in tables if t.name != "provenance"]
    parts.append("<h2>Tables</h2>")
    parts += [t.to_html() for t in main_tables]
    if figures:
        parts.append("<h2>Figures</h2>")
        for f in figures:
            data = base64.b64encode(f.png.read_bytes()).decode("ascii")
            parts.append(f'<figure id="fig-{html.escape(f.name)}">'
                         f'<img alt="{html.escape(f.caption)}" '
                         f'src="data:image/png;base64,{data}"><figcaption>'
                         f"{html.escape(f.caption)}</figcaption></figure>")
    parts.append("<h2>Provenance</h2>")
    parts += [t.to_html() for t in tables if t.name == "provenance"]
    if spec_text:
        parts.append(f"<h2>Spec</h2><pre>{html.escape(spec_text)}</pre>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: a temporary file renamed over ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def build_report(out_dir: str | os.PathLike[str], *,
                 report_dir: str | os.PathLike[str] | None = None,
                 figures: bool = True) -> dict[str, Any]:
    """Write the report of the experiment in ``out_dir`` (see the module docstring).

    Returns ``{"dir", "html", "markdown", "tables": [paths], "figures": [paths], "note"}``;
    ``note`` is ``None``, or says why figures were left out (matplotlib missing) and how to get
    them.
    """
    from ..experiments.store import Store

    out = Path(out_dir)
    rdir = Path(report_dir) if report_dir is not None else out / "report"
    note = None
    if figures:
        try:
            optional_import("matplotlib")
        except MissingDependency as exc:
            figures = False
            note = f"figures left out: {exc}"
    with Store(out, readonly=True) as store:
        shash, spec, spec_text = store.current_spec()
        tables = build_tables(store, spec)
        figs: list[Figure] = []
        if figures:
            figs = build_figures(store, out, rdir / "figures", spec)
        cells = store.cells()
    tdir = rdir / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    table_files: list[Path] = []
    for t in tables:
        for ext, text in (("md", t.to_markdown()), ("csv", t.to_csv()),
                          ("json", json.dumps(t.to_json(), indent=1, ensure_ascii=False))):
            p = tdir / f"{t.name}.{ext}"
            _write_text(p, text)
            table_files.append(p)
    title = spec.get("report", {}).get("title") or f"advsmooth experiment: {spec['name']}"
    done = sum(1 for c in cells if c.get("status") == "done")
    meta = {"spec": spec["name"], "spec hash": shash, "paper": spec.get("paper") or "–",
            "cells": f"{done}/{len(cells)} done", "seed": spec.get("seed"),
            "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if spec.get("description"):
        meta["description"] = spec["description"]
    md = [f"# {title}", "", *[f"- **{k}**: {v}" for k, v in meta.items()], ""]
    md += [t.to_markdown() for t in tables]
    for f in figs:
        md.append(f"![{f.caption}](figures/{f.png.name})\n")
    _write_text(rdir / "report.md", "\n".join(md))
    page = render_html(title, tables, figs, meta=meta, spec_text=spec_text)
    _write_text(rdir / "report.html", page)
    return {"dir": rdir, "html": rdir / "report.html", "markdown": rdir / "report.md",
            "tables": table_files, "figures": [p for f in figs for p in f.files], "note": note}

