"""Ensemble adversarial training (Tramèr et al. 2018) as a training method ``"ensemble_at"``.

Each batch mixes clean examples with adversarial examples crafted by a one-step sign attack
(FGSM, or R+FGSM) against a *source* chosen per batch: either the model being trained or one of
a set of static, pre-trained **holdout** models (never updated). The loss is the
Goodfellow/Tramèr mixture ``(1−w)·CE(f(x), y) + w·CE(f(x_adv), y)`` (``w = 0.5``: half clean,
half adversarial).

Source choice (``schedule``):

* ``"random"`` (default, as in Tramèr et al.'s code): a uniform draw over
  ``{current model} ∪ holdouts`` per batch from the trainer's seeded per-epoch generator;
* ``"round_robin"``: current, holdout 1, holdout 2, ..., current, ... (counted over batches).

Every batch appends its source's name (``"current"`` or the holdout's name) to
:attr:`EnsembleAdversarialTraining.sources`, so the draws can be inspected; with the same
``seed`` of :func:`~advsmooth.defenses.train` the same sequence is drawn (the draw uses the
trainer's per-epoch generator, so resumed runs continue the sequence exactly).

Usage::

    train(model, data, method="ensemble_at", holdout=["mnist-mlp", other_model], eps=0.3)

``holdout`` entries are ``nn.Module`` objects or model names for :func:`advsmooth.models.load`
(loaded on first use). They are put in eval mode with gradients off and moved to the batch's
device; their parameters are never trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import check_choice, check_nonnegative
from ..attacks import FGSM
from ..models.training import METHODS
from .methods import RobustMethod, _unit

__all__ = ["EnsembleAdversarialTraining", "sign_attack"]

SCHEDULES = ("random", "round_robin")
ATTACKS = ("fgsm", "rfgsm")


def sign_attack(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, attack: str = "fgsm",
                alpha: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """One-step ℓ∞ sign attack on ``model`` (eval mode, parameter gradients off; restored after).

    ``"fgsm"``: ``x + ε·sign(∇ CE)``; ``"rfgsm"`` (Tramèr R+FGSM): ``x' = x + α·sign(N(0, I))``,
    then ``x' + (ε − α)·sign(∇ CE(x'))``. Clamped to ``[0, 1]``; every sample is perturbed.
    Returns a detached tensor shaped like ``x`` (:meth:`advsmooth.attacks.FGSM.perturb` from
    the start point).
    """
    start = x.detach()
    step = eps
    if attack == "rfgsm":
        gen = generator if generator is not None else torch.Generator(x.device).manual_seed(0)
        noise = torch.randn(start.shape, generator=gen, device=start.device, dtype=start.dtype)
        start = (start + alpha * noise.sign()).clamp(0.0, 1.0)
        step = eps - alpha
    return FGSM(eps=step).perturb(model, start, y)


def _holdout_name(h: Any, i: int) -> str:
    return h if isinstance(h, str) else f"holdout{i}:{type(h).__name__}"


class EnsembleAdversarialTraining(RobustMethod):
    """Ensemble adversarial training (Tramèr et al. 2018): per-batch source = current model or a
    static holdout model; one-step sign examples; loss ``(1−w)·CE(x) + w·CE(x_adv)``.

    Args:
        holdout: non-empty sequence of static pre-trained models (``nn.Module``) or model names
            (loaded with :func:`advsmooth.models.load`); ``ValueError`` if empty.
        eps: ℓ∞ budget of the sign attack, pixel units (MNIST: 0.3).
        w: weight of the adversarial term in ``[0, 1]`` (0.5: half clean, half adversarial).
        attack: ``"fgsm"`` or ``"rfgsm"`` (R+FGSM with random step ``alpha < eps``).
        alpha: R+FGSM random step (pixel units); ignored for FGSM.
        schedule: ``"random"`` (uniform per batch, seeded) or ``"round_robin"``.
        include_current: also draw the model being trained as a source (Tramèr: yes).
        models_dir: folder for model names (passed to :func:`advsmooth.models.load`).

    Attributes:
        sources: the name of the source used by every batch so far, in order.
        source_names: the possible sources, ``["current", <holdout names>...]``.
    """

    name = "ensemble_at"

    def __init__(self, *, holdout: Sequence[nn.Module | str] = (), eps: float = 0.3,
                 w: float = 0.5, attack: str = "fgsm", alpha: float = 0.0,
                 schedule: str = "random", include_current: bool = True,
                 models_dir: Any = None) -> None:
        if isinstance(holdout, (str, nn.Module)):
            holdout = [holdout]
        holdout = list(holdout)
        if not holdout:
            raise ValueError("holdout must name at least one static pre-trained model "
                             "(ensemble adversarial training draws adversarial examples from "
                             "them); got an empty list")
        for i, h in enumerate(holdout):
            if not isinstance(h, (str, nn.Module)):
                raise ValueError(f"holdout[{i}] must be an nn.Module or a model name, got "
                                 f"{type(h).__name__}")
        eps = check_nonnegative("eps", eps)
        alpha = check_nonnegative("alpha", alpha)
        check_choice("attack", attack, ATTACKS)
        check_choice("schedule", schedule, SCHEDULES)
        if attack == "rfgsm" and not alpha < eps:
            raise ValueError(f"alpha must be < eps for R+FGSM, got alpha={alpha}, eps={eps}")
        names = [_holdout_name(h, i) for i, h in enumerate(holdout)]
        super().__init__(holdout=names, eps=float(eps), w=_unit("w", w), attack=attack,
                         alpha=float(alpha), schedule=schedule,
                         include_current=bool(include_current))
        self.models_dir = models_dir
        self._holdout: list[nn.Module | str] = holdout
        self.source_names: list[str] = (["current"] if self.include_current else []) + names
        self.sources: list[str] = []

    def _static(self, i: int, device: torch.device) -> nn.Module:
        h = self._holdout[i]
        if isinstance(h, str):
            from .. import models

            h = models.load(h, models_dir=self.models_dir, verbose=False)
            self._holdout[i] = h
        h.eval()
        for p in h.parameters():
            p.requires_grad_(False)
        return h.to(device)

    def choose(self, generator: torch.Generator) -> int:
        """Index into :attr:`source_names` of the next batch's source (advances the schedule)."""
        k = len(self.source_names)
        if self.schedule == "round_robin":
            return len(self.sources) % k
        return int(torch.randint(k, (1,), generator=generator, device=generator.device))

    def loss(self, model: nn.Module, x: Tensor, y: Tensor,
             generator: torch.Generator) -> tuple[Tensor, Tensor]:
        j = self.choose(generator)
        name = self.source_names[j]
        self.sources.append(name)
        if self.w == 0:
            x_adv = x
        else:
            if name == "current":
                src = model
            else:
                src = self._static(j - (1 if self.include_current else 0), x.device)
            x_adv = sign_attack(src, x, y, eps=self.eps, attack=self.attack, alpha=self.alpha,
                                generator=generator)
        return self._mixed(model, x, x_adv, y, self.w)


METHODS.setdefault(EnsembleAdversarialTraining.name, EnsembleAdversarialTraining)
