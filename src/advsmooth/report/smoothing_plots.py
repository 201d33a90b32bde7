"""Plots of the smoothed-inference study (the smoothing paper's Figs 1, 2, B.1 and B.3 analogues).

Every function takes the rows produced by :mod:`advsmooth.studies.smoothing` and writes one PNG
(matplotlib with the Agg backend, imported lazily; install ``advsmooth[plot]``). Returns the path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._utils import atomic_path, optional_import

__all__ = ["plot_sigma_sweep", "plot_samples_sweep", "plot_budget"]


def _plt() -> Any:
    mpl = optional_import("matplotlib")
    mpl.use("Agg")
    return optional_import("matplotlib.pyplot")


def _panels(plt: Any, k: int) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(1, k, figsize=(5.0 * k, 4.0), squeeze=False)
    return fig, list(axes[0])


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def plot_sigma_sweep(rows: Sequence[dict[str, Any]], path: str | Path, *,
                     vote: str = "prediction", title: str | None = None) -> Path:
    """Accuracy vs σ, one line per M, one panel per input set (clean, attacked): Figs 1/2/B.1.

    ``rows``: dicts with ``input``, ``vote``, ``sigma``, ``M``, ``acc_mean``, ``acc_std``.
    """
    plt = _plt()
    sel = [r for r in rows if r["vote"] == vote]
    if not sel:
        raise ValueError(f"no rows with vote={vote!r}")
    inputs = list(dict.fromkeys(r["input"] for r in sel))
    ms = sorted({r["M"] for r in sel})
    cmap = plt.get_cmap("viridis")
    fig, axes = _panels(plt, len(inputs))
    for ax, inp in zip(axes, inputs):
        for i, m in enumerate(ms):
            pts = sorted((r["sigma"], r["acc_mean"], r["acc_std"]) for r in sel
                         if r["input"] == inp and r["M"] == m)
            if not pts:
                continue
            s, a, e = zip(*pts)
            ax.errorbar(s, [100 * v for v in a], yerr=[100 * v for v in e], marker="o", ms=3,
                        capsize=2, color=cmap(i / max(1, len(ms) - 1)), label=f"M = {m}")
        ax.set_xlabel("σ (noise std)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{inp} inputs, {vote} smoothing")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    return _save(fig, plt, path)


def plot_samples_sweep(rows: Sequence[dict[str, Any]], path: str | Path, *,
                       vote: str | None = None, title: str | None = None) -> Path:
    """Accuracy vs M (log₂ axis), one line per σ, one panel per input set."""
    plt = _plt()
    votes = list(dict.fromkeys(r["vote"] for r in rows))
    vote = vote or ("prediction" if "prediction" in votes else votes[0])
    sel = [r for r in rows if r["vote"] == vote]
    inputs = list(dict.fromkeys(r["input"] for r in sel))
    sigmas = sorted({r["sigma"] for r in sel})
    cmap = plt.get_cmap("plasma")
    fig, axes = _panels(plt, len(inputs))
    for ax, inp in zip(axes, inputs):
        for i, s in enumerate(sigmas):
            pts = sorted((r["M"], r["acc_mean"], r["acc_std"]) for r in sel
                         if r["input"] == inp and r["sigma"] == s)
            m, a, e = zip(*pts)
            ax.errorbar(m, [100 * v for v in a], yerr=[100 * v for v in e], marker="o", ms=3,
                        capsize=2, color=cmap(i / max(1, len(sigmas) - 1) * 0.9),
                        label=f"σ = {s:g}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("M (noisy samples at inference)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{inp} inputs, {vote} smoothing")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, plt, path)


def plot_budget(rows: Sequence[dict[str, Any]], path: str | Path, *,
                title: str | None = None) -> Path:
    """Accuracy of the smoothed classifier vs the attack budget k×M (Fig. B.3 analogue).

    One panel per inference M, one line per attack (PGD, EPGD, SmoothAdv-PGD).
    ``rows``: dicts with ``attack``, ``budget``, ``M``, ``acc_mean``, ``acc_std``.
    """
    plt = _plt()
    ms = sorted({r["M"] for r in rows})
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    names = {"pgd": "PGD", "epgd": "EPGD", "smoothadv": "SmoothAdv-PGD"}
    fig, axes = _panels(plt, len(ms))
    for ax, m in zip(axes, ms):
        for a in attacks:
            pts = sorted((r["budget"], r["acc_mean"], r["acc_std"]) for r in rows
                         if r["M"] == m and r["attack"] == a)
            if not pts:
                continue
            b, acc, e = zip(*pts)
            ax.errorbar(b, [100 * v for v in acc], yerr=[100 * v for v in e], marker="o",
                        ms=3, capsize=2, label=names.get(a, a))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("attack budget k×M (gradient evaluations per image)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"smoothed classifier, inference M = {m}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, plt, path)
