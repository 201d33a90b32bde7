"""The one summary of attack results: per-sample columns in, aggregate numbers out.

Everything that reports attack results goes through :func:`summarize`:
:meth:`AttackResult.summary <advsmooth.attacks.base.AttackResult.summary>`, the experiment
store's cell summaries (``advsmooth.experiments.store.summarize``), ``advsmooth attack``'s
table and the report tables. It works on plain per-sample columns, so a summary computed from
a result in memory and one recomputed from the rows of a result store are the same numbers.

Sets of images (``N`` = all images given):

* **attacked** — images the attack had to work on: correctly classified ones (untargeted), or
  those not already predicted as their target (targeted). The others are *skipped*.
* **successful** — attacked images whose adversarial prediction is wrong (untargeted) or the
  target (targeted).

Rates are over attacked images; norms, ρ and roughness over successful ones; iterations and the
per-image costs (forward and gradient evaluations) over **attacked** images — one denominator
for every cost, which table headers state as "/ attacked image". Undefined values (an empty
set) are NaN.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["result_columns", "summarize", "SUMMARY_KEYS"]

#: keys of :func:`summarize`, in display order
SUMMARY_KEYS = ("n", "attacked", "skipped", "accuracy", "adv_accuracy", "success_rate",
                "rho_adv", "rho_inf", "mean_l2", "median_l2", "mean_linf", "median_linf",
                "omega", "omega_n", "iterations", "forward_evals", "grad_evals", "seconds")


def result_columns(result: Any) -> dict[str, np.ndarray]:
    """Per-sample columns (numpy, length ``N``) of an :class:`~advsmooth.attacks.AttackResult`.

    ``label``, ``clean_pred``, ``adv_pred``, ``success`` (int64), ``target`` (targeted attacks
    only), ``l2``, ``linf`` (norms of ``r = x_adv − x``), ``x_l2``, ``x_linf`` (of the clean
    input), ``iterations``, ``forward_evals``, ``grad_evals`` (int64).
    """
    r = (result.x_adv - result.x).detach().flatten(1).double()
    xf = result.x.detach().flatten(1).double()
    n = r.shape[0]

    def amax(t: Any) -> Any:
        return t.abs().amax(dim=1) if t.shape[1] else t.new_zeros(n)

    def ints(t: Any) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.int64)

    cols = {
        "label": ints(result.labels), "clean_pred": ints(result.clean_pred),
        "adv_pred": ints(result.adv_pred), "success": ints(result.success),
        "l2": r.norm(dim=1).cpu().numpy(), "linf": amax(r).cpu().numpy(),
        "x_l2": xf.norm(dim=1).cpu().numpy(), "x_linf": amax(xf).cpu().numpy(),
        "iterations": ints(result.iterations), "forward_evals": ints(result.forward_evals),
        "grad_evals": ints(result.grad_evals),
    }
    if result.target is not None:
        cols["target"] = ints(result.target)
    return cols


def _mean(v: Any, mask: np.ndarray) -> float:
    a = np.asarray(v, dtype=np.float64)[mask]
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def _median(v: Any, mask: np.ndarray) -> float:
    a = np.asarray(v, dtype=np.float64)[mask]
    return float(np.median(a)) if a.size else float("nan")


def summarize(cols: Mapping[str, Any], seconds: float | None = None) -> dict[str, float]:
    """Aggregate numbers of an attack from its per-sample columns (see the module docstring).

    Args:
        cols: ``label``, ``clean_pred``, ``adv_pred``, ``success``, ``l2``, ``linf``, ``x_l2``,
            ``x_linf``, ``iterations``, ``forward_evals``, ``grad_evals``; optional ``target``
            (targeted attacks), ``omega`` and ``omega_n`` (roughness of ``r``).
        seconds: wall-clock seconds of the attack (reported as ``seconds``; NaN when None).

    Returns:
        A dict with the keys of :data:`SUMMARY_KEYS`: counts ``n``, ``attacked``, ``skipped``;
        ``accuracy`` and ``adv_accuracy`` (fractions of all images); ``success_rate`` (fraction
        of attacked images); ``rho_adv`` (mean ‖r‖₂/‖x‖₂), ``rho_inf``, ``mean_l2``,
        ``median_l2``, ``mean_linf``, ``median_linf``, ``omega``, ``omega_n`` (over successful
        images); ``iterations``, ``forward_evals``, ``grad_evals`` (means per attacked image);
        ``seconds``. NaN where the set is empty or a column is absent.
    """
    label = np.asarray(cols["label"])
    n = int(label.shape[0])
    clean = np.asarray(cols["clean_pred"])
    adv = np.asarray(cols["adv_pred"])
    success = np.asarray(cols["success"]).astype(bool)
    target = cols.get("target")
    attacked = clean == label if target is None else clean != np.asarray(target)
    ok = attacked & success
    nan = np.full(n, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.asarray(cols["l2"], np.float64) / np.asarray(cols["x_l2"], np.float64)
        rho_inf = np.asarray(cols["linf"], np.float64) / np.asarray(cols["x_linf"], np.float64)
    return {
        "n": float(n),
        "attacked": float(attacked.sum()),
        "skipped": float(n - attacked.sum()),
        "accuracy": float((clean == label).mean()) if n else float("nan"),
        "adv_accuracy": float((adv == label).mean()) if n else float("nan"),
        "success_rate": float(success[attacked].mean()) if attacked.any() else float("nan"),
        "rho_adv": _mean(rho, ok),
        "rho_inf": _mean(rho_inf, ok),
        "mean_l2": _mean(cols["l2"], ok),
        "median_l2": _median(cols["l2"], ok),
        "mean_linf": _mean(cols["linf"], ok),
        "median_linf": _median(cols["linf"], ok),
        "omega": _mean(cols.get("omega", nan), ok),
        "omega_n": _mean(cols.get("omega_n", nan), ok),
        "iterations": _mean(cols["iterations"], attacked),
        "forward_evals": _mean(cols["forward_evals"], attacked),
        "grad_evals": _mean(cols["grad_evals"], attacked),
        "seconds": float("nan") if seconds is None else float(seconds),
    }
