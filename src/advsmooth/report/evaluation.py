"""Files of one robustness evaluation or certification: a JSON, a Markdown table and a one-page
HTML report with its curve drawn as inline SVG (no external resources, no matplotlib needed).

:func:`write_evaluation` takes a :class:`~advsmooth.metrics.evaluation.RobustnessReport`,
:func:`write_certification` a :class:`~advsmooth.metrics.certification.CertificationReport`;
both write ``NAME.json``, ``NAME.md`` and ``NAME.html`` into ``out_dir`` atomically and return
the paths.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._utils import atomic_path
from ..metrics.certification import CertificationReport
from ..metrics.evaluation import RobustnessReport, _fmt_eps

__all__ = ["write_evaluation", "write_certification", "svg_curves"]

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def svg_curves(xs: Sequence[float], curves: dict[str, Sequence[float]], *, x_label: str,
               y_label: str, width: int = 520, height: int = 300) -> str:
    """A line chart (values in ``[0, 1]`` on the y axis, shown in %) as an inline SVG string."""
    left, right, top, bottom = 60, 150, 15, 45
    pw, ph = width - left - right, height - top - bottom
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    span = (x1 - x0) or 1.0

    def px(v: float) -> float:
        return left + (v - x0) / span * pw

    def py(v: float) -> float:
        return top + (1.0 - v) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{html.escape(y_label)} vs {html.escape(x_label)}">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" '
             'stroke="#888"/>']
    for k in range(0, 11, 2):
        v = k / 10
        parts.append(f'<line x1="{left - 4}" y1="{py(v):.1f}" x2="{left}" y2="{py(v):.1f}" '
                     'stroke="#888"/>')
        parts.append(f'<text x="{left - 7}" y="{py(v) + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{k * 10}%</text>')
    for v in xs:
        parts.append(f'<text x="{px(v):.1f}" y="{top + ph + 16}" font-size="11" '
                     f'text-anchor="middle">{html.escape(_fmt_eps(v))}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 6}" font-size="12" '
                 f'text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append(f'<text x="14" y="{top + ph / 2:.1f}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + ph / 2:.1f})">{html.escape(y_label)}</text>')
    for i, (name, ys) in enumerate(curves.items()):
        col = _COLOURS[i % len(_COLOURS)]
        pts = [(px(a), py(b)) for a, b in zip(xs, ys, strict=True)
               if b is not None and not math.isnan(b)]
        if pts:
            parts.append(f'<polyline fill="none" stroke="{col}" stroke-width="2" points="'
                         + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
            parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{col}"/>' for a, b in pts]
        ly = top + 14 + 18 * i
        parts.append(f'<line x1="{left + pw + 10}" y1="{ly - 4}" x2="{left + pw + 30}" '
                     f'y2="{ly - 4}" stroke="{col}" stroke-width="2"/>')
        parts.append(f'<text x="{left + pw + 34}" y="{ly}" font-size="11">'
                     f'{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;"
            "padding:3px 9px;text-align:right}th{background:#eee}.raised{color:#b00;"
            "font-weight:bold}.ok{color:#070}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>\n")


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _write(out_dir: Path, name: str, payload: dict[str, Any], md: str,
           page: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{name}.json", "md": out_dir / f"{name}.md",
             "html": out_dir / f"{name}.html"}
    for key, text in (("json", json.dumps(payload, indent=1) + "\n"), ("md", md + "\n"),
                      ("html", page)):
        with atomic_path(paths[key]) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return paths


def _pct(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def write_evaluation(report: RobustnessReport, out_dir: str | Path, *, title: str | None = None,
                     name: str = "evaluation") -> dict[str, Path]:
    """Write ``NAME.json`` / ``.md`` / ``.html`` of ``report`` into ``out_dir``."""
    out = Path(out_dir)
    title = title or "Robustness evaluation"
    norm = "ℓ∞" if report.norm == "inf" else "ℓ2"
    within = report.deepfool.get("fraction_within", {})
    curves: dict[str, list[Any]] = {"cascade": [report.robust_accuracy[e] for e in report.eps]}
    if all(report.pgd_robust_accuracy[e] is not None for e in report.eps):
        curves["PGD-CE alone"] = [report.pgd_robust_accuracy[e] for e in report.eps]
    if within:
        curves["DeepFool bound"] = [report.clean_accuracy - within[e] for e in report.eps]
    stage_rows = [[_fmt_eps(s["eps"]), s["stage"],
                   f"{s['attacked']}" + (f" (+{s['not_attacked']} left)"
                                         if s.get("not_attacked") else ""), s["fooled"],
                   _pct(s["robust_accuracy"]), f"{s['seconds']:.1f}",
                   f"{s['grad_evals']:.0f}", f"{s['forward_evals']:.0f}"]
                  for s in report.stages]
    flags = "".join(
        f"<li class=\"{'raised' if f.raised else 'ok'}\">{html.escape(f.name)}: "
        f"{'RAISED' if f.raised else 'not raised'} — {html.escape(f.detail)}</li>"
        for f in report.flags)
    df = report.deepfool
    df_html = ("<p>DeepFool minimal perturbations (unbounded, on the correctly classified "
               f"samples): success {_pct(df['success_rate'])}, median ‖r‖ "
               f"{df['median_norm']:.4g} ({norm}), ρ_adv {df['rho_adv']:.4g}, "
               f"{df['grad_evals']:.1f} gradients per image.</p>") if df else ""
    sm_html = ""
    if report.smoothness:
        sm_html = ("<h2>SmoothFool smoothness profile</h2>"
                   + _html_table(["σg", "fooling rate", "median ℓ2", "samples"],
                                 [[f"{r['sigma']:g}", _pct(r["fooling_rate"]),
                                   f"{r['median_l2']:.4g}", r["n"]]
                                  for r in report.smoothness]))
    left = any(s.get("not_attacked") for s in report.stages)
    note = ("<p>\"left\": survivors the Square stage did not attack: it attacks the survivors "
            "nearest by DeepFool first and stopped after a group in which it fooled nobody "
            "(<code>square_all=True</code> attacks them all).</p>" if left else "")
    body = (f"<p>{report.n} samples, {norm} threat model, clean accuracy "
            f"{_pct(report.clean_accuracy)}, {report.seconds:.1f} s"
            + (", randomised model (EOT gradients, majority verdicts)" if report.randomized
               else "") + ".</p>"
            + svg_curves(report.eps, curves, x_label=f"ε ({norm})", y_label="robust accuracy")
            + _html_table(["ε", "robust accuracy", "PGD-CE alone", "DeepFool ‖r‖ > ε"],
                          [[_fmt_eps(e), _pct(report.robust_accuracy[e]),
                            _pct(report.pgd_robust_accuracy[e]),
                            _pct(report.clean_accuracy - within[e]) if within else "—"]
                           for e in report.eps])
            + f"<h2>Gradient-masking flags</h2><ul>{flags}</ul>" + df_html
            + "<h2>Stages</h2>"
            + _html_table(["ε", "stage", "attacked", "fooled", "robust after", "seconds",
                           "gradients", "forwards"], stage_rows) + note + sm_html)
    return _write(out, name, report.to_dict(), report.summary(), _page(title, body))


def write_certification(report: CertificationReport, out_dir: str | Path, *,
                        title: str | None = None, name: str = "certification"
                        ) -> dict[str, Path]:
    """Write ``NAME.json`` / ``.md`` / ``.html`` of a certification into ``out_dir``."""
    title = title or "Certified robustness (randomised smoothing)"
    body = (f"<p>{report.n_samples} samples, σ = {report.sigma:g}, N0 = {report.n0}, "
            f"N = {report.n}, α = {report.alpha:g}; abstained on {report.abstained}; "
            f"{report.seconds:.1f} s.</p>"
            + svg_curves(report.radii, {"certified": report.certified_accuracy},
                         x_label="ℓ2 radius", y_label="certified accuracy")
            + _html_table(["ℓ2 radius", "certified accuracy"],
                          [[f"{r:.3g}", _pct(a)] for r, a in
                           zip(report.radii, report.certified_accuracy, strict=True)]))
    return _write(Path(out_dir), name, report.to_dict(), report.summary(), _page(title, body))
