"""The model zoo: named models, :func:`load`, :func:`available`, digits models trained on first use,
``torchvision:`` / ``timm:`` adapters and self-describing saved models.

Checkpoint folder for the pretrained ``cifar10-*`` / ``mnist-*`` models: the ``models_dir=``
argument (CLI ``--models-dir``), else ``$ADVSMOOTH_MODELS``, else ``./models`` and, as a
convenience, ``../shared/models`` relative to the current working directory.

``digits-*`` models are trained on the embedded digits train split the first time they are
asked for (seeded, deterministic, seconds on a CPU) and cached in
``advsmooth._utils.cache_dir() / "models"`` with a metadata JSON (recipe, test accuracy, training
time, the weights' sha256, checked before every reuse); later loads reuse the cache.
``cifar10-vgg`` and ``cifar10-wrn16-2`` are trained the same way on the CIFAR-10 training split
(``../shared/data``): architectures of other families than the shared ResNets, for transfer
studies; their first use trains each in about half an hour on one CPU core.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from .._tensors import model_hash
from .._utils import (
    atomic_path,
    cache_dir,
    did_you_mean,
    optional_import,
    resolve_device,
    search_dirs,
)
from .checkpoints import file_sha256, load_checkpoint
from .zoo import IMAGENET_MEAN, IMAGENET_STD, Normalized, create

__all__ = ["ModelSpec", "ZOO", "load", "available", "spec", "models_dirs", "save_model",
           "note_model", "trained_model_path"]


@dataclass(frozen=True)
class ModelSpec:
    """A named model: architecture, input, where its weights come from, expected accuracy."""

    name: str
    arch: str
    dataset: str
    in_shape: tuple[int, int, int]
    num_classes: int
    source: str  # "shared" (a checkpoint file) or "trained" (on first use, train split)
    file: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    accuracy: float | None = None  # expected test accuracy in percent (README / recipe)
    description: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)


_CIFAR_ACC = {20: 81.03, 32: 82.56, 44: 82.67, 56: 83.20}

ZOO: dict[str, ModelSpec] = {}
for _d, _acc in _CIFAR_ACC.items():
    ZOO[f"cifar10-resnet{_d}"] = ModelSpec(
        f"cifar10-resnet{_d}", f"resnet{_d}", "cifar10", (3, 32, 32), 10, "shared",
        f"cifar10_resnet{_d}.pt", IMAGENET_MEAN, IMAGENET_STD, accuracy=_acc,
        description=f"CIFAR-10 ResNet-{_d} (akamaster, option A, ImageNet mean/std inside); "
                    f"{_acc} % on the shared JPEG-decoded test set")
ZOO["mnist-lenet"] = ModelSpec(
    "mnist-lenet", "lenet", "mnist", (1, 28, 28), 10, "shared", "mnist_lenet_clean.pt",
    accuracy=98.89, description="advertorch MNIST CNN, clean training")
ZOO["mnist-lenet-pgd"] = ModelSpec(
    "mnist-lenet-pgd", "lenet", "mnist", (1, 28, 28), 10, "shared", "mnist_lenet_pgdadv.pt",
    accuracy=98.64, description="advertorch MNIST CNN, PGD adversarial training (Linf eps 0.3)")
ZOO["mnist-mlp"] = ModelSpec(
    "mnist-mlp", "mlp", "mnist", (1, 28, 28), 10, "shared", "mnist_mlp300_100.pt",
    kwargs={"hidden": (300, 100)}, accuracy=98.17, description="advertorch MLP 784-300-100-10")

#: bump when the first-use training changes: cached models of another version are retrained
RECIPE_VERSION = 1
_DIGITS_RECIPES = {
    "digits-fc": ("mlp", {"hidden": (300, 100)},
                  {"epochs": 20, "lr": 1e-3, "batch_size": 32, "optimizer": "adam", "seed": 0,
                   "schedule": "cosine"}),
    "digits-lenet": ("lenet", {},
                     {"epochs": 10, "lr": 2e-3, "batch_size": 32, "optimizer": "adam",
                      "seed": 0, "schedule": "cosine"}),
    "digits-resnet20": ("resnet20", {},
                        {"epochs": 5, "lr": 2e-3, "batch_size": 64, "optimizer": "adam",
                         "seed": 0, "schedule": "cosine"}),
}
for _name, (_arch, _kw, _recipe) in _DIGITS_RECIPES.items():
    ZOO[_name] = ModelSpec(
        _name, _arch, "digits", (1, 28, 28), 10, "trained", kwargs=_kw, recipe=_recipe,
        description=f"{_arch} trained on the embedded digits train split on first use "
                    f"({_recipe['epochs']} epochs, seed {_recipe['seed']}), cached")
# CIFAR-10 models of two other families, trained on the 50,000-image training split (no
# augmentation; SGD with momentum, cosine schedule): budgets of about half an hour each on one
# CPU core (measured in docs/models.md)
_CIFAR_RECIPES = {
    "cifar10-vgg": ("vgg-small", {},
                    {"epochs": 10, "lr": 0.05, "batch_size": 128, "optimizer": "sgd",
                     "momentum": 0.9, "weight_decay": 5e-4, "seed": 0, "schedule": "cosine"}),
    "cifar10-wrn16-2": ("wrn-16-2", {},
                        {"epochs": 4, "lr": 0.05, "batch_size": 128, "optimizer": "sgd",
                         "momentum": 0.9, "weight_decay": 5e-4, "seed": 0,
                         "schedule": "cosine"}),
}
for _name, (_arch, _kw, _recipe) in _CIFAR_RECIPES.items():
    ZOO[_name] = ModelSpec(
        _name, _arch, "cifar10", (3, 32, 32), 10, "trained", mean=IMAGENET_MEAN,
        std=IMAGENET_STD, kwargs=_kw, recipe=_recipe,
        description=f"{_arch} trained on the CIFAR-10 training split on first use "
                    f"({_recipe['epochs']} epochs, seed {_recipe['seed']}), cached")


def spec(name: str) -> ModelSpec:
    """The zoo entry for ``name`` (``ValueError`` listing the known names otherwise)."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(ZOO)}, torchvision:NAME, "
                         f"timm:NAME, or a path to a model saved by advsmooth"
                         f"{did_you_mean(name, ZOO)}")
    return ZOO[name]


def models_dirs(models_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for pretrained checkpoint files, in order (see module docstring);
    ``FileNotFoundError`` when a given ``models_dir`` is not a folder (a typo would otherwise
    fall back to the default folders unnoticed)."""
    if models_dir is not None and not Path(models_dir).expanduser().is_dir():
        raise FileNotFoundError(f"models_dir {models_dir}: no such folder")
    return search_dirs(models_dir, "ADVSMOOTH_MODELS", ("models", "../shared/models"))


def _find_checkpoint(file: str, models_dir: Any) -> Path:
    dirs = models_dirs(models_dir)
    for d in dirs:
        if (d / file).is_file():
            return d / file
    tried = ", ".join(str(d / file) for d in dirs)
    raise FileNotFoundError(f"checkpoint {file} not found: expected at {tried} (set "
                            f"models_dir=, --models-dir or ADVSMOOTH_MODELS; nothing is "
                            f"downloaded)")


def _build(s: ModelSpec) -> nn.Module:
    return create(s.arch, s.in_shape, s.num_classes, mean=s.mean, std=s.std, **dict(s.kwargs))


# ----------------------------------------------------------------------------------------------
# models trained on first use (digits, CIFAR-10), cached
# ----------------------------------------------------------------------------------------------

def trained_model_path(name: str) -> Path:
    """Cache path of the weights of a model trained on first use (its metadata is the same path
    + ``.json``)."""
    if spec(name).source != "trained":
        raise ValueError(f"{name} is not trained on first use (its weights come from a file)")
    return cache_dir() / "models" / f"{name}-v{RECIPE_VERSION}.pt"


def _file_lock(path: Path) -> Any:
    """Exclusive inter-process lock on ``path`` (the ``filelock`` package; every OS), blocking
    until it is free; released when the block ends or the process dies."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def _read_meta(pt: Path, recipe: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The cached model's metadata, or None when it is missing, corrupt, or stale.

    Stale means: another recipe version, a checkpoint whose hash differs from the recorded one,
    or (when ``recipe`` is given) a recipe that differs from the one the model was trained with,
    so that changing a recipe retrains instead of silently reusing an old model.
    """
    meta_path = pt.with_name(pt.name + ".json")
    if not (pt.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("recipe_version") != RECIPE_VERSION or meta.get("sha256") != file_sha256(pt):
        return None
    if recipe is not None and meta.get("recipe") != json.loads(json.dumps(dict(recipe))):
        return None
    return meta


def _train_first_use(s: ModelSpec, pt: Path, verbose: bool) -> dict[str, Any]:
    from .. import data as data_mod
    from .training import evaluate, train

    recipe = dict(s.recipe)
    seed = recipe["seed"]
    train_xy = data_mod.load(s.dataset, split="train")
    test_xy = data_mod.load(s.dataset, split="test")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(s)
    t0 = time.perf_counter()
    if verbose:
        print(f"advsmooth: training {s.name} on the {s.dataset} train split "
              f"({len(train_xy[1])} images, {recipe['epochs']} epochs; first use only)...",
              file=sys.stderr, flush=True)
    train(model, train_xy, epochs=recipe["epochs"], lr=recipe["lr"],
          batch_size=recipe["batch_size"], optimizer=recipe["optimizer"], seed=seed,
          schedule=recipe.get("schedule"), show_progress=verbose,
          **{k: recipe[k] for k in ("momentum", "weight_decay") if k in recipe})
    seconds = time.perf_counter() - t0
    acc = evaluate(model, test_xy)
    # the weights and the metadata that validates them (sha256), as save_model writes any model
    save_model(model, pt, arch=s.arch, in_shape=s.in_shape, num_classes=s.num_classes,
               mean=s.mean, std=s.std, name=s.name,
               kwargs={k: list(v) if isinstance(v, tuple) else v for k, v in s.kwargs.items()},
               data=s.dataset, train_split="train", n_train=len(train_xy[1]),
               n_test=len(test_xy[1]), test_accuracy=round(100.0 * acc, 3), seed=seed,
               recipe=recipe, recipe_version=RECIPE_VERSION,
               train_seconds=round(seconds, 2), torch=torch.__version__,
               created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    meta = json.loads(pt.with_name(pt.name + ".json").read_text())
    if verbose:
        print(f"advsmooth: {s.name}: test accuracy {meta['test_accuracy']:.2f} % on "
              f"{meta['n_test']} {s.dataset} test images ({seconds:.1f} s); cached at {pt}",
              file=sys.stderr, flush=True)
    return meta


def _load_trained(s: ModelSpec, *, retrain: bool, verbose: bool) -> tuple[nn.Module, dict]:
    pt = trained_model_path(s.name)
    meta = None if retrain else _read_meta(pt, s.recipe)
    if meta is None:
        with _file_lock(pt.with_name(pt.name + ".lock")):
            # another process may have trained it meanwhile
            meta = None if retrain else _read_meta(pt, s.recipe)
            if meta is None:
                meta = _train_first_use(s, pt, verbose)
    model = _build(s)
    load_checkpoint(model, pt)
    return model, meta


# ----------------------------------------------------------------------------------------------
# adapters
# ----------------------------------------------------------------------------------------------

_TV_TRANSFORM_INPUT = ("inception_v3", "googlenet")


def _torchvision_model(name: str, *, pretrained: bool, checkpoint: Any,
                       allow_download: bool) -> nn.Module:
    tv = optional_import("torchvision")
    # torchvision builds these two with transform_input=True when it loads their pretrained
    # weights (ported from TensorFlow: they expect inputs in [-1, 1] and re-map ImageNet-normalised
    # ones); weights=None would leave it off and feed them the wrong input scale
    kw = {"transform_input": True} if (pretrained and checkpoint is None
                                        and name in _TV_TRANSFORM_INPUT) else {}
    try:
        net = tv.models.get_model(name, weights=None, **kw)
    except ValueError as exc:
        raise ValueError(f"unknown torchvision model {name!r}: {exc}") from None
    if checkpoint is not None:
        load_checkpoint(net, checkpoint)
    elif pretrained:
        weights = tv.models.get_model_weights(name).DEFAULT
        url = weights.url
        hub_file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if not hub_file.is_file():
            if not allow_download:
                raise FileNotFoundError(
                    f"pretrained weights for torchvision:{name} not found at {hub_file}; pass "
                    f"allow_download=True (CLI --allow-download) to fetch {url}, or "
                    f"checkpoint=PATH")
            torch.hub.load_state_dict_from_url(url, progress=False)
        load_checkpoint(net, hub_file)
    return Normalized(net, IMAGENET_MEAN, IMAGENET_STD)


def _timm_model(name: str, *, pretrained: bool, checkpoint: Any,
                allow_download: bool) -> nn.Module:
    timm = optional_import("timm")
    if checkpoint is not None or not pretrained:
        net = timm.create_model(name, pretrained=False)
        if checkpoint is not None:
            load_checkpoint(net, checkpoint)
    else:
        old = os.environ.get("HF_HUB_OFFLINE")
        if not allow_download:
            os.environ["HF_HUB_OFFLINE"] = "1"  # only the local Hugging Face cache
        try:
            net = timm.create_model(name, pretrained=True)
        except Exception as exc:
            raise FileNotFoundError(
                f"pretrained weights for timm:{name} are not in the local cache "
                f"({type(exc).__name__}); pass allow_download=True (CLI --allow-download) or "
                f"checkpoint=PATH") from None
        finally:
            if not allow_download:
                if old is None:
                    os.environ.pop("HF_HUB_OFFLINE", None)
                else:
                    os.environ["HF_HUB_OFFLINE"] = old
    cfg = getattr(net, "pretrained_cfg", None) or {}
    mean = cfg.get("mean", IMAGENET_MEAN)
    std = cfg.get("std", IMAGENET_STD)
    return Normalized(net, mean, std)


# ----------------------------------------------------------------------------------------------
# self-describing saved models (what `advsmooth train` writes)
# ----------------------------------------------------------------------------------------------

def save_model(model: nn.Module, path: str | os.PathLike[str], *, arch: str,
               in_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, **info: Any) -> Path:
    """Save ``model.state_dict()`` to ``path`` and a description to ``path + '.json'`` so that
    :func:`load` can rebuild it from the path alone. ``info`` may add JSON-serialisable facts
    (data, accuracy, ...) and ``kwargs`` (architecture keyword arguments)."""
    p = Path(path)
    # both files are written to temporary names first; the weights are renamed into place
    # first, then the description: a failure while writing leaves the previous pair untouched
    with atomic_path(p.with_name(p.name + ".json")) as desc_tmp, atomic_path(p) as tmp:
        torch.save(model.state_dict(), tmp)
        desc = {"arch": arch, "in_shape": list(in_shape), "num_classes": int(num_classes),
                "mean": list(mean) if mean is not None else None,
                "std": list(std) if std is not None else None,
                "kwargs": info.pop("kwargs", {}), "sha256": file_sha256(tmp),
                "advsmooth": __version__, **info}
        desc_tmp.write_text(json.dumps(desc, indent=2))
    return p


def _load_saved(path: Path) -> nn.Module:
    if not path.is_file():
        raise FileNotFoundError(f"no model file {path}" + (" (it is a folder)" if path.is_dir()
                                                            else ""))
    meta_path = path.with_name(path.name + ".json")
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} has no description {meta_path.name} next to it; build "
                                f"the model with advsmooth.models.create(...) and use "
                                f"advsmooth.models.load_checkpoint(model, {str(path)!r})")
    desc = read_description(meta_path)
    want = desc.get("sha256")
    if isinstance(want, str) and file_sha256(path) != want:
        raise ValueError(f"{path} does not match the sha256 its description {meta_path.name} "
                         "records (the weights were replaced or damaged): save the model again "
                         "with advsmooth.models.save_model / `advsmooth train`")
    try:
        model = create(desc["arch"], tuple(desc["in_shape"]), desc["num_classes"],
                       mean=desc.get("mean"), std=desc.get("std"), **desc.get("kwargs") or {})
    except TypeError as exc:  # kwargs the architecture does not take
        raise ValueError(f"{meta_path}: invalid model description: {exc}") from None
    return load_checkpoint(model, path)


def read_description(meta_path: Path) -> dict[str, Any]:
    """The JSON description :func:`save_model` writes next to a model, checked field by field
    (``ValueError`` naming the file and the field otherwise)."""
    def bad(why: str) -> ValueError:
        return ValueError(f"{meta_path}: invalid model description: {why}")

    try:
        desc = json.loads(meta_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise bad("not a UTF-8 text file") from None
    except json.JSONDecodeError as exc:
        raise bad(f"not JSON ({exc})") from None
    if not isinstance(desc, dict):
        raise bad(f"expected a JSON object, got {type(desc).__name__}")
    if not isinstance(desc.get("arch"), str) or not desc["arch"]:
        raise bad(f"'arch' must be an architecture name, got {desc.get('arch')!r}")
    shape = desc.get("in_shape")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise bad(f"'in_shape' must be [C, H, W] of positive integers, got {shape!r}")
    k = desc.get("num_classes")
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise bad(f"'num_classes' must be an integer >= 2, got {k!r}")
    for key in ("mean", "std"):
        v = desc.get(key)
        if v is not None and (not isinstance(v, list) or not all(
                isinstance(e, (int, float)) and not isinstance(e, bool) for e in v)):
            raise bad(f"{key!r} must be a list of numbers or null, got {v!r}")
    if not isinstance(desc.get("kwargs") or {}, dict):
        raise bad(f"'kwargs' must be a JSON object, got {desc['kwargs']!r}")
    return desc


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------

#: (name, weight hash) of every model :func:`load` loaded with real weights in this process, and
#: of the models behind reused stored results (:func:`note_weights`), in order
_LOADED: list[tuple[str, str]] = []


def loaded_weights() -> list[tuple[str, str]]:
    """``(name, weight hash)`` of the models used in this process, in order (repeats included; a
    copy): each model :func:`load` (or :func:`advsmooth.models.byo.load_factory`) returned with
    real weights — zoo weights under the zoo name, user weights as ``NAME@PATH`` (the
    checkpoint's path as given), a saved model under its path — with the hash
    :func:`advsmooth._tensors.model_hash` of its state dict, and those noted with
    :func:`note_weights`. The experiment runner reads it around a study's work to record which
    weights the study's rows come from. Zoo architectures built without weights
    (``pretrained=False``) are not logged; a ``package.module:factory`` model is, with whatever
    weights its factory gave it."""
    return list(_LOADED)


@contextmanager
def recording_weights() -> Iterator[dict[str, str]]:
    """A dict that, when the block ends, holds the models used inside it (name → weight hash,
    as :func:`loaded_weights` logs them)."""
    mark, used = len(_LOADED), {}
    try:
        yield used
    finally:
        used.update(_LOADED[mark:])


def note_weights(weights: Mapping[str, str]) -> None:
    """Add ``weights`` (name → weight hash) to :func:`loaded_weights`: the models behind a stored
    result that is reused instead of recomputed."""
    _LOADED.extend((str(n), str(h)) for n, h in weights.items())


def note_model(name: str, model: nn.Module,
               checkpoint: str | os.PathLike[str] | None = None) -> nn.Module:
    """Log ``model``'s weights in :func:`loaded_weights` as ``name`` (``name@PATH`` when they
    came from ``checkpoint``, the path as given); returns ``model``."""
    label = name if checkpoint is None else f"{name}@{os.fspath(checkpoint)}"
    _LOADED.append((label, model_hash(model)))
    return model


def _device(device: Any) -> torch.device:
    """``device`` as a torch device (``"auto"``: CUDA when available); ``ValueError`` for a name
    torch does not know, or CUDA / MPS on a machine without them."""
    if device is None or device == "auto":
        return torch.device(resolve_device(device))
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):  # resolve_device refuses it, naming the devices it knows
        return torch.device(resolve_device(str(device)))
    if dev.type in ("cuda", "mps"):
        resolve_device(dev.type)  # ValueError when this machine has none
    return dev


def load(name: str, *, models_dir: str | os.PathLike[str] | None = None,
         device: torch.device | str = "cpu", pretrained: bool = True,
         checkpoint: str | os.PathLike[str] | None = None, allow_download: bool = False,
         retrain: bool = False, verbose: bool = True) -> nn.Module:
    """Load a model by name, in eval mode, on ``device``, taking ``[0, 1]`` pixels.

    ``name`` is a zoo name (see :func:`available`): ``cifar10-resnet20/32/44/56``,
    ``mnist-lenet``, ``mnist-lenet-pgd``, ``mnist-mlp`` (checkpoints in ``models_dir``),
    ``digits-fc``, ``digits-lenet``, ``digits-resnet20``, ``cifar10-vgg``, ``cifar10-wrn16-2``
    (trained on first use from their dataset's train split, cached; ``retrain=True`` forces
    training); ``torchvision:NAME`` / ``timm:NAME`` (optional extras;
    pretrained weights only from the local cache unless ``allow_download=True``, or from
    ``checkpoint=``); or the path of a model saved with :func:`save_model` (``advsmooth train``).
    ``checkpoint=`` loads user weights (``weights_only=True``) into a zoo architecture.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    device = _device(device)
    model: nn.Module
    weighted = pretrained or checkpoint is not None
    if name.startswith("torchvision:"):
        model = _torchvision_model(name.split(":", 1)[1], pretrained=pretrained,
                                   checkpoint=checkpoint, allow_download=allow_download)
    elif name.startswith("timm:"):
        model = _timm_model(name.split(":", 1)[1], pretrained=pretrained,
                            checkpoint=checkpoint, allow_download=allow_download)
    elif name not in ZOO and (name.endswith((".pt", ".pth")) or os.sep in name):
        model, weighted = _load_saved(Path(name).expanduser()), True
    else:
        s = spec(name)
        if checkpoint is not None:
            model = load_checkpoint(_build(s), checkpoint)
        elif not pretrained:
            model = _build(s)
        elif s.source == "shared":
            assert s.file is not None
            model = load_checkpoint(_build(s), _find_checkpoint(s.file, models_dir))
        else:
            model, _ = _load_trained(s, retrain=retrain, verbose=verbose)
    if weighted:
        note_model(name, model, checkpoint)
    return model.to(device).eval()


def _trainable_here(dataset: str) -> bool:
    """Whether ``dataset``'s train split is found here (a model trained on first use needs it)."""
    from .. import data as data_mod

    return any(d["name"] == dataset and d["available"].get("train")
               for d in data_mod.available())


def available(models_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """One dict per zoo model: name, arch, dataset, in_shape, num_classes, source, accuracy,
    description, ``available`` (weights present here, or trainable on first use) and
    ``cached`` (models trained on first use: already trained and cached)."""
    rows = []
    trainable: dict[str, bool] = {}  # dataset -> train split found here (probed once per dataset)
    for s in ZOO.values():
        row = {k: v for k, v in asdict(s).items() if k not in ("kwargs", "recipe", "mean", "std")}
        row["normalization"] = ({"mean": list(s.mean), "std": list(s.std)}
                                if s.mean is not None and s.std is not None else None)
        if s.source == "shared":
            assert s.file is not None
            try:
                row["path"] = str(_find_checkpoint(s.file, models_dir))
                row["available"] = True
            except FileNotFoundError:
                row["path"] = None
                row["available"] = False
            row["cached"] = None
        else:
            meta = _read_meta(trained_model_path(s.name), s.recipe)
            if meta is None and s.dataset not in trainable:
                trainable[s.dataset] = _trainable_here(s.dataset)
            row["available"] = meta is not None or trainable[s.dataset]
            row["cached"] = meta is not None
            row["path"] = str(trained_model_path(s.name)) if meta is not None else None
            if meta is not None:
                row["accuracy"] = meta["test_accuracy"]
        rows.append(row)
    return rows
