"""Plots of the transferability study (sg transfer paper Figures 1, 3, 5; matplotlib, Agg backend).

Every function takes the metric object (or plain arrays), draws one figure with labelled axes and
a legend/colour bar, saves it as PNG when ``path`` is given, and returns the matplotlib
``Figure`` (closed after saving, so call sites do not leak figures). matplotlib is optional
(``pip install 'advsmooth[plot]'``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._utils import optional_import
from .plots_store import _pyplot, save_figure

__all__ = [
    "plot_transfer_matrix",
    "plot_destruction_curves",
    "plot_gradient_similarity",
    "plot_decision_boundary",
    "plot_model_factors",
    "plot_success_curves",
    "plot_saliency_grid",
]


def _finish(fig: Any, path: str | os.PathLike[str] | None, layout: bool = True,
            **savefig: Any) -> Any:
    if layout:
        fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=120, **savefig)
    return fig


def plot_transfer_matrix(tm: Any, metric: str = "top1", *, title: str | None = None,
                         path: str | os.PathLike[str] | None = None) -> Any:
    """Heat-map of a :class:`~advsmooth.metrics.TransferMatrix` (success in %, white-box cells
    hatched and annotated with ``*``)."""
    plt = _pyplot()
    mat = tm.matrix(metric) * 100
    s, t = mat.shape
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * t, 1.0 + 0.8 * s))
    im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i in range(s):
        for j in range(t):
            v = mat[i, j]
            txt = "nan" if np.isnan(v) else f"{v:.1f}" + ("*" if tm.white_box[i, j] else "")
            ax.text(j, i, txt, ha="center", va="center",
                    color="white" if (np.isnan(v) or v < 60) else "black", fontsize=9)
            if tm.white_box[i, j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//",
                                           edgecolor="grey", linewidth=0))
    ax.set_xticks(range(t), tm.targets, rotation=30, ha="right")
    ax.set_yticks(range(s), tm.sources)
    ax.set_xlabel("target model")
    ax.set_ylabel("source model")
    kind = "targeted" if tm.targeted else "untargeted"
    ax.set_title(title or f"{kind} {metric} transfer success (%), n={tm.n}", fontsize=10)
    fig.colorbar(im, ax=ax, label="success rate (%)")
    return _finish(fig, path)


_KIND_LABEL = {"rotation": "rotation angle (degrees)", "noise": "Gaussian noise std (pixels)",
               "blur": "Gaussian blur σ (pixels)", "jpeg": "JPEG quality"}


def plot_destruction_curves(curves: Mapping[str, Sequence[float]], strengths: Sequence[float],
                            kind: str, *, title: str | None = None,
                            path: str | os.PathLike[str] | None = None) -> Any:
    """Destruction rate vs transform strength, one line per attack (``{name: rates}``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    xs = np.asarray(strengths, dtype=float)
    if kind == "noise":
        xs = xs * 255
    for name, rates in curves.items():
        style = "--" if name.startswith("sg-") else "-"
        ax.plot(xs, np.asarray(rates, dtype=float) * 100, style, marker="o", ms=3, label=name)
    if kind == "jpeg":
        ax.invert_xaxis()
    ax.set_xlabel(_KIND_LABEL.get(kind, kind) + (" ×255" if kind == "noise" else ""))
    ax.set_ylabel("destruction rate (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"destruction rate under {kind}", fontsize=10)
    return _finish(fig, path)


def plot_gradient_similarity(sims: Mapping[str, Any] | Any, *, title: str | None = None,
                             path: str | os.PathLike[str] | None = None) -> Any:
    """Mean ``cos(G_A^{(m)}, g_B)`` vs ``m`` (log x-axis) for one or several
    :class:`~advsmooth.metrics.GradientSimilarity` (``{pair name: result}``); dotted lines mark
    the plain-gradient baselines ``cos(g_A, g_B)``."""
    plt = _pyplot()
    if not isinstance(sims, Mapping):
        sims = {"A→B": sims}
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for i, (name, gs) in enumerate(sims.items()):
        color = f"C{i}"
        ax.plot(gs.ms, gs.mean, marker="o", ms=3, color=color,
                label=f"{name}: sg, σ={gs.sigma:.3g}")
        ax.axhline(gs.baseline, ls=":", color=color, label=f"{name}: plain gradient")
    ax.set_xscale("log")
    ax.set_xlabel("number of samples m")
    ax.set_ylabel("cosine similarity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or "cos(G_A^(m), g_B) vs m", fontsize=10)
    return _finish(fig, path)


def plot_decision_boundary(dbm: Any, *, title: str | None = None, num_classes: int = 10,
                           path: str | os.PathLike[str] | None = None) -> Any:
    """One panel per target model: predicted class on the ``(u, v)`` plane; the clean image at the
    origin (white cross); the true class region outlined."""
    plt = _pyplot()
    colors = optional_import("matplotlib.colors")
    names = list(dbm.labels)
    cols = min(len(names), 5)
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols + 1.2, 3.3 * rows), squeeze=False)
    fig.subplots_adjust(hspace=0.45, wspace=0.3)  # titles and axis labels of the rows apart
    cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20", num_classes)
    norm = colors.BoundaryNorm(np.arange(-0.5, num_classes + 0.5), num_classes)
    scale = 255.0
    ext = [dbm.u[0] * scale, dbm.u[-1] * scale, dbm.v[0] * scale, dbm.v[-1] * scale]
    im = None
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        lab = dbm.labels[name]
        im = ax.imshow(lab, origin="lower", extent=ext, cmap=cmap, norm=norm,
                       interpolation="nearest", aspect="auto")
        ax.contour(np.linspace(ext[0], ext[1], lab.shape[1]),
                   np.linspace(ext[2], ext[3], lab.shape[0]), (lab == dbm.y).astype(float),
                   levels=[0.5], colors="k", linewidths=0.8)
        ax.plot([0], [0], "wx", ms=8, mew=2)
        ax.set_title(name, fontsize=9)
        d1 = "sign(G_A)" if dbm.sign else "Ĝ_A (smoothed gradient)"
        d2 = "sign(h_A)" if dbm.sign else "ĥ_A (orthogonal part of g_A)"
        ax.set_xlabel(f"u along {d1} (×1/255)", fontsize=8)
        if k % cols == 0:
            ax.set_ylabel(f"v along {d2} (×1/255)", fontsize=8)
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes, ticks=range(num_classes), label="predicted class",
                     fraction=0.03)
    fig.suptitle(title or f"decision boundaries around one image (true class {dbm.y})",
                 fontsize=10)
    return _finish(fig, path, layout=False, bbox_inches="tight")


def plot_model_factors(names: Sequence[str], errors: Sequence[float], params: Sequence[float],
                       success: Sequence[float], *, target: str = "target",
                       title: str | None = None,
                       path: str | os.PathLike[str] | None = None) -> Any:
    """Seed 001 Figure 1: x = top-1 test error (%), y = number of parameters (log), colour and
    marker size = transfer success (%) of each source model against ``target``."""
    plt = _pyplot()
    err = np.asarray(errors, dtype=float)
    par = np.asarray(params, dtype=float)
    suc = np.asarray(success, dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    sc = ax.scatter(err, par, c=suc, s=30 + 3 * np.nan_to_num(suc), cmap="plasma", vmin=0,
                    vmax=max(100.0, float(np.nanmax(suc)) if suc.size else 100.0),
                    edgecolors="k", linewidths=0.5)
    for n_, e_, p_ in zip(names, err, par):
        ax.annotate(n_, (e_, p_), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("top-1 test error (%)")
    ax.set_ylabel("number of parameters")
    ax.grid(alpha=0.3)
    fig.colorbar(sc, ax=ax, label=f"transfer success to {target} (%)")
    ax.set_title(title or f"source model factors vs transfer to {target}", fontsize=10)
    return _finish(fig, path)


def plot_success_curves(xs: Sequence[float], curves: Mapping[str, Sequence[float]], *,
                        xlabel: str, ylabel: str = "transfer success (%)",
                        title: str | None = None,
                        path: str | os.PathLike[str] | None = None) -> Any:
    """Success rate (%) vs a swept parameter, one line per setting (sg transfer paper Figure 4)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, vals in curves.items():
        ax.plot(list(xs), list(vals), marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or ylabel, fontsize=10)
    return _finish(fig, path)


def plot_saliency_grid(cols: Sequence[tuple[str, Any]], labels: Sequence[int], *,
                       title: str | None = None,
                       path: str | os.PathLike[str] | None = None) -> Any:
    """A grid of maps: one column per ``(name, maps)`` (``maps``: ``(rows, H, W)``), one row per
    image (``labels``: its class). The first column is shown on [0, 1] as it is (the image), every
    other panel scaled to its maximum (saliency maps, paper Figure 6)."""
    plt = _pyplot()
    rows = len(labels)
    fig, axes = plt.subplots(rows, len(cols), figsize=(1.45 * len(cols), 1.5 * rows + 0.5),
                             squeeze=False)
    for j, (name, maps) in enumerate(cols):
        for i in range(rows):
            ax = axes[i][j]
            im = np.asarray(maps[i], dtype=np.float64)
            if j > 0:  # saliency: each panel normalised to [0, 1]
                im = im / max(float(im.max()), 1e-300)
            ax.imshow(im, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"label {labels[i]}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _finish(fig, path, layout=False)
