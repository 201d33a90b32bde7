"""Figures in the style of the SmoothFool / DeepFool papers (matplotlib, Agg backend).

* :func:`perturbation_grid` — rows: clean images with their predicted labels, adversarial images
  with their predicted labels, and the magnified perturbations (grey = 0).
* :func:`fooling_rate_vs_sigma` — fooling rate against the smoothing σ_g, one line per model
  (SmoothFool Fig. 6), optionally with horizontal level lines (σ^A%).

matplotlib is optional (``pip install 'advsmooth[plot]'``) and imported only when drawing. Both
functions save a PNG at ``path`` (parent folders are created), close the figure and return the
path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .plots_store import _pyplot, save_figure

__all__ = ["perturbation_grid", "fooling_rate_vs_sigma"]


def _np(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype == object:
        raise ValueError(f"{name} must be numeric")
    return arr


def _label(k: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= k < len(class_names):
        return str(class_names[k])
    return str(k)


def _show(ax: Any, img: np.ndarray) -> None:
    """Show one ``C×H×W`` image with values in [0, 1]."""
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.clip(np.transpose(img[:3], (1, 2, 0)), 0.0, 1.0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig: Any, path: str | Path, dpi: int) -> Path:
    """Lay out ``fig``, write it to ``path`` (format from the suffix; folders created), close
    it and return ``Path(path)``."""
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=dpi)[0]


def perturbation_grid(x: Any, x_adv: Any, clean_pred: Any, adv_pred: Any, path: str | Path, *,
                      magnify: float | str = "auto", max_images: int = 8,
                      class_names: Sequence[str] | None = None, title: str | None = None,
                      dpi: int = 100) -> Path:
    """Save a 3-row grid: clean images, adversarial images, magnified perturbations.

    Args:
        x, x_adv: images ``N×C×H×W`` in ``[0, 1]`` (tensors or arrays; C = 1 or 3).
        clean_pred, adv_pred: ``(N,)`` predicted labels on ``x`` and ``x_adv`` (shown above
            each image; an adversarial label that differs from the clean one is drawn in red).
        path: PNG file to write.
        magnify: ``"auto"`` scales each perturbation so that its largest entry fills the grey
            range (``0.5 + r·0.5/max|r|``; the factor is printed under the image), or a number
            ``m`` to show ``clip(0.5 + m·r, 0, 1)`` for every image (the papers' "magnified").
        max_images: number of columns (the first ``max_images`` samples).
        class_names: optional names for the labels.
        title: optional figure title.

    Returns:
        ``Path(path)``.
    """
    xs, xa = _np(x, "x"), _np(x_adv, "x_adv")
    cp, ap = _np(clean_pred, "clean_pred").astype(int), _np(adv_pred, "adv_pred").astype(int)
    if xs.ndim != 4 or xs.shape != xa.shape:
        raise ValueError(f"x and x_adv must both have shape N×C×H×W, got {xs.shape} and {xa.shape}")
    if cp.shape != (xs.shape[0],) or ap.shape != (xs.shape[0],):
        raise ValueError(f"clean_pred and adv_pred must have shape ({xs.shape[0]},)")
    if xs.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {xs.shape[1]}")
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise ValueError(f"max_images must be an integer >= 1, got {max_images!r}")
    if magnify != "auto" and (isinstance(magnify, bool) or not isinstance(magnify, (int, float))
                              or not magnify > 0):
        raise ValueError(f"magnify must be 'auto' or a number > 0, got {magnify!r}")
    k = min(max_images, xs.shape[0])
    if k == 0:
        raise ValueError("no images to draw")
    plt = _pyplot()
    fig, axes = plt.subplots(3, k, figsize=(1.6 * k + 0.8, 5.2), squeeze=False)
    for j in range(k):
        r = (xa[j] - xs[j]).astype(np.float64)
        peak = float(np.abs(r).max())
        if magnify == "auto":
            scale = 0.5 / peak if peak > 0 else 1.0
        else:
            scale = float(magnify)
        _show(axes[0, j], xs[j])
        axes[0, j].set_title(_label(cp[j], class_names), fontsize=10)
        _show(axes[1, j], xa[j])
        changed = ap[j] != cp[j]
        axes[1, j].set_title(_label(ap[j], class_names), fontsize=10,
                             color="red" if changed else "black")
        _show(axes[2, j], np.clip(0.5 + scale * r, 0.0, 1.0))
        axes[2, j].set_title(f"×{scale:.3g}", fontsize=8)
    axes[0, 0].set_ylabel("clean", fontsize=10)
    axes[1, 0].set_ylabel("adversarial", fontsize=10)
    axes[2, 0].set_ylabel("perturbation", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path, dpi)


def fooling_rate_vs_sigma(sigmas: Sequence[float] | Any,
                          rates_by_model: Mapping[str, Sequence[float] | Any],
                          path: str | Path, *, levels: Sequence[float] = (),
                          xlabel: str = "σ_g (pixels)", ylabel: str = "fooling rate",
                          title: str | None = None, logx: bool = False,
                          dpi: int = 100) -> Path:
    """Save a line plot of fooling rate against σ_g (SmoothFool Fig. 6 a–c).

    Args:
        sigmas: the σ grid (shared by all models), or — when the grids differ — ignored per model
            if the model's value is a ``(sigmas, rates)`` pair.
        rates_by_model: ``{model name: fooling rates}`` (fractions in [0, 1], one per σ), or
            ``{model name: (sigmas, rates)}``.
        path: PNG file to write.
        levels: horizontal dashed reference lines (e.g. ``(1.0, 0.2)`` for σ^100% and σ^20%).
        xlabel, ylabel, title: axis labels and title.
        logx: logarithmic σ axis.

    Returns:
        ``Path(path)``.
    """
    if not rates_by_model:
        raise ValueError("rates_by_model must name at least one model")
    grid = _np(sigmas, "sigmas").astype(float).ravel()
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for name, val in rates_by_model.items():
        if isinstance(val, tuple) and len(val) == 2:
            s, r = _np(val[0], "sigmas").astype(float).ravel(), _np(val[1], name).astype(float)
        else:
            s, r = grid, _np(val, name).astype(float).ravel()
        if s.shape != r.shape:
            raise ValueError(f"{name}: {r.size} fooling rates for {s.size} sigma values")
        order = np.argsort(s)
        ax.plot(s[order], r[order], marker="o", label=str(name))
    for lv in levels:
        ax.axhline(float(lv), linestyle="--", linewidth=0.8, color="grey")
        ax.text(ax.get_xlim()[1], float(lv), f" {100 * float(lv):g}%", va="center",
                fontsize=8, color="grey")
    if logx:
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, path, dpi)
