"""Dataset registry: names, root resolution, in-memory loading and lazy ``Dataset`` access.

Every loader returns images as float32 tensors ``N×C×H×W`` in ``[0, 1]`` and labels as int64
tensors ``(N,)``. Nothing is ever downloaded: a missing file raises ``FileNotFoundError`` that
names the expected file(s) and where they were looked for.

Data root (for ``mnist``, ``cifar10``, ``cifar100``, ``imagenet``):

1. the ``root=`` argument (CLI: ``--data-root``);
2. else the environment variable ``ADVSMOOTH_DATA``;
3. else ``./data`` and, as a convenience, ``../shared/data`` (relative to the current working
   directory), searched in that order for the needed file.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._utils import (
    check_int_at_least,
    did_you_mean,
    optional_import,
    search_dirs,
    warn_caller,
)

__all__ = [
    "DataInfo",
    "REGISTRY",
    "ArrayDataset",
    "load",
    "random_subset",
    "dataset",
    "info",
    "available",
    "class_names",
    "names",
    "subset",
    "stratified_split",
    "data_roots",
    "DIGITS_SEED",
    "DIGITS_TEST_FRACTION",
    "ClassSortedWarning",
]


class ClassSortedWarning(UserWarning):
    """``n=`` took the first samples of data sorted by class (so only a few classes)."""


#: seed and test fraction of the fixed stratified train/test split of the digits data
DIGITS_SEED = 0
DIGITS_TEST_FRACTION = 0.2

MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


@dataclass(frozen=True)
class DataInfo:
    """What the registry knows about a dataset (shape ``C×H×W``, classes, split sizes)."""

    name: str
    shape: tuple[int, int, int] | None
    num_classes: int | None
    classes: tuple[str, ...] | None
    sizes: dict[str, int | None]
    description: str
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    needs: str | None = None  # optional module needed (torchvision)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.sizes)


REGISTRY: dict[str, DataInfo] = {
    "digits": DataInfo(
        "digits", (1, 28, 28), 10, MNIST_CLASSES, {"train": 1438, "test": 359},
        "scikit-learn load_digits (1,797 real 8x8 digits, embedded, no download), values 0..16 "
        "scaled to [0,1], bilinearly upsampled to 28x28; fixed stratified 80/20 split (seed 0)",
    ),
    "mnist": DataInfo(
        "mnist", (1, 28, 28), 10, MNIST_CLASSES, {"train": 60000, "test": 10000},
        "MNIST from ROOT/mnist_{split}.npz or torchvision/IDX files ROOT/MNIST/raw/",
        files={"train": ("mnist_train.npz", "MNIST/raw/train-images-idx3-ubyte"),
               "test": ("mnist_test.npz", "MNIST/raw/t10k-images-idx3-ubyte")},
    ),
    "cifar10": DataInfo(
        "cifar10", (3, 32, 32), 10, CIFAR10_CLASSES, {"train": 50000, "test": 10000},
        "CIFAR-10 from ROOT/cifar10_{split}.npz (HWC uint8; the shared copy is JPEG-decoded and "
        "class-sorted; the training split may come in parts cifar10_train_1.npz … _5.npz, "
        "read in order) or torchvision's ROOT/cifar-10-batches-py/",
        files={"train": ("cifar10_train.npz", "cifar10_train_1.npz",
                         "cifar-10-batches-py/data_batch_1"),
               "test": ("cifar10_test.npz", "cifar-10-batches-py/test_batch")},
    ),
    "cifar100": DataInfo(
        "cifar100", (3, 32, 32), 100, None, {"train": 50000, "test": 10000},
        "CIFAR-100 from ROOT/cifar100_{split}.npz or torchvision's ROOT/cifar-100-python/",
        files={"train": ("cifar100_train.npz", "cifar-100-python/train"),
               "test": ("cifar100_test.npz", "cifar-100-python/test")},
    ),
    "imagenet": DataInfo(
        "imagenet", (3, 224, 224), 1000, None, {"train": None, "val": None},
        "ImageNet class folders ROOT/imagenet/{split}/<class>/*.JPEG via torchvision ImageFolder "
        "(resize 256, centre crop 224)",
        files={"train": ("imagenet/train",), "val": ("imagenet/val",)},
        needs="torchvision",
    ),
}


def names() -> list[str]:
    """Registered dataset names (``npz:PATH`` is accepted too)."""
    return list(REGISTRY)


# ----------------------------------------------------------------------------------------------
# roots and files
# ----------------------------------------------------------------------------------------------

def data_roots(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The directories searched for data files, in order (see the module docstring)."""
    return search_dirs(root, "ADVSMOOTH_DATA", ("data", "../shared/data"))


def _find(candidates: Sequence[str], root: str | os.PathLike[str] | None, what: str) -> Path:
    roots = data_roots(root)
    for r in roots:
        for c in candidates:
            p = r / c
            if p.exists() or (p.suffix != ".npz" and p.with_name(p.name + ".gz").exists()):
                return p
    tried = ", ".join(str(r / c) for r in roots for c in candidates)
    raise FileNotFoundError(
        f"{what}: expected one of [{tried}] (no download is attempted; set root=, --data-root or "
        f"ADVSMOOTH_DATA to the folder holding the file)"
    )


def _check_split(meta: DataInfo, split: str) -> None:
    if split not in meta.sizes:
        raise ValueError(f"split must be one of {meta.splits} for {meta.name!r}, got {split!r}")


# ----------------------------------------------------------------------------------------------
# array conversion
# ----------------------------------------------------------------------------------------------

#: the image layouts :func:`load` accepts (quoted by its layout errors)
LAYOUTS = ("uint8 N×H×W (grey, 0..255)", "uint8 N×H×W×C with C in {1, 3, 4} (0..255)",
           "uint8 N×C×H×W with C in {1, 3} and H, W >= 8", "float N×H×W in [0, 1]",
           "float N×C×H×W in [0, 1] (channels first)")


def _layout_error(source: str, x: np.ndarray, why: str) -> ValueError:
    return ValueError(f"{source}: {why} (array x has dtype {x.dtype}, shape {x.shape}); accepted "
                      f"layouts: {'; '.join(LAYOUTS)}")


def _uint8_layout(shape: tuple[int, ...]) -> str | None:
    """``"nhwc"`` or ``"nchw"`` for a 4-D uint8 array, ``None`` when neither reading is safe.

    The two readings never overlap (N×C×H×W needs ``W >= 8``, N×H×W×C needs ``C <= 4``)."""
    if shape[3] in (1, 3, 4):
        return "nhwc"
    if shape[1] in (1, 3) and shape[2] >= 8 and shape[3] >= 8:
        return "nchw"
    return None


def _to_nchw_float(x: np.ndarray, source: str) -> Tensor:
    """uint8 N×H×W / N×H×W×C (0..255) or float N×C×H×W / N×H×W in [0,1] → float32 N×C×H×W.

    A uint8 array is N×H×W×C (the documented layout) when its last axis has 1, 3 or 4 entries,
    N×C×H×W when its second axis has 1 or 3 entries and the other two at least 8; anything else
    (e.g. N×4×4×5: 4 channels of 4×5, or 4×4 pixels of 5 channels?) is refused with the list of
    :data:`LAYOUTS`. A float array is N×C×H×W; one that looks channels-last is refused.
    """
    if not x.flags.writeable:
        x = np.array(x)  # a private, writable copy (torch refuses read-only buffers)
    if x.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(x))
        if t.ndim == 3:
            t = t.unsqueeze(1)
        elif t.ndim == 4:
            layout = _uint8_layout(tuple(t.shape))
            if layout is None:
                raise _layout_error(source, x, "uint8 images in an ambiguous layout")
            if layout == "nhwc":
                t = t.permute(0, 3, 1, 2)
        else:
            raise _layout_error(source, x, "uint8 images must have 3 or 4 dimensions")
        return t.contiguous().float().div_(255.0)
    if np.issubdtype(x.dtype, np.floating):
        t = torch.from_numpy(np.ascontiguousarray(x)).float()
        if t.ndim == 3:
            t = t.unsqueeze(1)
        if t.ndim != 4:
            raise _layout_error(source, x, "float images must have 3 or 4 dimensions")
        if t.shape[1] > 4 and t.shape[3] in (1, 3, 4):
            raise _layout_error(source, x, "float images look channels-last (N×H×W×C); "
                                "float images are N×C×H×W")
        if t.numel() and (not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1):
            raise ValueError(f"{source}: float images must be finite and lie in [0, 1]")
        return t.contiguous()
    raise ValueError(f"{source}: images must be uint8 (0..255) or float in [0,1], got {x.dtype}")


#: labels of a data set without a declared class count must lie below this
MAX_CLASSES = 1_000_000


def _labels(y: np.ndarray, n: int, source: str, num_classes: int | None = None) -> Tensor:
    """Integer labels ``(n,)`` in ``[0, num_classes)`` (``[0, MAX_CLASSES)`` when unknown)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{source}: y must be a vector of {n} labels, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{source}: y must hold integer class labels, got dtype {y.dtype}")
    k = MAX_CLASSES if num_classes is None else num_classes
    if y.size and (int(y.min()) < 0 or int(y.max()) >= k):
        bound = (f"{num_classes} classes" if num_classes is not None
                 else f"at most {MAX_CLASSES:,} classes; store the class count as array "
                      "'num_classes' in the .npz")
        raise ValueError(f"{source}: labels must be class indices in [0, {k - 1}] ({bound}), "
                         f"got values in [{int(y.min())}, {int(y.max())}]")
    return torch.from_numpy(y.astype(np.int64))


@functools.lru_cache(maxsize=4)
def _read_npz_cached(path: str, mtime: float, size: int
                     ) -> tuple[np.ndarray, np.ndarray, int | None]:
    # Every failure is one line naming the file; nothing is ever unpickled (numpy's own
    # messages advise turning pickling on, which would run code from the file: never shown).
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an .npz archive (a zip of .npy arrays written by "
                         "numpy.savez); is it truncated, or a text/.npy file?")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise ValueError(f"{path}: .npz must hold arrays 'x' and 'y', missing {missing} "
                                 f"(found {f.files})")
            arrays = {}
            for key in ("x", "y", "num_classes"):
                if key not in f.files:
                    continue
                try:
                    arrays[key] = f[key]
                except ValueError as exc:
                    if "pickle" not in str(exc):
                        raise
                    raise ValueError(
                        f"{path}: array {key!r} holds Python objects (dtype=object); advsmooth "
                        "never unpickles data files: store numeric arrays") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(path):
            raise
        raise ValueError(f"{path}: unreadable .npz archive ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    x, y = arrays["x"], arrays["y"]
    k = arrays.get("num_classes")
    num_classes = None
    if k is not None:
        if k.size != 1 or not np.issubdtype(k.dtype, np.integer) or int(k.reshape(())) < 1:
            raise ValueError(f"{path}: 'num_classes' must be one integer >= 1, got {k!r}")
        num_classes = int(k.reshape(()))
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y, num_classes


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"expected an .npz file with arrays x and y at {path}")
    st = path.stat()
    x, y, num_classes = _read_npz_cached(str(path.resolve()), st.st_mtime, st.st_size)
    if x.ndim not in (3, 4):
        raise _layout_error(str(path), x, "images must have 3 or 4 dimensions")
    _labels(y, len(x), str(path), num_classes)
    return x, y


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's raw format), gzipped or not."""
    p = path if path.exists() else path.with_name(path.name + ".gz")
    opener: Callable[..., Any] = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{p}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


# ----------------------------------------------------------------------------------------------
# raw sources: each returns (x_raw, y) numpy arrays (uint8 or float) or a torch Dataset
# ----------------------------------------------------------------------------------------------

def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images N×8×8 float 0..16, target N).

    Reads the CSV that ships inside scikit-learn directly when it is there (importing
    ``sklearn.datasets`` costs seconds); otherwise calls ``sklearn.datasets.load_digits``.
    The two give identical arrays (tested).
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        pkg = Path(next(iter(spec.submodule_search_locations)))
        csv = pkg / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            arr = np.loadtxt(csv, delimiter=",", dtype=np.float64)
            if arr.ndim == 2 and arr.shape[1] == 65:
                return arr[:, :64].reshape(-1, 8, 8), arr[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float64), d.target.astype(np.int64)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray,
                                                                                   np.ndarray]:
    """Deterministic stratified split: per class, a seeded permutation puts
    ``round(test_fraction * n_class)`` samples in the test part. Returns sorted index arrays."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(test_fraction * len(idx)))
        test.append(rng.permutation(idx)[:k])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


@functools.lru_cache(maxsize=1)
def _digits_all() -> tuple[Tensor, Tensor, np.ndarray, np.ndarray]:
    images, target = _digits_arrays()
    imgs = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)  # N×1×8×8 in [0,1]
    x = torch.nn.functional.interpolate(imgs, size=(28, 28), mode="bilinear",
                                        align_corners=False).clamp_(0.0, 1.0)
    y = torch.from_numpy(target)
    train_idx, test_idx = stratified_split(target, DIGITS_TEST_FRACTION, DIGITS_SEED)
    return x, y, train_idx, test_idx


def _digits(split: str) -> tuple[Tensor, Tensor]:
    x, y, train_idx, test_idx = _digits_all()
    idx = torch.from_numpy(train_idx if split == "train" else test_idx)
    return x[idx].clone(), y[idx].clone()


def digits_indices(split: str) -> np.ndarray:
    """Indices into scikit-learn's ``load_digits()`` arrays that form ``split`` (sorted)."""
    _check_split(REGISTRY["digits"], split)
    _, _, train_idx, test_idx = _digits_all()
    return (train_idx if split == "train" else test_idx).copy()


def _mnist_raw(split: str, root: Any) -> tuple[np.ndarray, np.ndarray]:
    meta = REGISTRY["mnist"]
    path = _find(meta.files[split], root, f"mnist {split} data not found")
    if path.suffix == ".npz":
        return _read_npz(path)
    prefix = "train" if split == "train" else "t10k"
    x = _read_idx(path)
    y = _read_idx(path.parent / f"{prefix}-labels-idx1-ubyte")
    return x, y


def _torchvision_dataset(name: str, split: str, root: Any) -> Dataset:
    tv = optional_import("torchvision")
    meta = REGISTRY[name]
    if name == "imagenet":
        path = _find(meta.files[split], root, f"imagenet {split} class folders not found")
        t = tv.transforms
        tf = t.Compose([t.Resize(256), t.CenterCrop(224), t.ToTensor()])
        return tv.datasets.ImageFolder(str(path), transform=tf)
    path = _find(meta.files[split], root, f"{name} {split} data not found")
    tf = tv.transforms.ToTensor()
    cls = tv.datasets.CIFAR10 if name == "cifar10" else tv.datasets.CIFAR100
    # the root of torchvision's CIFAR classes is the folder *holding* cifar-10-batches-py
    return cls(str(path.parent.parent), train=(split == "train"), download=False, transform=tf)


def _cifar_raw(name: str, split: str, root: Any) -> tuple[np.ndarray, np.ndarray] | Dataset:
    meta = REGISTRY[name]
    path = _find(meta.files[split], root, f"{name} {split} data not found")
    if path.name.endswith("_1.npz"):
        return _read_parts(path, meta.sizes[split])
    if path.suffix == ".npz":
        return _read_npz(path)
    return _torchvision_dataset(name, split, root)


def _read_parts(first: Path, expected: int | None) -> tuple[np.ndarray, np.ndarray]:
    """A split stored as ``<stem>_1.npz``, ``<stem>_2.npz``, …: the parts read in order (each
    checked like one ``.npz``, each read once) and concatenated, up to the split's size."""
    stem = first.name[: -len("_1.npz")]
    paths: list[Path] = []
    while (p := first.with_name(f"{stem}_{len(paths) + 1}.npz")).is_file():
        paths.append(p)
    return _concat_parts(tuple(str(p.resolve()) for p in paths),
                         tuple(p.stat().st_mtime for p in paths), expected)


@functools.lru_cache(maxsize=1)
def _concat_parts(paths: tuple[str, ...], mtimes: tuple[float, ...], expected: int | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    xs, ys, total = [], [], 0
    for p in paths:
        x, y = _read_npz(Path(p))
        xs.append(x)
        ys.append(y)
        total += len(y)
        if expected is not None and total >= expected:
            break
    if expected is not None and total != expected:
        last = Path(paths[len(xs) - 1])  # _read_parts is only called when part 1 exists
        raise ValueError(f"{last.parent}: the parts read hold {total} images, the split has "
                         f"{expected} (a part is missing after {last.name}, or one is "
                         "truncated)")
    x, y = np.concatenate(xs), np.concatenate(ys)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _raw(name: str, split: str, root: Any) -> tuple[Any, Any] | Dataset:
    """(x_raw, y_raw) numpy/torch arrays, or a lazily decoding Dataset for big data."""
    if name.startswith("npz:"):
        if not name[4:].strip():
            raise ValueError("'npz:' needs a file path after the colon, e.g. npz:my_images.npz")
        return _read_npz(Path(name[4:]).expanduser())
    meta = info(name)
    _check_split(meta, split)
    if name == "digits":
        return _digits(split)
    if name == "mnist":
        return _mnist_raw(split, root)
    if name in ("cifar10", "cifar100"):
        return _cifar_raw(name, split, root)
    return _torchvision_dataset(name, split, root)


# ----------------------------------------------------------------------------------------------
# Dataset over arrays (lazy per-item decoding)
# ----------------------------------------------------------------------------------------------

class ArrayDataset(Dataset):
    """A ``Dataset`` over in-memory arrays that converts one image at a time.

    ``x`` may be uint8 ``N×H×W[×C]`` (0..255, stays uint8 in memory) or float ``N×C×H×W`` in
    ``[0, 1]``; items are ``(float32 C×H×W tensor in [0,1], int64 scalar tensor)``.
    """

    def __init__(self, x: Any, y: Any, *, source: str = "arrays") -> None:
        self.source = source
        self._x = x
        n = len(x)
        self.targets = y if isinstance(y, Tensor) else _labels(np.asarray(y), n, source)
        if len(self.targets) != n:
            raise ValueError(f"{source}: {n} images but {len(self.targets)} labels")

    def __len__(self) -> int:
        return len(self._x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index out of range for {self.source} with {len(self)} samples")
        xi = self._x[i : i + 1]
        t = xi if isinstance(xi, Tensor) else _to_nchw_float(np.asarray(xi), self.source)
        return t[0], self.targets[i]

    def __repr__(self) -> str:
        return f"ArrayDataset(source={self.source!r}, n={len(self)})"


def dataset(name: str, split: str = "test", root: str | os.PathLike[str] | None = None) -> Dataset:
    """A ``torch.utils.data.Dataset`` of ``(image C×H×W float32 in [0,1], label int64)``.

    Images are decoded one at a time (uint8 arrays stay uint8 in memory; torchvision datasets
    decode files on access), so this also works for data that does not fit in memory as floats.
    """
    raw = _raw(name, split, root)
    if isinstance(raw, Dataset):
        return raw
    x, y = raw
    return ArrayDataset(x, y, source=name)


# ----------------------------------------------------------------------------------------------
# selection
# ----------------------------------------------------------------------------------------------

def random_subset(total: int, k: int | None, seed: int, *, offset: int = 0,
                  sort: bool = False) -> Tensor:
    """The seeded random subset every part of advsmooth draws samples with: positions
    ``offset .. offset + k`` (``k=None``: all after ``offset``) of ``torch.randperm(total)`` under
    a CPU generator seeded with ``seed``; in random order, or ascending with ``sort=True``.

    The same ``(total, seed)`` gives the same permutation, so ``k`` and ``k + 1`` share a prefix
    and consecutive ``offset`` ranges are disjoint (e.g. fitting and evaluation images).
    ``ValueError`` when fewer than ``offset + k`` samples exist.
    """
    if k is not None and int(k) < 0:
        raise ValueError(f"k must be >= 0 samples, got {k}")
    stop = total if k is None else offset + int(k)
    if stop > total or offset < 0:
        raise ValueError(f"asked for {stop - offset} samples after the first {offset} but only "
                         f"{total} are available")
    pick = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))
    pick = pick[offset:stop]
    return pick.sort().values if sort else pick


def _selection(total: int, n: int | None, sample: int | None, seed: int,
               indices: Sequence[int] | Tensor | None, labels: Tensor | None,
               name: str) -> Tensor | None:
    given = [k for k, v in (("n", n), ("sample", sample), ("indices", indices)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of n=, sample=, indices= (got {given})")
    if n is not None:
        check_int_at_least("n", n, 0)
        if labels is not None and n < total and len(labels) > 1 and n > 0:
            if bool((labels[1:] >= labels[:-1]).all()) and labels[0] != labels[-1]:
                warn_caller(
                    f"{name} is sorted by class: n={n} takes the first {n} samples (few "
                    f"classes); use sample={n}, seed=... for a seeded random subset",
                    ClassSortedWarning)
        if n > total:
            warn_caller(f"n={n} exceeds the {total} samples of {name}: using all {total}")
        return torch.arange(min(n, total))
    if sample is not None:
        check_int_at_least("sample", sample, 0)
        if sample > total:
            raise ValueError(f"sample={sample} exceeds the {total} available samples of {name}")
        return random_subset(total, sample, seed)
    if indices is not None:
        raw = torch.as_tensor(indices)
        if raw.numel() == 0:  # [] reads as float32: nothing selected
            return torch.empty(0, dtype=torch.int64)
        if raw.dtype == torch.bool:  # a mask: one entry per sample
            if raw.numel() != total:
                raise ValueError(f"a boolean indices mask needs one entry per sample of {name} "
                                 f"({total}), got {raw.numel()}")
            return raw.flatten().nonzero()[:, 0]
        if raw.is_floating_point() or raw.is_complex():
            raise ValueError(f"indices must be integers (or a boolean mask), got {raw.dtype}")
        idx = raw.to(torch.int64).flatten()
        if idx.numel() and (idx.min() < -total or idx.max() >= total):
            raise ValueError(f"indices out of range for {name} with {total} samples")
        return idx
    return None


def subset(x: Tensor, y: Tensor, *, n: int | None = None, sample: int | None = None,
           seed: int = 0, indices: Sequence[int] | Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Select samples from ``(x, y)``: the first ``n``, a seeded random ``sample`` (without
    replacement, in random order; ``sample=k`` with the same seed is a prefix of ``sample=k+1``),
    or explicit ``indices``. Warns when taking the first ``n`` of class-sorted labels."""
    sel = _selection(len(y), n, sample, seed, indices, y, "data")
    if sel is None:
        return x, y
    return x[sel], y[sel]


# ----------------------------------------------------------------------------------------------
# public loading API
# ----------------------------------------------------------------------------------------------

def load(name: str, split: str = "test", root: str | os.PathLike[str] | None = None, *,
         n: int | None = None, sample: int | None = None, seed: int = 0,
         indices: Sequence[int] | Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Load a dataset into memory as ``(x, y)``.

    Args:
        name: ``"digits"`` (embedded), ``"mnist"``, ``"cifar10"``, ``"cifar100"``, ``"imagenet"``,
            or ``"npz:PATH"`` (arrays ``x``: uint8 ``N×H×W[×C]`` or float ``N×C×H×W`` in [0,1],
            ``y``: integer labels; ``split`` is ignored for ``npz:``).
        split: ``"train"`` or ``"test"`` (``"val"`` for imagenet).
        root: data folder (else ``$ADVSMOOTH_DATA``, else ``./data`` then ``../shared/data``).
        n: keep the first ``n`` samples (file order; warns on class-sorted data, and when ``n``
            exceeds the split, which is then used whole).
        sample: keep a seeded random subset of this size (use this on class-sorted data such as
            the shared CIFAR-10 copy).
        seed: seed of ``sample``.
        indices: explicit indices to keep (integers; negative ones count from the end), or a
            boolean mask with one entry per sample.

    Returns:
        ``x`` float32 ``N×C×H×W`` in ``[0, 1]`` and ``y`` int64 ``(N,)``.
    """
    raw = _raw(name, split, root)
    if isinstance(raw, Dataset):
        total = len(raw)  # type: ignore[arg-type]
        sel = _selection(total, n, sample, seed, indices, None, name)
        if sel is None:
            sel = torch.arange(total)
        items = [raw[int(i)] for i in sel]
        if not items:
            shape = REGISTRY[name].shape or (0, 0, 0)
            return torch.zeros(0, *shape), torch.zeros(0, dtype=torch.int64)
        x = torch.stack([it[0] for it in items]).float()
        y = torch.tensor([int(it[1]) for it in items], dtype=torch.int64)
        return x.contiguous(), y
    x_raw, y_raw = raw
    if isinstance(x_raw, Tensor):  # digits: already converted
        sel = _selection(len(y_raw), n, sample, seed, indices, y_raw, name)
        return (x_raw, y_raw) if sel is None else (x_raw[sel].contiguous(), y_raw[sel].clone())
    y_all = _labels(y_raw, len(x_raw), name,
                    REGISTRY[name].num_classes if name in REGISTRY else None)
    sel = _selection(len(y_all), n, sample, seed, indices, y_all, name)
    if sel is not None:
        x_raw = x_raw[sel.numpy()]
        y_all = y_all[sel]
    return _to_nchw_float(x_raw, name), y_all.clone()


def info(name: str) -> DataInfo:
    """Registry entry of a dataset (``ValueError`` for an unknown name)."""
    if name.startswith("npz:"):
        raise ValueError(f"{name!r} is a file, not a registered dataset: it has no registry "
                         "entry (its shape and classes come from the file; load it with "
                         "advsmooth.data.load)")
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(names())}, or npz:PATH"
                         f"{did_you_mean(name, names())}")
    return REGISTRY[name]


def class_names(name: str, root: str | os.PathLike[str] | None = None) -> list[str]:
    """Class names of a dataset, index → name (``imagenet``/``cifar100``: from the files)."""
    meta = info(name)
    if meta.classes is not None:
        return list(meta.classes)
    ds = dataset(name, "test" if "test" in meta.sizes else "val", root)
    return list(ds.classes)  # type: ignore[attr-defined]


def _is_available(meta: DataInfo, split: str, root: Any) -> bool:
    if meta.name == "digits":
        return True
    try:
        path = _find(meta.files[split], root, meta.name)
    except FileNotFoundError:
        return False
    if path.suffix == ".npz":
        return True
    import importlib.util

    if meta.name == "mnist":
        return True
    return importlib.util.find_spec("torchvision") is not None


def available(root: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """One dict per registered dataset: name, shape, num_classes, classes, sizes, description,
    and ``available`` (split → whether its files are found here and loadable)."""
    out = []
    for meta in REGISTRY.values():
        avail = {s: _is_available(meta, s, root) for s in meta.sizes}
        out.append({
            "name": meta.name,
            "shape": meta.shape,
            "num_classes": meta.num_classes,
            "classes": list(meta.classes) if meta.classes else None,
            "sizes": dict(meta.sizes),
            "available": avail,
            "description": meta.description,
        })
    return out
