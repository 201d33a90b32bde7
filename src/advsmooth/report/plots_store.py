"""Generic plots for reports built from a result store: curves and heat-maps, PNG + SVG.

matplotlib is imported lazily (optional extra ``plot``). Every function writes ``STEM.png`` and
``STEM.svg`` and returns the two paths.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_path, optional_import

__all__ = ["curve_plot", "heatmap_plot", "save_both", "file_stem", "FORMATS"]

FORMATS = ("png", "svg")


def file_stem(text: str) -> str:
    """``text`` as a file name stem: every character but letters, digits and ``._-`` is ``_``."""
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in text)


def _pyplot() -> Any:
    mpl = optional_import("matplotlib")
    if mpl.get_backend().lower() != "agg":
        mpl.use("Agg", force=True)
    return optional_import("matplotlib.pyplot")


def save_figure(fig: Any, *paths: str | os.PathLike[str], dpi: int, **savefig: Any
                ) -> list[Path]:
    """Write ``fig`` to every path (atomically, format from the suffix), close it, return the
    paths."""
    for p in paths:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=dpi, **savefig)
    _pyplot().close(fig)
    return [Path(p) for p in paths]


def save_both(fig: Any, stem: str | Path, *, dpi: int = 110) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.svg`` (folders created), close it, return paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    return save_figure(fig, *(stem.with_name(f"{stem.name}.{fmt}") for fmt in FORMATS), dpi=dpi)


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def curve_plot(series: Mapping[str, tuple[Sequence[Any], Sequence[Any]]], stem: str | Path, *,
               xlabel: str, ylabel: str, title: str | None = None, logx: bool = False,
               ylim: tuple[float, float] | None = None,
               hlines: Sequence[float] = ()) -> list[Path]:
    """Line plot of one or more series ``{legend label: (x values, y values)}``.

    Numeric x values are sorted; non-numeric x values are placed at 0, 1, ... in first-seen
    order with their text as tick labels. ``None``/NaN y values leave gaps.
    """
    if not series:
        raise ValueError("curve_plot needs at least one series")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.4, 3.8))
    all_x = [x for xs, _ in series.values() for x in xs]
    numeric = all(not math.isnan(_num(x)) for x in all_x)
    cats: list[str] = []
    if not numeric:
        for x in all_x:
            if str(x) not in cats:
                cats.append(str(x))
    for name, (xs, ys) in series.items():
        if numeric:
            xv = np.array([_num(x) for x in xs])
        else:
            xv = np.array([cats.index(str(x)) for x in xs], dtype=float)
        yv = np.array([_num(y) if y is not None else math.nan for y in ys])
        order = np.argsort(xv, kind="stable")
        ax.plot(xv[order], yv[order], marker="o", label=str(name))
    if not numeric:
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels(cats, rotation=30, ha="right")
    for lv in hlines:
        ax.axhline(float(lv), linestyle="--", linewidth=0.8, color="grey")
    if logx and numeric:
        ax.set_xscale("symlog" if min(_num(x) for x in all_x) <= 0 else "log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return save_both(fig, stem)


def heatmap_plot(matrix: Sequence[Sequence[Any]], row_labels: Sequence[str],
                 col_labels: Sequence[str], stem: str | Path, *, xlabel: str, ylabel: str,
                 value_label: str, title: str | None = None, fmt: str = "{:.1f}") -> list[Path]:
    """Annotated heat-map of ``matrix`` (rows × columns; ``None`` cells are blank)."""
    m = np.array([[_num(v) if v is not None else math.nan for v in row] for row in matrix],
                 dtype=float)
    if m.ndim != 2 or m.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"matrix shape {m.shape} does not match {len(row_labels)} row and "
                         f"{len(col_labels)} column labels")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * max(3, len(col_labels)),
                                    1.2 + 0.55 * max(3, len(row_labels))))
    im = ax.imshow(np.ma.masked_invalid(m), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(col_labels)))
    ax.set_xticklabels([str(c) for c in col_labels], rotation=30, ha="right")
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels([str(r) for r in row_labels])
    finite = m[np.isfinite(m)]
    mid = float(finite.mean()) if finite.size else 0.0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if np.isfinite(m[i, j]):
                ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if m[i, j] < mid else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    cb = fig.colorbar(im, ax=ax)
    cb.set_label(value_label)
    if title:
        ax.set_title(title, fontsize=10)
    return save_both(fig, stem)
