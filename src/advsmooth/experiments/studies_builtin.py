"""Built-in study tasks for ``[[studies]]`` cells (registered on import by ``tasks.get_task``).

* ``transfer`` — a transfer matrix (sg paper Tables 1, 2, 3, 5): an attack crafted on each source
  model, success rates on each target model, over ``n`` images every model classifies correctly
  (drawn from a seeded random ``sample`` of the split when given, e.g. for ImageNet); with
  ``rescale_linf`` every perturbation is rescaled to that ℓ∞ norm first (SmoothFool Table 4).
  Rows: ``source, target, top1, top5, white_box, n, grad_evals`` (rates in %).
* ``smoothing`` — base vs smoothed-classifier accuracy, clean and under attack, optionally the
  σ × M sweep (smoothing paper Tables 1/4, Figs 1/2), planned as store steps
  (:func:`advsmooth.studies.smoothing.plan`).
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
* ``transfer_study`` — the sg transfer paper's tables and figures, planned as store steps
  (:func:`advsmooth.studies.transfer.plan`); rows with a ``part`` field naming the table or
  figure.
* ``fgsm_rho`` — the 90 %-rule FGSM of the DeepFool paper (Tables 1/2) per model, by bisection
  (:func:`advsmooth.metrics.fgsm_rho`) on the correctly classified images of a seeded sample.
  Rows: ``model, eps, rho_adv, rho_inf, rate, n, n_correct``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .tasks import StudyContext, build_attack, check_params, register_task

__all__ = ["transfer_study_spec", "smoothing_spec"]


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
    check_params(p, _TRANSFER_KEYS, ("sources", "targets", "attack"))
    _check_models([m for n in _model_names(p["sources"], "sources") for m in _members_of(n)])
    _check_models(_model_names(p["targets"], "targets"))
    if not isinstance(p.get("attack_params", {}), dict):
        raise ValueError("attack_params must be a table of attack parameters")
    build_attack(p["attack"], dict(p.get("attack_params", {})))
    check_params(p, ints=(("n", 1), ("sample", 1), ("data_seed", 0)))
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

def _smoothing_settings(p: dict[str, Any], seed: int | None = None) -> Any:
    """The :class:`~advsmooth.studies.smoothing.SmoothingSettings` of a ``smoothing`` cell (the
    study ``seed`` defaults to the cell's seed)."""
    from ..studies.smoothing import SmoothingSettings

    check_params(p, SmoothingSettings.fields(), ("model",))
    kw = dict(p)
    if seed is not None:
        kw.setdefault("seed", seed % 2**31)
    try:
        return SmoothingSettings(**kw)
    except TypeError as exc:  # a wrongly typed parameter
        raise ValueError(str(exc)) from None


def _check_smoothing(p: dict[str, Any]) -> None:
    s = _smoothing_settings(p)
    _check_models(_model_names(s.model, "model"))
    if s.source is not None:
        _check_models(_model_names(s.source, "source"))


def _smoothing_plan(p: dict[str, Any], seed: int) -> list[Any]:
    from ..studies.smoothing import plan

    return plan(_smoothing_settings(p, seed))


def smoothing_spec(params: dict[str, Any]) -> dict[str, Any]:
    """A one-study spec (a dict for :func:`~advsmooth.experiments.parse_spec`) running the
    smoothing study with ``params``, whose report shows its tables and the σ × M curves (Figs
    1/2) when the sweep runs (used by ``advsmooth smooth``)."""
    s = _smoothing_settings(params)
    src = {"source": "smoothing"}
    tables = [{"kind": "study", **src, "name": name, "where": {"table": name}}
              for name in ("main", *(("sweep",) if s.sweep else ()),
                           *(("budget",) if s.budgets else ()))]
    plots = [{"kind": "curve", **src, "where": {"table": "sweep", "vote": v}, "x": "sigma",
              "y": "acc_mean", "hue": ["input", "M"], "xlabel": "sigma",
              "ylabel": "accuracy", "title": f"accuracy vs sigma ({v} vote)"}
             for v in (s.votes if s.sweep else ())]
    plots += [{"kind": "curve", **src, "where": {"table": "budget"}, "x": "budget",
               "y": "acc_mean", "hue": ["attack", "M"], "ylabel": "accuracy",
               "title": "accuracy at equal k x M budgets"}] if s.budgets else []
    return {"name": "smoothing", "seed": 0,
            "studies": [{"task": "smoothing", "label": "smoothing", "params": params}],
            "report": {"title": f"Smoothed inference: {s.model} on {s.data}", "tables": tables,
                       "plots": plots}}


register_task("smoothing", plan=_smoothing_plan, check=_check_smoothing,
              description="base vs smoothed accuracy, clean and under attack (+ sigma x M sweep)")


# ---------------------------------------------------------------------------------------------
# universal perturbations
# ---------------------------------------------------------------------------------------------

_UAP_KEYS = ("dataset", "split", "sample", "data_seed", "n_fit", "n_eval", "fit_model", "models",
             "attack", "attack_params")


def _check_uap(p: dict[str, Any]) -> None:
    check_params(p, _UAP_KEYS, ("fit_model",), (("sample", 1), ("data_seed", 0)))
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
    total = x_all.shape[0]
    x_fit = x_all[data.random_subset(total, min(n_fit, total), ctx.seed % 2**31)].to(ctx.device)
    n_rest = max(total - n_fit, 0) if n_eval is None else min(int(n_eval), max(total - n_fit, 0))
    x_eval = x_all[data.random_subset(total, n_rest, ctx.seed % 2**31,
                                      offset=min(n_fit, total))].to(ctx.device)
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

def _transfer_study_settings(p: dict[str, Any]) -> Any:
    """The :class:`~advsmooth.studies.transfer.TransferStudySettings` of a ``transfer_study``
    cell. ``out_dir`` (where the study used to write its own files) is accepted and ignored: the
    report draws every table and figure from the store."""
    from ..studies.transfer import TransferStudySettings

    check_params(p, (*TransferStudySettings.fields(), "out_dir"), ("preset",))
    kw = {k: v for k, v in p.items() if k != "out_dir"}
    try:
        return TransferStudySettings(**kw)
    except TypeError as exc:  # a wrongly typed parameter
        raise ValueError(str(exc)) from None


def _check_transfer_study(p: dict[str, Any]) -> None:
    _transfer_study_settings(p)
    if "budget_sources" in p:
        _check_models(_model_names(p["budget_sources"], "budget_sources"))


def _transfer_study_plan(p: dict[str, Any], seed: int) -> list[Any]:
    from ..studies.transfer import plan

    return plan(_transfer_study_settings(p))


register_task("transfer_study", plan=_transfer_study_plan, check=_check_transfer_study,
              description="sg transfer paper: Tables 1-5 and Figures 1, 3-7 (digits) or Tables "
                          "2b/3 (cifar10); every trained model, evaluation set and figure's data "
                          "is a store artefact")


#: the matrices of the transfer study's presets, in row order
_TRANSFER_STUDY_TABLES = {
    "digits": ("table1_fgsm", "table1_igsm", "table1_sg_igsm", "table2a_fgsm_fc_depth",
               "table3_igsm_t100", "table3_sg_igsm_t5_m20", "table4_igsm_targeted_ensembles",
               "table4_sg_igsm_targeted_ensembles", "table5_migsm", "table5_sg_igsm",
               "table5_sg_migsm"),
    "cifar10": ("table2b_fgsm_eps10", "table3_igsm_t100", "table3_sg_igsm_t5_m20"),
}


def transfer_study_spec(params: dict[str, Any]) -> dict[str, Any]:
    """A one-study spec (a dict for :func:`~advsmooth.experiments.parse_spec`) running the
    transfer study with ``params``, whose report shows every table and figure of the parts run
    (used by ``advsmooth transfer``)."""
    s = _transfer_study_settings(params)
    src = {"source": "sg"}
    tables: list[dict[str, Any]] = []
    plots: list[dict[str, Any]] = []
    if s.preset == "cifar10" or "tables" in s.parts:
        for part in _TRANSFER_STUDY_TABLES[s.preset]:
            for metric in ("top1", "top5"):
                tables.append({"kind": "study", **src, "name": f"{part}_{metric}",
                               "where": {"part": part}, "rows": ["source"],
                               "columns": ["target"], "value": metric})
    if s.preset == "digits":
        pivots = {"fig5": (["transform", "strength"], ["attack"], "rate"),
                  "fig7": (["sweep", "alpha_eps", "steps"], ["method"], "top1")}
        parts = {"tables": ["fig1"], "fig3": ["fig3a", "fig3b", "fig9"], "fig4": ["fig4a", "fig4b"],
                 "fig5": ["fig5"], "fig6": ["fig6"], "fig7": ["fig7"]}
        for part in (q for p in s.parts for q in parts[p]):
            rows, cols, value = pivots.get(part, (None, None, None))
            tables.append({"kind": "study", **src, "name": part, "where": {"part": part},
                           **({"rows": rows, "columns": cols, "value": value} if rows else {})})
        steps = {"tables": [("transfer.fig1", {})], "fig6": [("transfer.fig6", {})],
                 "fig3": [("transfer.boundary", {"sign": False}),
                          ("transfer.boundary", {"sign": True})]}
        plots += [{"kind": "artefact", **src, "step": k, "where": w}
                  for p in s.parts for k, w in steps.get(p, [])]
    return {"name": f"transfer_study_{s.preset}", "seed": 0,
            "studies": [{"task": "transfer_study", "label": "sg", "params": params}],
            "report": {"title": f"Smoothed-gradient transferability study ({s.preset})",
                       "tables": tables, "plots": plots}}


# ---------------------------------------------------------------------------------------------
# rho of the 90 %-rule FGSM (DeepFool paper, Tables 1 and 2)
# ---------------------------------------------------------------------------------------------

_FGSM_RHO_KEYS = ("dataset", "split", "n", "sample", "data_seed", "models", "target_rate",
                  "eps_max", "grid", "batch_size")


def _check_fgsm_rho(p: dict[str, Any]) -> None:
    check_params(p, _FGSM_RHO_KEYS, ("models",))
    _check_models(_model_names(p["models"], "models"))
    check_params(p, ints=(("n", 1), ("sample", 1), ("data_seed", 0), ("grid", 1),
                          ("batch_size", 1)))
    rate, eps_max = p.get("target_rate", 0.9), p.get("eps_max", 0.5)
    for key, v in (("target_rate", rate), ("eps_max", eps_max)):
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise ValueError(f"{key} must be a number > 0, got {v!r}")
    if rate > 1:
        raise ValueError(f"target_rate must be in (0, 1], got {rate!r}")
    if p.get("n") is not None and p.get("sample") is not None:
        raise ValueError("give at most one of n (first n images) and sample (seeded random subset)")


def _fgsm_rho(p: dict[str, Any], ctx: StudyContext) -> list[dict[str, Any]]:
    """Per model: the smallest ε (bisection on a grid in ``(0, eps_max]``) at which FGSM
    misclassifies ``target_rate`` of the correctly classified images, and ρ_adv (ℓ2) / ρ∞_adv of
    that FGSM perturbation (:func:`advsmooth.metrics.fgsm_rho`). The images are those of an
    attack cell with the same dataset selection (``sample`` + ``data_seed`` = the spec seed)."""
    from ..metrics import fgsm_rho, predict_batched

    sel = _selection(p)
    if p.get("n") is not None:
        sel = {"n": p["n"]}
    x_all, y_all = ctx.load_data(p.get("dataset", "digits"), p.get("split", "test"), **sel)
    kw = {"target_rate": float(p.get("target_rate", 0.9)), "eps_max": float(p.get("eps_max", 0.5)),
          "grid": int(p.get("grid", 200)), "batch_size": int(p.get("batch_size", 256))}
    rows = []
    for name in _model_names(p["models"], "models"):
        model = ctx.load_model(name)
        ok = predict_batched(model, x_all, batch_size=kw["batch_size"]) == y_all
        x, y = x_all[ok], y_all[ok]
        r2 = fgsm_rho(model, x, y, p=2, **kw)  # one sign gradient and bisection: both norms
        rows.append({"model": name, "eps": r2["eps"], "rho_adv": r2["rho"],
                     "rho_inf": r2.get("rho_inf", float("nan")),
                     "rate": r2["rate"], "n": int(x_all.shape[0]), "n_correct": int(x.shape[0])})
    return rows


register_task("fgsm_rho", _fgsm_rho, check=_check_fgsm_rho,
              description="rho_adv / rho_inf of FGSM at the 90 %-rule eps (bisection), per model "
                          "(DeepFool Tables 1/2)")
