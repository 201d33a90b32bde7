"""Bring your own model: ``"package.module:factory"`` plus an optional checkpoint.

``load_factory("mypkg.nets:make_net", checkpoint="net.pt")`` imports ``mypkg.nets``, calls
``make_net()`` (no arguments), checks that it returned a ``torch.nn.Module``, loads the state dict
in ``checkpoint`` into it with ``torch.load(..., weights_only=True)`` (strict key and shape
match) and returns it in eval mode on ``device``. The model must take pixels in ``[0, 1]``: put
any mean/std normalisation inside it (``advsmooth.models.Normalize``).

:func:`check_input_shape` runs a model on two images before any expensive work, so a model that
expects another input shape fails with one clear line instead of deep inside an attack.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys

import torch
from torch import Tensor, nn

from .checkpoints import load_checkpoint
from .registry import note_model

__all__ = ["is_factory_spec", "load_factory", "check_input_shape"]

_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_factory_spec(name: str) -> bool:
    """Whether ``name`` looks like ``package.module:factory`` (and not ``torchvision:NAME``)."""
    return (isinstance(name, str) and bool(_SPEC.match(name))
            and not name.startswith(("torchvision:", "timm:", "npz:")))


def load_factory(spec: str, *, checkpoint: str | os.PathLike[str] | None = None,
                 device: torch.device | str = "cpu") -> nn.Module:
    """Build the model ``package.module:factory`` and load ``checkpoint`` into it.

    The current working directory is importable (as with ``python -m``). Raises ``ValueError``
    for a malformed spec, a module that cannot be found or a factory that does not return an
    ``nn.Module``; ``FileNotFoundError`` / ``CheckpointError`` for the checkpoint.
    """
    if not is_factory_spec(spec):
        raise ValueError(f"model factory must look like 'package.module:factory', got {spec!r}")
    mod_name, _, attr = spec.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"cannot import {mod_name!r} for model {spec!r}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{mod_name!r} has no attribute {attr!r} (model {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable")
    try:
        inspect.signature(obj).bind()
    except TypeError as exc:
        raise ValueError(f"model factory {spec!r} must be callable with no arguments: {exc}"
                         ) from None
    except ValueError:  # no signature to read (some builtins): try the call
        pass
    model = obj()
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return note_model(spec, model, checkpoint).to(device).eval()


def check_input_shape(model: nn.Module, x: Tensor, *, expected: tuple[int, ...] | None = None,
                      name: str = "model") -> None:
    """``ValueError`` (one line) unless ``model`` accepts images shaped like ``x`` ``N×C×H×W``
    and returns ``N×K`` logits; ``expected``: the ``C×H×W`` the model is known to take."""
    shape = tuple(x.shape[1:])
    if expected is not None and tuple(expected) != shape:
        raise ValueError(f"{name} expects inputs of shape {tuple(expected)} (C×H×W) but the "
                         f"data has shape {shape}")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:2])
    except Exception as exc:  # noqa: BLE001 - any failure here is a shape/dtype mismatch
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{name} cannot run on the data (images of shape {shape}): "
                         f"{first}") from None
    finally:
        model.train(was)
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != min(2, x.shape[0]):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{name} must return N×K logits, got {got} for {x[:2].shape[0]} "
                         f"image(s) of shape {shape}")
