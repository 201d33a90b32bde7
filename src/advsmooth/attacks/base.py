"""The attack contract: :class:`Attack`, :class:`AttackResult`, input checks, cost accounting.

Every attack in advsmooth is an :class:`Attack` subclass that holds hyper-parameters only and is
called as ``attack(model, x, y, target=None, generator=None)``. The base class

* validates the inputs (rank, dtype, device, NaN/Inf, ``[0, 1]`` range, label range and length)
  and raises ``ValueError``/``TypeError`` with a precise message;
* puts the model in eval mode with ``requires_grad=False`` on every parameter and restores every
  module's training flag and every parameter's flag afterwards, even when the attack raises;
* computes the clean prediction once, so that inputs that are already misclassified (or, for a
  targeted attack, already classified as the target) are returned unchanged with ``success=True``
  and zero iterations, and never enter the attack;
* re-checks success on the returned ``x_adv`` with one final forward pass;
* accounts every per-image forward and gradient evaluation (:class:`CostCounter`).

Subclasses implement :meth:`Attack._attack`, which receives an :class:`AttackContext` holding only
the samples that still need attacking.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from .._tensors import check_images, check_labels, check_model_compat, frozen_model, predict
from .._utils import (
    NonFiniteModelOutput,
    check_model_output,
    input_mismatch,
    make_generator,
    progress,
)

__all__ = [
    "Attack",
    "AttackResult",
    "AttackContext",
    "AttackOutput",
    "CostCounter",
    "run_batched",
]


def _num_classes(logits: Tensor) -> int:
    if logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1):
        return 2
    return int(logits.shape[1])


# ----------------------------------------------------------------------------------------------
# cost accounting
# ----------------------------------------------------------------------------------------------

class CostCounter:
    """Per-image forward and gradient evaluation counts for a batch of ``n`` images.

    ``add_forward(index, k)`` adds ``k`` forward evaluations to each image selected by ``index``
    (a LongTensor of positions in the full batch, a bool mask, or ``None`` for all images). A
    gradient evaluation is one backward pass through the model for one image and one scalar
    objective (a K-class Jacobian therefore costs K gradient evaluations).
    """

    def __init__(self, n: int, device: torch.device | str = "cpu") -> None:
        self.forward = torch.zeros(n, dtype=torch.long, device=device)
        self.grad = torch.zeros(n, dtype=torch.long, device=device)

    def add_forward(self, index: Tensor | None = None, k: int = 1) -> None:
        if index is None:
            self.forward += k
        else:
            self.forward[index] += k

    def add_grad(self, index: Tensor | None = None, k: int = 1) -> None:
        if index is None:
            self.grad += k
        else:
            self.grad[index] += k


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------

#: the per-sample tensor fields of :class:`AttackResult` (first dimension ``N``; ``target`` may
#: be ``None``)
_PER_SAMPLE = ("x", "x_adv", "success", "iterations", "forward_evals", "grad_evals", "labels",
               "target", "clean_pred", "adv_pred")


@dataclass
class AttackResult:
    """The outcome of an attack on a batch of ``N`` images.

    Attributes:
        x: the clean input ``N×C×H×W`` (the caller's tensor, never modified).
        x_adv: adversarial images ``N×C×H×W`` (same dtype/device as ``x``).
        success: ``(N,)`` bool, re-checked on ``x_adv`` itself: untargeted → prediction differs
            from the label; targeted → prediction equals the target. An input that is already
            misclassified counts as a success with zero iterations (see ``skipped``).
        iterations: ``(N,)`` int64, attack iterations spent on each image.
        forward_evals: ``(N,)`` int64, forward evaluations of the model per image, including the
            clean and the final verification pass.
        grad_evals: ``(N,)`` int64, gradient evaluations per image (one backward for one scalar
            objective and one image).
        labels: ``(N,)`` int64 true labels used (the clean prediction when ``y`` was omitted).
        target: ``(N,)`` int64 target labels, or ``None`` for an untargeted attack.
        clean_pred: ``(N,)`` prediction on ``x``; adv_pred: ``(N,)`` prediction on ``x_adv``.
        extras: algorithm-specific per-sample tensors (first dimension ``N``).
        info: algorithm-specific scalars and metadata.
        elapsed: wall-clock seconds of the call.
        attack: ``repr`` of the attack that produced the result.
    """

    x: Tensor
    x_adv: Tensor
    success: Tensor
    iterations: Tensor
    forward_evals: Tensor
    grad_evals: Tensor
    labels: Tensor
    target: Tensor | None
    clean_pred: Tensor
    adv_pred: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0
    attack: str = ""

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def perturbation(self) -> Tensor:
        """``x_adv - x``, shape ``N×C×H×W``."""
        return self.x_adv - self.x

    def norms(self, p: float | str = 2) -> Tensor:
        """Per-sample ``p``-norm of the perturbation, shape ``(N,)`` (``p``: 1, 2, inf, any > 0)."""
        r = self.perturbation.flatten(1)
        if p in ("inf", float("inf")):
            return r.abs().amax(dim=1) if r.shape[1] else r.new_zeros(r.shape[0])
        return torch.linalg.vector_norm(r, ord=float(p), dim=1)

    @property
    def skipped(self) -> Tensor:
        """``(N,)`` bool: inputs that needed no attack (misclassified / already on target)."""
        if self.target is None:
            return self.clean_pred != self.labels
        return self.clean_pred == self.target

    def _mean_attacked(self, counts: Tensor) -> float:
        att = ~self.skipped
        return float(counts[att].double().mean()) if bool(att.any()) else 0.0

    @property
    def mean_forward_evals(self) -> float:
        """Mean forward evaluations per attacked image (``~skipped``; 0 when none was)."""
        return self._mean_attacked(self.forward_evals)

    @property
    def mean_grad_evals(self) -> float:
        """Mean gradient evaluations per attacked image (``~skipped``; 0 when none was)."""
        return self._mean_attacked(self.grad_evals)

    def __getitem__(self, index: Tensor | slice | Sequence[int]) -> AttackResult:
        """A result restricted to the samples selected by ``index`` (mask, indices or slice)."""
        picked = {k: None if (t := getattr(self, k)) is None else t[index] for k in _PER_SAMPLE}
        return replace(self, **picked, extras={k: v[index] for k, v in self.extras.items()},
                       info=dict(self.info))

    @staticmethod
    def cat(results: Sequence[AttackResult]) -> AttackResult:
        """Concatenate results of consecutive batches (same attack) into one."""
        if not results:
            raise ValueError("cannot concatenate an empty list of results")
        first = results[0]
        joined = {k: None if getattr(first, k) is None
                  else torch.cat([getattr(r, k) for r in results]) for k in _PER_SAMPLE}
        keys = set(first.extras)
        return AttackResult(
            **joined,
            extras={k: torch.cat([r.extras[k] for r in results]) for k in keys
                    if all(k in r.extras for r in results)},
            info=dict(first.info), elapsed=sum(r.elapsed for r in results), attack=first.attack,
        )

    def summary(self) -> dict[str, float]:
        """Aggregate numbers (see :func:`advsmooth.attacks.summary.summarize`, the one summary
        of attack results): rates over the attacked images (``~skipped``), norms over the
        successful ones, iterations and costs per **attacked** image.

        Keys: ``n``, ``attacked``, ``skipped``, ``accuracy``, ``success_rate``, ``median_l2``,
        ``mean_l2``, ``median_linf``, ``mean_linf``, ``rho_adv``, ... , ``iterations`` (also as
        ``mean_iterations``), ``forward_evals``, ``grad_evals``, ``seconds``; NaN when undefined.
        """
        from .summary import result_columns, summarize

        out = summarize(result_columns(self), seconds=self.elapsed)
        out["mean_iterations"] = out["iterations"]
        return out

    def __repr__(self) -> str:
        """One line: attack, images, success, median ‖r‖₂, time (not the tensors)."""
        n = len(self)
        s = self.summary()
        attacked = int(s["attacked"])
        ok = int((self.success & ~self.skipped).sum()) if n else 0
        med = "n/a" if s["median_l2"] != s["median_l2"] else f"{s['median_l2']:.4g}"
        name = self.attack.split("(")[0] if self.attack else "attack"
        kind = "targeted" if self.target is not None else "untargeted"
        return (f"AttackResult({name}, {kind}, n={n}, attacked={attacked}, success={ok}/"
                f"{attacked}, median_l2={med}, shape={tuple(self.x.shape[1:])}, "
                f"dtype={str(self.x.dtype).replace('torch.', '')}, {self.elapsed:.3g} s)")


# ----------------------------------------------------------------------------------------------
# the attack base class
# ----------------------------------------------------------------------------------------------

@dataclass
class AttackContext:
    """What :meth:`Attack._attack` receives: the samples still to attack, and the cost counter.

    ``x``, ``labels``, ``target``, ``clean_logits`` hold only the active samples (those that are
    not already misclassified); ``index`` maps them to positions in the caller's batch, which is
    what :class:`CostCounter` methods expect (use :meth:`count_forward` / :meth:`count_grad` with
    indices *into the active subset* to avoid the mapping by hand).
    """

    model: nn.Module
    x: Tensor
    labels: Tensor
    target: Tensor | None
    clean_logits: Tensor
    index: Tensor
    generator: torch.Generator
    cost: CostCounter
    #: what :meth:`Attack._clean_forward` kept besides the clean logits (``None`` by default),
    #: e.g. the autograd graph of the clean forward so that a first step can reuse it
    prepared: Any = None

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def count_forward(self, sub: Tensor | None = None, k: int = 1) -> None:
        """Add ``k`` forward evaluations to active samples ``sub`` (indices/mask into ``x``)."""
        self.cost.add_forward(self.index if sub is None else self.index[sub], k)

    def count_grad(self, sub: Tensor | None = None, k: int = 1) -> None:
        """Add ``k`` gradient evaluations to active samples ``sub`` (indices/mask into ``x``)."""
        self.cost.add_grad(self.index if sub is None else self.index[sub], k)


@dataclass
class AttackOutput:
    """What :meth:`Attack._attack` returns for the active samples (first dim = active count)."""

    x_adv: Tensor
    iterations: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    #: raw outputs of ``ctx.model`` itself (no copy, no surrogate) at exactly ``x_adv``, when the
    #: attack already computed them; the base class then skips its verification forward pass
    adv_logits: Tensor | None = None


def _labels_and_target(y: Tensor | Sequence[int] | None, target: Tensor | Sequence[int] | None,
                       clean_pred: Tensor, num_classes: int,
                       device: torch.device) -> tuple[Tensor, Tensor | None]:
    """Checked labels ``(N,)`` (the clean prediction when ``y`` is None) and targets (or None);
    every target must differ from its label."""
    n = clean_pred.shape[0]
    labels = clean_pred.clone() if y is None else check_labels(y, n, num_classes, device)
    if target is None:
        return labels, None
    tgt = check_labels(target, n, num_classes, device, name="target")
    if bool((tgt == labels).any()):
        raise ValueError("target must differ from the true label y for every sample "
                         f"({int((tgt == labels).sum())} sample(s) have target == y)")
    return labels, tgt


def _scatter_output(x: Tensor, active: Tensor,
                    out: AttackOutput | None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Full-batch ``x_adv``, ``iterations`` and ``extras`` from the output for the ``active``
    samples (``None``: nothing was attacked); the other samples keep ``x`` and zeros."""
    n = x.shape[0]
    x_adv = x.clone()
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    extras: dict[str, Tensor] = {}
    if out is not None:
        x_adv[active] = out.x_adv.detach().to(x.dtype)
        iterations[active] = out.iterations.to(torch.long)
        for key, val in out.extras.items():
            full = torch.zeros((n, *val.shape[1:]), dtype=val.dtype, device=val.device)
            full[active] = val
            extras[key] = full
    return x_adv, iterations, extras


def _adv_prediction(model: nn.Module, x_adv: Tensor, clean_pred: Tensor, active: Tensor,
                    adv_logits: Tensor | None, cost: CostCounter) -> Tensor:
    """Prediction ``(N,)`` on ``x_adv``: the attack's own logits at exactly ``x_adv`` when given,
    else one verification forward of the attacked images (the others keep ``clean_pred``)."""
    adv_pred = clean_pred.clone()
    if adv_logits is not None:  # verified by the attack on this model at these bits
        adv_pred[active] = predict(adv_logits, active.numel())
    elif active.numel():  # only the attacked images: the others are returned unchanged
        with torch.no_grad():
            adv_pred[active] = predict(model(x_adv[active]), active.numel())
        cost.add_forward(active, 1)
    return adv_pred


class Attack(abc.ABC):
    """Base class of every attack: hyper-parameters in ``__init__``, the model at call time.

    Subclasses set ``supports_targeted`` and implement :meth:`_attack`. Constructor arguments are
    keyword-only and validated; :meth:`__repr__` lists them (subclasses store them in
    ``self._params``).
    """

    supports_targeted: bool = True
    #: whether ``_attack`` consumes randomness (then a ``seed``/``generator`` matters)
    stochastic: bool = False

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = int(seed)
        self._params: dict[str, Any] = {}

    def _set_params(self, **params: Any) -> None:
        self._params.update(params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"{type(self).__name__}({args})"

    # -- public entry point ---------------------------------------------------------------------
    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor | Sequence[int] | None = None,
        *,
        target: Tensor | Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        """Attack ``model`` at ``x``.

        Args:
            model: a classifier taking ``N×C×H×W`` pixels in ``[0, 1]`` and returning ``N×K``
                logits (or one score per sample for a binary classifier, where supported).
            x: clean images ``N×C×H×W`` in ``[0, 1]``; never modified.
            y: true labels ``(N,)``; ``None`` uses the model's clean predictions.
            target: target labels ``(N,)`` for a targeted attack; must differ from ``y``.
            generator: random source for stochastic attacks; default: a new generator seeded
                with ``self.seed`` on ``x``'s device (so the same call gives the same result).

        Returns:
            An :class:`AttackResult`.
        """
        check_images(x)
        check_model_compat(model, x)
        if target is not None and not self.supports_targeted:
            raise ValueError(f"{type(self).__name__} does not support targeted attacks")
        start = time.perf_counter()
        n = x.shape[0]
        cost = CostCounter(n, device=x.device)
        x = x.detach()
        with frozen_model(model):
            if n == 0:
                return self._empty_result(x, y, target)
            # 1. the clean forward; inputs already misclassified (or on target) are done
            with input_mismatch(x):
                z0, prepared = self._clean_forward(model, x)
            check_model_output(z0, n)
            cost.add_forward(None, 1)
            clean_pred = predict(z0)
            labels, tgt = _labels_and_target(y, target, clean_pred, _num_classes(z0), x.device)
            done = clean_pred != labels if tgt is None else clean_pred == tgt
            active = torch.nonzero(~done).flatten()
            # 2. the attack proper, on the active samples only
            out: AttackOutput | None = None
            if active.numel():
                gen = generator if generator is not None else make_generator(self.seed, x.device)
                ctx = AttackContext(
                    model=model, x=x[active], labels=labels[active],
                    target=None if tgt is None else tgt[active], clean_logits=z0[active],
                    index=active, generator=gen, cost=cost, prepared=prepared,
                )
                out = self._attack(ctx)
                self._check_finite(out)
            x_adv, iterations, extras = _scatter_output(x, active, out)
            # 3. success, re-checked on x_adv (by the attack's own logits when it has them)
            adv_logits = None
            if out is not None and out.adv_logits is not None and out.x_adv.dtype == x.dtype:
                adv_logits = out.adv_logits.detach()
            adv_pred = _adv_prediction(model, x_adv, clean_pred, active, adv_logits, cost)
            success = adv_pred != labels if tgt is None else adv_pred == tgt
        return AttackResult(
            x=x, x_adv=x_adv, success=success, iterations=iterations,
            forward_evals=cost.forward, grad_evals=cost.grad, labels=labels, target=tgt,
            clean_pred=clean_pred, adv_pred=adv_pred, extras=extras,
            info={} if out is None else dict(out.info),
            elapsed=time.perf_counter() - start, attack=repr(self),
        )

    def _empty_result(self, x: Tensor, y: Tensor | Sequence[int] | None,
                      target: Tensor | Sequence[int] | None) -> AttackResult:
        """The result for an empty batch (after checking that ``y``/``target`` are empty too)."""
        if y is not None:  # a label/target list that does not match the empty batch
            check_labels(y, 0, None, x.device)
        if target is not None:
            check_labels(target, 0, None, x.device, name="target")
        def empty(dtype: torch.dtype = torch.long) -> Tensor:
            return torch.zeros(0, dtype=dtype, device=x.device)

        counts = {k: empty() for k in ("iterations", "forward_evals", "grad_evals", "labels",
                                        "clean_pred", "adv_pred")}
        return AttackResult(x=x, x_adv=x.clone(), success=empty(torch.bool), **counts,
                            target=None if target is None else empty(), attack=repr(self))

    def _check_finite(self, out: AttackOutput) -> None:
        """Raise :class:`NonFiniteModelOutput` if some adversarial image has a NaN/Inf pixel."""
        bad = ~torch.isfinite(out.x_adv.detach()).flatten(1).all(1)
        if bool(bad.any()):  # safety net: every gradient read is checked already
            raise NonFiniteModelOutput(
                f"{type(self).__name__} produced NaN/Inf adversarial images for "
                f"{int(bad.sum())} input(s): the model output or its gradient is not "
                "finite there")

    def _clean_forward(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Any]:
        """The clean forward pass: logits ``(N, K)`` (detached) and anything the attack wants
        to keep from it for :meth:`_attack` (``ctx.prepared``). Counted as one forward per
        image. Default: a plain no-grad forward, nothing kept."""
        with torch.no_grad():
            return model(x), None

    @abc.abstractmethod
    def _attack(self, ctx: AttackContext) -> AttackOutput:
        """Run the attack on the active samples of ``ctx`` and return their adversarial images."""


def run_batched(
    attack: Attack,
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    target: Tensor | None = None,
    batch_size: int = 256,
    progress_bar: bool = True,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Run ``attack`` over ``x`` in batches of ``batch_size`` with a progress bar; one result.

    With a stochastic attack, pass one ``generator`` to make the whole run reproducible (the
    batches then consume it in order).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = x.shape[0]
    if n == 0:
        return attack(model, x, y, target=target, generator=generator)
    gen = generator if generator is not None else make_generator(attack.seed, x.device)
    results = []
    starts = range(0, n, batch_size)
    for s in progress(starts, total=len(starts), desc=type(attack).__name__, enabled=progress_bar):
        sl = slice(s, s + batch_size)
        results.append(attack(model, x[sl], None if y is None else y[sl],
                              target=None if target is None else target[sl], generator=gen))
    return AttackResult.cat(results)
