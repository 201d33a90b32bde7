"""Robust-training studies as planned study tasks (steps whose outputs are store artefacts).

* **DeepFool fine-tuning** (DeepFool: a simple and accurate method to fool deep neural networks,
  Moosavi-Dezfooli, Fawzi & Frossard, arXiv:1511.04599, Figs 6–9 and Table 3): ρ_adv (DeepFool-L2
  on a test slice) and test error of a model over ``epochs`` extra epochs of fine-tuning on
  DeepFool-perturbed training images magnified by α, on FGSM-perturbed images (the 90 %-rule ε)
  and on clean images, with Adam at ``lr_factor × base_lr``. Task ``deepfool_finetuning``,
  settings :class:`FinetuneSettings`. Steps: ``deepfool_ft.start`` (the starting model's ρ_adv and
  test error: epoch 0 of every run), ``deepfool_ft.set`` (the perturbed training set, crafted
  ONCE from the starting model and shared by every α), ``deepfool_ft.run`` (one fine-tuning run:
  its rows and the fine-tuned weights) and ``deepfool_ft.example`` (Fig. 8: a "1" with its
  DeepFool perturbation magnified by α, images for the report).
* **PNI + smoothed inference** (Parametric Noise Injection, He, Rakin & Fan, arXiv:1811.09310;
  smoothed classifiers, Cohen, Rosenfeld & Kolter, arXiv:1902.02918): a PNI LeNet trained with
  PNI-PGD from ``mnist-lenet-pgd``, then the accuracy of ``SmoothedClassifier`` over σ on clean,
  PGD and EPGD inputs for the PNI model and the plain PGD-trained LeNet. Task ``pni_smoothing``,
  settings :class:`PNISettings`; steps ``pni.train`` and ``pni.evaluate``.

Every step is a function of a JSON settings dict (the fields it depends on) that returns a
:class:`~advsmooth.experiments.artefacts.StepOutput`; the runner stores each as an artefact, so a
killed study resumes after its last finished step and nothing is written beside the store.

Example (a tiny run without a store)::

    import torch
    from advsmooth.experiments.tasks import StudyContext, run_plan

    ctx = StudyContext(seed=0, device=torch.device("cpu"))
    rows = run_plan(finetune_plan({"model": "digits-lenet", "dataset": "digits",
                                   "n_train": 40, "include": ["clean"], "epochs": 1}), ctx)
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import check_choice, check_int_at_least, check_nonnegative, check_positive
from ..experiments.artefacts import Step, StepOutput, register_step
from ._settings import from_params, load_module_tensors, module_tensors, step_settings

__all__ = ["TRAIN_DEFAULTS", "train_recipe", "train_base",
           "FinetuneSettings", "PNISettings", "finetune_plan", "pni_plan", "magnified_example",
           "accuracy", "sample_split"]


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------

def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in ``[0, 1]`` (:func:`advsmooth.defenses.evaluate`:
    eval mode, the model's mode restored)."""
    from ..defenses import evaluate

    return evaluate(model, (x, y))


def sample_split(dataset: str, split: str, n: int | None, seed: int, root: Any
                 ) -> tuple[Tensor, Tensor]:
    """``n`` seeded images of ``dataset``/``split`` (all of them when ``n`` is None, or when it
    exceeds the embedded digits' few hundred images)."""
    from .. import data

    if n is None:
        return data.load(dataset, split, root)
    if dataset != "mnist":
        x, y = data.load(dataset, split, root)
        if n >= len(y):
            return x, y
    return data.load(dataset, split, root, sample=n, seed=seed)


def _load(name: str, models_dir: str | None) -> nn.Module:
    from .. import models

    return models.load(name, models_dir=models_dir, verbose=False)


# ----------------------------------------------------------------------------------------------
# DeepFool fine-tuning (DeepFool paper Figs 6-9, Table 3)
# ----------------------------------------------------------------------------------------------

FAMILIES = ("deepfool", "fgsm", "clean")


@dataclass(frozen=True)
class FinetuneSettings:
    """Settings of the DeepFool fine-tuning study (one field per spec parameter, hence more
    than twelve).

    ``model`` on ``dataset`` (``"mnist"``, ``"cifar10"``, or ``"digits"`` for the embedded data;
    the training images come from the dataset's training split) is fine-tuned
    ``epochs`` extra epochs on ``n_train`` seeded training images (seed ``seed``): for each α of
    ``alphas`` on ``clamp(x + α·r̂, 0, 1)`` with ``r̂`` the DeepFool-L2 perturbation of the
    starting model (iterates kept in ``[0, 1]``, so the α = 1 set is adversarial), on the FGSM set
    (ε from the 90 % rule of ``metrics.fgsm_rho`` on the training images) and on clean images —
    the run families in ``include``. Adam at ``lr_factor × base_lr``, batch ``batch_size``.
    After every epoch (and before the first): ρ_adv = mean ‖r̂‖₂/‖x‖₂ of the paper's unclipped
    DeepFool-L2 (``max_iter``) on ``n_rho`` test images (seed ``seed + 1``; successful attacks on
    correctly classified inputs) and the test error on ``n_test`` images (all of the split when
    ``n_test >= 10000``); with ``measure_fgsm`` (Fig. 9) also ρ_FGSM of ``metrics.fgsm_rho`` on
    the same images. ``example_alphas`` (Fig. 8; ``()`` skips it): the magnifications of the
    example image. ``models_dir``: where the model's weights are (default: the zoo's search).
    """

    model: str = "mnist-lenet"
    dataset: str = "mnist"
    n_train: int = 1000
    n_rho: int = 200
    n_test: int = 10000
    epochs: int = 5
    alphas: tuple[float, ...] = (1, 2, 3)
    base_lr: float = 1e-4
    lr_factor: float = 0.5
    batch_size: int = 50
    max_iter: int = 50
    seed: int = 0
    include: tuple[str, ...] = FAMILIES
    measure_fgsm: bool = False
    example_alphas: tuple[float, ...] = (1, 2, 3, 4)
    models_dir: str | None = None

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, ("mnist", "digits", "cifar10"))
        for k in ("n_train", "n_rho", "n_test", "epochs", "batch_size", "max_iter"):
            check_int_at_least(k, getattr(self, k), 1)
        check_int_at_least("seed", self.seed, 0)
        check_positive("base_lr", self.base_lr)
        check_positive("lr_factor", self.lr_factor)
        for a in (*self.alphas, *self.example_alphas):
            check_nonnegative("alpha", a)
        bad = [f for f in self.include if f not in FAMILIES]
        if bad or not self.include:
            raise ValueError(f"include must be a non-empty list of {list(FAMILIES)}, got "
                             f"{list(self.include)}")


#: the fields every DeepFool fine-tuning step depends on (data, model, measurement)
_FT_BASE = ("model", "dataset", "n_train", "n_rho", "n_test", "seed", "max_iter", "measure_fgsm",
            "models_dir")


def finetune_plan(params: dict[str, Any], seed: int = 0) -> list[Step]:
    """The steps of the DeepFool fine-tuning study for spec ``params`` (:class:`FinetuneSettings`
    fields; ``seed`` is the spec cell's, unused: the study's own ``seed`` parameter decides).
    Rows: one per run and epoch, ``run, epoch, rho_adv, test_error[, rho_fgsm], rho_rel[,
    rho_fgsm_rel]``; runs in the order DeepFool α (as given), FGSM, clean."""
    s = from_params(FinetuneSettings, params)
    base = step_settings(s, _FT_BASE)
    start = Step("deepfool_ft.start", base, rows=False)
    train = step_settings(s, ("epochs", "base_lr", "lr_factor", "batch_size"))
    runs = []
    if "deepfool" in s.include:
        runs += [{"family": "deepfool", "alpha": float(a)} for a in s.alphas]
    runs += [{"family": f} for f in ("fgsm", "clean") if f in s.include]
    steps = []
    for run in runs:
        needs: tuple[Step, ...] = (start,)
        if run["family"] != "clean":
            needs += (Step("deepfool_ft.set", {**base, "family": run["family"]}, rows=False),)
        steps.append(Step("deepfool_ft.run", {**base, **train, **run}, after=needs))
    if s.example_alphas:
        steps.append(Step("deepfool_ft.example", {**base, "alphas": list(s.example_alphas)},
                          rows=False))
    return steps


def _ft_data(s: dict[str, Any], ctx: Any) -> dict[str, Tensor]:
    """The study's images: the training subset, the test-error images, the ρ_adv images."""
    ds, root = s["dataset"], ctx.data_root
    x_tr, y_tr = sample_split(ds, "train", s["n_train"], s["seed"], root)
    x_te, y_te = sample_split(ds, "test", None if s["n_test"] >= 10000 else s["n_test"],
                              s["seed"], root)
    x_rho, y_rho = sample_split(ds, "test", s["n_rho"], s["seed"] + 1, root)
    return {"x_tr": x_tr, "y_tr": y_tr, "x_te": x_te, "y_te": y_te, "x_rho": x_rho,
            "y_rho": y_rho}


def _measure(model: nn.Module, epoch: int, s: dict[str, Any], d: dict[str, Tensor]
             ) -> dict[str, Any]:
    """ρ_adv (unclipped DeepFool-L2), test error and, with ``measure_fgsm``, ρ_FGSM."""
    from .. import attacks, metrics

    df = attacks.DeepFool(norm=2, overshoot=0.02, max_iter=s["max_iter"])
    res = df(model, d["x_rho"], d["y_rho"])
    mask = res.success & ~res.skipped
    row = {"epoch": epoch,
           "rho_adv": float(metrics.robustness(res.perturbation, d["x_rho"], 2, mask=mask)),
           "test_error": 1.0 - accuracy(model, d["x_te"], d["y_te"])}
    if s["measure_fgsm"]:
        row["rho_fgsm"] = float(metrics.fgsm_rho(model, d["x_rho"], d["y_rho"])["rho"])
    return row


@register_step("deepfool_ft.start")
def _ft_start(s: dict[str, Any], ctx: Any) -> StepOutput:
    """Epoch 0 of every run: the starting model's measurement."""
    return StepOutput(rows=[_measure(_load(s["model"], s["models_dir"]), 0, s, _ft_data(s, ctx))])


def _deepfool_set_attack(max_iter: int) -> Any:
    """The fine-tuning sets' DeepFool: iterates kept in [0, 1], so clamp(x + r̂) stays
    adversarial (ρ_adv is measured with the paper's unclipped DeepFool)."""
    from .. import attacks

    return attacks.DeepFool(norm=2, overshoot=0.02, max_iter=max_iter, clip=True)


@register_step("deepfool_ft.set", version=3)  # 2: DeepFool clip=True settles; 3: safely
def _ft_set(s: dict[str, Any], ctx: Any) -> StepOutput:
    """The perturbation crafted once from the starting model: DeepFool's ``r̂`` on the training
    subset (batches of 500; every α run trains on ``clamp(x + α·r̂)``), or the FGSM training set
    at the 90 %-rule ε."""
    from .. import defenses, metrics

    d, start = _ft_data(s, ctx), _load(s["model"], s["models_dir"])
    x, y = d["x_tr"], d["y_tr"]
    if s["family"] == "deepfool":
        df = _deepfool_set_attack(s["max_iter"])
        r = torch.cat([df(start, x[i:i + 500], y[i:i + 500]).perturbation
                       for i in range(0, len(y), 500)])
        return StepOutput(tensors={"r": r.detach()})
    eps_max = 0.5
    fg = metrics.fgsm_rho(start, x, y, eps_max=eps_max)
    eps = float(fg["eps"])
    if not math.isfinite(eps):
        raise ValueError("the FGSM fine-tuning set needs the 90 %-rule ε, but FGSM misclassifies "
                         f"only {100 * fg['rate']:.1f} % of the training images at ε = {eps_max}")
    xs, _ = defenses.get_method("fgsm_ft", eps=eps).prepare(start, (x, y), show_progress=False)
    return StepOutput(tensors={"x": xs}, info={"eps": eps})


@register_step("deepfool_ft.run", version=3)  # 2, 3: reads version-2, -3 sets
def _ft_run(s: dict[str, Any], ctx: Any) -> StepOutput:
    """One fine-tuning run: cross-entropy on its training set (perturbed once from the starting
    model, or clean), measured after every epoch; rows and the fine-tuned weights."""
    from .. import defenses

    base = {k: s[k] for k in _FT_BASE}
    d = _ft_data(s, ctx)
    start = ctx.step(Step("deepfool_ft.start", base)).rows[0]
    family, x_set = s["family"], d["x_tr"]
    if family == "deepfool":
        r = ctx.step(Step("deepfool_ft.set", {**base, "family": family})).tensors["r"]
        x_set, label = (d["x_tr"] + s["alpha"] * r).clamp(0.0, 1.0), f"DeepFool α={s['alpha']:g}"
    elif family == "fgsm":
        out = ctx.step(Step("deepfool_ft.set", {**base, "family": family}))
        x_set, label = out.tensors["x"], f"FGSM ε={out.info['eps']:.3f}"
    else:
        label = "clean"
    net = _load(s["model"], s["models_dir"])
    curve = [dict(start)]

    def measure(model: nn.Module, epoch: int) -> None:
        curve.append(_measure(model, epoch, s, d))

    defenses.finetune(net, (x_set, d["y_tr"]), method="standard", base_lr=s["base_lr"],
                      lr_factor=s["lr_factor"], epochs=s["epochs"], batch_size=s["batch_size"],
                      seed=s["seed"], callbacks=[measure], show_progress=False)
    rows = []
    for r in curve:
        row = {"run": label, **r, "rho_rel": r["rho_adv"] / curve[0]["rho_adv"]}
        if s["measure_fgsm"]:
            row["rho_fgsm_rel"] = r["rho_fgsm"] / curve[0]["rho_fgsm"]
        rows.append(row)
    return StepOutput(rows=rows, tensors=module_tensors(net), info={"run": label})


def magnified_example(model: nn.Module, df: Any, x: Tensor, y: Tensor,
                      alphas: tuple[float, ...]) -> dict[str, Any]:
    """DeepFool paper Fig. 8: a "1" with its DeepFool perturbation magnified by each α.

    Picks the first image of class 1 whose DeepFool class (attack ``df``) is 7 (else the first
    "1"; else the first image). Returns ``index`` (into ``x``), ``label``, ``images`` (the clean
    image and ``clamp(x + α r̂, 0, 1)`` for every α: ``(1 + len(alphas))×C×H×W``) and ``preds``
    (the model's prediction of each image)."""
    ones = (y == 1).nonzero().flatten().tolist() or [0]
    res = df(model, x[ones], y[ones])
    seven = (res.adv_pred == 7).nonzero().flatten().tolist()
    j = seven[0] if seven else 0
    xi, r = x[ones[j]:ones[j] + 1], res.perturbation[j:j + 1]
    images = torch.cat([xi] + [(xi + a * r).clamp(0.0, 1.0) for a in alphas]).detach()
    with torch.no_grad():
        preds = [int(p) for p in model(images).argmax(1)]
    return {"index": ones[j], "label": int(y[ones[j]]), "images": images, "preds": preds}


@register_step("deepfool_ft.example", version=3)  # 2: DeepFool settles; 3: safely
def _ft_example(s: dict[str, Any], ctx: Any) -> StepOutput:
    """Fig. 8 as images for the report (tensor ``images``, captions in ``info["titles"]``)."""
    d = _ft_data(s, ctx)
    alphas = tuple(float(a) for a in s["alphas"])
    ex = magnified_example(_load(s["model"], s["models_dir"]),
                           _deepfool_set_attack(s["max_iter"]), d["x_rho"], d["y_rho"], alphas)
    titles = [("clean" if k == 0 else f"α = {alphas[k - 1]:g}") + f"\npred {p}"
              for k, p in enumerate(ex["preds"])]
    return StepOutput(tensors={"images": ex["images"]},
                      info={"titles": titles, "index": ex["index"], "label": ex["label"],
                            "title": f"DeepFool perturbation of a \"{ex['label']}\" magnified "
                                     "by α"})


# ----------------------------------------------------------------------------------------------
# a model with noise layers trained by a recipe (the PNI study's and the smoothing study's base)
# ----------------------------------------------------------------------------------------------

def _defenses() -> Any:
    from .. import defenses

    return defenses


#: the trainer's settings of a ``train`` recipe and their defaults: PNI-W (channel-wise learned
#: weight noise in every convolution and linear layer) trained with method ``"pni"``; ``seed``
#: seeds the training subset, the noise layers and the training (its own, not the study's, so
#: that studies of one spec share the trained base); every other key of the recipe is a keyword
#: of the training method (``eps``, ``alpha``, ``steps``, ``w``, ...)
TRAIN_DEFAULTS: dict[str, Any] = {
    "method": "pni",
    "noise": {"where": "weights", "kind": "pni", "granularity": "channelwise"},
    "n_train": 10000, "epochs": 1, "lr": 1e-4, "batch_size": 100, "seed": 0,
}


def _method_kwargs(recipe: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in recipe.items() if k not in TRAIN_DEFAULTS}


def train_recipe(train: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``train`` with :data:`TRAIN_DEFAULTS` filled in (``None`` stays ``None``: the model is
    used as it is). ``noise`` is a table of :func:`advsmooth.defenses.inject_noise` keywords
    (``None``: no noise layers, e.g. for ``method = "noise_adv"``). ``ValueError`` for a wrong
    type, an unknown method, a keyword the method or ``inject_noise`` does not take, or a bad
    value (both are tried: the noise on a convolution + linear probe of ``noise.input_shape``)."""
    if train is None:
        return None
    if not isinstance(train, Mapping):
        raise ValueError(f"train must be a table of training settings, got {train!r}")
    r = {**TRAIN_DEFAULTS, **train}
    for k in ("n_train", "epochs", "batch_size"):
        check_int_at_least(f"train.{k}", r[k], 1)
    check_int_at_least("train.seed", r["seed"], 0)
    check_positive("train.lr", r["lr"])
    if r["noise"] is not None and not isinstance(r["noise"], Mapping):
        raise ValueError(f"train.noise must be a table of inject_noise settings or absent, got "
                         f"{r['noise']!r}")
    try:
        if r["noise"] is not None:
            with torch.random.fork_rng(devices=[]):  # the probe's init leaves the global RNG be
                _defenses().inject_noise(_probe(r["noise"].get("input_shape")), **r["noise"])
        _defenses().get_method(r["method"], **_method_kwargs(r))
    except (TypeError, RuntimeError) as exc:  # a keyword they do not take, a shape that fails
        raise ValueError(f"train: {exc}") from None
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in r.items()}


def _probe(shape: Sequence[int] | None) -> nn.Module:
    """A convolution and a linear layer for inputs of ``shape`` ``(C, H, W)`` (default 1×4×4):
    the model a recipe's noise settings are tried on."""
    c, h, w = (int(v) for v in (shape if shape is not None else (1, 4, 4)))
    return nn.Sequential(nn.Conv2d(c, 2, 1), nn.Flatten(), nn.Linear(2 * h * w, 2))


def _noisy_copy(model: nn.Module, recipe: Mapping[str, Any], seed: int) -> nn.Module:
    """A copy of ``model`` with the recipe's noise layers (generators seeded with ``seed``)."""
    if recipe["noise"] is None:
        return copy.deepcopy(model)
    return _defenses().inject_noise(model, **recipe["noise"], seed=seed)


def train_base(model: nn.Module, x: Tensor, y: Tensor, recipe: Mapping[str, Any]) -> nn.Module:
    """A copy of ``model`` with the ``recipe``'s noise layers (:func:`train_recipe`), trained on
    ``(x, y)`` (pixels ``N×C×H×W`` in ``[0, 1]``, labels ``N``) with its method for its epochs
    (Adam, the recipe's seed); returned in eval mode, ``model`` untouched."""
    r = train_recipe(recipe)
    assert r is not None
    m = _noisy_copy(model, r, r["seed"])
    return _defenses().train(m, (x, y), method=r["method"], epochs=r["epochs"], lr=r["lr"],
               batch_size=r["batch_size"], seed=r["seed"], show_progress=False,
               **_method_kwargs(r))


# ----------------------------------------------------------------------------------------------
# PNI LeNet + smoothed inference under PGD / EPGD
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PNISettings:
    """Settings of the PNI + smoothed-inference study (one field per spec parameter).

    Training (step ``pni.train``): channelwise PNI weight noise (α init 0.25, generators seeded
    with ``seed``) injected into every conv/linear of a copy of ``mnist-lenet-pgd``, ``epochs``
    epochs of method ``"pni"`` (w = 0.5, ℓ∞ PGD ε = ``eps``, α = ε/4, ``steps`` steps, random
    start) on ``n_train`` seeded MNIST training images, Adam ``lr``, batch 100, noise scales
    without weight decay. Evaluation (step ``pni.evaluate``, one per model): on ``n_test`` test
    images (seed ``seed + 2``), the accuracy of ``SmoothedClassifier(model, σ, samples,
    vote="prediction")`` for σ in ``sigmas`` on clean inputs, on PGD examples (crafted on the
    base model, its weight noise on) and on EPGD examples (the same PGD with
    ``ExpectationGradient(σ, epgd_samples)``; σ = 0 reuses PGD). The evaluated PNI model's noise
    generators restart from ``seed``.
    """

    n_train: int = 3000
    epochs: int = 1
    n_test: int = 200
    eps: float = 0.3
    steps: int = 7
    sigmas: tuple[float, ...] = (0.0, 0.1, 0.2)
    samples: int = 16
    epgd_samples: int = 8
    lr: float = 1e-4
    seed: int = 0
    models_dir: str | None = None

    def __post_init__(self) -> None:
        for k in ("n_train", "epochs", "n_test", "steps", "samples", "epgd_samples"):
            check_int_at_least(k, getattr(self, k), 1)
        check_int_at_least("seed", self.seed, 0)
        check_positive("eps", self.eps)
        check_positive("lr", self.lr)
        for sg in self.sigmas:
            check_nonnegative("sigma", sg)


_PNI_TRAIN = ("n_train", "epochs", "eps", "steps", "lr", "seed", "models_dir")
MODEL_NAMES = {"pni": "PNI-W LeNet (PNI-PGD)", "base": "LeNet PGD-AT (no noise)"}


def pni_plan(params: dict[str, Any], seed: int = 0) -> list[Step]:
    """The steps of the PNI study for spec ``params`` (:class:`PNISettings` fields). Rows:
    ``model, sigma, M, clean, PGD, EPGD`` (accuracies in [0, 1]), PNI model first."""
    s = from_params(PNISettings, params)
    train = Step("pni.train", step_settings(s, _PNI_TRAIN), rows=False)
    ev = step_settings(s, [f.name for f in dataclasses.fields(s)])
    return [Step("pni.evaluate", {**ev, "model": m}, after=(train,) if m == "pni" else ())
            for m in MODEL_NAMES]


def _pni_recipe(s: dict[str, Any]) -> dict[str, Any]:
    """The PNI LeNet's training recipe (:func:`train_recipe`): PNI-W, method ``"pni"``."""
    r = train_recipe({"method": "pni", "n_train": s["n_train"], "epochs": s["epochs"],
                      "lr": s["lr"], "batch_size": 100, "seed": s["seed"], "eps": s["eps"],
                      "alpha": s["eps"] / 4, "steps": s["steps"]})
    assert r is not None
    return r


def _pni_model(s: dict[str, Any]) -> nn.Module:
    return _noisy_copy(_load("mnist-lenet-pgd", s["models_dir"]), _pni_recipe(s), s["seed"])


@register_step("pni.train")
def _pni_train(s: dict[str, Any], ctx: Any) -> StepOutput:
    """The PNI LeNet trained with PNI-PGD: its weights and the learned mean |α| per layer."""
    x_tr, y_tr = sample_split("mnist", "train", s["n_train"], s["seed"], ctx.data_root)
    pni = train_base(_load("mnist-lenet-pgd", s["models_dir"]), x_tr, y_tr, _pni_recipe(s))
    alphas = [float(p.detach().abs().mean()) for p in _defenses().noise_parameters(pni)]
    return StepOutput(tensors=module_tensors(pni), info={"mean_abs_alpha": alphas})


@register_step("pni.evaluate")
def _pni_evaluate(s: dict[str, Any], ctx: Any) -> StepOutput:
    """Smoothed accuracy of one model (PNI or plain) on clean, PGD and EPGD inputs."""
    from .. import attacks, defenses

    x_te, y_te = sample_split("mnist", "test", s["n_test"], s["seed"] + 2, ctx.data_root)
    if s["model"] == "pni":
        weights = ctx.step(Step("pni.train", {k: s[k] for k in _PNI_TRAIN})).tensors
        model = load_module_tensors(_pni_model(s), weights)
    else:
        model = _load("mnist-lenet-pgd", s["models_dir"])
    eps, steps, seed = s["eps"], s["steps"], s["seed"]
    x_pgd = attacks.PGD(eps=eps, alpha=eps / 4, steps=steps, random_start=True,
                        seed=seed)(model, x_te, y_te).x_adv
    rows = []
    for sigma in s["sigmas"]:
        smoothed = defenses.SmoothedClassifier(model, sigma=float(sigma), samples=s["samples"],
                                               vote="prediction", seed=seed)
        x_epgd = x_pgd
        if sigma > 0:
            grad = attacks.ExpectationGradient(sigma=float(sigma), samples=s["epgd_samples"])
            x_epgd = attacks.PGD(eps=eps, alpha=eps / 4, steps=steps, random_start=True,
                                 seed=seed, gradient=grad)(model, x_te, y_te).x_adv
        rows.append({"model": MODEL_NAMES[s["model"]], "sigma": float(sigma), "M": s["samples"],
                     "clean": accuracy(smoothed, x_te, y_te),
                     "PGD": accuracy(smoothed, x_pgd, y_te),
                     "EPGD": accuracy(smoothed, x_epgd, y_te)})
    return StepOutput(rows=rows)
