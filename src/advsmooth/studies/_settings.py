"""Settings of a planned study: a frozen dataclass built from a spec's ``params`` table.

:func:`from_params` checks the parameter names and their JSON types against the dataclass fields
(one clear ``ValueError`` naming the parameter), turns lists into tuples, and ignores the
``out_dir`` parameter of the studies that used to write files (with a ``FutureWarning``): a
study's intermediate results are store artefacts now and its figures are drawn by the report.
:func:`step_settings` is the JSON dict of some fields, the settings of one step (its artefact's
key), so a step is recomputed only when something it depends on changes.

:func:`module_tensors` / :func:`load_module_tensors` turn a trained module into the tensor dict a
step artefact stores and back.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from torch import Tensor, nn

__all__ = ["from_params", "step_settings", "module_tensors", "load_module_tensors"]

S = TypeVar("S")

#: parameters that are accepted and ignored (with a ``FutureWarning``)
DEPRECATED = {"out_dir": "out_dir is ignored: the study's trained models and crafted batches are "
                         "store artefacts and its figures are drawn by the report"}


def _accepts(tp: Any, v: Any) -> bool:
    """Whether the JSON value ``v`` fits the annotation ``tp`` (int, float, bool, str, None,
    unions of them and ``tuple[X, ...]``)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, v) for a in typing.get_args(tp))
    if origin is tuple:
        (item, *_) = typing.get_args(tp)
        return isinstance(v, list | tuple) and all(_accepts(item, x) for x in v)
    if tp is type(None):
        return v is None
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return isinstance(v, int | float) and not isinstance(v, bool)
    if tp is str:
        return isinstance(v, str)
    return True


def from_params(cls: type[S], params: Mapping[str, Any]) -> S:
    """``cls(**params)`` for a settings dataclass ``cls``: ``ValueError`` for an unknown
    parameter or a value of the wrong type; lists become tuples; deprecated parameters
    (:data:`DEPRECATED`) are dropped with a ``FutureWarning`` (a deprecation shown to users).
    The dataclass's ``__post_init__`` checks the values."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kw: dict[str, Any] = {}
    for k, v in params.items():
        if k in DEPRECATED and k not in names:
            warnings.warn(DEPRECATED[k], FutureWarning, stacklevel=2)
            continue
        if k not in names:
            raise ValueError(f"unknown parameter(s) [{k!r}]; expected some of {sorted(names)}")
        if not _accepts(hints[k], v):
            raise ValueError(f"{k} must be of type {hints[k]}, got {v!r}")
        kw[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kw)


def step_settings(settings: Any, fields: Iterable[str], **extra: Any) -> dict[str, Any]:
    """The JSON dict of ``fields`` of ``settings`` (tuples as lists) plus ``extra``."""
    out = {k: getattr(settings, k) for k in fields}
    out.update(extra)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def module_tensors(module: nn.Module) -> dict[str, Tensor]:
    """The tensors of ``module.state_dict()`` (detached, on the CPU): the weights a step stores.
    Non-tensor entries (a noise module's generator state) are left out."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items() if isinstance(v, Tensor)}


def load_module_tensors(module: nn.Module, tensors: Mapping[str, Tensor]) -> nn.Module:
    """Load ``tensors`` (from :func:`module_tensors`) into ``module`` and return it in eval mode;
    every weight must be present (only non-tensor extra state may be missing)."""
    res = module.load_state_dict(dict(tensors), strict=False)
    missing = [k for k in res.missing_keys if not k.endswith("_extra_state")]
    if missing or res.unexpected_keys:
        raise RuntimeError(f"stored weights do not fit {type(module).__name__}: missing "
                           f"{missing}, unexpected {res.unexpected_keys}")
    return module.eval()
