"""Noise injection: PNI / CNI weight and activation noise, Gaussian input noise
(docs/algorithms.md, "Noise injection (PNI, CNI)").

Building blocks
---------------
* :class:`PNINoise` — additive noise ``t + α ⊙ ν`` with ``ν ~ N(0, std(t)²)``; ``std(t)`` is the
  scalar standard deviation of the whole tensor, computed under ``no_grad`` (the noise is a
  constant for autograd: gradients reach ``α`` through ``α ⊙ ν`` and ``t`` directly). ``α`` is
  learnable, init 0.25, with granularity ``"layerwise"`` (one scalar), ``"channelwise"`` (one per
  output channel of a weight / per channel or feature of an activation) or ``"elementwise"``.
* :class:`CNINoise` — low-rank coloured noise ``t + m`` with
  ``m = sqrt(|s·α_d|) ⊙ n_d + F n_f``, ``n_d ~ N(0, I_D)``, ``n_f ~ N(0, I_r)``, ``s = std(t)``
  (no_grad), learnable ``α_d ∈ R^D`` (init 0.0625 = 0.25²) and ``F ∈ R^{D×r}`` (init: every entry
  0.01), rank ``r = 5``. As in the authors' code the diagonal multiplies the *standard
  deviation* ``s`` — not the variance — under the square root; the covariance of ``m`` is
  ``diag(|s·α_d|) + F Fᵀ``.
* :class:`InputNoise` — ``x + σ·ν`` with ``ν ~ N(0, I)`` drawn per sample (shape ``N×C×H×W``);
  ``σ`` fixed or learnable; ``space="pixel"`` or ``"normalized"`` (pixel-space std ``σ·std_c``
  per channel, identical to adding ``σ·ν`` after the model's normalisation). Noisy inputs are
  not clipped (as in the authors' code).
* :class:`NoisyConv2d` / :class:`NoisyLinear` — drop-in ``nn.Conv2d`` / ``nn.Linear`` subclasses
  (same parameter names, so ``conv.weight``/``conv.bias`` keys are unchanged) that perturb the
  weight with a ``weight_noise`` module and/or the layer's input or output activation with an
  ``act_noise`` module. :class:`PNIConv2d`, :class:`PNILinear`, :class:`CNIConv2d`,
  :class:`CNILinear` construct them directly.

Noise draws
-----------
Weight noise and activation noise draw **one** noise tensor per forward call, shared by the whole
batch (authors' code): weight noise has the weight's shape, activation noise one sample's
activation (``a.shape[1:]``). Input noise is drawn per sample. Every noise module owns a
``torch.Generator`` (created lazily on the device of the tensor it perturbs, seeded with the
module's seed); the global RNG is never used. :func:`seed_noise` reseeds every noise module of a
model (module ``i`` in ``model.modules()`` order gets seed ``seed·1_000_003 + i``), so that runs
are reproducible. The generator state is part of the module's ``state_dict`` (``_extra_state``),
so a checkpoint restores the noise stream as well as the weights (a generator restored on another
device type restarts from the seed).

Noise and eval mode
-------------------
Noise stays **on in eval mode** (authors' code; attacks against noisy models are stochastic).
Switch it off explicitly for clean evaluation with ``set_noise(model, False)`` (or the context
manager :func:`noise_disabled`); with noise off, or with every scale equal to 0, a noisy model
computes exactly the same outputs as the original one.

Weight decay
------------
Exclude noise scales from weight decay (PNI authors' code): :func:`noise_parameters` lists them and
:func:`parameter_groups` builds optimiser parameter groups with ``weight_decay=0`` for them.

>>> import torch
>>> from torch import nn
>>> from advsmooth.defenses.noise import inject_noise, set_noise
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
>>> noisy = inject_noise(net, where="weights", kind="pni", granularity="channelwise")
>>> x = torch.rand(2, 1, 8, 8)
>>> bool((noisy(x) != noisy(x)).any())          # a new weight-noise draw per call
True
>>> _ = set_noise(noisy, False)
>>> torch.equal(noisy(x), net(x))               # noise off: the original model exactly
True
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils import check_choice, check_int_at_least, check_nonnegative
from ..attacks.noise_space import check_std

__all__ = [
    "NoiseModule",
    "PNINoise",
    "CNINoise",
    "InputNoise",
    "NoisyConv2d",
    "NoisyLinear",
    "PNIConv2d",
    "PNILinear",
    "CNIConv2d",
    "CNILinear",
    "inject_noise",
    "add_input_noise",
    "set_noise",
    "noise_disabled",
    "seed_noise",
    "noise_modules",
    "noise_parameters",
    "parameter_groups",
]

GRANULARITIES = ("layerwise", "channelwise", "elementwise")
KINDS = ("pni", "cni")
WHERES = ("weights", "activations", "both")
_SEED_STRIDE = 1_000_003


def _scalar_std(t: Tensor) -> Tensor:
    """Scalar standard deviation of the whole tensor (unbiased; 0 for a single element)."""
    with torch.no_grad():
        t = t.detach()
        if t.numel() < 2:
            return t.new_zeros(())
        return t.std()


# ----------------------------------------------------------------------------------------------
# base: on/off switch and an owned generator
# ----------------------------------------------------------------------------------------------

class NoiseModule(nn.Module):
    """Base class of every noise module: an on/off switch and an owned, seeded generator.

    Attributes:
        noise_enabled: when False the module is the identity (set by :func:`set_noise`).
    """

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__()
        self.noise_enabled = True
        self._seed = int(seed)
        self._generator: torch.Generator | None = None
        self._pending_state: tuple[str, Tensor] | None = None

    # -- randomness -----------------------------------------------------------------------------
    def reseed(self, seed: int) -> None:
        """Restart this module's noise stream from ``seed``."""
        self._seed = int(seed)
        self._generator = None
        self._pending_state = None

    def generator(self, device: torch.device) -> torch.Generator:
        """The module's generator on ``device`` (created from the seed on first use)."""
        g = self._generator
        if g is None or g.device != device:
            g = torch.Generator(device=device)
            g.manual_seed(self._seed)
            pending = self._pending_state
            if pending is not None and pending[0] == device.type:
                g.set_state(pending[1])
            self._pending_state = None
            self._generator = g
        return g

    def _randn(self, shape: Sequence[int], like: Tensor) -> Tensor:
        return torch.randn(tuple(shape), generator=self.generator(like.device),
                           device=like.device, dtype=like.dtype)

    def get_extra_state(self) -> dict[str, Any]:
        g = self._generator
        if g is not None:
            return {"seed": self._seed, "device_type": g.device.type, "rng_state": g.get_state()}
        if self._pending_state is not None:
            return {"seed": self._seed, "device_type": self._pending_state[0],
                    "rng_state": self._pending_state[1]}
        empty = torch.zeros(0, dtype=torch.uint8)
        return {"seed": self._seed, "device_type": "", "rng_state": empty}

    def set_extra_state(self, state: Any) -> None:
        self._seed = int(state["seed"])
        self._generator = None
        rng = state.get("rng_state")
        dev = state.get("device_type", "")
        self._pending_state = (str(dev), rng.clone()) if rng is not None and rng.numel() else None

    def noise(self, t: Tensor) -> Tensor:
        """One draw of the noise added to ``t``."""
        raise NotImplementedError

    def forward(self, t: Tensor) -> Tensor:
        if not self.noise_enabled:
            return t
        return t + self.noise(t)

    def extra_repr(self) -> str:
        return f"enabled={self.noise_enabled}, seed={self._seed}"


# ----------------------------------------------------------------------------------------------
# PNI and CNI noise
# ----------------------------------------------------------------------------------------------

class PNINoise(NoiseModule):
    """Parametric noise ``t + α ⊙ ν``, ``ν ~ N(0, std(t)²)`` (PNI).

    Args:
        shape: shape of the perturbed tensor: the weight's shape (``batched=False``) or one
            sample's activation shape without the batch dimension (``batched=True``; only needed
            for ``"elementwise"``, else the channel count at index 0 suffices).
        granularity: ``"layerwise"`` (scalar α), ``"channelwise"`` (one α per entry of dimension
            0 of ``shape``: output channel of a weight, channel/feature of an activation) or
            ``"elementwise"`` (α of shape ``shape``).
        init: initial value of every α (PNI: 0.25).
        batched: False for weights (``t`` has exactly ``shape``); True for activations
            (``t`` is ``N×shape``, one draw of shape ``shape`` shared by the batch).
        seed: seed of the module's generator.
    """

    def __init__(self, shape: Sequence[int], *, granularity: str = "channelwise",
                 init: float = 0.25, batched: bool = False, seed: int = 0) -> None:
        super().__init__(seed=seed)
        check_choice("granularity", granularity, GRANULARITIES)
        check_nonnegative("init", init)
        shape = tuple(int(s) for s in shape)
        if granularity != "layerwise" and not shape:
            raise ValueError(f"granularity={granularity!r} needs a non-empty shape")
        if granularity == "layerwise":
            ashape: tuple[int, ...] = (1,)
        elif granularity == "channelwise":
            ashape = (shape[0],) + (1,) * (len(shape) - 1)
        else:
            ashape = shape
        self.granularity = granularity
        self.batched = bool(batched)
        self.shape = shape
        self.alpha = nn.Parameter(torch.full(ashape, float(init)))

    def noise(self, t: Tensor) -> Tensor:
        """One draw of ``α ⊙ ν`` for ``t`` (shape of ``t``, or ``t.shape[1:]`` when batched)."""
        shape = t.shape[1:] if self.batched else t.shape
        nu = self._randn(shape, t) * _scalar_std(t).to(t.dtype)
        return self.alpha.to(t.dtype) * nu

    def extra_repr(self) -> str:
        return (f"granularity={self.granularity!r}, alpha_shape={tuple(self.alpha.shape)}, "
                f"batched={self.batched}, {super().extra_repr()}")


def _safe_sqrt(v: Tensor) -> Tensor:
    """``sqrt(v)`` for ``v >= 0`` with value and gradient exactly 0 at ``v = 0`` (no NaN)."""
    pos = v > 0
    return torch.sqrt(torch.where(pos, v, torch.ones_like(v))) * pos.to(v.dtype)


class CNINoise(NoiseModule):
    """Low-rank coloured noise ``t + m``, ``m = sqrt(|s·α_d|) ⊙ n_d + F n_f`` (CNI).

    ``s = std(t)`` (no_grad). ``α_d`` (``D``) and ``F`` (``D×rank``) are learnable with ``D`` the
    number of entries of ``shape``; ``n_d ~ N(0, I_D)``, ``n_f ~ N(0, I_rank)``, one draw per
    forward call (shared by the batch when ``batched``).

    Args:
        shape: weight shape (``batched=False``) or one sample's activation shape (``batched=True``).
        rank: ``r`` (default 5).
        init_diag: initial ``α_d`` (default 0.0625 = 0.25²).
        init_factor: initial value of every entry of ``F`` (default 0.01; a constant, so the
            columns of ``F`` only differ after training).
    """

    def __init__(self, shape: Sequence[int], *, rank: int = 5, init_diag: float = 0.0625,
                 init_factor: float = 0.01, batched: bool = False, seed: int = 0) -> None:
        super().__init__(seed=seed)
        check_int_at_least("rank", rank, 0)
        check_nonnegative("init_diag", init_diag)
        if not math.isfinite(init_factor):
            raise ValueError(f"init_factor must be finite, got {init_factor!r}")
        shape = tuple(int(s) for s in shape)
        d = math.prod(shape) if shape else 1
        self.shape = shape
        self.rank = rank
        self.batched = bool(batched)
        self.alpha_d = nn.Parameter(torch.full((d,), float(init_diag)))
        self.factor = nn.Parameter(torch.full((d, rank), float(init_factor)))

    def noise(self, t: Tensor) -> Tensor:
        """One draw of ``m`` reshaped like ``t`` (or ``t.shape[1:]`` when batched)."""
        shape = t.shape[1:] if self.batched else t.shape
        d = self.alpha_d.shape[0]
        if math.prod(shape) != d:
            raise ValueError(f"CNINoise was built for {d} entries but got a tensor of shape "
                             f"{tuple(shape)} ({math.prod(shape)} entries)")
        s = _scalar_std(t).to(t.dtype)
        n_d = self._randn((d,), t)
        n_f = self._randn((self.rank,), t)
        diag = _safe_sqrt((s * self.alpha_d.to(t.dtype)).abs())
        m = diag * n_d + self.factor.to(t.dtype) @ n_f
        return m.reshape(shape)

    def extra_repr(self) -> str:
        return (f"size={self.alpha_d.shape[0]}, rank={self.rank}, batched={self.batched}, "
                f"{super().extra_repr()}")


class InputNoise(NoiseModule):
    """Gaussian input noise ``x + σ·ν`` per sample (pixel-space noise, as for smoothed inference).

    Args:
        sigma: noise standard deviation (>= 0) in ``space`` units.
        learnable: make ``σ`` a parameter (the effective std is ``|σ|``).
        space: ``"pixel"`` (σ in [0,1] pixel units) or ``"normalized"`` (σ in units of the model's
            normalised input: the pixel-space std of channel c is ``σ·std[c]``).
        std: per-channel normalisation std, required for ``space="normalized"``.
        seed: seed of the module's generator.

    Inputs are not clipped after adding noise (as in the authors' code).
    """

    def __init__(self, sigma: float, *, learnable: bool = False, space: str = "pixel",
                 std: Sequence[float] | Tensor | None = None, seed: int = 0) -> None:
        super().__init__(seed=seed)
        check_nonnegative("sigma", sigma)
        check_choice("space", space, ("pixel", "normalized"))
        if space == "normalized":
            if std is None:
                raise ValueError("space='normalized' needs std= (per-channel normalisation std)")
            scale = check_std(std).float()
        else:
            scale = torch.ones(1)
        self.space = space
        self.learnable = bool(learnable)
        self.register_buffer("channel_scale", scale.view(1, -1, 1, 1))
        if learnable:
            self.sigma = nn.Parameter(torch.tensor(float(sigma)))
        else:
            self.register_buffer("sigma", torch.tensor(float(sigma)))

    def noise(self, t: Tensor) -> Tensor:
        """One draw of ``σ·ν`` (per-channel scaled) for ``t``."""
        nu = self._randn(t.shape, t)
        return self.sigma.abs().to(t.dtype) * self.channel_scale.to(t.dtype) * nu

    def extra_repr(self) -> str:
        return (f"sigma={float(self.sigma.detach()):.4g}, space={self.space!r}, "
                f"learnable={self.learnable}, {super().extra_repr()}")


# ----------------------------------------------------------------------------------------------
# noisy layers
# ----------------------------------------------------------------------------------------------

class _NoisyLayerMixin:
    """Weight noise and input- or output-side activation noise around a layer's own op.

    Subclasses combine it with ``nn.Conv2d`` / ``nn.Linear`` and implement ``_op(x, weight)``.
    """

    weight_noise: nn.Module | None
    act_noise: nn.Module | None
    act_side: str

    def __init__(self, *args: Any, weight_noise: nn.Module | None = None,
                 act_noise: nn.Module | None = None, act_side: str = "output",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_choice("act_side", act_side, ("input", "output"))
        self.weight_noise = weight_noise
        self.act_noise = act_noise
        self.act_side = act_side

    def _noisy_weight(self) -> Tensor:
        w = self.weight  # type: ignore[attr-defined]
        return w if self.weight_noise is None else self.weight_noise(w)

    def _op(self, x: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if self.act_noise is not None and self.act_side == "input":
            x = self.act_noise(x)
        out = self._op(x, self._noisy_weight())
        if self.act_noise is not None and self.act_side == "output":
            out = self.act_noise(out)
        return out


class NoisyConv2d(_NoisyLayerMixin, nn.Conv2d):
    """``nn.Conv2d`` with weight noise and/or activation noise (input side ``"input"`` = PNI "A",
    output side ``"output"`` = PNI "B"). Same parameter names as ``nn.Conv2d``.

    Extra keyword args: ``weight_noise`` and ``act_noise`` (noise modules or None), ``act_side``.
    """

    def _op(self, x: Tensor, weight: Tensor) -> Tensor:
        return self._conv_forward(x, weight, self.bias)


class NoisyLinear(_NoisyLayerMixin, nn.Linear):
    """``nn.Linear`` with weight noise and/or activation noise (see :class:`NoisyConv2d`)."""

    def _op(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight, self.bias)


class _PNIWeights:
    """Mixin: a noisy layer with PNI weight noise (keyword args ``granularity``, ``init``)."""

    def __init__(self, *args: Any, granularity: str = "channelwise", init: float = 0.25,
                 seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        w = self.weight  # type: ignore[attr-defined]
        self.weight_noise = PNINoise(w.shape, granularity=granularity, init=init,
                                     seed=seed).to(w.device)


class _CNIWeights:
    """Mixin: a noisy layer with CNI weight noise (keyword args ``rank``, ``init_diag``,
    ``init_factor``)."""

    def __init__(self, *args: Any, rank: int = 5, init_diag: float = 0.0625,
                 init_factor: float = 0.01, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        w = self.weight  # type: ignore[attr-defined]
        self.weight_noise = CNINoise(w.shape, rank=rank, init_diag=init_diag,
                                     init_factor=init_factor, seed=seed).to(w.device)


class PNIConv2d(_PNIWeights, NoisyConv2d):
    """Conv2d with PNI weight noise: ``PNIConv2d(in, out, k, ..., granularity=, init=0.25)``."""


class PNILinear(_PNIWeights, NoisyLinear):
    """Linear with PNI weight noise: ``PNILinear(in, out, ..., granularity=, init=0.25)``."""


class CNIConv2d(_CNIWeights, NoisyConv2d):
    """Conv2d with CNI (low-rank coloured) weight noise: ``CNIConv2d(in, out, k, ..., rank=5)``."""


class CNILinear(_CNIWeights, NoisyLinear):
    """Linear with CNI (low-rank coloured) weight noise: ``CNILinear(in, out, ..., rank=5)``."""


# ----------------------------------------------------------------------------------------------
# model-level helpers
# ----------------------------------------------------------------------------------------------

def noise_modules(model: nn.Module) -> list[NoiseModule]:
    """Every :class:`NoiseModule` of ``model`` in ``model.modules()`` order."""
    return [m for m in model.modules() if isinstance(m, NoiseModule)]


def set_noise(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch every noise module of ``model`` on or off; returns ``model`` (modified in place).

    Noise is on by default, in train **and** eval mode. ``set_noise(model, False)`` gives the
    clean model (identical outputs to the model before injection).
    """
    for m in noise_modules(model):
        m.noise_enabled = bool(enabled)
    return model


@contextmanager
def noise_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: noise off inside the block, previous per-module switches restored after."""
    mods = noise_modules(model)
    saved = [m.noise_enabled for m in mods]
    try:
        for m in mods:
            m.noise_enabled = False
        yield model
    finally:
        for m, s in zip(mods, saved):
            m.noise_enabled = s


def seed_noise(model: nn.Module, seed: int) -> nn.Module:
    """Reseed every noise module (module ``i`` gets seed ``seed·1_000_003 + i``); returns it."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    for i, m in enumerate(noise_modules(model)):
        m.reseed((seed * _SEED_STRIDE + i) % (2**63 - 1))
    return model


def noise_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learnable noise parameters (α, α_d, F, learnable σ) of ``model`` — no weight decay."""
    out: list[nn.Parameter] = []
    seen: set[int] = set()
    for m in noise_modules(model):
        for p in m.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def parameter_groups(model: nn.Module, weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """Optimiser parameter groups: the model's other parameters with ``weight_decay``, the noise
    parameters with ``weight_decay = 0`` (groups that would be empty are left out)."""
    check_nonnegative("weight_decay", weight_decay)
    noise_ids = {id(p) for p in noise_parameters(model)}
    regular = [p for p in model.parameters() if id(p) not in noise_ids]
    noise = [p for p in model.parameters() if id(p) in noise_ids]
    groups: list[dict[str, Any]] = []
    if regular:
        groups.append({"params": regular, "weight_decay": float(weight_decay)})
    if noise:
        groups.append({"params": noise, "weight_decay": 0.0})
    return groups


_Shapes = dict[int, tuple[tuple[int, ...], tuple[int, ...]]]


def _activation_shapes(model: nn.Module, targets: Iterable[nn.Module],
                       input_shape: Sequence[int]) -> _Shapes:
    """Per-sample input and output shapes of ``targets`` from one forward of a zero batch."""
    shapes: _Shapes = {}

    def hook(mod: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
        shapes[id(mod)] = (tuple(inp[0].shape[1:]), tuple(out.shape[1:]))

    handles = [t.register_forward_hook(hook) for t in targets]
    modes = [(m, m.training) for m in model.modules()]
    try:
        p = next(iter(model.parameters()), None)
        dev = p.device if p is not None else torch.device("cpu")
        dt = p.dtype if p is not None else torch.float32
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=dev, dtype=dt))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
    return shapes


def _make_noise(kind: str, shape: Sequence[int], *, granularity: str, init: float | None,
                rank: int, init_factor: float, batched: bool) -> NoiseModule:
    if kind == "pni":
        return PNINoise(shape, granularity=granularity, init=0.25 if init is None else init,
                        batched=batched)
    return CNINoise(shape, rank=rank, init_diag=0.0625 if init is None else init,
                    init_factor=init_factor, batched=batched)


def _noisy_copy(layer: nn.Module, weight_noise: NoiseModule | None, act_noise: NoiseModule | None,
                act_side: str) -> nn.Module:
    """A NoisyConv2d/NoisyLinear that shares ``layer``'s parameter objects (no RNG consumed)."""
    # built on the meta device (no memory, no RNG), then given the layer's own parameters
    if type(layer) is nn.Conv2d:
        new: nn.Module = NoisyConv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size,
            stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
            groups=layer.groups, bias=layer.bias is not None, padding_mode=layer.padding_mode,
            device="meta", dtype=layer.weight.dtype)
    else:
        new = NoisyLinear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                          device="meta", dtype=layer.weight.dtype)
    new.weight = layer.weight
    new.bias = layer.bias
    dev, dt = layer.weight.device, layer.weight.dtype
    new.weight_noise = None if weight_noise is None else weight_noise.to(device=dev, dtype=dt)
    new.act_noise = None if act_noise is None else act_noise.to(device=dev, dtype=dt)
    new.act_side = act_side
    new.train(layer.training)
    return new


def add_input_noise(model: nn.Module, sigma: float, *, learnable: bool = False,
                    space: str = "pixel", std: Sequence[float] | Tensor | None = None,
                    seed: int = 0) -> nn.Sequential:
    """``nn.Sequential(InputNoise(sigma, ...), model)`` — Gaussian noise on the model's input.

    The returned model shares ``model``'s parameters (no copy); its ``state_dict`` keys gain the
    prefix ``"1."``. Put the noise in front of the normalisation (pixel space) and use
    ``space="normalized", std=...`` for σ in normalised units.
    """
    noise = InputNoise(sigma, learnable=learnable, space=space, std=std, seed=seed)
    p = next(iter(model.parameters()), None)
    if p is not None:
        noise = noise.to(device=p.device, dtype=p.dtype)
    return nn.Sequential(noise, model)


def _check_inject_args(model: Any, *, where: str, kind: str, granularity: str | None,
                       init: float | None, rank: int, act_side: str, layers: str,
                       input_sigma: float | None) -> str:
    """Validate :func:`inject_noise`'s arguments; return the PNI granularity to use."""
    check_choice("where", where, WHERES)
    check_choice("kind", kind, KINDS)
    check_choice("layers", layers, ("all", "conv", "linear"))
    check_choice("act_side", act_side, ("input", "output"))
    if kind == "cni" and granularity is not None:
        raise ValueError("granularity applies to kind='pni' only (CNI noise is low-rank + "
                         "elementwise diagonal); leave granularity=None")
    gran = "channelwise" if granularity is None else granularity
    check_choice("granularity", gran, GRANULARITIES)
    if init is not None:
        check_nonnegative("init", init)
    check_int_at_least("rank", rank, 0)
    if input_sigma is not None:
        check_nonnegative("input_sigma", input_sigma)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return gran


def _target_layers(net: nn.Module, layers: str) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of each module of ``net`` whose type is one that ``layers`` selects."""
    wanted: tuple[type, ...] = {"all": (nn.Conv2d, nn.Linear), "conv": (nn.Conv2d,),
                                "linear": (nn.Linear,)}[layers]
    if type(net) in (nn.Conv2d, nn.Linear):
        raise ValueError("model is itself a Conv2d/Linear; wrap it in nn.Sequential first")
    targets = [(name, m) for name, m in net.named_modules() if type(m) in wanted]
    if not targets:
        raise ValueError(f"model has no nn.Conv2d/nn.Linear layers to wrap (layers={layers!r})")
    return targets


def _measured_shapes(net: nn.Module, targets: list[tuple[str, nn.Module]],
                     input_shape: Sequence[int] | None) -> _Shapes:
    """Per-sample activation shapes of ``targets`` (needed by elementwise PNI and CNI noise)."""
    if input_shape is None:
        raise ValueError("activation noise with kind='cni' or granularity='elementwise' needs "
                         "input_shape=(C, H, W) to size the noise parameters")
    return _activation_shapes(net, [m for _, m in targets], input_shape)


def _act_noise_shape(name: str, layer: nn.Module, act_side: str, shapes: _Shapes | None,
                     input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """Shape of ``layer``'s activation noise: one sample's measured activation (``shapes``
    given: elementwise PNI, CNI), else one scale per channel (``C×1×1``) or feature."""
    if shapes is not None:
        if id(layer) not in shapes:
            raise ValueError(f"layer {name!r} was not used in a forward pass of input "
                             f"shape {tuple(input_shape or ())}; cannot size its noise")
        return shapes[id(layer)][0 if act_side == "input" else 1]
    if isinstance(layer, nn.Conv2d):
        ch = layer.in_channels if act_side == "input" else layer.out_channels
        return (ch, 1, 1)
    return (layer.in_features if act_side == "input" else layer.out_features,)


def inject_noise(
    model: nn.Module,
    *,
    where: str = "weights",
    kind: str = "pni",
    granularity: str | None = None,
    init: float | None = None,
    rank: int = 5,
    init_factor: float = 0.01,
    act_side: str = "output",
    layers: str = "all",
    input_shape: Sequence[int] | None = None,
    input_sigma: float | None = None,
    input_learnable: bool = False,
    input_space: str = "pixel",
    input_std: Sequence[float] | Tensor | None = None,
    inplace: bool = False,
    seed: int = 0,
) -> nn.Module:
    """Wrap every ``nn.Conv2d`` / ``nn.Linear`` of ``model`` with PNI or CNI noise.

    Args:
        model: any module; only modules whose type is exactly ``nn.Conv2d`` or ``nn.Linear`` are
            replaced (by :class:`NoisyConv2d` / :class:`NoisyLinear` sharing their parameters);
            existing noisy layers and other types are left alone.
        where: ``"weights"``, ``"activations"`` or ``"both"``.
        kind: ``"pni"`` (learned scale, granularity below) or ``"cni"`` (low-rank coloured noise,
            rank ``rank``; elementwise diagonal by construction, ``granularity`` must be None).
        granularity: PNI only: ``"layerwise"``, ``"channelwise"`` (default) or ``"elementwise"``.
        init: initial scale (PNI α, default 0.25; CNI α_d, default 0.0625). 0 gives a model that
            computes exactly the original function (with learnable scales).
        rank: CNI rank r (default 5).
        init_factor: CNI only: initial value of every entry of F (default 0.01); ``init=0`` with
            ``init_factor=0`` makes CNI noise exactly zero.
        act_side: activation noise on the layer's ``"output"`` (default, PNI "B") or
            ``"input"`` (PNI "A").
        layers: ``"all"``, ``"conv"`` (CNI-W style: convolutions only) or ``"linear"``.
        input_shape: per-sample input shape ``(C, H, W)``; required for activation noise that
            needs activation shapes (``"elementwise"`` PNI and every CNI activation noise).
        input_sigma: if given, also add Gaussian input noise (:func:`add_input_noise`) with this σ;
            ``input_learnable``, ``input_space`` and ``input_std`` configure it.
        inplace: False (default): work on a ``copy.deepcopy`` of ``model`` and leave ``model``
            untouched. True: replace the layers of ``model`` itself (the returned model then
            shares its parameter objects; with ``input_sigma`` the returned wrapper differs from
            ``model``, whose layers are nevertheless modified).
        seed: noise modules are seeded with :func:`seed_noise` (``seed``).

    Returns:
        The noisy model (a new model unless ``inplace=True``). Noise is on in train and eval mode;
        see :func:`set_noise`.
    """
    gran = _check_inject_args(model, where=where, kind=kind, granularity=granularity, init=init,
                              rank=rank, act_side=act_side, layers=layers, input_sigma=input_sigma)
    net = model if inplace else copy.deepcopy(model)
    targets = _target_layers(net, layers)
    want_act = where in ("activations", "both")
    need_shapes = want_act and (kind == "cni" or gran == "elementwise")
    shapes = _measured_shapes(net, targets, input_shape) if need_shapes else None

    for name, layer in targets:
        wn = None
        if where in ("weights", "both"):
            wn = _make_noise(kind, layer.weight.shape, granularity=gran, init=init, rank=rank,
                             init_factor=init_factor, batched=False)
        an = None
        if want_act:
            ashape = _act_noise_shape(name, layer, act_side, shapes, input_shape)
            an = _make_noise(kind, ashape, granularity=gran, init=init, rank=rank,
                             init_factor=init_factor, batched=True)
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, _noisy_copy(layer, wn, an, act_side))

    if input_sigma is not None:
        net = add_input_noise(net, input_sigma, learnable=input_learnable, space=input_space,
                              std=input_std)
    seed_noise(net, seed)
    return net
