"""The ``evaluate`` study task: :func:`advsmooth.metrics.evaluation.evaluate` as a spec cell.

Samples are independent, so an evaluation is split into ``shards`` equal slices of the selected
samples, one cell per slice (``grid = { shard = [0, 1, ..., shards - 1] }``). Cells are what the
runner distributes over ``torchrun`` processes and what it resumes after a kill; each cell's
randomness comes from its own seed (the spec seed and the cell's parameters), so one process,
two processes and a resumed run give the same rows. Example::

    name = "evaluate-mnist"
    seed = 0
    [[studies]]
    task = "evaluate"
    grid = { shard = [0, 1, 2, 3] }
    [studies.params]
    model = "mnist-lenet-pgd"
    dataset = "mnist"
    n = 500
    norm = "inf"
    eps = [0.1, 0.2, 0.3, 0.4]
    shards = 4

``model`` is a zoo name, a saved model or ``package.module:factory``; ``checkpoint`` (a state
dict, loaded with ``weights_only=True``) replaces its weights.

Rows: one per ε of each shard: ``shard, eps, n, correct, robust, pgd_robust``,
``fooled_<stage>`` (samples each stage fooled first), ``deepfool_within`` (correctly classified
samples with DeepFool ‖r‖ ≤ ε); the store keeps each cell's time. Counts add up over shards;
:func:`combine_rows` gives robust accuracy per ε.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..metrics.evaluation import STAGES, evaluate, stage_names
from .tasks import StudyContext, check_params, register_task

__all__ = ["combine_rows"]

_KEYS = ("model", "checkpoint", "dataset", "split", "n", "sample", "data_seed", "norm", "eps",
         "shards", "shard", "stages", "pgd_steps", "apgd_steps", "apgd_restarts", "apgd_targets",
         "fab_steps", "fab_targets", "square_queries", "square_all", "batch_size", "deepfool")
_INTS = (("n", 1), ("sample", 1), ("data_seed", 0), ("shards", 1), ("shard", 0),
         ("pgd_steps", 1), ("apgd_steps", 1), ("apgd_restarts", 1), ("apgd_targets", 1),
         ("fab_steps", 1), ("fab_targets", 1), ("square_queries", 1), ("batch_size", 1))


def _check(p: dict[str, Any]) -> None:
    check_params(p, _KEYS, ("model", "dataset", "eps"), _INTS)
    eps = p["eps"] if isinstance(p["eps"], list) else [p["eps"]]
    if not eps or any(isinstance(e, bool) or not isinstance(e, int | float) or e < 0
                      or not math.isfinite(e) for e in eps):
        raise ValueError(f"eps must be a number >= 0 or a list of them, got {p['eps']!r}")
    for key in ("square_all", "deepfool"):
        if not isinstance(p.get(key, False), bool):
            raise ValueError(f"{key} must be true or false, got {p[key]!r}")
    shards = p.get("shards", 1)
    if p.get("shard", 0) >= shards:
        raise ValueError(f"shard must be in [0, {shards - 1}], got {p.get('shard')}")
    stage_names(p.get("norm", "inf"), p.get("stages", "standard"))
    from ..models.byo import is_factory_spec

    if p.get("checkpoint") is not None and not isinstance(p["checkpoint"], str):
        raise ValueError(f"checkpoint must be a path, got {p['checkpoint']!r}")
    if not is_factory_spec(p["model"]) and ":" not in p["model"] and \
            not p["model"].endswith((".pt", ".pth")):
        from .. import models

        models.spec(p["model"])


def _evaluate(p: dict[str, Any], ctx: StudyContext) -> list[dict[str, Any]]:
    kw: dict[str, Any] = {}
    if p.get("sample") is not None:
        kw = {"sample": p["sample"], "seed": p.get("data_seed", 0)}
    elif p.get("n") is not None:
        kw = {"n": p["n"]}
    x, y = ctx.load_data(p["dataset"], p.get("split", "test"), **kw)
    shards, shard = p.get("shards", 1), p.get("shard", 0)
    total = x.shape[0]
    lo, hi = shard * total // shards, (shard + 1) * total // shards
    x, y = x[lo:hi], y[lo:hi]
    eps = p["eps"] if isinstance(p["eps"], list) else [p["eps"]]
    if x.shape[0] == 0:
        return [{"shard": shard, "eps": float(e), "n": 0, "correct": 0, "robust": 0,
                 "pgd_robust": 0} for e in sorted(set(eps))]
    from ..models.byo import check_input_shape, is_factory_spec, load_factory

    if is_factory_spec(p["model"]):
        model = load_factory(p["model"], checkpoint=p.get("checkpoint"), device=ctx.device)
    elif p.get("checkpoint") is not None:
        from .. import models

        model = models.load(p["model"], checkpoint=p["checkpoint"], device=ctx.device)
    else:
        model = ctx.load_model(p["model"])
    check_input_shape(model, x, name=f"model {p['model']}")
    rep = evaluate(model, x, y, norm=p.get("norm", "inf"), eps=eps,
                   stages=p.get("stages", "standard"), pgd_steps=p.get("pgd_steps", 20),
                   apgd_steps=p.get("apgd_steps", 100), apgd_restarts=p.get("apgd_restarts", 1),
                   apgd_targets=p.get("apgd_targets", 3), fab_steps=p.get("fab_steps", 100),
                   fab_targets=p.get("fab_targets", 3),
                   square_queries=p.get("square_queries", 2000),
                   square_all=p.get("square_all", False),
                   deepfool=p.get("deepfool", True), batch_size=p.get("batch_size", 128),
                   seed=ctx.seed % (2**31), progress_bar=ctx.progress)
    n = rep.n
    correct = round(rep.clean_accuracy * n)
    within = rep.deepfool.get("fraction_within", {})
    rows = []
    for i, e in enumerate(rep.eps):
        row: dict[str, Any] = {"shard": shard, "eps": e, "n": n, "correct": correct,
                               "robust": int(rep.robust[i].sum()),
                               "pgd_robust": _count(rep.pgd_robust_accuracy[e], n)}
        for si, name in enumerate(rep.stage_list):
            row[f"fooled_{name}"] = int((rep.fooled_by[i] == si).sum())
        if "square" in rep.stage_list:  # survivors Square left after a batch that fooled nobody
            row["square_not_attacked"] = sum(st.get("not_attacked", 0) for st in rep.stages
                                             if st["eps"] == e and st["stage"] == "square")
        if within:
            row["deepfool_within"] = round(within[e] * n)
        rows.append(row)
    return rows


def _count(fraction: float | None, n: int) -> int | None:
    """A fraction of ``n`` samples as a count (``None``: the stage did not run)."""
    return None if fraction is None else round(fraction * n)


def combine_rows(rows: Sequence[dict[str, Any]]) -> dict[float, dict[str, float | None]]:
    """Robust accuracy (and PGD-CE's: ``None`` where the stages left it out) per ε from the
    rows of every shard: ``{eps: {"n", "clean_accuracy", "robust_accuracy",
    "pgd_robust_accuracy"}}``."""
    acc: dict[float, dict[str, Any]] = {}
    for r in rows:
        a = acc.setdefault(float(r["eps"]), {"n": 0, "correct": 0, "robust": 0, "pgd_robust": 0})
        for k in ("n", "correct", "robust", "pgd_robust"):
            a[k] = None if a[k] is None or r[k] is None else a[k] + r[k]

    def frac(k: int | None, n: int) -> float | None:
        return None if k is None else k / n if n else math.nan

    return {e: {"n": a["n"], "clean_accuracy": frac(a["correct"], a["n"]),
                "robust_accuracy": frac(a["robust"], a["n"]),
                "pgd_robust_accuracy": frac(a["pgd_robust"], a["n"])}
            for e, a in sorted(acc.items())}


register_task("evaluate", _evaluate, check=_check,
              description="robust accuracy over an eps grid (cascade of attacks), sharded: "
                          f"stages {', '.join(STAGES)}")
