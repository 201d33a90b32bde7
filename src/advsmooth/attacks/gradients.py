"""Gradient estimators for the iterative attack engine (docs/algorithms.md).

An iterative attack (:mod:`advsmooth.attacks.iterative`) needs, at every step, the gradient of a
per-sample *objective* (the quantity the attack ascends) with respect to the input. A
:class:`GradientEstimator` decides *how* that gradient is obtained:

* :class:`PlainGradient` — ``∇ₓ J(x)``: one forward and one backward pass.
* :class:`SmoothedGradient` — the sg- gradient (Wu et al., arXiv:1802.09707, Eq. 8):
  ``G = (1/m) Σᵢ ∇J(x + ξᵢ)``, ``ξᵢ ~ N(0, σ² I)``, fresh noise at every call.

The objective is an :class:`AttackObjective`: cross-entropy w.r.t. the true label (ascend) or
minus cross-entropy w.r.t. the target (targeted attack), or a logit margin (``loss="margin"``).

How an estimator works (and how to add one)
-------------------------------------------
One call :meth:`GradientEstimator.estimate` ``(model, x, objective, generator=...)`` does:

1. ``noise = self.draw_noise(x, generator)`` — the whole noise tensor, drawn *up front* with the
   fixed layout ``(M, N, C, H, W)`` (``M = self.samples``), or ``None`` for no noise. Because it
   is drawn before any forward pass, the chunking of the forward passes never changes the result.
2. ``self.copies(x, noise, start, stop)`` — the model inputs of copies ``start..stop-1``, shape
   ``(stop-start, N, C, H, W)``. Default: ``x`` (no noise) or ``x + noise[start:stop]``
   (optionally clamped to ``[0, 1]``). The gradient is taken **with respect to these inputs**
   (i.e. ∇J evaluated at each noisy point) and summed over the copies.
3. The copies are evaluated in chunks of ``chunk_size`` copies (one forward of
   ``chunk·N`` images per chunk) through ``objective.forward(model, inputs)``, giving the *raw
   outputs* of every copy: logits ``(M, N, K)`` for an ordinary model.
4. The per-sample objective ``(N,)`` is ``self.combine(objective, raw)``. The default is the mean
   over copies of the per-copy objective, ``objective.value(raw).mean(0)``: the expected loss
   (sg-IGSM / EOT / the authors' EPGD). As a sum over copies (``decomposable = True``), one
   chunked pass suffices: each chunk's backward gives its copies' gradients, which are written
   into an ``(M, N, C, H, W)`` buffer and reduced at the end (bit-identical for any chunk size,
   up to the model's own batch-size dependence).
5. A **non-linear** combination of the copies — e.g. EPGD "prob_average",
   ``L = −log((1/M) Σᵢ softmax(zᵢ)_y)``, or "logit_average", ``CE((1/M) Σᵢ zᵢ, y)`` — sets
   ``decomposable = False`` and overrides :meth:`combine`, which then receives the raw outputs of
   *all* ``M`` copies at once, ``(M, N, K)``. If every copy fits in one chunk, the engine builds
   one graph and back-propagates through ``combine`` directly (cost: M forwards, M gradients per
   image). Otherwise it runs two passes with bounded memory: pass 1 evaluates all copies
   without a graph, computes ``∂L/∂z`` (``(M, N, K)``) by autograd through ``combine``; pass 2
   re-evaluates each chunk with a graph and back-propagates ``∂L/∂z`` of that chunk
   (vector-Jacobian product). Cost: 2M forwards, M gradients per image. (For a stochastic model,
   e.g. PNI/CNI, the second pass redraws the model's internal noise; use ``chunk_size=None`` there
   if that matters.)

To add an estimator, subclass :class:`GradientEstimator` and override only what differs:

* a different noise law or noise space → :meth:`draw_noise` and/or :meth:`copies`
  (e.g. ``noise_space="normalized"``: scale the noise by the per-channel std);
* a different combination of the copies → :meth:`combine` and set ``decomposable = False``;
* set ``self.samples`` (``M``; the cost is ``M`` gradient evaluations per image per call),
  ``self.chunk_size`` and ``self._params`` (used by ``repr``), and validate arguments with
  ``ValueError`` naming the parameter. Example::

      class ExpectationGradient(SmoothedGradient):
          decomposable = False
          def combine(self, objective, raw):           # raw: (M, N, K) logits
              logp = raw.log_softmax(-1)                # prob_average, untargeted
              lp = logp.gather(-1, objective.cls.expand(raw.shape[0], -1)[..., None])[..., 0]
              mean_p = torch.logsumexp(lp, 0) - math.log(raw.shape[0])
              return -objective.sign * mean_p           # ascend −log mean p_y (targeted: log p_t)

A non-decomposable estimator only supports ordinary models (raw = ``(M, N, K)`` logits); with a
loss-averaging ensemble (``Ensemble(..., combine="mean_loss")``, raw = ``(M, N, E, K)``) the engine
raises ``ValueError`` unless the subclass sets ``supports_loss_ensembles = True``.

Estimators never touch the global RNG, the model's mode or its parameters' flags (the attack's
:func:`~advsmooth._tensors.frozen_model` does that); they return the per-image cost of the
call so the caller can account it (:class:`GradientEstimate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import (
    check_choice,
    check_finite_gradient,
    check_int_at_least,
    check_model_output,
    check_nonnegative,
    make_generator,
)
from .execution import LayoutHint

__all__ = [
    "AttackObjective",
    "GradientEstimate",
    "GradientEstimator",
    "PlainGradient",
    "SmoothedGradient",
    "LOSSES",
]

#: supported per-copy losses
LOSSES = ("ce", "margin", "kl", "dlr", "face")


# ----------------------------------------------------------------------------------------------
# the objective
# ----------------------------------------------------------------------------------------------

def _is_loss_ensemble(model: nn.Module) -> bool:
    return getattr(model, "combine", None) == "mean_loss" and hasattr(model, "member_logits")


def check_logits(out: Tensor, n: int | None = None) -> Tensor:
    """``out`` if it is finite floating ``N×K`` logits with ``K ≥ 2`` and ``n`` rows (what gradient
    attacks need), else ``TypeError``/``ValueError`` (:func:`~advsmooth._utils.check_model_output`;
    NaN/Inf raise :class:`~advsmooth._utils.NonFiniteModelOutput`)."""
    check_model_output(out, n)
    if out.ndim != 2 or out.shape[1] < 2:
        raise ValueError("gradient attacks need N×K logits with K >= 2, got model output of "
                         f"shape {tuple(out.shape)}")
    return out


@dataclass
class AttackObjective:
    """The per-sample quantity an attack *ascends*.

    Attributes:
        loss: ``"ce"`` (cross-entropy on logits), ``"margin"`` (CW logit margin) or ``"dlr"``
            (the scale-invariant difference-of-logits ratio of Croce & Hein 2020, "Reliable
            evaluation of adversarial robustness with an ensemble of diverse parameter-free
            attacks", arXiv:2003.01690, Eq. 6 untargeted, Eq. 7 targeted).
        labels: ``(N,)`` int64 true labels.
        target: ``(N,)`` int64 target labels for a targeted attack, else ``None``.
        loss_ensemble: evaluate a ``combine="mean_loss"`` ensemble member by member and average
            the losses (set automatically by :meth:`for_model`).

        reference: ``(N, K)`` class probabilities for ``loss="kl"``.

    Untargeted: ``J = CE(z, y)`` (``"margin"``: ``max_{j≠y} z_j − z_y``).
    Targeted: ``J = −CE(z, t)`` (``"margin"``: ``z_t − max_{j≠t} z_j``).
    ``"kl"`` (the inner maximisation of TRADES, Zhang et al., "Theoretically Principled
    Trade-off between Robustness and Accuracy", arXiv:1901.08573): ``J = KL(p ‖ softmax(z))``
    with ``p = reference`` (the model's clean probabilities); labels are not used, untargeted
    only.
    ``"dlr"`` with ``z`` sorted descending as ``z_π1 ≥ z_π2 ≥ ...``: untargeted
    ``J = (max_{j≠y} z_j − z_y) / (z_π1 − z_π3 + 1e-12)``; targeted
    ``J = (z_t − z_y) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12)`` (both are minus the paper's DLR,
    ascended; fewer than 4 classes reuse the smallest logit for the missing ranks).
    ``"face"`` (targeted only): ``J = z_t − z_y``, the linearised decision function between the
    label and the target whose zero set is the face FAB and DeepFool step onto (Croce & Hein,
    arXiv:1907.02044; Moosavi-Dezfooli et al., arXiv:1511.04599).
    """

    loss: str
    labels: Tensor
    target: Tensor | None = None
    loss_ensemble: bool = False
    #: memory-layout hint shared by the subsets of one attack call (channels-last on CPU)
    layout: LayoutHint = field(default_factory=LayoutHint, repr=False, compare=False)
    reference: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_choice("loss", self.loss, LOSSES)
        if self.loss == "kl":
            if self.reference is None:
                raise ValueError("loss='kl' needs the reference class probabilities")
            if self.target is not None or self.loss_ensemble:
                raise ValueError("loss='kl' supports untargeted attacks on ordinary models only "
                                 "(no target=, no combine='mean_loss' ensemble)")
        if self.loss == "face" and self.target is None:
            raise ValueError("loss='face' (z_target − z_label) needs target classes")

    @classmethod
    def for_model(cls, model: nn.Module, loss: str, labels: Tensor,
                  target: Tensor | None = None,
                  reference: Tensor | None = None) -> AttackObjective:
        """The objective for ``model`` (detects loss-averaging ensembles)."""
        return cls(loss=loss, labels=labels, target=target,
                   loss_ensemble=_is_loss_ensemble(model), reference=reference)

    @property
    def targeted(self) -> bool:
        return self.target is not None

    @property
    def cls(self) -> Tensor:
        """``(N,)`` the class the loss refers to: the target if targeted, else the label."""
        return self.labels if self.target is None else self.target

    @property
    def sign(self) -> float:
        """``+1`` untargeted (push away from the label), ``−1`` targeted (pull to the target)."""
        return 1.0 if self.target is None else -1.0

    def subset(self, index: Tensor) -> AttackObjective:
        """The objective restricted to samples ``index`` (indices or bool mask)."""
        return AttackObjective(self.loss, self.labels[index],
                               None if self.target is None else self.target[index],
                               self.loss_ensemble, self.layout,
                               None if self.reference is None else self.reference[index])

    def forward(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """Raw outputs of ``model`` on ``inputs`` ``(B, C, H, W)``: logits ``(B, K)``, or member
        logits ``(B, E, K)`` for a loss-averaging ensemble."""
        if self.loss_ensemble:
            return check_model_output(
                self.layout(model.member_logits, inputs),  # type: ignore[attr-defined]
                inputs.shape[0], name="ensemble member logits")
        return check_logits(self.layout(model, inputs), inputs.shape[0])

    def value(self, raw: Tensor) -> Tensor:
        """Objective of raw outputs with shape ``(..., N, K)`` (or ``(..., N, E, K)`` for a loss
        ensemble: averaged over ``E``) → ``(..., N)``; ``cls`` broadcasts over leading dims."""
        if self.loss == "kl":
            p = self.reference
            return (torch.xlogy(p, p) - p * torch.log_softmax(raw, dim=-1)).sum(dim=-1)
        cls = self.cls
        if self.loss_ensemble:
            cls = cls[:, None]
        z = raw
        idx = cls.expand(z.shape[:-1])[..., None]
        if self.loss == "ce":
            # CE(z, c) = log Σ_j exp(z_j − z_c), with the j = c term held at exactly 0 so that
            # ∂/∂z_c = −Σ_{j≠c} p_j is summed from the small p_j. The textbook forms
            # (logsumexp(z) − z_c, F.cross_entropy) get p_c − 1 by cancellation, which leaves
            # float32 input gradients of confident samples mostly rounding noise (their signs
            # then differ from float64's); this form agrees with float64. Any leading shape.
            zc = z.gather(-1, idx)
            ce = torch.logsumexp((z - zc).scatter(-1, idx, 0.0), dim=-1)
            val = self.sign * ce
        elif self.loss == "dlr":
            val = _dlr(z, self.labels if not self.loss_ensemble else self.labels[:, None],
                       None if self.target is None else
                       (self.target if not self.loss_ensemble else self.target[:, None]))
        elif self.loss == "face":
            lab = self.labels if not self.loss_ensemble else self.labels[:, None]
            val = (z.gather(-1, idx) - z.gather(-1, lab.expand(z.shape[:-1])[..., None]))[..., 0]
        else:
            zc = z.gather(-1, idx)[..., 0]
            other = z.scatter(-1, idx, float("-inf")).amax(dim=-1)
            val = other - zc if self.target is None else zc - other
        if self.loss_ensemble:
            val = val.mean(dim=-1)
        return val


def _dlr(z: Tensor, labels: Tensor, target: Tensor | None) -> Tensor:
    """Minus the DLR loss of logits ``z`` ``(..., N, K)`` (see :class:`AttackObjective`)."""
    srt = z.sort(dim=-1, descending=True).values
    k = z.shape[-1]
    third, fourth = srt[..., min(2, k - 1)], srt[..., min(3, k - 1)]
    iy = labels.expand(z.shape[:-1])[..., None]
    zy = z.gather(-1, iy)[..., 0]
    if target is None:
        other = z.scatter(-1, iy, float("-inf")).amax(dim=-1)
        return (other - zy) / (srt[..., 0] - third + 1e-12)
    zt = z.gather(-1, target.expand(z.shape[:-1])[..., None])[..., 0]
    return (zt - zy) / (srt[..., 0] - 0.5 * (third + fourth) + 1e-12)


# ----------------------------------------------------------------------------------------------
# estimates and estimators
# ----------------------------------------------------------------------------------------------

@dataclass
class GradientEstimate:
    """What :meth:`GradientEstimator.estimate` returns for a batch of ``N`` images.

    Attributes:
        grad: ``(N, C, H, W)`` gradient of the per-sample objective w.r.t. the input (detached).
        value: ``(N,)`` the per-sample objective (detached).
        logits: ``(N, K)`` logits of the model at ``x`` itself when they came for free
            (plain gradient), else ``None``.
        forward_evals: forward evaluations spent per image.
        grad_evals: gradient evaluations (backward passes) spent per image.
    """

    grad: Tensor
    value: Tensor
    logits: Tensor | None
    forward_evals: int
    grad_evals: int


class GradientEstimator:
    """Base class: ``M = samples`` copies of the input, combined into one objective per sample.

    The default implementation (with ``draw_noise`` returning ``None``) is the plain gradient
    repeated ``M`` times; subclasses override :meth:`draw_noise`, :meth:`copies` and/or
    :meth:`combine` (see the module docstring).
    """

    #: the objective is the mean over copies of the per-copy objective (one chunked pass)
    decomposable: bool = True
    #: whether ``combine`` understands loss-ensemble raw outputs ``(M, N, E, K)``
    supports_loss_ensembles: bool = True

    def __init__(self, *, samples: int = 1, chunk_size: int | None = None) -> None:
        self.samples = check_int_at_least("samples", samples, 1)
        if chunk_size is not None:
            check_int_at_least("chunk_size", chunk_size, 1)
        self.chunk_size = chunk_size
        self._params: dict[str, Any] = {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"{type(self).__name__}({args})"

    @property
    def grad_evals_per_call(self) -> int:
        """Gradient evaluations per image of one :meth:`estimate` call (= ``samples``)."""
        return self.samples

    @property
    def stochastic(self) -> bool:
        """Whether :meth:`estimate` consumes randomness."""
        return False

    # -- the overridable pieces -----------------------------------------------------------------
    def draw_noise(self, x: Tensor, generator: torch.Generator) -> Tensor | None:
        """The noise of all copies, ``(M, N, C, H, W)``, or ``None`` (copies equal ``x``)."""
        return None

    def copies(self, x: Tensor, noise: Tensor | None, start: int, stop: int) -> Tensor:
        """Model inputs of copies ``start..stop-1``: ``(stop-start, N, C, H, W)``."""
        if noise is None:
            return x.unsqueeze(0).expand(stop - start, *x.shape)
        return x.unsqueeze(0) + noise[start:stop]

    def combine(self, objective: AttackObjective, raw: Tensor) -> Tensor:
        """Per-sample objective ``(N,)`` from the raw outputs of all copies ``(M, N, ...)``."""
        return objective.value(raw).mean(dim=0)

    # -- the driver -------------------------------------------------------------------------------
    def estimate(self, model: nn.Module, x: Tensor, objective: AttackObjective, *,
                 generator: torch.Generator | None = None) -> GradientEstimate:
        """Gradient of ``combine(objective, raw)`` w.r.t. the copies, summed over copies.

        Args:
            model: classifier in eval mode (the caller freezes it).
            x: ``(N, C, H, W)`` current iterate.
            objective: what to ascend (labels/target for these ``N`` samples).
            generator: random source for the noise (default: seed 0 on ``x``'s device).

        Returns:
            :class:`GradientEstimate` (gradient, objective value, per-image cost).
        """
        if objective.loss_ensemble and not self.supports_loss_ensembles:
            raise ValueError(f"{type(self).__name__} combines the copies non-linearly and does not "
                             "support loss-averaging ensembles (combine='mean_loss'); use "
                             "combine='mean_logits'")
        x = x.detach()
        gen = generator if generator is not None else make_generator(0, x.device)
        noise = self.draw_noise(x, gen)
        m, n = self.samples, x.shape[0]
        chunk = self.chunk_size or m
        if n == 0:
            return GradientEstimate(torch.zeros_like(x), x.new_zeros(0), None, 0, 0)
        with torch.enable_grad():
            if self.decomposable or chunk >= m:
                return self._one_pass(model, x, noise, objective, min(chunk, m))
            return self._two_pass(model, x, noise, objective, chunk)

    def _forward(self, model: nn.Module, objective: AttackObjective, xin: Tensor) -> Tensor:
        k, n = xin.shape[:2]
        raw = objective.forward(model, xin.reshape(k * n, *xin.shape[2:]))
        return raw.reshape(k, n, *raw.shape[1:])

    def _one_pass(self, model: nn.Module, x: Tensor, noise: Tensor | None,
                  objective: AttackObjective, chunk: int) -> GradientEstimate:
        m = self.samples
        if not self.decomposable:
            # non-linear combination, every copy fits in one chunk: a single graph
            xin = self.copies(x, noise, 0, m).detach().requires_grad_(True)
            raw = self._forward(model, objective, xin)
            val = self.combine(objective, raw)
            (g,) = torch.autograd.grad(val.sum(), xin)
            check_finite_gradient(g.flatten(0, 1))
            return GradientEstimate(g.sum(dim=0).detach(), val.detach(), None, m, m)
        # decomposable: per-copy gradients into a fixed (M, N, C, H, W) buffer, reduced at the
        # end, so the result does not depend on the chunk size
        buf = x.new_empty((m, *x.shape))
        total = x.new_zeros(x.shape[0])
        logits = None
        for s in range(0, m, chunk):
            e = min(m, s + chunk)
            xin = self.copies(x, noise, s, e).detach().requires_grad_(True)
            raw = self._forward(model, objective, xin)
            vals = objective.value(raw)                      # (e-s, N)
            (g,) = torch.autograd.grad(vals.sum(), xin)
            buf[s:e] = check_finite_gradient(g.flatten(0, 1)).view_as(g)
            total = total + vals.detach().sum(dim=0)
            if s == 0 and noise is None and not objective.loss_ensemble:
                logits = raw[0].detach()
        grad = buf.sum(dim=0) / m if m > 1 else buf[0]
        return GradientEstimate(grad, total / m, logits, m, m)

    def _two_pass(self, model: nn.Module, x: Tensor, noise: Tensor | None,
                  objective: AttackObjective, chunk: int) -> GradientEstimate:
        m = self.samples
        raws = []
        with torch.no_grad():
            for s in range(0, m, chunk):
                e = min(m, s + chunk)
                raws.append(self._forward(model, objective, self.copies(x, noise, s, e)))
        raw = torch.cat(raws).detach().requires_grad_(True)
        val = self.combine(objective, raw)
        (graw,) = torch.autograd.grad(val.sum(), raw)
        grad = torch.zeros_like(x)
        for s in range(0, m, chunk):
            e = min(m, s + chunk)
            xin = self.copies(x, noise, s, e).detach().requires_grad_(True)
            out = self._forward(model, objective, xin)
            (g,) = torch.autograd.grad(out, xin, grad_outputs=graw[s:e])
            grad = grad + check_finite_gradient(g.flatten(0, 1)).view_as(g).sum(dim=0)
        return GradientEstimate(grad.detach(), val.detach(), None, 2 * m, m)


class PlainGradient(GradientEstimator):
    """The plain input gradient ``∇ₓ J(x)``: 1 forward + 1 gradient evaluation per image."""

    def __init__(self) -> None:
        super().__init__(samples=1)

    def estimate(self, model: nn.Module, x: Tensor, objective: AttackObjective, *,
                 generator: torch.Generator | None = None) -> GradientEstimate:
        x_var = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            raw = objective.forward(model, x_var)
            val = objective.value(raw)
            (g,) = torch.autograd.grad(val.sum(), x_var)
        check_finite_gradient(g)
        logits = None if objective.loss_ensemble else raw.detach()
        return GradientEstimate(g.detach(), val.detach(), logits, 1, 1)


class SmoothedGradient(GradientEstimator):
    """Smoothed gradient (arXiv:1802.09707 Eq. 8): ``G = (1/m) Σᵢ ∇J(x + ξᵢ)``, ``ξᵢ ~ N(0, σ²I)``.

    Args:
        sigma: noise std in pixel units (seed: 15/255). ``0`` gives the plain gradient.
        samples: number of noisy copies ``m`` (seed: 20); costs ``m`` gradient evaluations per
            image per call.
        chunk_size: copies per forward pass (``None``: all ``m`` at once); a forward pass holds
            ``chunk_size·N`` images. Does not change the result (noise is drawn up front).
        clip_noisy: clamp the noisy copies to ``[0, 1]`` (the seed does not; default False).

    Noise: one ``torch.randn((m, N, C, H, W), generator=...)`` draw per call, fresh at every step.
    """

    def __init__(self, sigma: float = 15 / 255, samples: int = 20, *,
                 chunk_size: int | None = None, clip_noisy: bool = False) -> None:
        super().__init__(samples=samples, chunk_size=chunk_size)
        self.sigma = check_nonnegative("sigma", sigma)
        self.clip_noisy = bool(clip_noisy)
        self._params = {"sigma": self.sigma, "samples": self.samples,
                        "chunk_size": chunk_size, "clip_noisy": self.clip_noisy}

    @property
    def stochastic(self) -> bool:
        return self.sigma > 0

    def draw_noise(self, x: Tensor, generator: torch.Generator) -> Tensor | None:
        if self.sigma == 0:
            return None
        noise = torch.randn((self.samples, *x.shape), generator=generator, device=x.device,
                            dtype=x.dtype)
        return noise.mul_(self.sigma)

    def copies(self, x: Tensor, noise: Tensor | None, start: int, stop: int) -> Tensor:
        xin = super().copies(x, noise, start, stop)
        if self.clip_noisy and noise is not None:
            xin = xin.clamp(0.0, 1.0)
        return xin
