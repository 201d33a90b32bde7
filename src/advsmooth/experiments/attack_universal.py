"""The ``universal_attack`` study: one universal perturbation fitted and evaluated, as one step.

``advsmooth attack uap|smooth-uap`` runs this study as a one-cell spec, so a universal attack's
output is a result store (and report) like every run's. The step fits ``v`` on ``fit_n`` images
of ``fit_split`` and evaluates it on ``n`` images of ``split`` — a seeded random selection; when
the two splits are the same, the fit images are the next ``fit_n`` of the same permutation, so
they are disjoint from the evaluated ones. Its row is the summary (fooling rates, ‖v‖, Ω of v,
passes, evaluations per fit image, fit time); its artefact holds ``v`` and the evaluated images.

Parameters: ``dataset``, ``split`` ("test"), ``n`` (0 = all), ``seed``, ``fit_split``
("train"), ``fit_n`` (200), ``batch_size`` (128), ``model``, ``attack`` ("uap" or
"smooth-uap") and ``attack_params`` (keyword parameters of the registry entry).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from .artefacts import Step, StepOutput, register_step
from .tasks import check_params, register_task

__all__ = ["STEP_KIND", "select", "universal_step"]

STEP_KIND = "attack.universal"
_KEYS = ("dataset", "split", "n", "seed", "fit_split", "fit_n", "batch_size", "model", "attack",
         "attack_params")


def select(total: int, n: int, seed: int, offset: int = 0) -> Tensor:
    """Seeded random indices ``perm[offset : offset + n]``, sorted (``n = 0``: all after
    ``offset``): :func:`advsmooth.data.random_subset`; ``ValueError`` when the split has fewer
    images."""
    from ..data import random_subset

    return random_subset(total, None if n == 0 else n, seed, offset=offset, sort=True)


def _check(p: dict[str, Any]) -> None:
    from ..attacks import registry

    check_params(p, _KEYS, ("model", "dataset"))
    name = p.get("attack", "uap")
    if registry.entry(name).kind != "universal":
        raise ValueError(f"attack {name!r} is not a universal perturbation (use uap or "
                         "smooth-uap)")
    check_params(p, ints=(("n", 0), ("fit_n", 1), ("batch_size", 1), ("seed", 0)))
    registry.build(name, **dict(p.get("attack_params", {})))


def _predict_batched(model: Any, x: Tensor, batch_size: int) -> Tensor:
    from .._tensors import predict

    with torch.no_grad():
        return torch.cat([predict(model(x[s:s + batch_size]))
                          for s in range(0, len(x), batch_size)]) if len(x) else \
            torch.zeros(0, dtype=torch.long, device=x.device)


def _roughness(v: Tensor) -> dict[str, float]:
    from ..filters import roughness

    vd = v.double()
    return {"omega_x1e3": 1e3 * float(roughness(vd, sigma_h=1.0).mean()),
            "omega_n_x1e3": 1e3 * float(roughness(vd, sigma_h=1.0, normalized=True).mean())}


@register_step(STEP_KIND)
def universal_step(s: dict[str, Any], ctx: Any) -> StepOutput:
    """Fit the universal perturbation of ``s`` and evaluate it (see the module docstring)."""
    from .. import data
    from ..attacks import registry
    from ..attacks.universal import universal_fooling_rate
    from ..metrics import fooling_rate

    split, fit_split = s.get("split", "test"), s.get("fit_split", "train")
    n, fit_n, seed = int(s.get("n", 0)), int(s.get("fit_n", 200)), int(s.get("seed", 0))
    bs = int(s.get("batch_size", 128))
    model = ctx.load_model(s["model"])
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x_all, y_all = data.load(s["dataset"], split, root=ctx.data_root)
    idx = select(len(y_all), n, seed)
    if fit_split == split:
        x_fit = x_all[select(len(y_all), fit_n, seed, offset=len(idx))]
    else:
        x_fit_all, _ = data.load(s["dataset"], fit_split, root=ctx.data_root)
        x_fit = x_fit_all[select(len(x_fit_all), min(fit_n, len(x_fit_all)), seed)]
    x = x_all[idx].to(device=ctx.device, dtype=dtype)
    y = y_all[idx].to(ctx.device)
    x_fit = x_fit.to(device=ctx.device, dtype=dtype)
    uap = registry.build(s.get("attack", "uap"),
                         **{"progress_bar": bool(getattr(ctx, "progress", False)),
                            **dict(s.get("attack_params", {}))})
    start = time.perf_counter()
    v = uap.fit(model, x_fit)
    fit_seconds = time.perf_counter() - start
    x_adv = (x + v).clamp(0.0, 1.0)
    clean_pred = _predict_batched(model, x, bs)
    adv_pred = _predict_batched(model, x_adv, bs)
    fr = fooling_rate(model, x, x_adv, y, batch_size=bs)
    summary: dict[str, Any] = {
        "n": len(x), "accuracy": float((clean_pred == y).double().mean()) if len(x) else None,
        "fit_n": len(x_fit), "fit_split": fit_split,
        "universal_fooling_rate": universal_fooling_rate(model, x, v, clean_pred=clean_pred,
                                                         batch_size=bs),
        "fit_fooling_rate": uap.fooling_rate_,
        "success_rate": fr.rate, "n_excluded": fr.n_excluded,
        "v_l2": float(torch.linalg.vector_norm(v)), "v_linf": float(v.abs().max()),
        **_roughness(v),
        "passes": uap.passes_, "updates": uap.updates_, "history": uap.history_,
        "projection_fallbacks": getattr(uap, "projection_fallbacks_", 0),
        "forward_evals_per_fit_image": uap.cost_["forward"] / len(x_fit),
        "grad_evals_per_fit_image": uap.cost_["grad"] / len(x_fit),
        "seconds": fit_seconds,
    }
    tensors = {"x": x, "x_adv": x_adv, "y": y, "clean_pred": clean_pred, "pred": adv_pred,
               "success": adv_pred != clean_pred, "v": v[0], "indices": idx}
    return StepOutput(rows=[summary],
                      tensors={k: t.detach().cpu().contiguous() for k, t in tensors.items()})


def _plan(params: dict[str, Any], seed: int) -> list[Step]:
    return [Step(STEP_KIND, dict(params))]


register_task("universal_attack", check=_check, plan=_plan,
              description="one universal perturbation fitted and evaluated "
                          "(advsmooth attack uap|smooth-uap)")
