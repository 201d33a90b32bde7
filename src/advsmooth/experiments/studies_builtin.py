"""Built-in study tasks for ``[[studies]]`` cells (registered on import by ``tasks.get_task``).

* ``transfer`` — a transfer matrix (sg paper Tables 1, 2, 3, 5): an attack crafted on each source
  model, success rates on each target model, over ``n`` images every model classifies correctly
  (drawn from a seeded random ``sample`` of the split when given, e.g. for ImageNet); with
  ``rescale_linf`` every perturbation is rescaled to that ℓ∞ norm first (SmoothFool Table 4).
  Rows: ``source, target, top1, top5, white_box, n, grad_evals`` (rates in %).
* ``smoothing`` — base vs smoothed-classifier accuracy, clean and under attack, optionally the
  σ × M sweep (smoothing paper Tables 1/4, Figs 1/2): the rows of
  :func:`advsmooth.studies.smoothing.run_smoothing_study`.
* ``uap`` — a (smooth) universal perturbation fitted on one model and evaluated on several
  (SmoothFool Table 5). Rows: ``fit_model, model, sigma, fooling_rate, linf, l2``.
* ``smoothfool_table3`` — SmoothFool Table 3 on MNIST or CIFAR-10, a planned study
  (:func:`advsmooth.studies.defenses.table3_plan`: train each defence → craft the attacks on the
  undefended and on each defended model → evaluate); rows
  ``defence, setting, clean_acc, <attack>...`` (fooling rates in [0, 1]).
* ``deepfool_finetuning`` — DeepFool Figs 6-9 and Table 3, a planned study
  (:func:`advsmooth.studies.training.finetune_plan`); rows
  ``run, epoch, rho_adv, test_error[, rho_fgsm], rho_rel[, rho_fgsm_rel]``.
* ``pni_smoothing`` — a PNI-trained MNIST LeNet under smoothed inference, a planned study
  (:func:`advsmooth.studies.training.pni_plan`).
* ``transfer_study`` — the sg transfer paper's tables and figures
  (:func:`advsmooth.studies.transfer.run_transfer_study`; rows of
  :func:`advsmooth.studies.transfer.study_rows`, each with a ``part`` field).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from .tasks import StudyContext, build_attack, register_task

__all__: list[str] = []


def _require(params: dict[str, Any], allowed: Sequence[str], required: Sequence[str]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; expected some of {sorted(allowed)}")
    missing = [k for k in required if k not in params]
    if missing:
        raise ValueError(f"missing parameter(s) {missing}")


def _check_ints(p: dict[str, Any], bounds: Sequence[tuple[str, int]]) -> None:
    """``ValueError`` unless every parameter named in ``bounds`` that is given is an integer of
    at least its bound."""
    for key, low in bounds:
        v = p.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            raise ValueError(f"{key} must be an integer >= {low}, got {v!r}")


def _selection(p: dict[str, Any]) -> dict[str, Any]:
    """``data.load`` keywords for a task's ``sample`` / ``data_seed`` parameters: a seeded random
    subset of the split is loaded (and decoded) at all, e.g. of ImageNet's 50,000 validation
    images."""
    return {} if p.get("sample") is None else {"sample": p["sample"],
                                               "seed": p.get("data_seed", 0)}


def _model_names(v: Any, key: str) -> list[str]:
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not v or not all(isinstance(s, str) for s in v):
        raise ValueError(f"{key} must be a model name or a non-empty list of model names")
    return list(v)


def _check_models(names: Sequence[str]) -> None:
    from .. import models

    for n in names:
        if ":" not in n and not n.endswith((".pt", ".pth")):
            models.spec(n)  # ValueError for an unknown name


# ---------------------------------------------------------------------------------------------
# transfer matrix
# ---------------------------------------------------------------------------------------------

_TRANSFER_KEYS = ("dataset", "split", "n", "sample", "data_seed", "sources", "targets", "attack",
                  "attack_params", "targeted", "batch_size", "rescale_linf")


def _members_of(name: str) -> list[str]:
    """``"a+b+c"`` (an ensemble source: mean logits of the members) → ``["a", "b", "c"]``."""
    parts = name.split("+")
    if any(not q for q in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"an ensemble source joins distinct model names with '+', got {name!r}")
    return parts


def _check_transfer(p: dict[str, Any]) -> None:
    _require(p, _TRANSFER_KEYS, ("sources", "targets", "attack"))
    _check_models([m for n in _model_names(p["sources"], "sources") for m in _members_of(n)])
    _check_models(_model_names(p["targets"], "targets"))
    if not isinstance(p.get("attack_params", {}), dict):
        raise ValueError("attack_params must be a table of attack parameters")
    build_attack(p["attack"], dict(p.get("attack_params", {})))
    _check_ints(p, (("n", 1), ("sample", 1), ("data_seed", 0)))
    r = p.get("rescale_linf")
    if r is not None and (isinstance(r, bool) or not isinstance(r, int | float) or r <= 0):
        raise ValueError(f"rescale_linf must be a number > 0 (pixel units), got {r!r}")


def _source_model(ctx: StudyContext, name: str) -> Any:
    """A source by name; ``"a+b"`` is the ensemble (mean logits) of the models ``a`` and ``b``,
    built from the same model objects as the targets, so that members count as white-box."""
    names = _members_of(name)
    if len(names) == 1:
        return ctx.load_model(name)
    from ..models import Ensemble

    return Ensemble([ctx.load_model(n) for n in names], names=names).eval()


def _transfer(p: dict[str, Any], ctx: StudyContext) -> list[dict[str, Any]]:
    from ..metrics.transfer import transfer_matrix

    # the n evaluation images are drawn from the (sampled) split
    x, y = ctx.load_data(p.get("dataset", "digits"), p.get("split", "test"), **_selection(p))
    srcs = [(n, _source_model(ctx, n)) for n in _model_names(p["sources"], "sources")]
    tgts = [(n, ctx.load_model(n)) for n in _model_names(p["targets"], "targets")]
    atk = build_attack(p["attack"], dict(p.get("attack_params", {})))
    if p.get("rescale_linf") is not None:  # SmoothFool Table 4: equal ℓ∞ for every method
        from ..attacks import RescaleLinf

        atk = RescaleLinf(atk, float(p["rescale_linf"]))
    tm = transfer_matrix(srcs, tgts, atk, (x, y), targeted=bool(p.get("targeted", False)),
                         n=p.get("n"), seed=ctx.seed % 2**31, target_seed=ctx.seed % 2**31,
                         batch_size=int(p.get("batch_size", 256)), progress=ctx.progress)
    rows = []
    for i, s in enumerate(tm.sources):
        for j, t in enumerate(tm.targets):
            # rates in % (rounded off the float noise of k/n·100, e.g. 58.000…01)
            rows.append({"source": s, "target": t, "top1": round(100.0 * float(tm.top1[i, j]), 9),
                         "top5": round(100.0 * float(tm.top5[i, j]), 9),
                         "white_box": bool(tm.white_box[i, j]), "n": int(tm.n),
                         "grad_evals": float(tm.grad_evals[i])})
    return rows


register_task("transfer", _transfer, check=_check_transfer,
              description="transfer matrix: sources x targets success rates (%)")


# ---------------------------------------------------------------------------------------------
# smoothing
# ---------------------------------------------------------------------------------------------

def _smoothing_fn() -> Any:
    from ..studies.smoothing import run_smoothing_study

    return run_smoothing_study


def _check_smoothing(p: dict[str, Any]) -> None:
    try:
        fn = _smoothing_fn()
    except ImportError as exc:  # pragma: no cover - module shipped with the package
        raise ValueError(f"the smoothing study is unavailable: {exc}") from None
    allowed = [k for k in inspect.signature(fn).parameters if k not in ("out", "device")]
    _require(p, allowed, ("model",))
    _check_models(_model_names(p["model"], "model"))


def _smoothing(p: dict[str, Any], ctx: StudyContext) -> list[dict[str, Any]]:
    fn = _smoothing_fn()
    kw = dict(p)
    kw.setdefault("seed", ctx.seed % 2**31)
    kw.setdefault("data_root", ctx.data_root)
    for key in ("votes", "attacks", "sweep_sigmas", "sweep_samples", "budgets"):
        if key in kw:
            kw[key] = tuple(kw[key])
    return fn(device=str(ctx.device), **kw)


register_task("smoothing", _smoothing, check=_check_smoothing,
              description="base vs smoothed accuracy, clean and under attack (+ sigma x M sweep)")


# ---------------------------------------------------------------------------------------------
# universal perturbations
# ---------------------------------------------------------------------------------------------

_UAP_KEYS = ("dataset", "split", "sample", "data_seed", "n_fit", "n_eval", "fit_model", "models",
             "attack", "attack_params")


def _check_uap(p: dict[str, Any]) -> None:
    _require(p, _UAP_KEYS, ("fit_model",))
    _check_ints(p, (("sample", 1), ("data_seed", 0)))
    _check_models(_model_names(p["fit_model"], "fit_model"))
    _check_models(_model_names(p.get("models", p["fit_model"]), "models"))
    from ..attacks import registry

    name = p.get("attack", "smooth-uap")
    e = registry.entry(name)
    if e.kind != "universal":
        raise ValueError(f"attack {name!r} is not a universal perturbation (use uap or smooth-uap)")
    registry.build(name, **dict(p.get("attack_params", {})))


def _uap(p: dict[str, Any], ctx: StudyContext) -> list[dict[str, Any]]:
    from .. import data
    from ..attacks import registry
    from ..attacks.universal import universal_fooling_rate

    ds, split = p.get("dataset", "digits"), p.get("split", "test")
    n_fit, n_eval = int(p.get("n_fit", 100)), p.get("n_eval")
    x_all, _ = data.load(ds, split, root=ctx.data_root, **_selection(p))
    g = torch.Generator().manual_seed(ctx.seed % 2**31)
    perm = torch.randperm(x_all.shape[0], generator=g)
    x_fit = x_all[perm[:n_fit]].to(ctx.device)
    rest = perm[n_fit:] if n_eval is None else perm[n_fit:n_fit + int(n_eval)]
    x_eval = x_all[rest].to(ctx.device)
    params = {"progress_bar": False, "seed": ctx.seed % 2**31, **dict(p.get("attack_params", {}))}
    uap = registry.build(p.get("attack", "smooth-uap"), **params)
    v = uap.fit(ctx.load_model(p["fit_model"]), x_fit)
    rows = []
    for name in _model_names(p.get("models", p["fit_model"]), "models"):
        fr = universal_fooling_rate(ctx.load_model(name), x_eval, v)
        rows.append({"fit_model": p["fit_model"], "model": name,
                     "sigma": params.get("sigma", 0), "fooling_rate": 100.0 * float(fr),
                     "linf": float(v.abs().max()), "l2": float(v.flatten().norm()),
                     "n_fit": int(x_fit.shape[0]), "n_eval": int(x_eval.shape[0])})
    return rows


register_task("uap", _uap, check=_check_uap,
              description="(smooth) universal perturbation fitted on one model, FR on several")


# ---------------------------------------------------------------------------------------------
# SmoothFool Table 3 on MNIST (defences)
# ---------------------------------------------------------------------------------------------

def _planned(module: str, plan_name: str) -> Any:
    """``plan(params, seed)`` of ``advsmooth.studies.<module>`` (imported when first used)."""

    def plan(params: dict[str, Any], seed: int) -> Any:
        import importlib

        return getattr(importlib.import_module(f"..studies.{module}", __package__),
                       plan_name)(params, seed)

    return plan


def _check_plan(plan: Any) -> Any:
    """A parameter check that builds the plan (the settings dataclass validates every value)."""
    return lambda params: plan(dict(params), 0) and None


for _name, _module, _plan, _description in (
        ("smoothfool_table3", "defenses", "table3_plan",
         "SmoothFool Table 3 on MNIST or CIFAR-10 (dataset=): FR of IGSM/DF/GS or CS/SF vs "
         "seven defences; trained defences and crafted batches are store artefacts"),
        ("deepfool_finetuning", "training", "finetune_plan",
         "DeepFool Figs 6-9, Table 3: rho_adv and test error over fine-tuning epochs on "
         "DeepFool / FGSM / clean examples"),
        ("pni_smoothing", "training", "pni_plan",
         "smoothed inference on MNIST: a PNI-trained LeNet, base vs smoothed accuracy under "
         "PGD / EPGD for several sigma")):
    _p = _planned(_module, _plan)
    register_task(_name, plan=_p, check=_check_plan(_p), description=_description)


# ---------------------------------------------------------------------------------------------
# the transferability study (sg transfer paper: Tables 1–5, Figures 1 and 3–5)
# ---------------------------------------------------------------------------------------------

_TRANSFER_STUDY_KEYS = ("preset", "out_dir", "n", "seed", "parts", "budget_n", "budget_sources",
                        "fig6_ms", "fig7_alphas", "fig7_steps", "fig7_n")


def _check_transfer_study(p: dict[str, Any]) -> None:
    from ..studies.transfer import DIGITS_PARTS, PRESETS

    _require(p, _TRANSFER_STUDY_KEYS, ("preset", "out_dir"))
    if p["preset"] not in PRESETS:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {p['preset']!r}")
    _check_ints(p, (("n", 1), ("seed", 0), ("budget_n", 1)))
    parts = p.get("parts", DIGITS_PARTS)
    if not isinstance(parts, list | tuple) or not parts or any(q not in DIGITS_PARTS
                                                               for q in parts):
        raise ValueError(f"parts must be a non-empty list of {list(DIGITS_PARTS)}, got {parts!r}")
    if "budget_sources" in p:
        _check_models(_model_names(p["budget_sources"], "budget_sources"))


def _transfer_study(p: dict[str, Any], ctx: StudyContext) -> list[dict[str, Any]]:
    from ..studies.transfer import DIGITS_PARTS, run_transfer_study, study_rows

    kw = dict(p)
    for key in ("fig6_ms", "fig7_alphas", "fig7_steps"):
        if key in kw:
            kw[key] = tuple(kw[key])
    report = run_transfer_study(
        kw.pop("preset"), kw.pop("out_dir"), kw.pop("n", None), kw.pop("seed", 0),
        progress=ctx.progress, parts=tuple(kw.pop("parts", DIGITS_PARTS)),
        **({"budget_sources": tuple(kw.pop("budget_sources"))} if "budget_sources" in kw else {}),
        **kw)
    return study_rows(report)


register_task("transfer_study", _transfer_study, check=_check_transfer_study,
              description="sg transfer paper: Tables 1-5 and Figures 1, 3-5 (digits) or Tables "
                          "2b/3 (cifar10); also writes its own tables and PNGs into out_dir")
