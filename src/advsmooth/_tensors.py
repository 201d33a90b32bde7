"""Tensor helpers shared by every layer above the models: input checks, model hygiene, argmax.

* :func:`check_images` / :func:`check_labels` / :func:`check_model_compat` validate what a user
  passes (one clear ``TypeError``/``ValueError`` line saying what is wrong and what is accepted);
* :func:`frozen_model` puts a model in eval mode with parameter gradients off and restores every
  flag afterwards;
* :func:`predict` turns model outputs into labels (:func:`predict_chunks`: of a whole batch).

They sit below :mod:`advsmooth.attacks` and :mod:`advsmooth.defenses` so that attacks, defences,
metrics and checks share them without importing one another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ._utils import check_model_output, input_mismatch

__all__ = ["check_images", "check_labels", "check_model_compat", "frozen_model", "predict"]


def check_images(x: Any, name: str = "x") -> Tensor:
    """Validate an image batch: a floating tensor ``N×C×H×W`` with finite values in ``[0, 1]``.

    Raises ``TypeError`` for a non-tensor and ``ValueError`` for a wrong rank/dtype, a
    channels-last looking shape, an empty channel/height/width, NaN/Inf, or values outside
    ``[0, 1]``. Returns ``x`` unchanged.
    """
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape N×C×H×W, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(
            f"{name} must have shape N×C×H×W (4 dimensions), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}")
    if x.shape[1] > 4 and x.shape[3] in (1, 3) and x.shape[2] > 4:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}, which looks channels-last (N×H×W×C); images "
            f"are N×C×H×W: pass {name}.permute(0, 3, 1, 2)")
    if min(x.shape[1:]) == 0:
        raise ValueError(f"{name} must have C, H, W >= 1, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        return x
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
        raise ValueError(f"{name} contains NaN or Inf values ({bad} sample(s) affected)")
    lo, hi = float(x.detach().min()), float(x.detach().max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{name} must lie in [0, 1] (pixel space; put mean/std normalisation inside the model "
            f"with advsmooth.models.Normalize), got values in [{lo:.4g}, {hi:.4g}]"
        )
    return x


def check_labels(labels: Any, n: int, num_classes: int | None, device: torch.device,
                 name: str = "y") -> Tensor:
    """Validate labels: integer tensor of shape ``(n,)`` with values in ``[0, num_classes)``.

    Python sequences are converted. Returns an int64 tensor on ``device``.
    """
    if not isinstance(labels, Tensor):
        try:
            labels = torch.as_tensor(labels)
        except Exception as exc:  # noqa: BLE001 - re-raised with a clear message
            raise TypeError(f"{name} must be a tensor of integer class labels, "
                            f"got {type(labels).__name__}") from exc
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class labels, got dtype {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got shape {tuple(labels.shape)}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but x has {n} samples")
    if labels.device != device:
        labels = labels.to(device)
    labels = labels.long()
    if n and num_classes is not None:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} must be class indices in [0, {num_classes - 1}] for this model, "
                f"got values in [{lo}, {hi}]"
            )
    return labels


def _model_device_dtype(model: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    for b in model.buffers():
        if b.is_floating_point():
            return b.device, b.dtype
    return None, None


def check_model_compat(model: nn.Module, x: Tensor) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``model`` is a module whose floating parameters
    share ``x``'s device and dtype (the clear message replaces torch's internal error)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    device, dtype = _model_device_dtype(model)
    if device is not None and device != x.device:
        raise ValueError(f"x is on {x.device} but the model's parameters are on {device}; "
                         "move x (or the model) to the same device")
    if dtype is not None and dtype != x.dtype:
        raise ValueError(f"x has dtype {x.dtype} but the model's parameters have dtype {dtype}; "
                         f"convert x with x.to({dtype})")



@contextmanager
def frozen_model(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with parameter gradients off; restore everything on exit.

    Every submodule's ``training`` flag and every parameter's ``requires_grad`` flag are restored
    exactly (also when the body raises). Gradients are enabled inside the block, so attacks work
    when the caller is under ``torch.no_grad()``. Stochastic layers (noise injection) stay
    stochastic in eval mode by their own design.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def predict(logits: Tensor, n: int | None = None) -> Tensor:
    """Predicted labels from model outputs.

    ``N×K`` logits → argmax (ties → lowest index). A single score per sample (``(N,)`` or
    ``N×1``, binary classifier) → ``1`` where the score is > 0, else ``0``. The output is checked
    first (:func:`advsmooth._utils.check_model_output`: one floating tensor, ``n`` rows when
    given, finite values), so a prediction is never read from NaN/Inf logits.
    """
    check_model_output(logits, n)
    if logits.ndim == 1:
        return (logits > 0).long()
    if logits.ndim == 2 and logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    if logits.ndim != 2:
        raise ValueError("model output must have shape N×K (or N for a binary score), "
                         f"got {tuple(logits.shape)}")
    return logits.argmax(dim=1)


def predict_chunks(model: nn.Module, x: Tensor, batch_size: int) -> tuple[Tensor, int | None]:
    """Labels ``(N,)`` of ``model`` on ``x`` (forward passes of ``batch_size`` images, frozen
    model, no grad; a wrong input shape raises :func:`~advsmooth._utils.input_mismatch`'s
    ``ValueError``) and the model's class count (``None`` for an empty ``x``)."""
    out = []
    k = None
    with frozen_model(model), torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            with input_mismatch(x):
                z = model(x[s:s + batch_size])
            out.append(predict(z, x[s:s + batch_size].shape[0]))
            k = 2 if z.ndim == 1 or z.shape[1] == 1 else int(z.shape[1])
    if not out:
        return torch.zeros(0, dtype=torch.long, device=x.device), k
    return torch.cat(out), k


def tensor_hash(*tensors: Tensor) -> str:
    """SHA-256 (16 hex chars) of the dtypes, shapes and bytes of ``tensors``."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def model_hash(model: nn.Module) -> str:
    """SHA-256 (16 hex chars) of a model's state dict (names, dtypes, shapes, values)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(tensor_hash(v).encode())
    return h.hexdigest()[:16]
