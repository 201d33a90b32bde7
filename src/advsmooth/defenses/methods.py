"""Robust training methods for :func:`advsmooth.defenses.train` (docs/algorithms.md,
"Training objectives").

Every class here is a :class:`~advsmooth.models.training.TrainingMethod` registered in
:data:`~advsmooth.models.training.METHODS` under its ``name``, so
``train(model, data, method="pgd", eps=0.3, alpha=0.01, steps=7)`` works (extra keyword
arguments of :func:`train` go to the method) as does ``advsmooth train --method pgd
--method-param eps=0.3``.

======================  ===================================================================
name                    loss of one batch (``A`` = attack crafted in eval mode)
======================  ===================================================================
``gaussian``            ``CE(f(x + σν), y)``, ``ν ~ N(0, I)`` per sample (not clipped)
``pgd``                 ``(1−w)·CE(f(x)) + w·CE(f(x_adv))`` (Madry: ``w = 1``; PNI: ``w = 0.5``),
                        ``x_adv`` = ℓ∞ PGD (ε, α, k, random start)
``trades``              ``CE(f(x)) + β·KL(softmax f(x) ‖ softmax f(x̂))`` (batchmean)
``noise_adv``           ``CE(f(x + σν + B·δ))``, ``B ~ Bernoulli(q)`` per sample (noise +
                        adversarial training)
``epgd`` / ``smoothadv`` Eq. 6 with EPGD: PGD on a smoothed surrogate over ``samples`` noisy
                        copies (EPGD; ``variant``)
``pni``                 Eq. 6 (``w = 0.5``) with PGD-7 on a noise-injected model (learned
                        noise scales, no weight decay on them)
``fgsm_at``             Goodfellow: ``(1−w)·CE(f(x)) + w·CE(f(x_fgsm))``, ``w = 0.5``
``sat``                 Eq. 6 with SmoothFool (σg = 1) examples (SmoothFool Table 3 "SAT")
``deepfool_ft``         DeepFool fine-tuning (DeepFool paper §3.4): perturbed set
                        ``clamp(x + α·r̂)`` computed ONCE before the first epoch, CE on
                        it only
``fgsm_ft``             the same with an FGSM-perturbed set (ε fixed, e.g. the 90 %-rule ε)
======================  ===================================================================

Conventions shared by every method:

* Attacks are crafted with the model in **eval mode** with parameter gradients off (BatchNorm
  running statistics are not touched; noise layers stay stochastic), then the loss is computed in
  **train mode**. The built-in crafting loops perturb **every** sample of the batch, as Madry
  et al. do (an :class:`~advsmooth.attacks.Attack` object leaves already-misclassified inputs
  unchanged); pass ``attack=`` to use any advsmooth attack instead (e.g.
  ``attacks.PGD(..., gradient=attacks.ExpectationGradient(...))``).
* Randomness (random starts, noise, Bernoulli masks) comes only from the trainer's per-epoch
  ``generator``: runs are reproducible and resumable.
* Budgets (ε, α, σ) are in pixel units of ``[0, 1]`` images.
* :func:`train` modifies the model **in place** (all methods); the data-preparing fine-tuning
  methods cache their perturbed training set in ``out_dir/prepared_<name>.pt`` so that a resumed
  run reuses the set computed from the starting model.
* Models with noise layers (:mod:`advsmooth.defenses.noise`) get their noise parameters in a
  parameter group without weight decay (:meth:`RobustMethod.parameter_groups`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils import atomic_path, check_choice, check_int_at_least, check_nonnegative, progress
from ..attacks import IGSM, PGD, ExpectationGradient
from ..attacks.base import Attack
from ..attacks.iterative import project_linf
from ..attacks.smoothing_gradients import VARIANTS
from ..models.training import METHODS, TrainingMethod, train
from . import noise as _noise

__all__ = [
    "RobustMethod",
    "GaussianAugmentation",
    "PGDTraining",
    "TRADES",
    "NoiseAdversarialTraining",
    "EPGDTraining",
    "SmoothAdvTraining",
    "PNITraining",
    "FGSMTraining",
    "SmoothAdversarialTraining",
    "DeepFoolFineTuning",
    "FGSMFineTuning",
    "pgd_linf",
    "trades_perturb",
    "register_methods",
    "data_fingerprint",
    "finetune",
]

EPGD_VARIANTS = VARIANTS


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------

def _unit(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _budget(name: str, value: float) -> float:
    """A non-negative pixel-space budget (ε, α, σ)."""
    return check_nonnegative(name, value)


def _attack_arg(attack: Any) -> Attack | None:
    if attack is not None and not isinstance(attack, Attack):
        raise ValueError(f"attack must be an advsmooth Attack or None, got {type(attack).__name__}")
    return attack


# ----------------------------------------------------------------------------------------------
# crafting (the iterative engine on every sample: eval mode, parameter gradients off)
# ----------------------------------------------------------------------------------------------

def pgd_linf(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int,
             random_start: bool = True, generator: torch.Generator | None = None,
             smoothing: dict[str, Any] | None = None) -> Tensor:
    """ℓ∞ PGD for training: maximise CE, project onto the ε-ball and ``[0, 1]`` each step.

    :meth:`advsmooth.attacks.PGD.perturb`: every sample is perturbed (no early stop,
    already-misclassified inputs included); the model is in eval mode with parameter gradients
    off during the attack, both restored after. ``smoothing={"sigma":, "samples":,
    "variant":}`` ascends the EPGD/SmoothAdv surrogate over Gaussian copies instead of CE
    (:class:`advsmooth.attacks.ExpectationGradient`). Returns ``x_adv`` (detached, shaped
    like ``x``).
    """
    gen = generator if generator is not None else torch.Generator(x.device).manual_seed(0)
    if eps == 0 or steps == 0:
        return x.detach().clone()
    gradient = None if smoothing is None else ExpectationGradient(
        smoothing["sigma"], smoothing["samples"], variant=smoothing["variant"])
    attack = PGD(eps=eps, alpha=alpha, steps=steps, random_start=random_start, gradient=gradient)
    return attack.perturb(model, x, y, generator=gen)


def trades_perturb(model: nn.Module, x: Tensor, *, eps: float, alpha: float, steps: int,
                   generator: torch.Generator) -> Tensor:
    """TRADES inner maximisation: sign ascent on ``KL(p(x) ‖ p(x̂))`` from ``x + 0.001·N(0, I)``
    (projected), every sample perturbed (:meth:`advsmooth.attacks.IGSM.perturb`, ``loss="kl"``)."""
    x0 = x.detach()
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    start = project_linf(x0, x0 + 0.001 * noise, eps)
    attack = IGSM(eps=eps, alpha=alpha, steps=steps, loss="kl")
    return attack.perturb(model, x0, None, start=start, generator=generator)


def _fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    return pgd_linf(model, x, y, eps=eps, alpha=eps, steps=1, random_start=False)


# ----------------------------------------------------------------------------------------------
# base class
# ----------------------------------------------------------------------------------------------

class RobustMethod(TrainingMethod):
    """Base class of the methods here: stores hyper-parameters for ``config()`` and ``repr``
    (and as attributes of the same names), and puts noise parameters in a parameter group
    without weight decay."""

    def __init__(self, **params: Any) -> None:
        self._params: dict[str, Any] = {}
        self._set(**params)

    def _set(self, **params: Any) -> None:
        """Record ``params`` for ``config()`` and set them as attributes."""
        self._params.update(params)
        vars(self).update(params)

    def config(self) -> dict[str, Any]:
        return {k: (repr(v) if isinstance(v, Attack) else v) for k, v in self._params.items()}

    def parameter_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Optimiser groups: noise parameters (α, F, σ) get no weight decay (PNI authors' code)."""
        return _noise.parameter_groups(model, weight_decay)

    @staticmethod
    def _mixed(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, w: float
               ) -> tuple[Tensor, Tensor]:
        """Seed Eq. 6: ``(1−w)·CE(f(x), y) + w·CE(f(x_adv), y)`` (train mode)."""
        model.train()
        if w == 0.0:
            logits = model(x)
            return F.cross_entropy(logits, y), logits
        logits_adv = model(x_adv)
        loss = w * F.cross_entropy(logits_adv, y)
        if w < 1.0:
            loss = loss + (1.0 - w) * F.cross_entropy(model(x), y)
        return loss, logits_adv


# ----------------------------------------------------------------------------------------------
# methods
# ----------------------------------------------------------------------------------------------

class GaussianAugmentation(RobustMethod):
    """Gaussian data augmentation: ``CE(f(x + σν), y)``, ``ν ~ N(0, I)`` per sample.

    Args:
        sigma: noise std in pixel units (>= 0); noisy inputs are not clipped unless ``clip``.
    """

    name = "gaussian"

    def __init__(self, *, sigma: float = 0.25, clip: bool = False) -> None:
        super().__init__(sigma=_budget("sigma", sigma), clip=bool(clip))

    def loss(self, model: nn.Module, x: Tensor, y: Tensor,
             generator: torch.Generator) -> tuple[Tensor, Tensor]:
        nu = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        xn = x + self.sigma * nu
        if self.clip:
            xn = xn.clamp(0.0, 1.0)
        logits = model(xn)
        return F.cross_entropy(logits, y), logits


class PGDTraining(RobustMethod):
    """Madry PGD adversarial training, mixed: ``(1−w)·CE(f(x)) + w·CE(f(x_adv))``.

    Args:
        eps, alpha, steps, random_start: ℓ∞ PGD (defaults 8/255, 2/255, 7, True).
        w: weight of the adversarial term, ``L = (1−w)·CE(x) + w·CE(x_adv)``; 1 = Madry,
            0.5 = the PNI/SIAM authors' code.
        attack: optional advsmooth Attack used instead of the built-in PGD loop.
    """

    name = "pgd"

    def __init__(self, *, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 7,
                 random_start: bool = True, w: float = 1.0, attack: Attack | None = None) -> None:
        super().__init__(eps=_budget("eps", eps), alpha=_budget("alpha", alpha),
                         steps=check_int_at_least("steps", steps, 1),
                         random_start=bool(random_start), w=_unit("w", w),
                         attack=_attack_arg(attack))

    def craft(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        if self.attack is not None:
            return self.attack(model, x, y, generator=generator).x_adv.detach()
        return pgd_linf(model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps,
                        random_start=self.random_start, generator=generator)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor,
             generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x_adv = self.craft(model, x, y, generator) if self.w > 0 else x
        return self._mixed(model, x, x_adv, y, self.w)


class TRADES(RobustMethod):
    """TRADES: ``CE(f(x), y) + β·KL(softmax f(x) ‖ softmax f(x̂))`` (KL ``batchmean``).

    ``x̂``: ``steps`` sign-ascent steps of size ``alpha`` on the KL term from
    ``x + 0.001·N(0, I)``, projected on the ε-ball and ``[0, 1]``. ``beta = 1/λ`` (seed: 1 or 6).
    """

    name = "trades"

    def __init__(self, *, beta: float = 6.0, eps: float = 8 / 255, alpha: float = 2 / 255,
                 steps: int = 10) -> None:
        super().__init__(beta=check_nonnegative("beta", beta), eps=_budget("eps", eps),
                         alpha=_budget("alpha", alpha), steps=check_int_at_least("steps", steps, 1))

    def loss(self, model: nn.Module, x: Tensor, y: Tensor,
             generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x_hat = trades_perturb(model, x, eps=self.eps, alpha=self.alpha, steps=self.steps,
                               generator=generator)
        model.train()
        logits = model(x)
        logits_adv = model(x_hat)
        kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1),
                      reduction="batchmean")
        return F.cross_entropy(logits, y) + self.beta * kl, logits


class NoiseAdversarialTraining(RobustMethod):
    """Noise + adversarial mixing (smoothed-inference paper): ``CE(f(x + σν + B·δ), y)``.

    ``ν ~ N(0, I)``, ``B ~ Bernoulli(q)`` per sample, ``δ`` the ℓ∞ PGD perturbation of ``x`` on
    the current model (computed only for the samples with ``B = 1``). ``q = 0`` is Gaussian
    augmentation, ``q = 1`` noisy adversarial training. The noisy input is not clipped.
    """

    name = "noise_adv"

    def __init__(self, *, sigma: float = 0.25, q: float = 0.5, eps: float = 8 / 255,
                 alpha: float = 2 / 255, steps: int = 7, random_start: bool = True) -> None:
        super().__init__(sigma=_budget("sigma", sigma), q=_unit("q", q), eps=_budget("eps", eps),
                         alpha=_budget("alpha", alpha), steps=check_int_at_least("steps", steps, 1),
                         random_start=bool(random_start))

    def loss(self, model: nn.Module, x: Tensor, y: Tensor,
             generator: torch.Generator) -> tuple[Tensor, Tensor]:
        b = torch.rand(x.shape[0], generator=generator, device=x.device) < self.q
        nu = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        delta = torch.zeros_like(x)
        if bool(b.any()):
            xa = pgd_linf(model, x[b], y[b], eps=self.eps, alpha=self.alpha, steps=self.steps,
                          random_start=self.random_start, generator=generator)
            delta[b] = xa - x[b]
        model.train()
        logits = model(x + self.sigma * nu + delta)
        return F.cross_entropy(logits, y), logits


class EPGDTraining(PGDTraining):
    """Adversarial training (Eq. 6) with EPGD: PGD on a smoothed surrogate (EPGD).

    Each PGD step averages over ``samples`` Gaussian copies ``x + σν`` (pixel units) with the
    ``variant`` surrogate: ``"prob_average"`` (EPGD as the smoothed-inference paper prints it,
    default), ``"logit_average"`` (SmoothAdv as printed there, Eq. 24) or ``"expected_loss"``
    (the authors' EPGD code). ``noisy_loss=True`` also
    adds fresh ``σ`` noise to the training inputs of the loss (SmoothAdv-style training).
    """

    name = "epgd"
    default_variant = "prob_average"

    def __init__(self, *, sigma: float = 0.25, samples: int = 8, variant: str | None = None,
                 eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 7,
                 random_start: bool = True, w: float = 1.0, noisy_loss: bool = False) -> None:
        variant = self.default_variant if variant is None else variant
        super().__init__(eps=eps, alpha=alpha, steps=steps, random_start=random_start, w=w)
        self._set(sigma=_budget("sigma", sigma), samples=check_int_at_least("samples", samples, 1),
                  variant=check_choice("variant", variant, EPGD_VARIANTS),
                  noisy_loss=bool(noisy_loss))
        del self._params["attack"]

    def craft(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        return pgd_linf(model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps,
                        random_start=self.random_start, generator=generator,
                        smoothing={"sigma": self.sigma, "samples": self.samples,
                                   "variant": self.variant})

    def loss(self, model: nn.Module, x: Tensor, y: Tensor,
             generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x_adv = self.craft(model, x, y, generator) if self.w > 0 else x
        if self.noisy_loss:
            x = x + self.sigma * torch.randn(x.shape, generator=generator, device=x.device,
                                             dtype=x.dtype)
            x_adv = x_adv + self.sigma * torch.randn(x.shape, generator=generator,
                                                     device=x.device, dtype=x.dtype)
        return self._mixed(model, x, x_adv, y, self.w)


class SmoothAdvTraining(EPGDTraining):
    """SmoothAdv adversarial training: :class:`EPGDTraining` with ``variant="logit_average"``."""

    name = "smoothadv"
    default_variant = "logit_average"


class PNITraining(PGDTraining):
    """PNI training: Eq. 6 with ``w = 0.5`` and PGD-7 on a model with noise layers.

    The model must already contain noise layers (:func:`advsmooth.defenses.inject_noise`);
    noise scales are learned jointly and excluded from weight decay. The noise stays on while
    crafting (eval mode) and in the loss.
    """

    name = "pni"

    def __init__(self, *, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 7,
                 random_start: bool = True, w: float = 0.5, attack: Attack | None = None) -> None:
        super().__init__(eps=eps, alpha=alpha, steps=steps, random_start=random_start, w=w,
                         attack=attack)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor,
             generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if not _noise.noise_parameters(model):
            raise ValueError("method 'pni' needs a model with learnable noise layers; wrap it "
                             "first with advsmooth.defenses.inject_noise(model, ...)")
        return super().loss(model, x, y, generator)


class FGSMTraining(RobustMethod):
    """FGSM adversarial training (Goodfellow et al.): ``(1−w)·CE(x) + w·CE(x_fgsm)``, w = 0.5."""

    name = "fgsm_at"

    def __init__(self, *, eps: float = 8 / 255, w: float = 0.5) -> None:
        super().__init__(eps=_budget("eps", eps), w=_unit("w", w))

    def loss(self, model: nn.Module, x: Tensor, y: Tensor,
             generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x_adv = _fgsm(model, x, y, self.eps) if self.w > 0 else x
        return self._mixed(model, x, x_adv, y, self.w)


class SmoothAdversarialTraining(RobustMethod):
    """SAT (SmoothFool Table 3): Eq. 6 with SmoothFool examples crafted on the current model.

    Args:
        sigma_g: SmoothFool's Gaussian smoothing σg in pixels (default 1).
        w: weight of the adversarial term (default 0.5, Goodfellow-style mixing).
        clip_step: SmoothClip step (SmoothFool ``clip_step``; MNIST: 1.0, the SmoothFool paper's ε).
        attack: optional Attack replacing the default ``attacks.SmoothFool(sigma=sigma_g, ...)``.

    SmoothFool examples are unbounded minimal perturbations (the attack returns the input
    unchanged for already-misclassified samples); they are clamped to ``[0, 1]``.
    """

    name = "sat"

    def __init__(self, *, sigma_g: float = 1.0, w: float = 0.5, clip_step: float = 1.0,
                 max_iter: int = 50, attack: Attack | None = None) -> None:
        super().__init__(sigma_g=check_nonnegative("sigma_g", sigma_g), w=_unit("w", w),
                         clip_step=check_nonnegative("clip_step", clip_step),
                         max_iter=check_int_at_least("max_iter", max_iter, 1),
                         attack=_attack_arg(attack))

    def _smoothfool(self) -> Attack:
        if self.attack is None:
            from ..attacks import SmoothFool  # imported when first needed

            self.attack = SmoothFool(sigma=self.sigma_g, clip_step=self.clip_step,
                                     max_iter=self.max_iter)
        return self.attack

    def loss(self, model: nn.Module, x: Tensor, y: Tensor,
             generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x_adv = x
        if self.w > 0:
            res = self._smoothfool()(model, x, y, generator=generator)
            x_adv = res.x_adv.detach().clamp(0.0, 1.0)
        return self._mixed(model, x, x_adv, y, self.w)


# ----------------------------------------------------------------------------------------------
# fine-tuning on a perturbed training set computed once
# ----------------------------------------------------------------------------------------------

def data_fingerprint(x: Tensor, y: Tensor) -> list[float]:
    """A cheap fingerprint of a training set (size, pixel sum, weighted label sum) that decides
    whether a cached prepared set belongs to the same data."""
    w = torch.arange(1, len(y) + 1, dtype=torch.float64)
    return [float(len(y)), float(x.double().sum()), float((y.double() * w).sum())]


def _materialise(src: Any) -> tuple[Tensor, Tensor]:
    if isinstance(src, tuple):
        return src
    xs, ys = [], []
    for i in range(len(src)):
        xi, yi = src[i]
        xs.append(torch.as_tensor(xi))
        ys.append(int(yi))
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


class _PreparedFineTuning(RobustMethod):
    """Fine-tuning on a perturbed copy of the training set computed once by :meth:`prepare`.

    The trainer calls ``prepare(model, data, out_dir=..., device=...)`` once before the first
    epoch; the perturbed set is cached in ``out_dir/prepared_<name>.pt`` and reused on resume
    (so a resumed run trains on the set computed from the *starting* model).
    """

    batch_size = 256

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def prepare(self, model: nn.Module, data: Any, *, out_dir: str | Path | None = None,
                device: torch.device | str | None = None, show_progress: bool = True
                ) -> tuple[Tensor, Tensor]:
        """The perturbed training set ``(clamp(x + perturbation, 0, 1), y)``."""
        cache = Path(out_dir) / f"prepared_{self.name}.pt" if out_dir is not None else None
        x, y = _materialise(data)
        fp = data_fingerprint(x, y)
        if cache is not None and cache.exists():
            state = torch.load(cache, map_location="cpu", weights_only=True)
            if state.get("config") == self.config() and state.get("data") == fp:
                return state["x"], state["y"]
        dev = torch.device(device) if device is not None else x.device
        outs = []
        starts = range(0, x.shape[0], self.batch_size)
        for s in progress(starts, total=len(starts), desc=f"prepare {self.name}",
                          enabled=show_progress):
            xb = x[s:s + self.batch_size].to(dev)
            yb = y[s:s + self.batch_size].to(dev)
            outs.append(self.perturb(model, xb, yb).clamp(0.0, 1.0).to(x.device))
        xp = torch.cat(outs).detach()
        if cache is not None:
            with atomic_path(cache) as tmp:
                torch.save({"config": self.config(), "data": fp, "x": xp, "y": y}, tmp)
        return xp, y

    def loss(self, model: nn.Module, x: Tensor, y: Tensor,
             generator: torch.Generator) -> tuple[Tensor, Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y), logits


class DeepFoolFineTuning(_PreparedFineTuning):
    """DeepFool adversarial fine-tuning (DeepFool paper, arXiv:1511.04599, §3.4).

    Before the first epoch, DeepFool-L2 perturbations ``r̂`` are computed once on the whole
    training set with the current network; the model is then trained only on
    ``clamp(x + α·r̂, 0, 1)`` (same data every epoch). Use ``lr = 0.5 ×`` the final training lr
    and 5 epochs (paper), e.g. with :func:`finetune`.

    ``clip`` (default on) runs DeepFool with its iterates kept in ``[0, 1]``, so that the α = 1
    set is adversarial *after* the clamp. Unclipped DeepFool (the paper's, on mean-subtracted
    Caffe inputs) leaves the pixel range on images with saturated pixels: on 500 MNIST training
    images, ``clamp(x + r̂)`` of the unclipped perturbation fooled ``mnist-lenet`` on 0.4 % of
    them (clipped: 100 %), so α = 1 fine-tuning would train on nearly clean images.

    Args:
        alpha: magnification α (paper Fig. 7: 1, 2, 3).
        overshoot, max_iter, candidates, clip: DeepFool settings.
    """

    name = "deepfool_ft"

    def __init__(self, *, alpha: float = 1.0, overshoot: float = 0.02, max_iter: int = 50,
                 candidates: int = 10, clip: bool = True) -> None:
        if not isinstance(clip, bool):
            raise ValueError(f"clip must be a bool, got {clip!r}")
        super().__init__(alpha=_budget("alpha", alpha),
                         overshoot=check_nonnegative("overshoot", overshoot),
                         max_iter=check_int_at_least("max_iter", max_iter, 1),
                         candidates=check_int_at_least("candidates", candidates, 2), clip=clip)
        self._attack: Attack | None = None

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if self._attack is None:
            from ..attacks import DeepFool

            self._attack = DeepFool(norm=2, overshoot=self.overshoot, max_iter=self.max_iter,
                                    candidates=self.candidates, clip=self.clip)
        res = self._attack(model, x, y)
        return x + self.alpha * res.perturbation.detach()


class FGSMFineTuning(_PreparedFineTuning):
    """FGSM fine-tuning baseline of the DeepFool paper: the training set perturbed once by FGSM
    (``ε``, e.g. the 90 %-rule ε of ``metrics.fgsm_rho``) with the starting model."""

    name = "fgsm_ft"

    def __init__(self, *, eps: float = 0.1) -> None:
        super().__init__(eps=_budget("eps", eps))

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return _fgsm(model, x, y, self.eps)


# ----------------------------------------------------------------------------------------------
# registration and helpers
# ----------------------------------------------------------------------------------------------

_ALL = (GaussianAugmentation, PGDTraining, TRADES, NoiseAdversarialTraining, EPGDTraining,
        SmoothAdvTraining, PNITraining, FGSMTraining, SmoothAdversarialTraining,
        DeepFoolFineTuning, FGSMFineTuning)


def register_methods() -> None:
    """Register every method class of this module in ``training.METHODS`` (idempotent)."""
    for cls in _ALL:
        METHODS.setdefault(cls.name, cls)


register_methods()


def finetune(model: nn.Module, data: Any, *, method: str = "deepfool_ft", base_lr: float,
             lr_factor: float = 0.5, epochs: int = 5, **kwargs: Any) -> nn.Module:
    """Fine-tune ``model`` in place with ``lr = lr_factor × base_lr`` (DeepFool paper: 0.5, 5
    extra epochs). ``method`` may be any registered method (``"standard"`` gives the clean
    fine-tuning baseline); other keyword arguments go to :func:`advsmooth.defenses.train`."""

    check_nonnegative("base_lr", base_lr)
    check_nonnegative("lr_factor", lr_factor)
    return train(model, data, method=method, lr=base_lr * lr_factor, epochs=epochs, **kwargs)
