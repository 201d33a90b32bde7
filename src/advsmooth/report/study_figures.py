"""Report figures of planned studies, drawn from their rows and step artefacts (PNG + SVG).

* ``bars`` (:func:`bar_plot`): grouped bars of some numeric row fields (``values``), one bar per
  selected row labelled by its ``hue`` fields — e.g. SmoothFool Table 3: the fooling rate of every
  attack, one bar per defence.
* ``step_images`` (:func:`image_grid`): the images a study step stored as an artefact (tensor
  ``images``, ``N×C×H×W`` in [0, 1], captions in the step's ``info["titles"]``, a figure title in
  ``info["title"]``) — e.g. the DeepFool paper's Fig. 8 (a "1" with its perturbation magnified).
  The step is found by recomputing the study's plan from the cell's task, parameters and seed; its
  artefact is read back only after its sha256 matches the store
  (:class:`~advsmooth.experiments.artefacts.Artefacts` opened read-only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .plots_store import _num, _pyplot, save_both
from .tables import _study_cells, study_rows_for

__all__ = ["bar_plot", "image_grid", "study_step_outputs", "study_figure"]


def bar_plot(groups: Sequence[str], series: Mapping[str, Sequence[Any]], stem: str | Path, *,
             ylabel: str, title: str | None = None) -> list[Path]:
    """Grouped bars: for every group (x tick) one bar per series ``{legend label: values}``
    (``values[j]`` belongs to ``groups[j]``; None/NaN draws no bar)."""
    if not series or not groups:
        raise ValueError("bar_plot needs at least one series and one group")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.4, 1.2 * len(groups) + 2), 3.8))
    width = 0.8 / len(series)
    for i, (label, vals) in enumerate(series.items()):
        ys = [_num(v) if v is not None else math.nan for v in vals]
        ax.bar([j + i * width for j in range(len(groups))], ys, width, label=str(label))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([str(g) for g in groups])
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save_both(fig, stem)


def image_grid(images: Any, stem: str | Path, *, titles: Sequence[str] = (),
               title: str | None = None) -> list[Path]:
    """One row of images (``N×C×H×W`` in [0, 1]; grey for one channel) with their captions."""
    arr = np.asarray(images.detach().cpu().numpy() if hasattr(images, "detach") else images,
                     dtype=float)
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise ValueError(f"image_grid needs N×C×H×W images, got shape {arr.shape}")
    plt = _pyplot()
    n = arr.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(1.8 * n, 2.3), squeeze=False)
    for k, ax in enumerate(axes[0]):
        img = np.clip(arr[k].transpose(1, 2, 0), 0.0, 1.0)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        if k < len(titles):
            ax.set_title(str(titles[k]), fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_both(fig, stem)


def study_step_outputs(out_dir: str | Path, cells: Sequence[Mapping[str, Any]], source: str,
                       kind: str, where: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """The stored outputs (:class:`~advsmooth.experiments.artefacts.StepOutput`) of the steps
    of kind ``kind`` (whose settings match ``where``) in the plans of the study cells labelled
    ``source`` (missing or invalid artefacts are skipped)."""
    from ..experiments.artefacts import Artefacts, plan_order
    from ..experiments.tasks import cell_plan

    arts = Artefacts(out_dir, readonly=True)
    try:
        for c in _study_cells(cells, source):
            for s, _ in plan_order(cell_plan(c) or []):
                if s.kind != kind or any(s.settings.get(k) != v
                                         for k, v in (where or {}).items()):
                    continue
                out = arts.load(s)
                if out is not None:
                    yield out
    finally:
        arts.close()


def study_figure(p: Mapping[str, Any], store: Any, out_dir: Path, fig_dir: Path,
                 cells: Sequence[Mapping[str, Any]], unique: Callable[[str], str]
                 ) -> list[tuple[str, str, list[Path]]]:
    """The figures ``(name, caption, files)`` of plot ``p`` of kind ``bars`` or
    ``step_images`` of the study labelled ``p["source"]``."""
    source = p["source"]
    if p["kind"] == "step_images":
        out = []
        for k, art in enumerate(study_step_outputs(out_dir, cells, source, p["step"])):
            if "images" not in art.tensors:
                continue
            name = unique(p.get("name") or f"{source}_{p['step']}".replace(".", "_"))
            files = image_grid(art.tensors["images"], fig_dir / name,
                               titles=art.info.get("titles", ()), title=art.info.get("title"))
            out.append((name, p.get("title") or f"{source}: {p['step']} ({k})", files))
        return out
    rows = study_rows_for(store, cells, source, p.get("where"))
    values, hue = list(p["values"]), list(p.get("hue") or [])
    factor = 100.0 if p.get("percent") else 1.0
    series = {" ".join(str(r.get(h)) for h in hue) or str(i):
              [_num(r.get(v)) * factor for v in values] for i, r in enumerate(rows)}
    if not series:
        return []
    name = unique(p.get("name") or f"{source}_bars")
    ylabel = p.get("ylabel") or ("value (%)" if factor != 1.0 else "value")
    return [(name, p.get("title") or f"{source}: {', '.join(values)}",
             bar_plot(values, series, fig_dir / name, ylabel=ylabel, title=p.get("title")))]
