"""Training loop with pluggable methods, per-epoch checkpoints, exact resume and a metrics log.

:func:`train` trains the given model **in place** and returns it (in eval mode). A training
*method* supplies the per-batch loss through one hook::

    class MyMethod(TrainingMethod):
        name = "mine"
        def loss(self, model, x, y, generator):   # model in train mode; x in [0,1]
            logits = model(x)
            return F.cross_entropy(logits, y), logits   # or just the loss

``generator`` is a ``torch.Generator`` on the model's device, re-seeded from ``seed`` at every
epoch, for the method's own randomness (noise, random starts). Register a method class in
:data:`METHODS` to make it available by name (``train(..., method="mine", **method_kwargs)``).
Adversarial methods (PGD-AT, TRADES, ...) craft their inputs inside ``loss``; the attack base
class restores the model's train/eval mode afterwards.

Reproducibility: the shuffling order, the method generator and the global RNG used inside the
epoch (e.g. dropout) are all derived from ``(seed, epoch)``, and the global RNG state outside
:func:`train` is left untouched. Therefore a run interrupted after epoch ``k`` and resumed with
``resume=True`` ends with exactly the same weights as an uninterrupted run (on the same
machine and device).

Files in ``out_dir`` (when given):

* ``epoch_001.pt``, ``epoch_002.pt``, ... and ``last.pt``: training state after each epoch —
  ``{"format", "epoch", "model", "optimizer", "scheduler", "rng", "config", "history"}``;
  loadable with ``torch.load(path, weights_only=True)`` and by
  :func:`advsmooth.models.load_checkpoint` (which takes the ``"model"`` entry);
* ``metrics.jsonl``: one JSON object per epoch with ``epoch``, ``loss`` (mean training loss),
  ``train_acc`` (accuracy on the inputs the method fed the model), ``clean_acc`` (on
  ``eval_data``, or ``null``), ``lr``, ``time_s`` and whatever the callbacks returned.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._utils import (
    atomic_path,
    check_choice,
    check_int_at_least,
    check_nonnegative,
    check_positive,
    did_you_mean,
    make_generator,
    progress,
)
from .checkpoints import safe_load

__all__ = [
    "TrainingMethod",
    "StandardTraining",
    "METHODS",
    "get_method",
    "TrainingDiverged",
    "train",
    "evaluate",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "advsmooth-train-v1"

Callback = Callable[[nn.Module, int], Mapping[str, Any] | None]


class TrainingMethod:
    """Base class of training methods: override :meth:`loss` (and optionally :meth:`config`)."""

    name = "base"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor,
             generator: torch.Generator) -> Tensor | tuple[Tensor, Tensor]:
        """Scalar loss of one batch (optionally with the logits used, for ``train_acc``)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Hyper-parameters (JSON-serialisable) recorded in checkpoints and checked on resume."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class StandardTraining(TrainingMethod):
    """Empirical risk minimisation: cross-entropy on the clean inputs."""

    name = "standard"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor,
             generator: torch.Generator) -> tuple[Tensor, Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y), logits


#: name -> method class (constructed with the keyword arguments given to :func:`get_method`)
METHODS: dict[str, Callable[..., TrainingMethod]] = {"standard": StandardTraining}


class TrainingDiverged(FloatingPointError, ValueError):
    """The training loss became NaN or infinite (typically a learning rate too large); a
    ``ValueError`` too, so the CLI reports it as a user error."""


def get_method(method: str | TrainingMethod, **kwargs: Any) -> TrainingMethod:
    """A :class:`TrainingMethod` instance from a registered name (``kwargs`` go to it) or as is."""
    if isinstance(method, TrainingMethod):
        if kwargs:
            raise ValueError("method keyword arguments are only accepted with a method name")
        return method
    if method not in METHODS:
        raise ValueError(f"unknown training method {method!r}; known: {', '.join(METHODS)}"
                         f"{did_you_mean(method, METHODS)}")
    factory = METHODS[method]
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        names = [n for n, p in params.items()
                 if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise ValueError(f"training method {method!r} has no parameter(s) {unknown}; "
                             + (f"its parameters: {', '.join(names)}" if names
                                else "it takes no parameters"))
    return factory(**kwargs)


# ----------------------------------------------------------------------------------------------
# data plumbing
# ----------------------------------------------------------------------------------------------

def _as_source(data: Any, name: str) -> tuple[Tensor, Tensor] | Dataset:
    if isinstance(data, DataLoader):
        return data.dataset
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, Tensor) for t in data):
        x, y = data
        if x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"{name}: x must be a float tensor N×C×H×W, got {tuple(x.shape)} "
                             f"{x.dtype}")
        if y.ndim != 1 or len(y) != len(x) or y.is_floating_point():
            raise ValueError(f"{name}: y must be an integer vector with one label per image")
        return x, y.long()
    raise TypeError(f"{name} must be an (x, y) tuple of tensors, a Dataset or a DataLoader, "
                    f"got {type(data).__name__}")


def _length(src: tuple[Tensor, Tensor] | Dataset) -> int:
    return len(src[1]) if isinstance(src, tuple) else len(src)  # type: ignore[arg-type]


def _batches(src: tuple[Tensor, Tensor] | Dataset, order: Tensor,
             batch_size: int) -> Iterable[tuple[Tensor, Tensor]]:
    if isinstance(src, tuple):
        x, y = src
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            yield x[idx], y[idx]
    else:
        loader = DataLoader(src, batch_size=batch_size, sampler=order.tolist(), num_workers=0)
        for xb, yb in loader:
            yield xb, torch.as_tensor(yb).long()


@torch.no_grad()
def evaluate(model: nn.Module, data: Any, *, batch_size: int = 256,
             device: torch.device | str | None = None) -> float:
    """Clean accuracy of ``model`` on ``data`` ((x, y), Dataset or DataLoader), in ``[0, 1]``.

    The model's train/eval mode is restored afterwards.
    """
    src = _as_source(data, "data")
    if _length(src) == 0:
        raise ValueError("data holds no samples: accuracy is undefined")
    dev = torch.device(device) if device is not None else _device_of(model)
    was_training = model.training
    model.eval()
    correct, total = 0, 0
    try:
        for xb, yb in _batches(src, torch.arange(_length(src)), batch_size):
            pred = model(xb.to(dev)).argmax(1)
            correct += int((pred == yb.to(dev)).sum())
            total += len(yb)
    finally:
        model.train(was_training)
    return correct / max(total, 1)


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------

def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _derived_seed(seed: int, epoch: int, stream: int) -> int:
    return (int(seed) * 1_000_003 + epoch * 7919 + stream) % (2**63 - 1)


def _config(method: TrainingMethod, **kw: Any) -> dict[str, Any]:
    return {"method": method.name, "method_config": method.config(), **kw}


_RESUME_FREE = ("epochs",)  # may change between the interrupted run and the resumed one


def _check_resume_config(saved: Mapping[str, Any], cfg: Mapping[str, Any], path: Path) -> None:
    diffs = [f"{k}: {saved.get(k)!r} -> {cfg.get(k)!r}" for k in sorted(set(saved) | set(cfg))
             if k not in _RESUME_FREE and saved.get(k) != cfg.get(k)]
    if saved.get("schedule") is not None and saved.get("epochs") != cfg.get("epochs"):
        diffs.append(f"epochs: {saved.get('epochs')!r} -> {cfg.get('epochs')!r} (with a "
                     f"learning-rate schedule)")
    if diffs:
        raise ValueError(f"cannot resume from {path}: settings differ from the saved run "
                         f"({'; '.join(diffs)})")


# ----------------------------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Settings:
    """The optimisation settings of one :func:`train` call, in the order checkpoints record them
    (``config`` entry, before ``n_train``)."""

    epochs: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    schedule: str | None
    batch_size: int
    seed: int

    def check(self, *, resume: bool, out_dir: Any) -> None:
        """Raise ``ValueError`` on an invalid setting (or ``resume`` without ``out_dir``)."""
        check_int_at_least("epochs", self.epochs, 0)
        check_positive("lr", self.lr)
        check_int_at_least("batch_size", self.batch_size, 1)
        check_nonnegative("weight_decay", self.weight_decay)
        check_nonnegative("momentum", self.momentum)
        check_choice("optimizer", self.optimizer, ("adam", "sgd"))
        if self.schedule not in (None, "cosine"):
            raise ValueError(f"schedule must be None or 'cosine', got {self.schedule!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if resume and out_dir is None:
            raise ValueError("resume=True needs out_dir (where last.pt is)")


@dataclass
class _Run:
    """The state of one training run that lives across epochs."""

    model: nn.Module
    method: TrainingMethod
    settings: _Settings
    src: tuple[Tensor, Tensor] | Dataset
    n: int
    eval_src: tuple[Tensor, Tensor] | Dataset | None
    device: torch.device
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler | None
    cfg: dict[str, Any]
    out: Path | None
    show_progress: bool
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Totals:
    """Running sums of one epoch: loss over all samples, accuracy over those with logits."""

    loss: float = 0.0
    seen: int = 0
    correct: int = 0
    acc_seen: int = 0

    def add(self, loss: Tensor, logits: Tensor | None, y: Tensor) -> None:
        self.loss += float(loss.detach()) * len(y)
        self.seen += len(y)
        if logits is not None:
            self.correct += int((logits.detach().argmax(1) == y).sum())
            self.acc_seen += len(y)


def _trainable_params(model: nn.Module, meth: TrainingMethod, weight_decay: float) -> Any:
    """The optimiser's parameters: a list, or the method's parameter groups (if it has any)."""
    params: Any = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    # optional method hook (defenses.methods): parameter groups (no weight decay on noise scales)
    if hasattr(meth, "parameter_groups"):
        params = [{**g, "params": [p for p in g["params"] if p.requires_grad]}
                  for g in meth.parameter_groups(model, weight_decay)]
        params = [g for g in params if g["params"]]
    return params


def _optimizer(params: Any, s: _Settings) -> tuple[torch.optim.Optimizer,
                                                    torch.optim.lr_scheduler.LRScheduler | None]:
    opt: torch.optim.Optimizer
    if s.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(s.epochs, 1))
             if s.schedule == "cosine" else None)
    return opt, sched


def _start_run(model: nn.Module, meth: TrainingMethod, s: _Settings, data: Any, eval_data: Any,
               device: torch.device | str | None, out_dir: str | os.PathLike[str] | None,
               show_progress: bool) -> _Run:
    """Check the data, move the model to its device, build the optimiser (before any epoch)."""
    src = _as_source(data, "data")
    n = _length(src)
    if n == 0:
        raise ValueError("data is empty")
    eval_src = _as_source(eval_data, "eval_data") if eval_data is not None else None
    dev = torch.device(device) if device is not None else _device_of(model)
    model.to(dev)
    params = _trainable_params(model, meth, s.weight_decay)
    # optional method hook: a training set prepared once from the starting model (DeepFool
    # fine-tuning)
    if hasattr(meth, "prepare"):
        src = meth.prepare(model, src, out_dir=out_dir, device=dev, show_progress=show_progress)
        n = _length(src)
    opt, sched = _optimizer(params, s)
    return _Run(model=model, method=meth, settings=s, src=src, n=n, eval_src=eval_src,
                device=dev, opt=opt, sched=sched, cfg=_config(meth, **asdict(s), n_train=n),
                out=Path(out_dir) if out_dir is not None else None, show_progress=show_progress)


def _open_out_dir(run: _Run, resume: bool) -> int:
    """Create ``out_dir``, load ``last.pt`` when resuming, rewrite the log; the first epoch."""
    if run.out is None:
        return 1
    run.out.mkdir(parents=True, exist_ok=True)
    last = run.out / "last.pt"
    start = 1
    if resume and last.exists():
        state = safe_load(last, map_location=run.device)  # one-line error if unsafe/corrupt
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"cannot resume from {last}: not an advsmooth training checkpoint")
        _check_resume_config(state["config"], run.cfg, last)
        try:
            run.model.load_state_dict(state["model"])
        except RuntimeError as exc:  # missing / unexpected keys, shape mismatches
            why = " ".join(str(exc).split())[:300]
            raise ValueError(f"cannot resume from {last}: its weights do not fit this model "
                             f"(another architecture?): {why}") from None
        run.opt.load_state_dict(state["optimizer"])
        if run.sched is not None and state.get("scheduler") is not None:
            run.sched.load_state_dict(state["scheduler"])
        run.history = list(state.get("history", []))
        start = int(state["epoch"]) + 1
    _write_log(run.out / "metrics.jsonl", run.history)
    return start


def _train_step(run: _Run, xb: Tensor, yb: Tensor, gen: torch.Generator, epoch: int,
                totals: _Totals) -> None:
    """One optimiser step on one batch; adds its loss (and accuracy) to ``totals``."""
    xb, yb = xb.to(run.device), yb.to(run.device)
    res = run.method.loss(run.model, xb, yb, gen)
    loss, logits = res if isinstance(res, tuple) else (res, None)
    if loss.ndim != 0:
        raise ValueError(f"{run.method.name}.loss must return a scalar, got shape "
                         f"{tuple(loss.shape)}")
    if not torch.isfinite(loss):
        lr = run.opt.param_groups[0].get("lr")
        raise TrainingDiverged(f"non-finite training loss at epoch {epoch}: the training "
                               f"diverged; try a smaller learning rate (lr={lr:g})"
                               if isinstance(lr, float) else
                               f"non-finite training loss at epoch {epoch}: the training "
                               "diverged; try a smaller learning rate")
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    run.model.train()  # a method may have switched modes while crafting inputs
    totals.add(loss, logits, yb)


def _train_epoch(run: _Run, epoch: int) -> tuple[_Totals, dict[str, Tensor]]:
    """The batches of one epoch (order, method generator and global RNG from ``(seed, epoch)``);
    returns the running sums and the final states of the order and method generators."""
    s = run.settings
    order_gen = torch.Generator().manual_seed(_derived_seed(s.seed, epoch, 0))
    order = torch.randperm(run.n, generator=order_gen)
    gen = make_generator(_derived_seed(s.seed, epoch, 1), device=run.device)
    fork_devices = [run.device] if run.device.type == "cuda" else []
    run.model.train()
    totals = _Totals()
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(_derived_seed(s.seed, epoch, 2))
        bar = progress(_batches(run.src, order, s.batch_size),
                       total=math.ceil(run.n / s.batch_size), desc=f"epoch {epoch}/{s.epochs}",
                       enabled=run.show_progress)
        for xb, yb in bar:
            _train_step(run, xb, yb, gen, epoch, totals)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{totals.loss / totals.seen:.4f}", refresh=False)
    return totals, {"order": order_gen.get_state(), "method": gen.get_state().cpu()}


def _epoch_entry(run: _Run, epoch: int, totals: _Totals,
                 callbacks: Sequence[Callback]) -> dict[str, Any]:
    """Step the schedule, then the epoch's log entry (without ``time_s``), model in eval mode."""
    lr_now = run.opt.param_groups[0]["lr"]
    if run.sched is not None:
        run.sched.step()
    run.model.eval()
    entry: dict[str, Any] = {
        "epoch": epoch,
        "loss": totals.loss / totals.seen,
        "train_acc": totals.correct / totals.acc_seen if totals.acc_seen else None,
        "clean_acc": (evaluate(run.model, run.eval_src, device=run.device)
                      if run.eval_src is not None else None),
        "lr": lr_now,
    }
    for cb in callbacks:
        extra = cb(run.model, epoch)
        if extra:
            entry.update(dict(extra))
        run.model.eval()
    return entry


def _save_epoch(run: _Run, out: Path, epoch: int, rng: dict[str, Tensor],
                keep_epochs: bool) -> None:
    """Write the checkpoint(s) of ``epoch`` and append its line to ``metrics.jsonl``."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict() if run.sched is not None else None,
        "rng": rng,
        "config": run.cfg,
        "history": run.history,
    }
    if keep_epochs:
        _atomic_save(state, out / f"epoch_{epoch:03d}.pt")
    _atomic_save(state, out / "last.pt")
    line = json.dumps(run.history[-1]) + "\n"
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(line)  # one whole line per epoch, flushed now
        f.flush()


def train(
    model: nn.Module,
    data: Any,
    *,
    method: str | TrainingMethod = "standard",
    epochs: int = 10,
    lr: float = 1e-3,
    optimizer: str = "adam",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str | None = None,
    batch_size: int = 128,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    eval_data: Any = None,
    callbacks: Sequence[Callback] = (),
    device: torch.device | str | None = None,
    keep_epochs: bool = True,
    show_progress: bool = True,
    **method_kwargs: Any,
) -> nn.Module:
    """Train ``model`` in place on ``data`` and return it in eval mode.

    Args:
        model: any ``nn.Module`` taking ``[0, 1]`` pixels ``N×C×H×W`` and returning logits.
            It is modified in place (moved to ``device``, weights updated).
        data: training data: ``(x, y)`` tensors, a ``Dataset`` of ``(image, label)``, or a
            ``DataLoader`` (only its dataset is used; batching/shuffling are the trainer's).
        method: a name in :data:`METHODS` (``"standard"``) or a :class:`TrainingMethod`;
            extra keyword arguments are passed to the registered method class.
        epochs: total number of epochs (a resumed run continues up to this number).
        lr, optimizer, momentum, weight_decay: ``optimizer`` is ``"adam"`` or ``"sgd"``
            (``momentum`` applies to SGD).
        schedule: ``None`` (constant lr) or ``"cosine"`` (per-epoch cosine annealing to 0).
        batch_size: mini-batch size (the last batch of an epoch may be smaller).
        seed: seeds shuffling, the method's generator and in-epoch global randomness.
        out_dir: where to write checkpoints and ``metrics.jsonl`` (see module docstring).
        resume: continue from ``out_dir/last.pt`` if it exists (else start fresh). Settings
            other than ``epochs`` must match the saved run.
        eval_data: held-out data for ``clean_acc`` in the log (same forms as ``data``).
        callbacks: functions ``f(model, epoch) -> dict | None`` called after each epoch with
            the model in eval mode (e.g. robust accuracy on a held-out slice); their dicts are
            merged into the epoch's log entry (values must be JSON-serialisable).
        device: where to train (default: the model's current device).
        keep_epochs: keep every ``epoch_XXX.pt`` (else only ``last.pt``).
        show_progress: tqdm bar over batches (also off when ``$ADVSMOOTH_NO_PROGRESS`` is set).

    Returns:
        ``model`` itself, trained, in eval mode. The per-epoch metrics are in
        ``out_dir/metrics.jsonl`` (and in the ``"history"`` entry of ``last.pt``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    meth = get_method(method, **method_kwargs)
    settings = _Settings(epochs=epochs, lr=lr, optimizer=optimizer, momentum=momentum,
                         weight_decay=weight_decay, schedule=schedule, batch_size=batch_size,
                         seed=seed)
    settings.check(resume=resume, out_dir=out_dir)
    run = _start_run(model, meth, settings, data, eval_data, device, out_dir, show_progress)
    start = _open_out_dir(run, resume)
    for epoch in range(start, epochs + 1):
        t0 = time.perf_counter()
        totals, rng = _train_epoch(run, epoch)
        entry = _epoch_entry(run, epoch, totals, callbacks)
        entry["time_s"] = round(time.perf_counter() - t0, 3)
        run.history.append(entry)
        if run.out is not None:
            _save_epoch(run, run.out, epoch, rng, keep_epochs)
    model.eval()
    return model


def _write_log(path: Path, history: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(entry) + "\n" for entry in history)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
