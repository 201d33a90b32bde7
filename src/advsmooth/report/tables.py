"""Tables of a result store, laid out like the papers' tables; Markdown, CSV, JSON and HTML.

The report step reads only the store (``DIR/results.sqlite``): cells, their summaries and
per-sample rows, and the rows of study cells. What tables are built is taken from the
``[report]`` section of the spec recorded in the store (default: one summary table).

Kinds (see :class:`advsmooth.experiments.TableSpec`):

* ``summary`` — one row per attack cell, one column per metric;
* ``pivot`` — networks down, attacks across (DeepFool Table 1/2, SmoothFool Table 1);
* ``per_class`` — fooling rate per true class (SmoothFool Table 2);
* ``sigma_threshold`` — σ^A% from the fooling rate over a σ grid (SmoothFool Fig. 6);
* ``study`` — the rows of a study (transfer matrices, smoothing accuracy, ...), optionally
  pivoted.

A ``provenance`` table (spec hash, versions, device, seed, data and checkpoint hashes, timings per
cell) is always appended.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Table", "METRIC_DISPLAY", "build_tables", "cell_field", "attack_cells", "filter_cells",
           "study_rows_for", "summary_table", "pivot_table", "per_class_table",
           "sigma_threshold_table", "study_table", "provenance_table"]

#: metric -> (column header, scale factor) as the papers print them
METRIC_DISPLAY: dict[str, tuple[str, float]] = {
    "n": ("n", 1.0),
    "n_correct": ("n correct", 1.0),
    "accuracy": ("accuracy (%)", 100.0),
    "adv_accuracy": ("adv. accuracy (%)", 100.0),
    "fooling_rate": ("FR (%)", 100.0),
    "rho_adv": ("ρ_adv", 1.0),
    "rho_inf": ("ρ∞_adv", 1.0),
    "mean_l2": ("mean ‖r‖₂", 1.0),
    "median_l2": ("median ‖r‖₂", 1.0),
    "mean_linf": ("mean ‖r‖∞", 1.0),
    "omega": ("Ω×10³", 1000.0),
    "omega_n": ("Ωn×10³", 1000.0),
    "iterations": ("iterations / attacked image", 1.0),
    "forward_evals": ("forward evals / attacked image", 1.0),
    "grad_evals": ("grad evals / attacked image", 1.0),
    "seconds_per_sample": ("s / sample", 1.0),
}

_DEFAULT_SUMMARY = ("n", "accuracy", "fooling_rate", "rho_adv", "mean_l2", "omega", "omega_n",
                    "iterations", "grad_evals", "seconds_per_sample")


@dataclass
class Table:
    """A rendered table: ``columns`` headers and ``rows`` of values (numbers already scaled)."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    notes: str = ""
    raw: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def _fmt(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, bool):
            return str(v)
        if isinstance(v, float):
            if math.isnan(v):
                return "–"
            if v.is_integer() and abs(v) < 1e6:
                return str(int(v))
            if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
                return f"{v:.3g}"
            if abs(v) < 10:
                return f"{v:.4g}"
            # fixed decimals without trailing zeros: 811.0000001 → "811", 99.5 → "99.5"
            text = f"{v:.2f}" if abs(v) < 1000 else f"{v:.1f}"
            return text.rstrip("0").rstrip(".")
        return str(v)

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table with the title as a heading."""
        def esc(s: str) -> str:
            return s.replace("|", "\\|")
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(esc(c) for c in self.columns) + " |")
        lines.append("|" + "|".join(" --- " for _ in self.columns) + "|")
        for r in self.rows:
            lines.append("| " + " | ".join(esc(self._fmt(v)) for v in r) + " |")
        if self.notes:
            lines += ["", self.notes]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for r in self.rows:
            w.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                        for v in r])
        return buf.getvalue()

    def to_json(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and not math.isfinite(v) else v
        return {"name": self.name, "title": self.title, "columns": self.columns,
                "rows": [[clean(v) for v in r] for r in self.rows], "notes": self.notes}

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(self._fmt(v))}</td>" for v in r) + "</tr>"
            for r in self.rows)
        notes = f'<p class="notes">{html.escape(self.notes)}</p>' if self.notes else ""
        return (f'<h3 id="table-{html.escape(self.name)}">{html.escape(self.title)}</h3>'
                f'<table class="results" data-table="{html.escape(self.name)}"><thead><tr>{head}'
                f"</tr></thead><tbody>{body}</tbody></table>{notes}")


# ----------------------------------------------------------------------------------------------
# cell access
# ----------------------------------------------------------------------------------------------

def attack_cells(cells: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [c for c in cells if c["kind"] == "attack"]


def cell_field(cell: Mapping[str, Any], name: str) -> Any:
    """A cell's value for ``name``: dataset/model/attack/label, a parameter, or a metric."""
    if name in ("dataset", "model", "attack", "label", "task", "cell_id"):
        return cell.get(name)
    params = cell.get("params", {})
    if name in params:
        return params[name]
    return cell.get(name)


def _metric(cell: Mapping[str, Any], name: str, scale: Mapping[str, float] | None = None) -> Any:
    v = cell.get(name)
    if v is None:
        return None
    factor = (scale or {}).get(name, METRIC_DISPLAY.get(name, ("", 1.0))[1])
    return float(v) * float(factor)


def _header(name: str, scale: Mapping[str, float] | None = None) -> str:
    if scale and name in scale:
        return f"{name} ×{scale[name]:g}"
    return METRIC_DISPLAY.get(name, (name, 1.0))[0]


def _key(v: Any) -> str:
    return "" if v is None else str(v)


def _pivot(items: Iterable[Any], row_of: Callable[[Any], Any], col_of: Callable[[Any], Any],
           value_of: Callable[[Any], Any]) -> tuple[list[Any], list[Any], dict[Any, Any]]:
    """Row keys and column keys of ``items`` in first-seen order, and ``{(row, column):
    value}`` (a later item of the same pair wins)."""
    rks: dict[Any, None] = {}
    cks: dict[Any, None] = {}
    values: dict[Any, Any] = {}
    for it in items:
        rk, ck = row_of(it), col_of(it)
        rks.setdefault(rk)
        cks.setdefault(ck)
        values[(rk, ck)] = value_of(it)
    return list(rks), list(cks), values


# ----------------------------------------------------------------------------------------------
# table builders
# ----------------------------------------------------------------------------------------------

def summary_table(cells: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None, *,
                  name: str = "summary", title: str | None = None,
                  scale: Mapping[str, float] | None = None) -> Table:
    """One row per attack cell: dataset, model, attack (with grid point), metrics."""
    metrics = list(metrics or _DEFAULT_SUMMARY)
    rows = []
    for c in attack_cells(cells):
        rows.append([c["dataset"], c["model"], c["label"],
                     *[_metric(c, m, scale) for m in metrics]])
    return Table(name, title or "Summary per attack cell",
                 ["dataset", "model", "attack", *[_header(m, scale) for m in metrics]], rows,
                 notes="FR and ρ over correctly classified inputs; norms, ρ and Ω over the "
                       "successfully attacked ones (D_s). Ω at σ_h = 1, pixel space.")


def pivot_table(cells: Sequence[Mapping[str, Any]], *, rows: Sequence[str] | None = None,
                columns: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
                name: str = "pivot", title: str | None = None,
                scale: Mapping[str, float] | None = None) -> Table:
    """Networks down, attacks across: one row per distinct ``rows`` fields, one column per
    distinct ``columns`` fields × metric (the layout of DeepFool Table 1 / SmoothFool Table 1)."""
    rows = list(rows or ["dataset", "model"])
    columns = list(columns or ["label"])
    metrics = list(metrics or ["fooling_rate"])
    row_keys, col_keys, values = _pivot(
        attack_cells(cells), lambda c: tuple(_key(cell_field(c, f)) for f in rows),
        lambda c: tuple(_key(cell_field(c, f)) for f in columns), lambda c: c)
    headers = list(rows)
    for ck in col_keys:
        for m in metrics:
            headers.append(f"{' '.join(ck)} {_header(m, scale)}".strip())
    out_rows = []
    for rk in row_keys:
        r: list[Any] = list(rk)
        for ck in col_keys:
            c = values.get((rk, ck))
            for m in metrics:
                r.append(None if c is None else _metric(c, m, scale))
        out_rows.append(r)
    return Table(name, title or f"{', '.join(metrics)} by {', '.join(rows)} × "
                 f"{', '.join(columns)}", headers, out_rows)


def per_class_table(store: Any, cells: Sequence[Mapping[str, Any]], *, name: str = "per_class",
                    title: str | None = None) -> Table:
    """Fooling rate (%) per true class over correctly classified inputs (SmoothFool Table 2)."""
    acs = attack_cells(cells)
    data = []
    k_max = 0
    for c in acs:
        s = store.samples(c["cell_id"])
        correct = s["clean_pred"] == s["label"]
        k_max = max(k_max, int(s["label"].max()) + 1 if s["label"].size else 0)
        data.append((c, s, correct))
    class_names = _class_names(acs, k_max)
    k_max = len(class_names)
    rows = []
    for c, s, correct in data:
        r: list[Any] = [c["dataset"], c["model"], c["label"]]
        for k in range(k_max):
            m = correct & (s["label"] == k)
            r.append(float(s["success"][m].mean()) * 100.0 if m.any() else None)
        rows.append(r)
    return Table(name, title or "Fooling rate (%) per true class",
                 ["dataset", "model", "attack", *class_names], rows,
                 notes="Each entry over the correctly classified inputs of that class.")


def _class_names(cells: Sequence[Mapping[str, Any]], k: int) -> list[str]:
    try:
        from .. import data

        names = set()
        for c in cells:
            ds = c.get("config", {}).get("dataset", {}).get("name")
            if ds in data.names():
                cl = data.info(ds).classes
                if cl is not None and len(cl) >= k:
                    names.add(tuple(cl))
        if len(names) == 1:
            return list(next(iter(names)))
    except Exception:  # noqa: BLE001 - names are cosmetic
        pass
    return [str(i) for i in range(k)]


def sigma_threshold_table(cells: Sequence[Mapping[str, Any]], *, param: str = "sigma",
                          levels: Sequence[float] = (1.0, 0.5, 0.2),
                          name: str = "sigma_threshold", title: str | None = None) -> Table:
    """σ^A% per (dataset, model, attack) from the fooling rate over the ``param`` grid, plus the
    minimum over the models of each dataset (SmoothFool Fig. 6: (σ^100%, σ^20%))."""
    from ..metrics.core import sigma_at

    groups: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    unfinished = 0  # grid cells not (yet) done: the thresholds use the finished ones only
    for c in attack_cells(cells):
        v = c.get("params", {}).get(param)
        fr = c.get("fooling_rate")
        if v is None or isinstance(v, (str, bool)):
            continue
        if fr is None or c.get("status", "done") != "done":
            unfinished += 1
            continue
        groups.setdefault((c["dataset"], c["model"], c["attack"]), []).append((float(v), fr))
    rows = []
    per_ds: dict[tuple[str, str], list[list[tuple[float, bool]]]] = {}
    for (ds, model, attack), pts in groups.items():
        s, f = zip(*sorted(pts))
        # censored: the fooling rate is still >= A at the largest grid value
        vals = [(sigma_at(list(s), list(f), lv), f[-1] >= lv) for lv in levels]
        rows.append([ds, model, attack, *[_censored(v, c) for v, c in vals]])
        per_ds.setdefault((ds, attack), []).append(vals)
    for (ds, attack), per_model in per_ds.items():
        if len(per_model) > 1:
            mins = []
            for j in range(len(levels)):
                known = [vc for vc in (m[j] for m in per_model) if math.isfinite(vc[0])]
                mins.append(_censored(*min(known)) if known else None)
            rows.append([ds, "min over models", attack, *mins])
    return Table(name, title or f"σ^A% over the {param} grid",
                 ["dataset", "model", "attack", *[f"{param}^{100 * lv:g}%" for lv in levels]],
                 rows, notes="Largest grid value with FR ≥ A, interpolated linearly to the "
                             "crossing (docs/algorithms.md); “≥ v” where the fooling rate is "
                             "still ≥ A at the largest grid value v (the grid does not reach "
                             "σ^A%)." + (f" {unfinished} grid cell(s) have not finished: the "
                                         "values come from the finished cells only, and a "
                                         "“≥ v” may end where they end." if unfinished else ""))


#: prefix of a table cell holding a lower bound ("≥ v"; the scoreboard reads it back)
LOWER_BOUND = "≥"


def _censored(value: float, censored: bool) -> float | str:
    """A σ^A% cell: the number, or ``"≥ v"`` when the grid ends before the fooling rate drops
    below A (the threshold is only known to be at least the grid maximum)."""
    return f"{LOWER_BOUND} {value:g}" if censored else value


def study_rows_for(store: Any, cells: Sequence[Mapping[str, Any]], source: str,
                   where: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """All rows of the study cells labelled ``source``, each with its grid point's values
    (only those whose fields equal ``where``)."""
    return _study_data(store, cells, source, where)[0]


def _study_data(store: Any, cells: Sequence[Mapping[str, Any]], source: str,
                where: Mapping[str, Any] | None) -> tuple[list[dict[str, Any]], str]:
    """:func:`study_rows_for` and, for cells that have not finished, a note saying how far each
    got ("" when every cell is done)."""
    out, notes = [], []
    for c in _study_cells(cells, source):
        grid = c.get("config", {}).get("grid", {})
        rows = store.study_rows(c["cell_id"])
        if c.get("status") != "done":  # a planned study still running: its finished steps
            part, done, total = _progress(store, c)
            rows = rows or part
            what = (f"{done} of its {total} row-giving steps finished; the rows shown are "
                    "theirs" if total else "no rows yet")
            notes.append(f"“{c['label']}” has not finished: {what}.")
        for r in rows:
            row = {**grid, **r}
            if all(row.get(k) == v for k, v in (where or {}).items()):
                out.append(row)
    return out, " ".join(notes)


def _study_cells(cells: Sequence[Mapping[str, Any]], source: str) -> list[Mapping[str, Any]]:
    return [c for c in cells
            if c["kind"] == "study" and c.get("config", {}).get("study") == source]


def _progress(store: Any, cell: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int, int]:
    """Rows, finished and planned row steps of an unfinished planned study cell."""
    from pathlib import Path

    from ..experiments.tasks import plan_progress, task_names

    # a task this process does not know (registered by the user's own code) shows no rows yet
    if cell.get("task") not in task_names() or getattr(store, "path", None) is None:
        return [], 0, 0
    return plan_progress(cell, Path(store.path).parent)


def filter_cells(cells: Sequence[Mapping[str, Any]], where: Mapping[str, Any] | None
                 ) -> list[Mapping[str, Any]]:
    """The cells whose fields (see :func:`cell_field`) equal ``where``."""
    return [c for c in cells
            if all(cell_field(c, k) == v for k, v in (where or {}).items())]


def study_table(store: Any, cells: Sequence[Mapping[str, Any]], source: str, *,
                rows: Sequence[str] | None = None, columns: Sequence[str] | None = None,
                value: str | None = None, name: str | None = None, title: str | None = None,
                scale: Mapping[str, float] | None = None,
                where: Mapping[str, Any] | None = None) -> Table:
    """The rows of a study; with ``rows``, ``columns`` and ``value`` pivoted into a matrix
    (e.g. a transfer matrix: sources down, targets across)."""
    data, note = _study_data(store, cells, source, where)
    name = name or f"study_{source}"
    sc = dict(scale or {})

    def val(r: Mapping[str, Any], k: str) -> Any:
        v = r.get(k)
        if k in sc and isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v) * float(sc[k])
        return v

    if rows and columns and value:
        rk_list, ck_list, cellv = _pivot(
            data, lambda r: tuple(_key(r.get(f)) for f in rows),
            lambda r: tuple(_key(r.get(f)) for f in columns), lambda r: val(r, value))
        headers = [*rows, *[" ".join(ck) for ck in ck_list]]
        out = [[*rk, *[cellv.get((rk, ck)) for ck in ck_list]] for rk in rk_list]
        return Table(name, title or f"{source}: {value} ({', '.join(rows)} × "
                     f"{', '.join(columns)})", headers, out, raw=data, notes=note)
    keys: list[str] = []
    for r in data:
        for k in r:
            if k not in keys:
                keys.append(k)
    out = [[val(r, k) if not isinstance(r.get(k), (list, dict)) else json.dumps(r.get(k))
            for k in keys] for r in data]
    return Table(name, title or f"{source}", keys, out, raw=data, notes=note)


def provenance_table(cells: Sequence[Mapping[str, Any]]) -> Table:
    """Per cell: status, seed, spec hash, advsmooth/torch versions, device, hashes, seconds."""
    cols = ["cell_id", "kind", "dataset", "model", "label", "status", "seed", "spec_hash",
            "advsmooth_version", "torch_version", "device", "data_hash", "checkpoint_hash",
            "seconds"]
    rows = [[c.get(k) for k in cols] for c in cells]
    return Table("provenance", "Provenance of every cell", cols, rows)


def build_tables(store: Any, spec: Mapping[str, Any] | None = None) -> list[Table]:
    """The tables requested by the spec recorded in ``store`` (plus the provenance table)."""
    if spec is None:
        spec = store.current_spec()[1]
    all_cells = store.cells()
    out: list[Table] = []
    used: set[str] = set()
    for t in spec.get("report", {}).get("tables") or [{"kind": "summary"}]:
        kind = t["kind"]
        where = t.get("where") or {}
        cells = all_cells if kind == "study" else filter_cells(all_cells, where)
        scale = t.get("scale") or {}
        base = t.get("name") or (kind if kind != "study" else f"study_{t.get('source')}")
        nm, i = base, 2
        while nm in used:
            nm, i = f"{base}_{i}", i + 1
        used.add(nm)
        if kind == "summary":
            tab = summary_table(cells, t.get("metrics"), name=nm, title=t.get("title"),
                                scale=scale)
        elif kind == "pivot":
            tab = pivot_table(cells, rows=t.get("rows"), columns=t.get("columns"),
                              metrics=t.get("metrics"), name=nm, title=t.get("title"),
                              scale=scale)
        elif kind == "per_class":
            tab = per_class_table(store, cells, name=nm, title=t.get("title"))
        elif kind == "sigma_threshold":
            tab = sigma_threshold_table(cells, param=t.get("param", "sigma"),
                                        levels=t.get("levels") or (1.0, 0.5, 0.2), name=nm,
                                        title=t.get("title"))
        elif kind == "study":
            tab = study_table(store, cells, t["source"], rows=t.get("rows"),
                              columns=t.get("columns"), value=t.get("value"), name=nm,
                              title=t.get("title"), scale=scale, where=where)
        else:  # pragma: no cover - the spec validator rejects other kinds
            raise ValueError(f"unknown table kind {kind!r}")
        out.append(tab)
    out.append(provenance_table(all_cells))
    return out
