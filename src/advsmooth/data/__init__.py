"""Datasets: ``load(name, split, root) -> (x, y)`` in pixel space and a lazy ``dataset(...)``.

>>> import advsmooth as asm
>>> x, y = asm.data.load("digits", split="test")   # float32 360×1×28×28 in [0,1], int64 labels
>>> x.shape, y.dtype
(torch.Size([360, 1, 28, 28]), torch.int64)

See :mod:`advsmooth.data.registry` and docs/data.md.
"""

from .registry import (
    DIGITS_SEED,
    DIGITS_TEST_FRACTION,
    REGISTRY,
    ArrayDataset,
    ClassSortedWarning,
    DataInfo,
    available,
    class_names,
    data_roots,
    dataset,
    digits_indices,
    info,
    load,
    names,
    random_subset,
    stratified_split,
    subset,
)

__all__ = [
    "DIGITS_SEED",
    "DIGITS_TEST_FRACTION",
    "REGISTRY",
    "ArrayDataset",
    "ClassSortedWarning",
    "DataInfo",
    "available",
    "class_names",
    "data_roots",
    "dataset",
    "digits_indices",
    "info",
    "load",
    "names",
    "random_subset",
    "stratified_split",
    "subset",
]
