"""SmoothFool Table 3 against seven defences on MNIST and CIFAR-10, as a planned study task.

SmoothFool: An Efficient Framework for Computing Smooth Adversarial Perturbations (Dabouei et
al., arXiv:1910.03624), Table 3: fooling rates of IGSM, DeepFool (``clip=True``: the minimal
perturbation stays valid in ``[0, 1]``), the colour shift CS (CIFAR-10; on MNIST its greyscale
analogue GS, :class:`advsmooth.attacks.GreyShift`) and SmoothFool σg ∈ ``sigmas_g`` against
defended models:

* **transfer** (zero-knowledge, the paper's setting): every attack is crafted once on the
  undefended base model (``mnist-lenet`` / ``cifar10-resnet20``) and the same images are
  classified by each defended model;
* **white-box**: the attack is crafted on the defended model itself (every defence here is a
  differentiable ``nn.Module``; for HGD that is ``denoiser → model``; for MagNet it is
  ``model(reformer(x))`` — the attacker knows the reformer but does not optimise against the
  detectors, so a white-box example still has to evade them to count).

MNIST defences: undefended ``mnist-lenet`` (reference); FGSM-AT (``mnist-lenet`` fine-tuned with
method ``"fgsm_at"``); PGD-AT (shared ``mnist-lenet-pgd``); Ens-AT (``mnist-lenet`` fine-tuned
with ``"ensemble_at"``, holdouts ``mnist-mlp`` and a LeNet-5 trained here); SAT (``"sat"``,
SmoothFool σg = 1 examples); HGD (a :class:`~advsmooth.defenses.hgd.Denoiser` trained with the
logits-guided loss in front of ``mnist-lenet``); MagNet (reformer = autoencoder I, detectors =
L2 reconstruction error of autoencoder I and L1 reconstruction error of autoencoder II, union
threshold at ``fpr`` on held-out clean training images).

CIFAR-10 defences (ε = 8/255, SmoothClip step 0.5): the same recipes around the shared
``cifar10-resnet20``, except PGD-AT (ResNet-20 fine-tuned here with method ``"pgd"``: ε = 8/255,
α = 2/255, 7 steps), Ens-AT (holdouts ``cifar10-resnet32`` and ``cifar10-resnet44``) and MagNet
(one autoencoder without pooling as reformer, detectors L1 reconstruction error + Jensen–Shannon
divergence at T = 10 and 40; denoising noise 0.025). **Data split** (:func:`table3_split`):
with ``train_split="train"`` (the default) the defences' disjoint training slices come from one
seeded permutation of the 50,000 CIFAR-10 training images and the evaluation images (the first
``n_clean``, of which the first ``n_test`` are attacked) from the test split; ``"test"`` cuts both
from one permutation of the 10,000 test images (the setting of the runs made before the training
split was available).

Fooling rate: over the test images the defended model classifies correctly, the fraction whose
adversarial version it misclassifies; against MagNet an adversarial image counts only when it is
misclassified **and** not flagged by the detectors (the "MagNet (reformer only)" rows ignore the
detectors).

The study is a plan of steps (:func:`table3_plan`), each a store artefact: one training step per
defence (``table3.fgsm_at``, ``table3.pgd_at``, ``table3.holdout``, ``table3.ens_at``,
``table3.sat``, ``table3.hgd``, ``table3.magnet``: the trained weights), one ``table3.craft``
step per attack and source model (the adversarial batch) and one ``table3.evaluate`` step per
defence (its rows). A killed run resumes without retraining a finished defence. Specs:
``experiments/mnist_smoothfool_table3.toml`` and ``experiments/cifar10_smoothfool_table3.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import check_int_at_least, check_positive
from ..experiments.artefacts import Step, StepOutput, register_step
from ._settings import from_params, load_module_tensors, module_tensors, step_settings
from .training import accuracy

__all__ = ["DATASETS", "DEFENCES", "Table3Settings", "table3_settings", "table3_plan",
           "table3_split", "training_images", "attack_names"]

#: Per-dataset settings: the label, the undefended base model, the number of images the defences'
#: training slices are cut from, and the defaults of the parameters left at ``None``.
DATASETS: dict[str, dict[str, Any]] = {
    "mnist": {"label": "MNIST", "base": "mnist-lenet", "arch": "LeNets", "pool": 60000,
              "defaults": {"n_clean": 10000, "n_train": 2000, "n_train_sat": 200,
                           "n_train_hgd": 2000, "n_ae": 5000, "n_val": 1000, "eps": 0.3,
                           "clip_step": 1.0, "ae_epochs": 5}},
    "cifar10": {"label": "CIFAR-10", "base": "cifar10-resnet20", "arch": "ResNet-20s",
                "pool": 50000, "test_pool": 10000,
                "defaults": {"n_clean": 2000, "n_train": 2000, "n_train_sat": 200,
                             "n_train_hgd": 1000, "n_ae": 3000, "n_val": 1000, "eps": 8 / 255,
                             "clip_step": 0.5, "ae_epochs": 20}},
}

#: the defences, in table order ("none" is the undefended base model)
DEFENCES = ("none", "FGSM-AT", "PGD-AT", "Ens-AT", "SAT", "HGD", "MagNet")
#: CIFAR-10 Ens-AT holdouts (static pre-trained models, never trained here).
CIFAR_HOLDOUTS = ("cifar10-resnet32", "cifar10-resnet44")
#: CIFAR-10 PGD-AT recipe (Madry et al.): steps, step size as a fraction of ε, mixing weight w.
CIFAR_PGD = {"steps": 7, "alpha_frac": 0.25, "w": 1.0}


def table3_settings(dataset: str = "mnist", **given: Any) -> dict[str, Any]:
    """The resolved sizes, ``eps``, ``clip_step`` and ``ae_epochs`` for ``dataset``: each keyword
    of ``DATASETS[dataset]["defaults"]`` given as ``None`` (or not given) takes the dataset's
    default. ``ValueError`` for an unknown dataset or keyword."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    defaults = DATASETS[dataset]["defaults"]
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(defaults)}")
    return {k: (v if given.get(k) is None else given[k]) for k, v in defaults.items()}


def attack_names(dataset: str, sigmas_g: tuple[float, ...]) -> list[str]:
    """The table's attack columns: IGSM, DF, CS (CIFAR-10) or GS (MNIST), SF σg=… ."""
    return ["IGSM", "DF", "CS" if dataset == "cifar10" else "GS",
            *(f"SF σg={sg:g}" for sg in sigmas_g)]


@dataclass(frozen=True)
class Table3Settings:
    """Settings of the Table 3 study: one field per spec parameter (hence more than twelve).

    ``dataset``: ``"mnist"`` or ``"cifar10"``; fields left at ``None`` take the dataset's default
    (:data:`DATASETS`). Images: ``n_test`` attacked test images; clean accuracy on ``n_clean``;
    training slices (disjoint, in this order) ``n_train`` (FGSM-AT, Ens-AT, CIFAR PGD-AT, the MNIST
    holdout LeNet-5; SAT uses its first ``n_train_sat``), ``n_train_hgd`` (HGD), ``n_ae`` (MagNet
    autoencoders), ``n_val`` (MagNet thresholds at false-positive rate ``fpr``). Fine-tuning:
    ``epochs`` epochs, Adam ``lr``, batch 50, ℓ∞ ``eps`` (also the attacks' ε); HGD
    ``hgd_epochs``, autoencoders ``ae_epochs``. Attacks: IGSM with ``igsm_steps`` steps,
    SmoothFool σg ∈ ``sigmas_g`` with SmoothClip step ``clip_step`` and ``sf_max_iter``
    iterations. ``white_box`` adds the white-box rows (``white_box_attacks``: only these
    attacks, the others NaN). ``seed`` seeds every split, initialisation and training.
    ``models_dir``: where the zoo weights are (default: the zoo's search). ``train_split``
    (CIFAR-10): ``"train"`` cuts the training slices from the 50,000 training images and the
    evaluation images from the test split; ``"test"`` cuts both from one permutation of the
    10,000 test images (the only way before the training split was available; disjoint parts).
    ``n_train_<d>`` / ``epochs_<d>`` for ``<d>`` in ``fgsm``, ``pgd``, ``ens`` (CIFAR-10 with
    ``train_split = "train"``): a budget of its own for FGSM-AT, PGD-AT or Ens-AT — the first
    ``n_train_<d>`` images of the training permutation (up to all 50,000: the other slices are
    then among them, which matters to no evaluation, as every attacked image comes from the
    test split) for ``epochs_<d>`` epochs; ``None``: the ``n_train`` slice for ``epochs``
    epochs. Only that defence's steps see its budget, so a store that holds the other
    defences' steps reuses them.
    """

    dataset: str = "mnist"
    n_test: int = 100
    n_clean: int | None = None
    n_train: int | None = None
    n_train_sat: int | None = None
    n_train_hgd: int | None = None
    n_ae: int | None = None
    n_val: int | None = None
    epochs: int = 1
    lr: float = 1e-4
    eps: float | None = None
    hgd_epochs: int = 3
    ae_epochs: int | None = None
    fpr: float = 0.01
    igsm_steps: int = 10
    sf_max_iter: int = 50
    sigmas_g: tuple[float, ...] = (1.0, 3.0, 5.0)
    clip_step: float | None = None
    white_box: bool = True
    white_box_attacks: tuple[str, ...] | None = None
    seed: int = 0
    models_dir: str | None = None
    train_split: str = "train"
    n_train_fgsm: int | None = None
    epochs_fgsm: int | None = None
    n_train_pgd: int | None = None
    epochs_pgd: int | None = None
    n_train_ens: int | None = None
    epochs_ens: int | None = None

    def __post_init__(self) -> None:
        given = {k: getattr(self, k) for k in DATASETS.get(self.dataset, {"defaults": {}})
                 ["defaults"]}
        for k, v in table3_settings(self.dataset, **given).items():
            object.__setattr__(self, k, v)
        for k in ("n_test", "n_clean", "n_train", "n_train_sat", "n_train_hgd", "n_ae", "n_val",
                  "epochs", "hgd_epochs", "ae_epochs", "igsm_steps", "sf_max_iter"):
            check_int_at_least(k, getattr(self, k), 1)
        check_int_at_least("seed", self.seed, 0)
        for k in ("lr", "eps", "clip_step", "fpr"):
            check_positive(k, getattr(self, k))
        names = attack_names(self.dataset, self.sigmas_g)
        bad = [a for a in self.white_box_attacks or () if a not in names]
        if bad:
            raise ValueError(f"unknown white_box_attacks {bad}; the attacks of "
                             f"{DATASETS[self.dataset]['label']} are {names}")
        if self.n_train_sat > self.n_train:
            raise ValueError(f"n_train_sat ({self.n_train_sat}) must not exceed n_train "
                             f"({self.n_train}): SAT trains on the first images of n_train")
        cifar = self.dataset == "cifar10"
        if self.train_split not in ("train", "test"):
            raise ValueError(f"train_split must be 'train' or 'test', got {self.train_split!r}")
        if cifar and self.n_test > self.n_clean:
            raise ValueError(f"CIFAR-10: n_test ({self.n_test}) must not exceed n_clean "
                             f"({self.n_clean}): the attacked images are the first n_test of "
                             "the n_clean held-out images")
        shared = cifar and self.train_split == "test"  # one pool for evaluation and training
        used = (self.n_clean if shared else 0) + self.n_train + self.n_train_hgd + self.n_ae \
            + self.n_val
        pool = DATASETS[self.dataset]["test_pool" if shared else "pool"]
        if used > pool:
            raise ValueError(f"{'n_clean + ' if shared else ''}n_train + n_train_hgd + n_ae + "
                             f"n_val = {used} exceeds the {pool} "
                             f"{DATASETS[self.dataset]['label']} "
                             f"{'test' if shared else 'training'} images")
        if cifar and self.n_clean > DATASETS["cifar10"]["test_pool"]:
            raise ValueError(f"n_clean ({self.n_clean}) exceeds the 10000 CIFAR-10 test images")
        self._check_budgets(cifar, shared, pool)

    def _check_budgets(self, cifar: bool, shared: bool, pool: int) -> None:
        for k in _BUDGET_FIELDS:
            if getattr(self, k) is None:
                continue
            check_int_at_least(k, getattr(self, k), 1)
            if not cifar or shared:
                raise ValueError(f"{k} applies to CIFAR-10 with train_split = 'train' only (with "
                                 "train_split = 'test' the training images would overlap the "
                                 "evaluation; MNIST trains every defence on its n_train slice)")
            if k.startswith("n_train_") and getattr(self, k) > pool:
                raise ValueError(f"{k} ({getattr(self, k)}) exceeds the {pool} training images")


#: the fields that decide the data and every trained defence (not the attacks)
_MODEL_FIELDS = ("dataset", "seed", "n_clean", "n_train", "n_train_sat", "n_train_hgd", "n_ae",
                 "n_val", "epochs", "lr", "eps", "hgd_epochs", "ae_epochs", "igsm_steps",
                 "clip_step", "fpr", "models_dir", "train_split")
#: a defence's own training budget (images, epochs): in the settings of its steps only, and only
#: when given (so the steps of every other defence, and of a spec without them, keep their keys)
_OWN_BUDGET = {"FGSM-AT": ("n_train_fgsm", "epochs_fgsm"), "PGD-AT": ("n_train_pgd", "epochs_pgd"),
               "Ens-AT": ("n_train_ens", "epochs_ens")}
_BUDGET_FIELDS = tuple(k for fields in _OWN_BUDGET.values() for k in fields)
#: the attacks' fields (besides the attack's name)
_ATTACK_FIELDS = ("n_test", "sf_max_iter")
#: defence -> training step kind (MNIST PGD-AT is the shared mnist-lenet-pgd: no step)
_TRAIN_KIND = {"FGSM-AT": "table3.fgsm_at", "PGD-AT": "table3.pgd_at", "Ens-AT": "table3.ens_at",
               "SAT": "table3.sat", "HGD": "table3.hgd", "MagNet": "table3.magnet"}


def _own(m: dict[str, Any], defence: str) -> dict[str, Any]:
    """Model settings ``m`` as the steps of ``defence`` see them: its own budget
    (:data:`_OWN_BUDGET`, where given) kept, every other defence's dropped."""
    own = _OWN_BUDGET.get(defence, ())
    return {k: v for k, v in m.items() if k not in _BUDGET_FIELDS or k in own}


def _budget(s: dict[str, Any], defence: str) -> dict[str, Any]:
    """``n`` and ``epochs`` of :func:`_finetuned` for ``defence`` from its step settings ``s``."""
    n, epochs = _OWN_BUDGET[defence]
    return {"n": s.get(n), "epochs": s.get(epochs)}


def _train_step(m: dict[str, Any], defence: str) -> Step | None:
    """The training step of ``defence`` for model settings ``m`` (None: nothing to train)."""
    m = _own(m, defence)
    if defence == "none" or (defence == "PGD-AT" and m["dataset"] != "cifar10"):
        return None
    after: tuple[Step, ...] = ()
    if defence == "Ens-AT" and m["dataset"] != "cifar10":
        after = (Step("table3.holdout", m, rows=False),)
    return Step(_TRAIN_KIND[defence], m, rows=False, after=after)


def _craft_step(m: dict[str, Any], a: dict[str, Any], attack: str, on: str) -> Step:
    """The adversarial batch of ``attack`` crafted on the model of defence ``on``."""
    train = _train_step(m, on)
    return Step("table3.craft", {**_own(m, on), **a, "attack": attack, "on": on}, rows=False,
                after=() if train is None else (train,))


def table3_plan(params: dict[str, Any], seed: int = 0) -> list[Step]:
    """The steps of the Table 3 study for spec ``params`` (:class:`Table3Settings` fields;
    ``seed`` is the spec cell's, unused: the study's own ``seed`` parameter decides). Rows:
    ``defence, setting, clean_acc, <attack>...`` (fooling rates in [0, 1]) per defence in
    :data:`DEFENCES` order: transfer (the undefended model: white-box), then white-box, each
    followed by MagNet's reformer-only row."""
    s = from_params(Table3Settings, params)
    m, a = step_settings(s, _MODEL_FIELDS), step_settings(s, _ATTACK_FIELDS)
    m.update({k: getattr(s, k) for k in _BUDGET_FIELDS if getattr(s, k) is not None})
    names = attack_names(s.dataset, s.sigmas_g)
    wb = [n for n in names if s.white_box_attacks is None or n in s.white_box_attacks] \
        if s.white_box else []
    steps = []
    for d in DEFENCES:
        crafts = [_craft_step(m, a, n, "none") for n in names]
        crafts += [_craft_step(m, a, n, d) for n in wb if d != "none"]
        train = _train_step(m, d)
        steps.append(Step("table3.evaluate", {**_own(m, d), **a, "defence": d, "attacks": names,
                                              "white_box": wb},
                          after=tuple(crafts) + (() if train is None else (train,))))
    return steps


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------

def table3_split(s: dict[str, Any], root: Any = None) -> dict[str, Tensor]:
    """The images of the study with model settings ``s``: ``x_te, y_te`` (attacked), ``x_clean,
    y_clean`` (clean accuracy) and the training slices ``x_train, y_train, x_hgd, y_hgd, x_ae,
    x_val`` (plus ``idx_<part>``: their indices into the pool).

    MNIST: the slices are disjoint cuts of one permutation (seed ``seed``) of the 60,000
    training images; ``n_test`` seeded test images (seed ``seed + 3``) are attacked and clean
    accuracy is measured on the first ``n_clean`` test images. CIFAR-10 with ``train_split =
    "train"`` (the default): the slices are cut the same way from the 50,000 training images,
    and the evaluation part is the first ``n_clean`` images of one permutation of the 10,000
    test images (the first ``n_test`` of them are attacked). With ``train_split = "test"``: one
    permutation of the test images is cut into the evaluation part followed by the slices
    (``idx_*`` then index the test split)."""
    from .. import data

    cifar = s["dataset"] == "cifar10"
    shared = cifar and s.get("train_split", "train") == "test"
    x_all, y_all = data.load(s["dataset"], "test" if shared else "train", root)
    perm = data.random_subset(len(y_all), None, s["seed"])  # one permutation, cut below
    out: dict[str, Tensor] = {}
    pos = s["n_clean"] if shared else 0
    for key, n in (("train", s["n_train"]), ("hgd", s["n_train_hgd"]), ("ae", s["n_ae"]),
                   ("val", s["n_val"])):
        idx = perm[pos:pos + n]
        out[f"idx_{key}"], out[f"x_{key}"], out[f"y_{key}"] = idx, x_all[idx], y_all[idx]
        pos += n
    if cifar:
        if not shared:
            x_all, y_all = data.load("cifar10", "test", root)
            perm = data.random_subset(len(y_all), None, s["seed"])
        for key, n in (("clean", s["n_clean"]), ("te", s.get("n_test", s["n_clean"]))):
            idx = perm[:n]
            out[f"idx_{key}"], out[f"x_{key}"], out[f"y_{key}"] = idx, x_all[idx], y_all[idx]
    else:
        x_test, y_test = data.load("mnist", "test", root)
        out["x_clean"], out["y_clean"] = x_test[:s["n_clean"]], y_test[:s["n_clean"]]
        if "n_test" in s:
            out["x_te"], out["y_te"] = data.load("mnist", "test", root, sample=s["n_test"],
                                                 seed=s["seed"] + 3)
    return out


def training_images(s: dict[str, Any], n: int | None = None,
                    root: Any = None) -> tuple[Tensor, Tensor]:
    """The first ``n`` (default all) images of the ``n_train`` slice; ``n`` beyond the slice
    (a defence's ``n_train_<d>``, ``train_split = "train"``) reads on along the same permutation
    of the training images, so the slice is their first ``n_train``."""
    if n is not None and n > s["n_train"]:
        from .. import data

        x_all, y_all = data.load(s["dataset"], "train", root)
        idx = data.random_subset(len(y_all), None, s["seed"])[:n]  # table3_split's permutation
        return x_all[idx], y_all[idx]
    d = table3_split(s, root)
    return d["x_train"][:n], d["y_train"][:n]


def _load(name: str, s: dict[str, Any]) -> nn.Module:
    from .. import models

    return models.load(name, models_dir=s["models_dir"], verbose=False).eval()


def _base(s: dict[str, Any]) -> nn.Module:
    return _load(DATASETS[s["dataset"]]["base"], s)


def _model_settings(s: dict[str, Any]) -> dict[str, Any]:
    """The model fields of step settings ``s`` (a defence's own budget included where present)."""
    return {k: s[k] for k in _MODEL_FIELDS} | {k: s[k] for k in _BUDGET_FIELDS if k in s}


# ----------------------------------------------------------------------------------------------
# training steps: one per defence (weights as artefacts)
# ----------------------------------------------------------------------------------------------

def _finetuned(s: dict[str, Any], ctx: Any, method: Any, n: int | None = None,
               epochs: int | None = None, **kw: Any) -> StepOutput:
    """The base model fine-tuned ``epochs`` (default ``s["epochs"]``) epochs (Adam ``lr``, batch
    50, seed ``seed``) on the first ``n`` (default all) images of the ``n_train`` slice with
    training ``method``; ``n`` beyond the slice reads on along the training permutation."""
    from .. import defenses

    x, y = training_images(s, n, ctx.data_root)
    m = defenses.train(_base(s), (x, y), method=method, epochs=epochs or s["epochs"], lr=s["lr"],
                       batch_size=50, seed=s["seed"], show_progress=False, **kw)
    return StepOutput(tensors=module_tensors(m))


@register_step("table3.fgsm_at")
def _fgsm_at(s: dict[str, Any], ctx: Any) -> StepOutput:
    """FGSM adversarial training (ε = ``eps``, w = 0.5)."""
    return _finetuned(s, ctx, "fgsm_at", **_budget(s, "FGSM-AT"), eps=s["eps"], w=0.5)


@register_step("table3.pgd_at")
def _pgd_at(s: dict[str, Any], ctx: Any) -> StepOutput:
    """CIFAR-10 PGD adversarial training (Madry et al.: ε, α = ε/4, 7 steps, random start)."""
    return _finetuned(s, ctx, "pgd", **_budget(s, "PGD-AT"), eps=s["eps"],
                      alpha=s["eps"] * CIFAR_PGD["alpha_frac"], steps=CIFAR_PGD["steps"],
                      w=CIFAR_PGD["w"])


@register_step("table3.sat")
def _sat(s: dict[str, Any], ctx: Any) -> StepOutput:
    """Smooth adversarial training (SmoothFool σg = 1 examples, w = 0.5) on ``n_train_sat``."""
    return _finetuned(s, ctx, "sat", n=s["n_train_sat"], sigma_g=1.0, w=0.5,
                      clip_step=s["clip_step"], max_iter=50)


@register_step("table3.holdout")
def _holdout(s: dict[str, Any], ctx: Any) -> StepOutput:
    """MNIST Ens-AT's static holdout: a LeNet-5 (initialised with seed ``seed``) trained 2
    epochs, Adam 1e-3, on the ``n_train`` slice."""
    from .. import defenses, models

    d = table3_split(s, ctx.data_root)
    torch.manual_seed(s["seed"])
    hold = models.create("lenet5", (1, 28, 28), 10)
    defenses.train(hold, (d["x_train"], d["y_train"]), epochs=2, lr=1e-3, batch_size=50,
                   seed=s["seed"] + 1, show_progress=False)
    return StepOutput(tensors=module_tensors(hold))


def _holdouts(s: dict[str, Any], ctx: Any) -> list[Any]:
    """Ens-AT's holdout models: CIFAR-10 ResNet-32/44; MNIST the shared MLP and the LeNet-5."""
    from .. import models

    if s["dataset"] == "cifar10":
        return list(CIFAR_HOLDOUTS)
    hold = models.create("lenet5", (1, 28, 28), 10)
    return ["mnist-mlp", load_module_tensors(hold, ctx.step(Step("table3.holdout", s)).tensors)]


@register_step("table3.ens_at")
def _ens_at(s: dict[str, Any], ctx: Any) -> StepOutput:
    """Ensemble adversarial training (FGSM ε = ``eps``, w = 0.5, sources: the model itself and
    the static holdouts)."""
    from .. import defenses

    meth = defenses.EnsembleAdversarialTraining(holdout=_holdouts(s, ctx), eps=s["eps"], w=0.5,
                                                models_dir=s["models_dir"])
    out = _finetuned(s, ctx, meth, **_budget(s, "Ens-AT"))
    out.info["sources"] = {k: meth.sources.count(k) for k in meth.source_names}
    return out


@register_step("table3.hgd")
def _hgd(s: dict[str, Any], ctx: Any) -> StepOutput:
    """HGD: a U-Net denoiser (width 16, depth 2; initialised with seed ``seed``) in front of the
    base model, logits-guided L1 loss, ``hgd_epochs`` epochs Adam 1e-3 on the ``n_train_hgd``
    slice, half FGSM and half IGSM examples (ε ~ U[0, eps] per image) crafted on the base."""
    from ..defenses import hgd

    d, base = table3_split(s, ctx.data_root), _base(s)
    xh, yh = d["x_hgd"], d["y_hgd"]
    half, eps = len(yh) // 2, s["eps"]
    xa = torch.cat([hgd.craft_training_set(base, xh[:half], yh[:half], attack="fgsm",
                                           eps=(0.0, eps), seed=s["seed"]),
                    hgd.craft_training_set(base, xh[half:], yh[half:], attack="igsm",
                                           eps=(0.0, eps), steps=s["igsm_steps"],
                                           seed=s["seed"] + 1)])
    torch.manual_seed(s["seed"])
    den = hgd.Denoiser(3 if s["dataset"] == "cifar10" else 1, width=16, depth=2)
    r = hgd.train_hgd(den, base, (xh, yh), layer="logits", x_adv=xa, epochs=s["hgd_epochs"],
                      lr=1e-3, batch_size=50, seed=s["seed"])
    return StepOutput(tensors=module_tensors(den),
                      info={"losses": r.losses, "initial_loss": r.initial_loss})


def _autoencoders(dataset: str) -> dict[str, Any]:
    """MagNet's autoencoders and their training: MNIST AE-I (width 8, pooling) and AE-II (width
    3), noise 0.1; CIFAR-10 one autoencoder (width 16, no pooling), noise 0.025. ``plateau``:
    the loss below which an autoencoder has left the blank/mean-image plateau."""
    from ..defenses import magnet

    if dataset == "cifar10":
        return {"aes": {"ae1": magnet.Autoencoder(3, width=16, pool=False, activation="relu")},
                "noise": 0.025, "plateau": 0.02}
    return {"aes": {"ae1": magnet.Autoencoder(1, width=8, pool=True, activation="relu"),
                    "ae2": magnet.Autoencoder(1, width=3, pool=False, activation="relu")},
            "noise": 0.1, "plateau": 0.05}


@register_step("table3.magnet")
def _magnet(s: dict[str, Any], ctx: Any) -> StepOutput:
    """MagNet's autoencoders, ``ae_epochs`` epochs Adam 1e-3 on the ``n_ae`` slice; one stuck on
    the plateau is re-initialised and retrained with the next seed (at most 3 attempts)."""
    from ..defenses import magnet

    x = table3_split(s, ctx.data_root)["x_ae"]
    spec = _autoencoders(s["dataset"])
    tensors: dict[str, Tensor] = {}
    info: dict[str, Any] = {}
    for k, (key, ae) in enumerate(spec["aes"].items()):
        for attempt in range(3):
            seed = s["seed"] + k + 100 * attempt
            torch.manual_seed(seed)
            for mod in ae.modules():
                if isinstance(mod, nn.Conv2d):
                    mod.reset_parameters()
            losses = magnet.train_autoencoder(ae, x, noise=spec["noise"], epochs=s["ae_epochs"],
                                              lr=1e-3, batch_size=32, seed=seed)
            if losses[-1] < spec["plateau"]:
                break
        info[f"{key}_loss"], info[f"{key}_attempts"] = losses, attempt + 1
        tensors.update({f"{key}.{n}": v for n, v in module_tensors(ae).items()})
    return StepOutput(tensors=tensors, info=info)


# ----------------------------------------------------------------------------------------------
# defended models, crafting and evaluation
# ----------------------------------------------------------------------------------------------

def _defended(defence: str, s: dict[str, Any], ctx: Any) -> nn.Module:
    """The model of ``defence`` rebuilt from its training step's artefact (MagNet fitted to
    ``fpr`` on the ``n_val`` slice)."""
    from ..defenses import hgd, magnet

    cifar = s["dataset"] == "cifar10"
    if defence == "none":
        return _base(s)
    if defence == "PGD-AT" and not cifar:
        return _load("mnist-lenet-pgd", s)
    weights = ctx.step(Step(_TRAIN_KIND[defence], _own(_model_settings(s), defence))).tensors
    if defence == "HGD":
        den = hgd.Denoiser(3 if cifar else 1, width=16, depth=2)
        return hgd.HGDDefended(load_module_tensors(den, weights), _base(s)).eval()
    if defence != "MagNet":
        return load_module_tensors(_base(s), weights)
    aes = {k: load_module_tensors(ae, {n[len(k) + 1:]: v for n, v in weights.items()
                                       if n.startswith(k + ".")})
           for k, ae in _autoencoders(s["dataset"])["aes"].items()}
    base = _base(s)
    if cifar:
        dets: list[nn.Module] = [magnet.ReconstructionDetector(aes["ae1"], p=1),
                                 magnet.DivergenceDetector(aes["ae1"], base, temperature=10.0),
                                 magnet.DivergenceDetector(aes["ae1"], base, temperature=40.0)]
    else:
        dets = [magnet.ReconstructionDetector(aes["ae1"], p=2),
                magnet.ReconstructionDetector(aes["ae2"], p=1)]
    mag = magnet.MagNet(base, aes["ae1"], dets).eval()
    return mag.fit(table3_split(s, ctx.data_root)["x_val"], fpr=s["fpr"])


def _attack(name: str, s: dict[str, Any]) -> Any:
    """The attack of column ``name``: IGSM (ε, α = 2.5ε/steps), DeepFool-L2 (η = 0.02, 50
    iterations, ``clip=True``), CS / GS (100 trials) or SmoothFool σg (SmoothClip step)."""
    from .. import attacks

    eps, steps = s["eps"], s["igsm_steps"]
    if name == "IGSM":
        return attacks.IGSM(eps=eps, alpha=2.5 * eps / steps, steps=steps)
    if name == "DF":
        return attacks.DeepFool(norm=2, overshoot=0.02, max_iter=50, clip=True)
    if name == "CS":
        return attacks.ColorShift(trials=100, seed=s["seed"])
    if name == "GS":
        return attacks.GreyShift(trials=100, max_shift=0.5, seed=s["seed"])
    sigma = float(name.removeprefix("SF σg="))
    return attacks.SmoothFool(sigma=sigma, clip_step=s["clip_step"], max_iter=s["sf_max_iter"])


@register_step("table3.craft", version=3)  # 2: DeepFool clip=True settles; 3: by a safe margin
def _craft(s: dict[str, Any], ctx: Any) -> StepOutput:
    """Attack ``attack`` crafted on the model of defence ``on`` over the ``n_test`` attacked
    images (adversarial images clamped to [0, 1])."""
    d = table3_split(s, ctx.data_root)
    res = _attack(s["attack"], s)(_defended(s["on"], s, ctx), d["x_te"], d["y_te"])
    return StepOutput(tensors={"x_adv": res.x_adv.detach().clamp(0.0, 1.0)})


@register_step("table3.evaluate", version=3)  # 2, 3: reads version-2, -3 crafts
def _evaluate(s: dict[str, Any], ctx: Any) -> StepOutput:
    """The rows of one defence: fooling rates of the transferred attacks (the undefended model:
    its own white-box row) and of the white-box attacks (NaN for attacks not run)."""
    from .. import metrics
    from ..defenses import magnet

    name, m = s["defence"], _model_settings(s)
    a = {k: s[k] for k in _ATTACK_FIELDS}
    d = table3_split(s, ctx.data_root)
    x, y = d["x_te"], d["y_te"]
    model = _defended(name, s, ctx)
    acc = accuracy(model, x, y)
    settings = [("white-box" if name == "none" else "transfer", "none")]
    if s["white_box"] and name != "none":
        settings.append(("white-box", name))
    rows = []
    for setting, on in settings:
        row: dict[str, Any] = {"defence": name, "setting": setting, "clean_acc": acc}
        ref: dict[str, Any] = {"defence": "MagNet (reformer only)", "setting": setting,
                               "clean_acc": acc}
        for atk in s["attacks"]:
            if on != "none" and atk not in s["white_box"]:
                row[atk] = ref[atk] = float("nan")
                continue
            xa = ctx.step(_craft_step(m, a, atk, on)).tensors["x_adv"]
            if name == "MagNet":
                r = magnet.magnet_fooling_rate(model, x, xa, y)
                row[atk], ref[atk] = r.rate, r.misclassified
            else:
                row[atk] = metrics.fooling_rate(model, x, xa, y).rate
        rows += [row, ref] if name == "MagNet" else [row]
    info = {"clean_acc_n_clean": accuracy(model, d["x_clean"], d["y_clean"])}
    if name == "MagNet":
        info["fpr_val"] = float(model.detect(d["x_val"]).double().mean())
        info["fpr_test"] = float(model.detect(d["x_clean"]).double().mean())
    return StepOutput(rows=rows, info=info)
