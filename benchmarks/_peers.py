"""Adapters: the same attack, configured identically, in advsmooth and in each peer library.

Every factory takes the model (an ``nn.Module`` on pixels in ``[0, 1]``, eval mode, parameter
gradients off) and the hyper-parameters, builds the library's wrapper objects once (outside the
timed region) and returns ``run(x, y) -> (x_adv, own)`` where ``own`` is advsmooth's
:class:`AttackResult` (for its self-reported cost) or ``None`` for a peer. Inputs are processed
in the same chunks of ``batch_size`` images for every library.

Semantics that differ between libraries (all documented in benchmarks/README.md):

DeepFool L2 (overshoot η = 0.02, 50 iterations, 10 candidates):
* advsmooth (defaults): candidate set = top-10 clean logits (all classes here, K = 10), one
  forward per iteration shared by the face gradients (9 in the first iteration, then the 2
  nearest unless a left-out face could be nearer), overshoot on the total (``x + (1+η)
  r_tot``, checked at that point, and the next linearisation point, like LTS4's Python code and
  Foolbox), active set shrinks as samples are fooled and is processed in chunks of 128, no
  clipping (``clip=False``, the paper). ``advsmooth-clip``: the same with ``clip=True`` (every
  iterate kept in ``[0, 1]``, the semantics Foolbox and torchattacks force; the default
  box-constrained step). ``advsmooth-clip-clamp``: ``clip=True, box="clamp"`` (the paper's step,
  then a pixel-wise clamp, as Foolbox). ``advsmooth-paper``: ``linearize_with_overshoot=False``
  (linearise at ``x + r_tot``, the paper's pseudo-code). ``advsmooth-all-faces``:
  ``faces="all"`` (every face gradient at every iteration, as the paper).
* Foolbox ``L2DeepFoolAttack(steps, candidates, overshoot, loss="logits")``: one forward+backward
  *per candidate* (9 per iteration), the whole batch every iteration (finished samples are frozen
  but still evaluated), linearises at ``x0 + (1+η) p_total`` and always clips to the model bounds
  ``[0, 1]`` (cannot be disabled).
* torchattacks ``DeepFool(steps, overshoot)``: Python loop over samples (batch of 1), Jacobian of
  all K classes by K backward passes, overshoot applied to every step (``x_{i+1} = x_i + (1+η)
  r_i``), clamps to ``[0, 1]`` after every step (cannot be disabled); no candidate option.
* ART ``DeepFool(classifier, max_iter, epsilon=η, nb_grads=10, batch_size)`` with
  ``PyTorchClassifier(clip_values=None)`` (no clipping): numpy round trips, gradients of the
  union of the top-``nb_grads`` classes (all 10 here) for the whole batch every iteration,
  stops on the un-overshot point and applies ``(1+η)`` once at the end.

PGD / MI-FGSM (L∞, ε, α, steps, no random start): advsmooth ``PGD(random_start=False)`` /
``MIFGSM(decay=1)``; torchattacks ``PGD(random_start=False)`` / ``MIFGSM(decay=1)`` (gradient
divided by its mean absolute value — same sign as the L1 normalisation); Foolbox
``LinfPGD(abs_stepsize=α, random_start=False)`` / ``LinfMomentumIterativeFastGradientMethod``
(accumulates ``sign(∇)``, not ``∇/||∇||₁`` — a different update); ART ``ProjectedGradientDescent``
/ ``MomentumIterativeMethod`` (``num_random_init=0``, ``clip_values=(0, 1)``; L1-normalised
momentum).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

RunFn = Callable[[Tensor, Tensor], tuple[Tensor, Any]]


def _chunks(x: Tensor, y: Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]


def _cat_own(results: list[Any]) -> Any:
    import advsmooth as asm
    return asm.attacks.AttackResult.cat(results) if results else None


def _art_classifier(model: nn.Module, x_shape: tuple[int, ...], num_classes: int,
                    clip: bool) -> Any:
    from art.estimators.classification import PyTorchClassifier
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x_shape),
                             nb_classes=num_classes, clip_values=(0.0, 1.0) if clip else None,
                             device_type="cpu")


# ----------------------------------------------------------------------------------------------
# DeepFool L2
# ----------------------------------------------------------------------------------------------

#: advsmooth DeepFool variants in the deepfool suite: row name → extra constructor arguments
ADVSMOOTH_DEEPFOOL: dict[str, dict[str, Any]] = {
    "advsmooth": {},                                             # defaults
    "advsmooth-clip": {"clip": True},                            # box-constrained steps
    "advsmooth-clip-clamp": {"clip": True, "box": "clamp"},      # the paper's step + clamp
    "advsmooth-paper": {"linearize_with_overshoot": False},      # the paper's linearisation point
    "advsmooth-all-faces": {"faces": "all"},                     # every face, every iteration
}


def _advsmooth_run(atk: Any, model: nn.Module, batch_size: int) -> RunFn:
    """Run an advsmooth attack in batches on the model inside a counting wrapper.

    The attack gets the bare model: wrapped in the counting module (a module of another package)
    it would neither fold BatchNorms (it never copies a module with Python-side state) nor share
    the batch among threads, so it would run slower than for a user. Its evaluations are then its
    own accounting, added to the counter (equal to the wrapper's count whenever both apply:
    tests/test_benchmarks.py)."""
    bare = getattr(model, "model", model)

    def run(x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
        own = _cat_own([atk(bare, xb, yb) for xb, yb in _chunks(x, y, batch_size)])
        if bare is not model:
            model.forward_rows += int(own.forward_evals.sum())  # type: ignore[operator]
            model.grad_rows += int(own.grad_evals.sum())  # type: ignore[operator]
        return own.x_adv, own
    return run


def deepfool(lib: str, model: nn.Module, *, overshoot: float, steps: int, candidates: int,
             batch_size: int, input_shape: tuple[int, ...], num_classes: int,
             clip: bool = False) -> RunFn:
    if lib in ADVSMOOTH_DEEPFOOL:
        import advsmooth as asm
        kw = {"clip": clip, **ADVSMOOTH_DEEPFOOL[lib]}
        atk = asm.attacks.DeepFool(norm=2, overshoot=overshoot, max_iter=steps,
                                   candidates=candidates, **kw)
        return _advsmooth_run(atk, model, batch_size)

    if lib == "foolbox":
        import foolbox as fb
        fm = fb.PyTorchModel(model, bounds=(0.0, 1.0))
        atk = fb.attacks.L2DeepFoolAttack(steps=steps, candidates=candidates, overshoot=overshoot,
                                          loss="logits")

        def run(x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
            out = []
            for xb, yb in _chunks(x, y, batch_size):
                raw, _, _ = atk(fm, xb, fb.criteria.Misclassification(yb), epsilons=None)
                out.append(raw)
            return torch.cat(out), None
        return run

    if lib == "torchattacks":
        import torchattacks
        atk = torchattacks.DeepFool(model, steps=steps, overshoot=overshoot)

        def run(x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
            return torch.cat([atk(xb, yb) for xb, yb in _chunks(x, y, batch_size)]), None
        return run

    if lib == "art":
        import logging

        from art.attacks.evasion import DeepFool
        logging.getLogger("art").setLevel(logging.ERROR)
        clf = _art_classifier(model, input_shape, num_classes, clip)
        atk = DeepFool(clf, max_iter=steps, epsilon=overshoot, nb_grads=candidates,
                       batch_size=batch_size, verbose=False)

        def run(x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
            return torch.from_numpy(atk.generate(x.numpy())), None
        return run

    raise ValueError(f"unknown library {lib!r}")


# ----------------------------------------------------------------------------------------------
# PGD and MI-FGSM (L∞, no random start)
# ----------------------------------------------------------------------------------------------

def linf_iterative(lib: str, kind: str, model: nn.Module, *, eps: float, alpha: float, steps: int,
                   batch_size: int, input_shape: tuple[int, ...], num_classes: int,
                   decay: float = 1.0) -> RunFn:
    """``kind``: ``"pgd"`` or ``"mifgsm"``."""
    if kind not in ("pgd", "mifgsm"):
        raise ValueError(kind)
    if lib == "advsmooth":
        import advsmooth as asm
        if kind == "pgd":
            atk = asm.attacks.PGD(eps=eps, alpha=alpha, steps=steps, norm="inf", random_start=False)
        else:
            atk = asm.attacks.MIFGSM(eps=eps, alpha=alpha, steps=steps, decay=decay)
        return _advsmooth_run(atk, model, batch_size)

    if lib == "torchattacks":
        import torchattacks
        if kind == "pgd":
            atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
        else:
            atk = torchattacks.MIFGSM(model, eps=eps, alpha=alpha, steps=steps, decay=decay)

        def run(x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
            return torch.cat([atk(xb, yb) for xb, yb in _chunks(x, y, batch_size)]), None
        return run

    if lib == "foolbox":
        import foolbox as fb
        fm = fb.PyTorchModel(model, bounds=(0.0, 1.0))
        if kind == "pgd":
            atk = fb.attacks.LinfPGD(abs_stepsize=alpha, steps=steps, random_start=False)
        else:
            atk = fb.attacks.LinfMomentumIterativeFastGradientMethod(
                momentum=decay, abs_stepsize=alpha, steps=steps, random_start=False)

        def run(x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
            out = []
            for xb, yb in _chunks(x, y, batch_size):
                _, clipped, _ = atk(fm, xb, fb.criteria.Misclassification(yb), epsilons=eps)
                out.append(clipped)
            return torch.cat(out), None
        return run

    if lib == "art":
        import logging

        from art.attacks.evasion import MomentumIterativeMethod, ProjectedGradientDescent
        logging.getLogger("art").setLevel(logging.ERROR)
        clf = _art_classifier(model, input_shape, num_classes, clip=True)
        if kind == "pgd":
            atk = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=alpha,
                                           max_iter=steps, num_random_init=0,
                                           batch_size=batch_size, verbose=False)
        else:
            atk = MomentumIterativeMethod(clf, norm=np.inf, eps=eps, eps_step=alpha, decay=decay,
                                          max_iter=steps, batch_size=batch_size, verbose=False)

        def run(x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
            y1 = np.eye(num_classes, dtype=np.float32)[y.numpy()]
            return torch.from_numpy(atk.generate(x.numpy(), y=y1)), None
        return run

    raise ValueError(f"unknown library {lib!r}")
