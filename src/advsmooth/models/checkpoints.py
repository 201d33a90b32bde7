"""Safe checkpoint loading: ``torch.load(..., weights_only=True)`` only, precise errors.

A checkpoint is a state dict (``dict[str, Tensor]``), or a dict holding one under ``"model"``,
``"state_dict"`` or ``"model_state_dict"`` (advsmooth training checkpoints, common trainers).
A ``module.`` prefix on every key (``DataParallel``) is removed. Loading into a
:class:`~advsmooth.models.zoo.Normalized` wrapper accepts the inner network's keys too.

Never unpickles arbitrary objects: a file that would need to run code to load is refused (the
unpickler stops before constructing anything) with a ``ValueError`` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .zoo import Normalized

__all__ = ["load_checkpoint", "read_state_dict", "safe_load", "file_sha256", "CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded (unsafe, corrupt, or not matching the model)."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_load(path: str | os.PathLike[str], *,
              map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors naming the file.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` (a
    ``ValueError``) for an unsafe (pickled objects other than tensors and plain containers) or
    corrupt file; nothing in the file is ever executed.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        with open(p, "rb") as f:
            head = f.read(4)
        if not head.startswith((b"PK\x03\x04", b"\x80")):  # neither torch's zip nor a pickle
            raise CheckpointError(f"cannot read checkpoint {p}: not a PyTorch file (it starts "
                                  f"with {head!r})") from None
        raise CheckpointError(
            f"refused to load {p}: it holds pickled objects other than tensors and plain "
            f"containers, which could execute code (only weights_only=True loading is allowed; "
            f"{first})") from None
    except Exception as exc:  # corrupt zip, truncated file, not a torch file
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(f"cannot read checkpoint {p}: not a valid PyTorch file "
                              f"({type(exc).__name__}: {first})") from None
    return obj


def read_state_dict(path: str | os.PathLike[str], *,
                    map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read a state dict from ``path`` with ``weights_only=True`` (see the module docstring).

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` (a
    ``ValueError``) for an unsafe, corrupt or non-state-dict file; messages name the file.
    """
    p = Path(path)
    return _extract_state_dict(safe_load(p, map_location=map_location), p)


def _extract_state_dict(obj: Any, p: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{p} does not hold a state dict (a dict of parameter name -> "
                              f"tensor), got {type(obj).__name__}")
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _mismatch_message(p: Path, expected: Mapping[str, Tensor], got: Mapping[str, Tensor]) -> str:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(got[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]

    def few(items: list[str]) -> str:
        return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {few(unexpected)}")
    if shapes:
        parts.append(f"shape mismatch: {few(shapes)}")
    return f"checkpoint {p} does not match the model: " + "; ".join(parts)


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True,
                    map_location: str | torch.device = "cpu") -> nn.Module:
    """Load the weights in ``path`` into ``model`` (in place) and return ``model``.

    With ``strict=True`` (default) every key and shape must match; otherwise a
    :class:`CheckpointError` names the file and the missing/unexpected/mismatched keys. With
    ``strict=False`` missing and unexpected keys are ignored but shapes must still match.
    """
    p = Path(path)
    sd = read_state_dict(p, map_location=map_location)
    target: nn.Module = model
    if isinstance(model, Normalized) and not any(k.startswith("net.") for k in sd):
        target = model.net  # a checkpoint of the inner network
    expected = target.state_dict()
    bad_shape = any(k in expected and tuple(v.shape) != tuple(expected[k].shape)
                    for k, v in sd.items())
    if bad_shape or (strict and set(expected) != set(sd)):
        raise CheckpointError(_mismatch_message(p, expected, sd))
    target.load_state_dict(sd, strict=strict)
    return model
