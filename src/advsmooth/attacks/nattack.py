"""NAttack (Li et al. 2019): a score-based black-box ℓ∞ attack by natural evolution strategies.

Specification: docs/algorithms.md A Gaussian search distribution ``N(μ, s²I)`` over an offset in
tanh space is moved towards adversarial regions using only the model's output scores:

* ``w₀ = atanh((2x − 1)·(1 − 1e-6))``; ``μ₀ ~ N(0, init_std²)`` (authors' code: 0.001);
* each iteration draws a population ``ε_j ~ N(0, I)``, ``j = 1..n``, and queries the candidates
  ``x'_j = clamp(Proj_ε((tanh(w₀ + μ + s·ε_j) + 1)/2), 0, 1)`` (projection onto the ℓ∞ ball of
  radius ``eps`` around the clean ``x``, then the ``[0, 1]`` box — both hold exactly);
* loss of a candidate: the C&W-style margin on log-probabilities
  ``ℓ_j = clamp(log p_y − max_{c≠y} log p_c, 0, 1000)`` (targeted: ``log p_t`` against the best
  other class); rewards are z-scored, ``ẑ_j = (ℓ_j − mean ℓ)/(std ℓ + 1e-7)``, and
  ``μ ← μ − lr/(n·s) Σ_j ẑ_j ε_j``;
* a sample is broken as soon as **any** queried candidate is misclassified (targeted: classified
  as the target); that candidate is returned. Otherwise the search stops after ``max_iter``
  iterations (or ``max_queries // population``) and returns the candidate at the mean ``μ``.

Queries: ``population`` per iteration per still-active image; ``result.extras["queries"]`` holds
the queries spent on each image (``forward_evals`` adds the base class's clean and verification
passes). Randomised models (e.g. a :class:`~advsmooth.defenses.SmoothedClassifier`) are queried
with their own randomness; ``extras["broken"]`` records whether a misclassified candidate was seen
during the search, which is what the NAttack accuracy counts (``result.success`` re-checks the
returned image with one more, independent forward pass of the randomised model).

Scores → log-probabilities: models returning logits use ``log_softmax``. Models returning
probabilities (vote shares of a :class:`~advsmooth.defenses.SmoothedClassifier`, detected through
its ``outputs_probabilities`` attribute, or ``output="probabilities"``) use ``log(clamp(p, 1e-30))``
— vote shares are often exactly 0, and the clamp (the authors' ``+1e-30``) keeps the margin finite.

Batching: all active images and their whole population are evaluated together, in model calls of
at most ``batch_size`` candidate images; no Python loop over samples. Memory: the population noise
of one iteration, ``(A, n, C, H, W)`` for ``A`` active images.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._utils import (
    check_choice,
    check_int_at_least,
    check_model_output,
    check_nonnegative,
    check_positive,
)
from .base import Attack, AttackContext, AttackOutput

__all__ = ["NAttack"]

OUTPUTS = ("auto", "logits", "probabilities")


class NAttack(Attack):
    """Score-based NES attack in tanh space, ℓ∞ ball (Li et al. 2019; docs/algorithms.md).

    Args:
        eps: ℓ∞ radius in pixel units (default 8/255).
        population: candidates per iteration ``n`` (default 300).
        sigma: std ``s`` of the search distribution in tanh space (default 0.1).
        lr: learning rate of the mean (default 0.02).
        max_iter: maximum iterations (default 500).
        max_queries: optional query budget per image; the iterations are capped at
            ``max_queries // population``.
        init_std: std of the initial mean ``μ₀`` (authors' code: 0.001).
        output: ``"auto"`` (probabilities if the model has ``outputs_probabilities = True``),
            ``"logits"`` or ``"probabilities"``.
        batch_size: candidate images per model call.
        seed: seed of the default generator.
    """

    supports_targeted = True
    stochastic = True

    def __init__(self, *, eps: float = 8 / 255, population: int = 300, sigma: float = 0.1,
                 lr: float = 0.02, max_iter: int = 500, max_queries: int | None = None,
                 init_std: float = 0.001, output: str = "auto", batch_size: int = 4096,
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.eps = check_nonnegative("eps", eps)
        self.population = check_int_at_least("population", population, 2)
        self.sigma = check_positive("sigma", sigma)
        self.lr = check_positive("lr", lr)
        self.max_iter = check_int_at_least("max_iter", max_iter, 1)
        if max_queries is not None:
            check_int_at_least("max_queries", max_queries, self.population)
        self.max_queries = max_queries
        self.init_std = check_nonnegative("init_std", init_std)
        self.output = check_choice("output", output, OUTPUTS)
        self.batch_size = check_int_at_least("batch_size", batch_size, 1)
        self._set_params(eps=self.eps, population=self.population, sigma=self.sigma, lr=self.lr,
                         max_iter=self.max_iter, max_queries=max_queries, seed=self.seed)

    @property
    def iterations(self) -> int:
        """Iterations actually allowed (``max_iter`` capped by the query budget)."""
        if self.max_queries is None:
            return self.max_iter
        return min(self.max_iter, self.max_queries // self.population)

    def _log_probs(self, model: torch.nn.Module, rows: Tensor) -> Tensor:
        bs = self.batch_size
        outs = [model(rows[s:s + bs]) for s in range(0, rows.shape[0], bs)]
        for s, o in zip(range(0, rows.shape[0], bs), outs):
            check_model_output(o, min(bs, rows.shape[0] - s))
        z = torch.cat(outs) if len(outs) > 1 else outs[0]
        if z.ndim != 2 or z.shape[1] < 2:
            raise ValueError(f"NAttack needs N×K scores with K >= 2, got shape {tuple(z.shape)}")
        probs = self.output == "probabilities" or (
            self.output == "auto" and bool(getattr(model, "outputs_probabilities", False)))
        if probs:
            return torch.log(z.clamp_min(1e-30))
        return torch.log_softmax(z, dim=1)

    def _attack(self, ctx: AttackContext) -> AttackOutput:
        x, gen, model = ctx.x, ctx.generator, ctx.model
        a_all, n = x.shape[0], self.population
        cls = ctx.labels if ctx.target is None else ctx.target
        lo, hi = (x - self.eps).clamp_min(0.0), (x + self.eps).clamp_max(1.0)
        w0 = torch.atanh((2.0 * x - 1.0) * (1.0 - 1e-6))
        mu = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype) * self.init_std
        x_adv = x.clone()
        broken = torch.zeros(a_all, dtype=torch.bool, device=x.device)
        iters = torch.zeros(a_all, dtype=torch.long, device=x.device)
        queries = torch.zeros(a_all, dtype=torch.long, device=x.device)

        def to_image(w: Tensor, lo_: Tensor, hi_: Tensor) -> Tensor:
            img = (torch.tanh(w) + 1.0) * 0.5
            return torch.maximum(torch.minimum(img, hi_), lo_)

        with torch.no_grad():
            for t in range(self.iterations):
                act = torch.nonzero(~broken).flatten()
                a = act.numel()
                if a == 0:
                    break
                eps_j = torch.randn((a, n, *x.shape[1:]), generator=gen, device=x.device,
                                    dtype=x.dtype)
                w = (w0[act] + mu[act]).unsqueeze(1) + self.sigma * eps_j
                cand = to_image(w, lo[act].unsqueeze(1), hi[act].unsqueeze(1))
                logp = self._log_probs(model, cand.reshape(a * n, *x.shape[1:])).reshape(a, n, -1)
                ctx.count_forward(act, n)
                queries[act] += n
                iters[act] = t + 1
                c = cls[act].view(a, 1, 1).expand(a, n, 1)
                lp_c = logp.gather(2, c)[..., 0]
                lp_other = logp.scatter(2, c, float("-inf")).amax(dim=2)
                pred = logp.argmax(dim=2)
                if ctx.target is None:
                    margin = lp_c - lp_other
                    hit = pred != c[..., 0]
                else:
                    margin = lp_other - lp_c
                    hit = pred == c[..., 0]
                # broken samples: keep the first misclassified candidate
                got = hit.any(dim=1)
                if bool(got.any()):
                    first = hit.to(torch.int8).argmax(dim=1)
                    rows = torch.nonzero(got).flatten()
                    x_adv[act[rows]] = cand[rows, first[rows]]
                    broken[act[rows]] = True
                # NES update of the mean (for every active sample; broken ones are frozen later)
                loss = margin.clamp(0.0, 1000.0)
                loss = torch.nan_to_num(loss, nan=1000.0, posinf=1000.0)
                z = (loss - loss.mean(dim=1, keepdim=True)) / (
                    loss.std(dim=1, unbiased=False, keepdim=True) + 1e-7)
                step = torch.einsum("an,an...->a...", z, eps_j)
                mu[act] = mu[act] - (self.lr / (n * self.sigma)) * step
            rest = ~broken
            if bool(rest.any()):
                x_adv[rest] = to_image(w0[rest] + mu[rest], lo[rest], hi[rest])
        return AttackOutput(
            x_adv=x_adv, iterations=iters,
            extras={"queries": queries, "broken": broken},
            info={"population": n, "max_iterations": self.iterations,
                  "log_prob_floor": math.log(1e-30)},
        )
