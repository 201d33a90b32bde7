"""Smoothed inference: :class:`SmoothedClassifier` (prediction / weighted / soft votes),
Cohen et al.'s ``predict`` with abstention and ``certify`` (certified L2 radius), and the
statistics they need (Clopper–Pearson bound, two-sided binomial test, from ``scipy.stats``).

Specification: docs/algorithms.md, "Smoothed inference, voting and certification" (the votes and
where the code differs from the authors' code).

Noise layout and reproducibility
--------------------------------
One forward call with ``M`` samples on a batch of ``N`` images draws Gaussian noise with the layout
``(M, N, C, H, W)`` (copy-major). The copies are split into *noise blocks* of ``B`` consecutive
copies, ``B = min(M, max(1, 2**20 // (N·C·H·W)))`` (so one block holds at most about 2**20 numbers,
or one copy of the batch when that is larger). Block ``b`` is drawn as one
``torch.randn((B_b, N, C, H, W))`` from a generator seeded with ``splitmix64(call_seed, b)``, where
``call_seed`` is the 63-bit seed of the call (taken from the classifier's seeded stream, or given
explicitly as ``noise_seed=``). The blocks depend only on ``(call_seed, M, N, C, H, W)`` and never
on ``batch_size``: the noisy copies of a block are then fed to the model in chunks of ``batch_size``
rows, so the chunk size changes the memory used but not a single number (up to the model's own
batch-size dependence, e.g. BatchNorm in training mode). Memory is bounded by one noise block plus
one chunk of activations; there is no Python loop over samples.

σ units
-------
``sigma`` is the standard deviation of the noise in **pixel units** (inputs in ``[0, 1]``) with
``noise_space="pixel"`` (default). The smoothing paper quotes σ in *normalised-input* units (noise
added after the mean/std normalisation, e.g. σ = 0.24 on CIFAR-10): pass
``noise_space="normalized"`` to use those values directly — the pixel-space noise is then
``σ·std_c`` per channel, with ``std`` taken from a :class:`advsmooth.models.Normalize` layer inside
the model or from ``std=``. By hand: ``sigma_pixel = sigma_paper * std`` (e.g. 0.24 × 0.25 ≈ 0.06
for CIFAR's std ≈ 0.25; MNIST models here take raw pixels, std = 1, so both coincide).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._tensors import check_images, check_model_compat
from .._utils import (
    check_choice,
    check_int_at_least,
    check_model_output,
    check_nonnegative,
    eval_mode,
    input_mismatch,
)
from ..attacks.noise_space import SmoothedModel, resolve_std

__all__ = [
    "SmoothedClassifier",
    "Certificate",
    "VOTES",
    "votes_from_logits",
    "clopper_pearson_lower",
    "binom_test_half",
]

#: the voting functions of :class:`SmoothedClassifier`
VOTES = ("prediction", "weighted", "weighted_c", "soft", "logit_mean")
#: numbers per noise block (see the module docstring); a constant so that results never depend on
#: the chunk size
NOISE_BLOCK_ELEMS = 2**20
#: default rows per base-model call (``batch_size=None``) on CPU and on other devices
DEFAULT_ROWS_CPU = 128
DEFAULT_ROWS_ACCELERATOR = 4096
_MASK64 = (1 << 64) - 1


def _splitmix64(*values: int) -> int:
    """Mix integers into one 63-bit seed (SplitMix64 finaliser applied in sequence)."""
    z = 0x9E3779B97F4A7C15
    for v in values:
        z = (z + (int(v) & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z = z ^ (z >> 31)
    return z >> 1


# ----------------------------------------------------------------------------------------------
# votes
# ----------------------------------------------------------------------------------------------

def _ranks(z: Tensor) -> Tensor:
    """0-based rank of every class per row of ``z`` (…×K), 0 = largest; ties → lower index first."""
    order = torch.argsort(z, dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ar = torch.arange(z.shape[-1], device=z.device).expand_as(order)
    return ranks.scatter_(-1, order, ar)


def _copy_votes(z: Tensor, vote: str, C: float) -> Tensor:
    """Per-copy votes ``V`` (same shape as ``z``, …×K) of the voting function ``vote``."""
    if vote == "prediction":
        return F.one_hot(z.argmax(dim=-1), z.shape[-1]).to(z.dtype)
    if vote == "weighted":
        return torch.exp2(-_ranks(z).to(z.dtype))
    if vote == "weighted_c":
        r = _ranks(z)
        return (r == 0).to(z.dtype) + C * (r == 1).to(z.dtype)
    if vote == "soft":
        return torch.softmax(z, dim=-1)
    if vote == "logit_mean":
        return z
    raise ValueError(f"vote must be one of {VOTES}, got {vote!r}")


def _vote_norm(vote: str, num_classes: int, C: float) -> float:
    """Sum of one copy's votes (so that shares sum to 1); 1 for the other votes."""
    if vote == "weighted":
        return 2.0 * (1.0 - 2.0 ** (-num_classes))
    if vote == "weighted_c":
        return 1.0 + (C if num_classes > 1 else 0.0)
    return 1.0


def votes_from_logits(z: Tensor, vote: str = "prediction", C: float = 0.0,
                      normalize: bool = True) -> Tensor:
    """Smoothed scores from the logits of ``M`` noisy copies.

    Args:
        z: logits ``M×N×K`` (copy-major, as returned by :meth:`SmoothedClassifier.copy_logits`).
        vote: ``"prediction"`` (hard votes), ``"weighted"`` (``2^(1−rank)`` over all ranks),
            ``"weighted_c"`` (1 for the top class, ``C`` for the runner-up), ``"soft"`` (mean
            softmax) or ``"logit_mean"`` (mean logits, the authors' ``mcepredict``).
        C: the runner-up weight of ``"weighted_c"`` (C = 0 reproduces ``"prediction"``).
        normalize: divide by ``M`` times the per-copy vote mass, so that the shares of every vote
            except ``"logit_mean"`` sum to 1 per sample; ``False`` returns the raw vote sums.

    Returns:
        ``N×K`` scores.
    """
    check_choice("vote", vote, VOTES)
    if z.ndim != 3:
        raise ValueError(f"z must have shape M×N×K, got {tuple(z.shape)}")
    s = _copy_votes(z, vote, float(C)).sum(dim=0)
    if normalize:
        s = s / (z.shape[0] * _vote_norm(vote, z.shape[-1], float(C)))
    return s


# ----------------------------------------------------------------------------------------------
# statistics (SciPy)
# ----------------------------------------------------------------------------------------------

def _as_float_array(v: Tensor | np.ndarray | int) -> np.ndarray:
    return np.asarray(v.detach().cpu() if isinstance(v, Tensor) else v, dtype=np.float64)


def clopper_pearson_lower(k: Tensor | np.ndarray | int, n: Tensor | np.ndarray | int,
                          alpha: float) -> np.ndarray:
    """One-sided ``(1 − alpha)`` Clopper–Pearson lower confidence bound on a binomial proportion.

    ``p_lower = Beta.ppf(alpha; k, n − k + 1)`` (``scipy.stats.beta``; 0 when ``k = 0``) — the
    same number as Cohen et al.'s ``proportion_confint(k, n, alpha=2·alpha, method="beta")[0]``.
    ``k`` and ``n`` broadcast; returns a float64 array of their broadcast shape.
    """
    from scipy import stats

    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    k, n = np.broadcast_arrays(_as_float_array(k), _as_float_array(n))
    if not (np.isfinite(k).all() and np.isfinite(n).all()):
        raise ValueError("k and n must be finite counts for a Clopper-Pearson bound")
    if np.any(k < 0) or np.any(k > n) or np.any(n < 1):
        raise ValueError("need 0 <= k <= n and n >= 1 for a Clopper-Pearson bound")
    out = np.zeros(k.shape, dtype=np.float64)
    pos = k > 0
    if pos.any():
        out[pos] = stats.beta.ppf(alpha, k[pos], n[pos] - k[pos] + 1)
    return out


def binom_test_half(k: Tensor | np.ndarray | int, n: Tensor | np.ndarray | int) -> np.ndarray:
    """Two-sided binomial-test p-value of ``k`` successes in ``n`` trials against ``p = 1/2``.

    Equals ``scipy.stats.binomtest(k, n, 0.5).pvalue`` element-wise: for ``p = 1/2`` the
    distribution is symmetric, so the p-value is ``min(1, 2·P(X ≥ max(k, n−k)))``, computed
    vectorised with ``scipy.stats.binom.sf``; ``n = 0`` gives 1.
    """
    from scipy import stats

    k, n = np.broadcast_arrays(_as_float_array(k), _as_float_array(n))
    if not (np.isfinite(k).all() and np.isfinite(n).all()):
        raise ValueError("k and n must be finite counts for a binomial test")
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 <= k <= n for a binomial test")
    j = np.maximum(k, n - k)
    out = np.ones(k.shape, dtype=np.float64)
    pos = (n > 0) & (j > n / 2)
    if pos.any():
        out[pos] = np.minimum(1.0, 2.0 * stats.binom.sf(j[pos] - 1, n[pos], 0.5))
    return out


# ----------------------------------------------------------------------------------------------
# the smoothed classifier
# ----------------------------------------------------------------------------------------------

@dataclass
class Certificate:
    """Result of :meth:`SmoothedClassifier.certify` for ``N`` inputs.

    Attributes:
        prediction: ``(N,)`` int64 class, ``-1`` where the classifier abstains.
        radius: ``(N,)`` float64 certified L2 radius in pixel units (0 where it abstains).
        p_lower: ``(N,)`` float64 Clopper–Pearson lower bound on the top-class probability.
        counts: ``(N,)`` int64 votes for the selected class among the ``n`` estimation samples.
    """

    prediction: Tensor
    radius: Tensor
    p_lower: Tensor
    counts: Tensor


class SmoothedClassifier(SmoothedModel):
    """Randomised smoothing of a base classifier: votes of ``M`` Gaussian-noised copies.

    ``smoothed(x)`` returns ``N×K`` scores: vote shares (rows sum to 1) for ``"prediction"``,
    ``"weighted"``, ``"weighted_c"`` and ``"soft"``, mean logits for ``"logit_mean"``. The predicted
    class is their argmax (ties → lowest index).

    Args:
        model: base classifier, pixels ``N×C×H×W`` in ``[0, 1]`` → logits ``N×K``.
        sigma: noise standard deviation ≥ 0 (pixel units, or normalised-input units with
            ``noise_space="normalized"``; see the module docstring).
        samples: number ``M`` ≥ 1 of noisy copies per forward call.
        vote: ``"prediction"`` (hard votes), ``"weighted"`` (``2^(1−rank)`` over all ranks),
            ``"weighted_c"`` (1 for the top class, ``C`` for the runner-up), ``"soft"`` (mean
            softmax, the smoothed-inference paper's Eq. 13) or ``"logit_mean"`` (mean logits,
            the authors' ``mcepredict``).
        C: runner-up weight of ``"weighted_c"`` (≥ 0; C = 0 is prediction smoothing).
        noise_space: ``"pixel"`` or ``"normalized"`` (needs ``std`` or a ``Normalize`` layer).
        std: per-channel std of the model's normalisation (only for ``noise_space="normalized"``).
        batch_size: rows (noisy images) per model call; changes memory and speed, never the
            numbers. ``None`` (default): 128 on CPU — moderate calls keep activations in cache
            and were ~2× faster per row than 2,048-row calls for the MNIST LeNet and ResNet-20
            here (benchmarks/README.md, smoothing suite) — and 4,096 on other devices.
        seed: seed of the noise stream.
        fixed_noise: reuse the same noise at every call (default: fresh noise per call from the
            seeded stream; :meth:`reseed` restarts the stream).
        clip: clamp noisy inputs to ``[0, 1]`` (default False, like the reference code).
        base_mode: ``"eval"`` (default): every call (``forward``, ``scores``, ``vote_counts``,
            ``copy_logits``, ``predict``, ``certify``) evaluates the base model in eval mode and
            restores each submodule's mode afterwards, so a prediction never updates BatchNorm
            statistics or draws dropout masks. ``"as_is"``: the base runs in whatever mode it is
            in (e.g. to train with BatchNorm statistics of the noisy inputs).

    Gradients flow through ``forward`` only for the differentiable votes (``"soft"``,
    ``"logit_mean"``) when grad mode is on; hard votes are computed under ``no_grad``, and a hard
    vote called on an input that requires a gradient (a gradient attack) raises ``ValueError``
    rather than return scores no gradient can flow through. To attack a smoothed classifier with
    gradients use :class:`advsmooth.attacks.ExpectationGradient`, which differentiates the base
    model under the same noise.

    Training through the smoothed model: with ``vote="soft"`` or ``"logit_mean"`` and grad mode
    on, ``loss(smoothed(x), y).backward()`` reaches the base model's parameters in either
    ``base_mode`` (eval mode changes only BatchNorm/dropout behaviour, not the parameters'
    ``requires_grad``); pass ``base_mode="as_is"`` and put the base in train mode to train with
    batch statistics.

    Every base-model output is checked (:func:`advsmooth._utils.check_model_output`): a model
    returning NaN/Inf logits, integer logits, a tuple or the wrong number of rows raises a
    ``ValueError``/``TypeError`` naming the model output, so no vote, prediction or certificate
    is ever computed from non-finite outputs.
    """

    def __init__(
        self,
        model: nn.Module,
        sigma: float,
        samples: int = 64,
        *,
        vote: str = "prediction",
        C: float | None = None,
        noise_space: str = "pixel",
        std: Tensor | float | tuple[float, ...] | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        fixed_noise: bool = False,
        clip: bool = False,
        base_mode: str = "eval",
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.base = model
        self.sigma = check_nonnegative("sigma", sigma)
        self.samples = check_int_at_least("samples", samples, 1)
        self.vote = check_choice("vote", vote, VOTES)
        if vote == "weighted_c":
            if C is None:
                raise ValueError("vote='weighted_c' needs the runner-up weight C (a number >= 0)")
            self.C = check_nonnegative("C", C)
        else:
            if C is not None and vote != "weighted_c":
                raise ValueError(f"C is only used by vote='weighted_c' (got vote={vote!r})")
            self.C = 0.0
        s = resolve_std(noise_space, std, model)  # validates noise_space and std
        self.noise_space = noise_space
        if s is not None:
            self.register_buffer("std", s.float(), persistent=False)
        else:
            self.std = None
        self.batch_size = (None if batch_size is None
                           else check_int_at_least("batch_size", batch_size, 1))
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self.fixed_noise = bool(fixed_noise)
        self.clip = bool(clip)
        self.base_mode = check_choice("base_mode", base_mode, ("eval", "as_is"))
        self._stream = torch.Generator()
        self.reseed(seed)

    # -- configuration ------------------------------------------------------------------------
    def extra_repr(self) -> str:
        parts = [f"sigma={self.sigma}", f"samples={self.samples}", f"vote={self.vote!r}"]
        if self.vote == "weighted_c":
            parts.append(f"C={self.C}")
        parts += [f"noise_space={self.noise_space!r}", f"batch_size={self.batch_size}",
                  f"seed={self.seed}"]
        if self.fixed_noise:
            parts.append("fixed_noise=True")
        if self.clip:
            parts.append("clip=True")
        if self.base_mode != "eval":
            parts.append(f"base_mode={self.base_mode!r}")
        return ", ".join(parts)

    def reseed(self, seed: int | None = None) -> None:
        """Restart the noise stream (with ``seed``, default the constructor's seed)."""
        if seed is not None:
            self.seed = int(seed)
        self._stream.manual_seed(self.seed)

    @property
    def outputs_probabilities(self) -> bool:
        """True when the scores are probabilities (vote shares), False for mean logits."""
        return self.vote != "logit_mean"

    def rows_per_call(self, device: torch.device) -> int:
        """Noisy images per base-model call on ``device`` (``batch_size`` or its default)."""
        if self.batch_size is not None:
            return self.batch_size
        return DEFAULT_ROWS_CPU if device.type == "cpu" else DEFAULT_ROWS_ACCELERATOR

    def _call_seed(self, noise_seed: int | None) -> int:
        if noise_seed is not None:
            return _splitmix64(int(noise_seed))
        if self.fixed_noise:
            return _splitmix64(self.seed, 0x5EED)
        return int(torch.randint(0, 2**62, (1,), generator=self._stream))

    # -- the engine ---------------------------------------------------------------------------
    def _iter_logits(self, x: Tensor, m: int, call_seed: int, keep_grad: bool
                     ) -> Iterator[tuple[int, Tensor]]:
        """Yield ``(first_copy, logits B×N×K)`` for consecutive noise blocks."""
        n = x.shape[0]
        per_copy = max(1, x[0].numel() * n)
        block = min(m, max(1, NOISE_BLOCK_ELEMS // per_copy))
        sig = self.pixel_sigma(x)
        zero_noise = self.sigma == 0.0
        gen = torch.Generator(device=x.device)
        ctx = nullcontext() if keep_grad else torch.no_grad()
        with ctx:
            for b, start in enumerate(range(0, m, block)):
                nb = min(block, m - start)
                if zero_noise:
                    noisy = x.unsqueeze(0).expand(nb, *x.shape)
                else:
                    gen.manual_seed(_splitmix64(call_seed, b))
                    eta = torch.randn((nb, *x.shape), generator=gen, device=x.device, dtype=x.dtype)
                    noisy = x.unsqueeze(0) + eta * sig
                if self.clip:
                    noisy = noisy.clamp(0.0, 1.0)
                rows = noisy.reshape(nb * n, *x.shape[1:])
                bs = self.rows_per_call(x.device)
                with input_mismatch(x):
                    outs = [check_model_output(self.base(rows[r:r + bs]),
                                               rows[r:r + bs].shape[0], name="base model output")
                            for r in range(0, rows.shape[0], bs)]
                z = torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]
                if z.ndim != 2 or z.shape[1] < 2:
                    raise ValueError("the base model must return N×K logits with K >= 2 (a "
                                     "binary classifier: return two logits [0, s]), got shape "
                                     f"{tuple(z.shape)}")
                yield start, z.reshape(nb, n, z.shape[-1])

    def _accumulate(self, x: Tensor, m: int, noise_seed: int | None, vote: str,
                    keep_grad: bool) -> Tensor:
        call_seed = self._call_seed(noise_seed)
        total: Tensor | None = None
        with self._base_mode():
            for _, z in self._iter_logits(x, m, call_seed, keep_grad):
                v = _copy_votes(z, vote, self.C).sum(dim=0)
                total = v if total is None else total + v
        assert total is not None
        check_model_output(total, x.shape[0], name=f"sum of the {vote!r} votes (finite logits that "
                           "overflow when added)")
        return total

    def _base_mode(self) -> AbstractContextManager[object]:
        """Eval mode for the base during a call (``base_mode="eval"``), else nothing."""
        return eval_mode(self.base) if self.base_mode == "eval" else nullcontext()

    def _check_x(self, x: Tensor) -> None:
        """Pixel-space input checks (shape, dtype, NaN/Inf, [0, 1], model dtype/device)."""
        check_images(x)
        if x.shape[0] == 0:
            raise ValueError("x is an empty batch: the smoothed classifier needs >= 1 image")
        check_model_compat(self.base, x)

    def vote_counts(self, x: Tensor, *, samples: int | None = None, vote: str | None = None,
                    noise_seed: int | None = None) -> Tensor:
        """Raw vote sums ``N×K`` over ``samples`` copies (e.g. integer counts for hard votes)."""
        self._check_x(x)
        m = self.samples if samples is None else check_int_at_least("samples", samples, 1)
        vote = self.vote if vote is None else check_choice("vote", vote, VOTES)
        return self._accumulate(x, m, noise_seed, vote, keep_grad=False)

    def scores(self, x: Tensor, *, samples: int | None = None,
               noise_seed: int | None = None) -> Tensor:
        """Smoothed scores ``N×K`` (see the class docstring); ``noise_seed`` fixes this call's noise
        without advancing the stream."""
        self._check_x(x)
        m = self.samples if samples is None else check_int_at_least("samples", samples, 1)
        keep_grad = torch.is_grad_enabled() and self.vote in ("soft", "logit_mean")
        s = self._accumulate(x, m, noise_seed, self.vote, keep_grad)
        return s / (m * _vote_norm(self.vote, s.shape[-1], self.C))

    def forward(self, x: Tensor) -> Tensor:
        """Smoothed scores ``N×K`` with ``self.samples`` copies and this call's noise.

        An input that requires a gradient (a gradient attack, an input-gradient metric) with a
        hard vote raises ``ValueError``: hard votes have no gradient."""
        if (torch.is_grad_enabled() and isinstance(x, Tensor) and x.requires_grad
                and self.vote not in ("soft", "logit_mean")):
            raise ValueError(
                f"SmoothedClassifier(vote={self.vote!r}) has no input gradient (hard votes); to "
                "attack it with gradients use vote='soft' or 'logit_mean', or give the attack "
                "gradient=advsmooth.attacks.ExpectationGradient(sigma, samples=M) on the base "
                "model (docs/smoothing.md)")
        return self.scores(x)

    def copy_logits(self, x: Tensor, *, samples: int | None = None,
                    noise_seed: int | None = None) -> Tensor:
        """Base-model logits of every noisy copy, ``M×N×K`` (no gradient).

        Any vote and any ``m ≤ M`` can be computed from a prefix with :func:`votes_from_logits`
        (used by the M/σ sweeps so that one pass serves every M).
        """
        self._check_x(x)
        m = self.samples if samples is None else check_int_at_least("samples", samples, 1)
        call_seed = self._call_seed(noise_seed)
        with self._base_mode():
            return torch.cat([z for _, z in self._iter_logits(x, m, call_seed, keep_grad=False)],
                             dim=0)

    # -- Cohen et al. -------------------------------------------------------------------------
    def predict(self, x: Tensor, *, alpha: float | None = None, n: int | None = None,
                noise_seed: int | None = None) -> Tensor:
        """Predicted classes ``(N,)``; with ``alpha``, Cohen et al.'s PREDICT with abstention.

        Without ``alpha``: argmax of the scores over ``n`` (default ``samples``) copies. With
        ``alpha`` in (0, 1): hard-vote counts of ``n`` copies; the top class is returned only if a
        two-sided binomial test of its count against the runner-up's (p = 1/2) rejects at level
        ``alpha``, else ``-1`` (abstain). The abstention test always uses hard votes, whatever
        ``vote`` is (the binomial test is defined for counts); the probability of returning a
        wrong (non-abstaining) answer is at most ``alpha``.
        """
        m = self.samples if n is None else check_int_at_least("n", n, 1)
        if alpha is None:
            s = self.scores(x, samples=m, noise_seed=noise_seed)
            return s.argmax(dim=1)
        if not 0.0 < float(alpha) < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
        counts = self.vote_counts(x, samples=m, vote="prediction", noise_seed=noise_seed)
        top2 = counts.topk(min(2, counts.shape[1]), dim=1)
        n_a = top2.values[:, 0]
        n_b = top2.values[:, 1] if counts.shape[1] > 1 else torch.zeros_like(n_a)
        pval = binom_test_half(n_a.double().cpu().numpy(), (n_a + n_b).double().cpu().numpy())
        pred = top2.indices[:, 0].clone()
        pred[torch.as_tensor(pval > alpha, device=pred.device)] = -1
        return pred

    def certify(self, x: Tensor, *, n0: int = 100, n: int = 10000, alpha: float = 0.001,
                batch_size: int | None = None, noise_seed: int | None = None) -> Certificate:
        """Cohen et al.'s CERTIFY: a class and a certified L2 radius per input.

        ``n0`` hard-vote samples select the class ``ĉ``; ``n`` fresh samples estimate
        ``p_lower`` = the one-sided ``(1 − alpha)`` Clopper–Pearson lower bound on
        ``P(f(x + η) = ĉ)``. If ``p_lower < 1/2`` the classifier abstains (``-1``, radius 0);
        otherwise the radius is ``σ_px·Φ⁻¹(p_lower)``, with ``σ_px`` the pixel-space σ (for
        normalised noise the smallest per-channel ``σ·std_c``, a valid lower bound because the
        noise covariance dominates ``σ_px² I``). With ``σ = 0`` the radius is 0.
        """
        n0 = check_int_at_least("n0", n0, 1)
        n = check_int_at_least("n", n, 1)
        if not 0.0 < float(alpha) < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
        old_bs = self.batch_size
        if batch_size is not None:
            self.batch_size = check_int_at_least("batch_size", batch_size, 1)
        try:
            s0 = None if noise_seed is None else _splitmix64(noise_seed, 0)
            s1 = None if noise_seed is None else _splitmix64(noise_seed, 1)
            sel = self.vote_counts(x, samples=n0, vote="prediction", noise_seed=s0).argmax(dim=1)
            counts = self.vote_counts(x, samples=n, vote="prediction", noise_seed=s1)
        finally:
            self.batch_size = old_bs
        c_a = counts.gather(1, sel[:, None])[:, 0].round().long()
        p_low = torch.as_tensor(clopper_pearson_lower(c_a.cpu().numpy(), n, alpha),
                                dtype=torch.float64, device=x.device)
        sig = self.pixel_sigma(x)
        sig_px = float(sig) if not isinstance(sig, Tensor) else float(sig.min())
        abstain = p_low < 0.5
        radius = sig_px * torch.special.ndtri(p_low.clamp(0.5, 1.0))
        radius = torch.where(abstain, torch.zeros_like(radius), radius)
        pred = torch.where(abstain.to(sel.device), torch.full_like(sel, -1), sel)
        return Certificate(prediction=pred, radius=radius, p_lower=p_low, counts=c_a)
