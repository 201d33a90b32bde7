"""Figures drawn from the store artefacts of planned study steps (``kind = "artefact"`` plots).

A planned study (see :mod:`advsmooth.experiments.artefacts`) keeps each step's tensors — a
decision-boundary map, saliency maps — as a hashed artefact of the experiment directory. A plot
``{kind = "artefact", source = LABEL, step = KIND, where = {...}}`` draws one figure per step of
kind ``KIND`` in the plans of the study cells labelled ``LABEL`` whose settings match ``where``;
the drawing function is chosen by the step kind (:data:`DRAWERS`). Artefacts are read with
:class:`~advsmooth.experiments.artefacts.Artefacts` in read-only mode (hash checked, no
unpickling).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..experiments.artefacts import StepOutput
from . import transfer_plots
from .plots_store import file_stem

__all__ = ["DRAWERS", "artefact_figures"]


def _boundary(out: StepOutput, path: Path, title: str | None) -> None:
    """Figure 3b / 9 of the transfer study: the decision-boundary maps of the step's models."""
    t, info = out.tensors, out.info
    dbm = SimpleNamespace(
        labels={k: t["labels"][i].numpy() for i, k in enumerate(info["models"])},
        u=t["u"].numpy(), v=t["v"].numpy(), y=int(info["y"]), sign=bool(info["sign"]))
    suffix = " (sign)" if dbm.sign else ""
    transfer_plots.plot_decision_boundary(
        dbm, path=path, title=title or "decision boundaries in the (G, h) plane of "
                                       f"{info.get('source', 'the source')}{suffix}")


def _saliency(out: StepOutput, path: Path, title: str | None) -> None:
    """Figure 6 of the transfer study: image, saliency of g and of G^(m) per m."""
    t, info = out.tensors, out.info
    cols = [("image", t["image"]), ("plain gradient $g$", t["plain"])] + [
        (f"$G^{{({m})}}$", t[f"m{m}"]) for m in info["ms"]]
    transfer_plots.plot_saliency_grid(
        cols, info["labels"], path=path,
        title=title or f"{info['source']}: saliency |G^(m)| of the smoothed gradient, "
                       f"σ = {info['sigma']:g} (pixels); each panel scaled to its maximum")


def _model_factors(out: StepOutput, path: Path, title: str | None) -> None:
    """Figure 1 of the transfer study: source test error vs #params, coloured by transfer."""
    rows, target = out.rows, out.info.get("target", "target")
    transfer_plots.plot_model_factors(
        [r["source"] for r in rows], [r["test_error"] for r in rows],
        [r["params"] for r in rows], [r["igsm_success"] for r in rows], target=target,
        path=path, title=title or f"IGSM (T=5) transfer to {target}")


#: step kind -> function drawing its artefact into a PNG ``path`` (with an optional title)
DRAWERS: dict[str, Callable[[StepOutput, Path, str | None], None]] = {
    "transfer.boundary": _boundary,
    "transfer.fig6": _saliency,
    "transfer.fig1": _model_factors,
}


def artefact_figures(out_dir: Path, cells: Sequence[Mapping[str, Any]], plot: Mapping[str, Any],
                     fig_dir: Path, unique: Callable[[str], str]
                     ) -> list[tuple[str, str, list[Path]]]:
    """Draw the figures of one ``kind = "artefact"`` plot into ``fig_dir`` (``NAME.png``, the
    name made unique by ``unique``); returns ``(name, caption, [png])`` per figure. A step
    without a valid artefact (not run yet, or its file changed) is skipped."""
    kind = plot["step"]
    if kind not in DRAWERS:
        raise ValueError(f"no drawing for artefacts of step kind {kind!r}; expected one of "
                         f"{sorted(DRAWERS)}")
    from .study_figures import study_step_outputs

    base = file_stem(plot.get("name") or f"{plot['source']}_{kind}")
    drawn: list[tuple[str, str, list[Path]]] = []
    for out in study_step_outputs(out_dir, cells, plot["source"], kind, plot.get("where")):
        fig_dir.mkdir(parents=True, exist_ok=True)
        name = unique(base)
        DRAWERS[kind](out, fig_dir / f"{name}.png", plot.get("title"))
        drawn.append((name, plot.get("title") or f"{plot['source']}: {kind}",
                      [fig_dir / f"{name}.png"]))
    return drawn
