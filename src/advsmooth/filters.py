"""Low-pass filters (Gaussian / linear / uniform / custom kernels) and the roughness metric.

One :class:`LowPassFilter` object serves SmoothFool (the smoothing filter ``g``), SmoothClip (mask
spreading), smooth universal perturbations and the roughness metric (filter ``h``). Filtering is
depthwise: every channel is filtered on its own with the same kernel, channels are never mixed.
Separable kernels run as two depthwise ``conv2d`` calls (``C×1×K×1`` then ``C×1×1×K``), so the
cost is O(K) per pixel; on small images (at most :data:`MATRIX_MAX_PIXELS` pixels, e.g. MNIST and
CIFAR-10) as two matrix products ``M_H·X·M_Wᵀ`` instead, where ``M_H`` (``H×H``) is the 1-D
filtering along H, padding included, applied to the identity — the same linear map, one GEMM
instead of a long depthwise convolution (30-100× faster on 32×32 images with 11-63 taps).

Kernel size and the image size
------------------------------
A kernel never needs more than ``2·max(H, W) − 1`` taps on an ``H×W`` image: a tap farther than
``max(H, W) − 1`` pixels from the centre reads only padding. On each call the taps beyond that
half-width are therefore dropped (``padding="zeros"``: they multiply zeros) or added to the
outermost kept tap (``"replicate"``, and ``"reflect"`` where it falls back to replicate: every
padded pixel beyond the edge equals the edge pixel), which leaves every output value unchanged
(to float rounding) and bounds the cost by the image, whatever σ. (``"circular"`` keeps the whole
kernel.) Absurd parameters are refused: σ above :data:`MAX_SIGMA` pixels and sizes above
:data:`MAX_SIZE` taps (such a Gaussian is flat over any image; a wider one would only cost
memory — σ = 10⁸ would need 4 GB of taps).

>>> import torch
>>> g = LowPassFilter("gaussian", 2.0)
>>> g.size
11
>>> x = torch.rand(2, 3, 16, 16)
>>> g(x).shape
torch.Size([2, 3, 16, 16])
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._utils import check_choice, check_positive, warn_caller

__all__ = ["LowPassFilter", "gaussian_kernel1d", "roughness", "PADDINGS", "KINDS", "METHODS"]

#: supported padding modes
PADDINGS = ("zeros", "replicate", "reflect", "circular")
#: supported named kernels
KINDS = ("gaussian", "linear", "uniform")
#: supported kernel-size rules for the Gaussian
SIZE_RULES = ("odd", "ref")
#: how separable kernels are applied: "auto" = matrix products on images of at most
#: MATRIX_MAX_PIXELS pixels, else FFT for kernels longer than FFT_MIN_SIZE taps, else direct
METHODS = ("auto", "direct", "fft", "matrix")
FFT_MIN_SIZE = 65
MATRIX_MAX_PIXELS = 64 * 64
#: largest accepted Gaussian σ (pixels) and kernel size (taps) of the named kernels
MAX_SIGMA = 1e4
MAX_SIZE = 2 * int(2.5 * MAX_SIGMA) + 1


def _gaussian_size(sigma: float, size_rule: str) -> int:
    if size_rule == "odd":
        return 2 * int(math.floor(2.5 * sigma)) + 1
    k5 = 5.0 * sigma
    if abs(k5 - round(k5)) > 1e-9:
        raise ValueError(
            f"size_rule='ref' uses K = int(5*sigma) taps and needs 5*sigma to be an integer, "
            f"got sigma={sigma!r} (5*sigma={k5:g}); use size_rule='odd' for arbitrary sigma"
        )
    return int(round(k5))


def gaussian_kernel1d(sigma: float, size: int | None = None, *, dtype: torch.dtype = torch.float64,
                      device: torch.device | str | None = None) -> Tensor:
    """Normalised 1-D Gaussian taps ``k[i] ∝ exp(-(i-c)² / (2σ²))``, ``c = (size-1)/2``, sum 1.

    Args:
        sigma: standard deviation in pixels (> 0).
        size: number of taps; default ``2*floor(2.5σ)+1`` (odd, ≈ 5σ; 1 tap — the identity —
            for ``σ < 0.4``). An even size gives a kernel centred between two taps.

    Returns:
        A 1-D tensor of ``size`` taps summing to 1.
    """
    _check_sigma("sigma", sigma)
    k = _gaussian_size(float(sigma), "odd") if size is None else size
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k > MAX_SIZE:
        raise ValueError(f"size must be an integer in [1, {MAX_SIZE}], got {size!r}")
    c = (k - 1) / 2.0
    i = torch.arange(k, dtype=torch.float64)
    taps = torch.exp(-((i - c) ** 2) / (2.0 * float(sigma) ** 2))
    taps = taps / taps.sum()
    return taps.to(dtype=dtype, device=device)


def _check_sigma(name: str, sigma: Any) -> float:
    check_positive(name, sigma)
    if sigma > MAX_SIGMA:
        raise ValueError(f"{name} = {sigma:g} pixels is absurdly wide: it must be <= {MAX_SIGMA:g} "
                         "(a Gaussian that wide is flat over any image; kernels are truncated to "
                         "the image size anyway)")
    return float(sigma)


def _linear_kernel1d(k: int) -> Tensor:
    if k == 1:
        return torch.ones(1, dtype=torch.float64)
    c = (k - 1) / 2.0
    i = torch.arange(k, dtype=torch.float64)
    taps = c - (i - c).abs()
    return taps / taps.sum()


def _pad_amounts(k: int) -> tuple[int, int]:
    """Padding (before, after) along one axis for a kernel of ``k`` taps (even: int(5σ) rule)."""
    if k % 2 == 1:
        return k // 2, k // 2
    return k // 2 - 1, k // 2


def _wrap_index(n: int, lo: int, hi: int, mode: str, device: torch.device) -> Tensor:
    idx = torch.arange(-lo, n + hi, device=device)
    if mode == "circular":
        return idx.remainder(n)
    return idx.clamp(0, n - 1)  # replicate


class LowPassFilter:
    """A depthwise low-pass filter on ``N×C×H×W`` tensors (output has the same shape).

    Args:
        kind: ``"gaussian"`` (parameter σ in pixels), ``"linear"`` (triangular, parameter = size k),
            ``"uniform"`` (box, parameter = size k), or a user kernel tensor: 1-D (applied along H
            then along W, i.e. the separable outer product) or 2-D ``Kh×Kw`` (one depthwise
            convolution). User kernels are used as given (not renormalised).
        param: σ for the Gaussian, the size k for linear/uniform; ignored for a user kernel.
        method: ``"direct"`` (depthwise convolutions), ``"fft"`` (1-D FFT convolutions along H
            and W, for separable kernels), ``"matrix"`` (``M_H·X·M_Wᵀ``, module docstring) or
            ``"auto"`` (default: matrix on images of at most 64×64 pixels, else FFT when K > 64,
            else direct). All agree to float rounding (≤ 1e-5 in float32). Half-precision inputs
            always use the direct convolutions (no CPU FFT in half precision). K here is the
            kernel after bounding it by the image size (module docstring).
        padding: ``"zeros"`` (default; the attack filter g), ``"replicate"`` (keeps constants
            everywhere; the roughness filter h), ``"reflect"`` (falls back to ``"replicate"`` with a
            warning when the kernel half-width is >= H or W), ``"circular"``.
        size_rule: Gaussian kernel size, ``"odd"`` (default, ``K = 2*floor(2.5σ)+1``; the identity
            for σ < 0.4) or ``"ref"`` (``K = int(5σ)`` as in the SmoothFool reference code; 5σ
            must be an integer; even sizes are padded ``(K//2-1, K//2)``, a half-pixel shift).

    The kernel taps sum to 1 for the named kinds, so constant images are preserved away from the
    borders. Kernels are cached per (channels, dtype, device).
    """

    def __init__(self, kind: str | Tensor = "gaussian", param: float | None = None, *,
                 padding: str = "zeros", size_rule: str = "odd", method: str = "auto") -> None:
        self.padding = check_choice("padding", padding, PADDINGS)
        self.method = check_choice("method", method, METHODS)
        self.size_rule = check_choice("size_rule", size_rule, SIZE_RULES)
        self._cache: dict[tuple[Any, ...], tuple[Tensor, ...]] = {}
        self._separable = True
        if isinstance(kind, Tensor):
            ker = kind.detach().to(torch.float64).cpu()
            if ker.ndim not in (1, 2) or ker.numel() == 0:
                raise ValueError(f"a user kernel must be a non-empty 1-D or 2-D tensor, "
                                 f"got shape {tuple(kind.shape)}")
            if not bool(torch.isfinite(ker).all()):
                raise ValueError("the user kernel contains NaN or Inf")
            self.kind = "custom"
            self.param = None
            if ker.ndim == 1:
                self._k1d: Tensor | None = ker
                self._k2d: Tensor | None = None
            else:
                self._separable = False
                self._k1d = None
                self._k2d = ker
        elif kind == "gaussian":
            if param is None:
                raise ValueError("param (sigma) is required for kind='gaussian'")
            _check_sigma("param (sigma)", param)
            self.kind, self.param = "gaussian", float(param)
            size = _gaussian_size(self.param, size_rule)
            self._k1d = (gaussian_kernel1d(self.param, size) if size >= 1
                         else torch.ones(1, dtype=torch.float64))
            self._k2d = None
        elif kind in ("linear", "uniform"):
            if isinstance(param, bool) or not isinstance(param, int) or not 1 <= param <= MAX_SIZE:
                raise ValueError(f"param (kernel size k) must be an integer in [1, {MAX_SIZE}] "
                                 f"for kind={kind!r}, got {param!r}")
            if kind == "linear" and param == 2:
                raise ValueError("param (kernel size k) = 2 gives an all-zero triangular kernel; "
                                 "use k = 1 or k >= 3")
            self.kind, self.param = kind, int(param)
            self._k1d = (_linear_kernel1d(param) if kind == "linear"
                         else torch.full((param,), 1.0 / param, dtype=torch.float64))
            self._k2d = None
        else:
            raise ValueError(f"kind must be one of {KINDS} or a kernel tensor, got {kind!r}")

    # -- description -------------------------------------------------------------------------
    @property
    def size(self) -> int | tuple[int, int]:
        """Kernel size K (``(Kh, Kw)`` for a 2-D user kernel)."""
        if self._k1d is not None:
            return int(self._k1d.numel())
        assert self._k2d is not None
        return int(self._k2d.shape[0]), int(self._k2d.shape[1])

    @property
    def is_identity(self) -> bool:
        """True for a 1-tap kernel equal to 1 (then filtering returns the input unchanged)."""
        return self._k1d is not None and self._k1d.numel() == 1 and float(self._k1d[0]) == 1.0

    def kernel1d(self) -> Tensor:
        """The 1-D taps (float64); raises ``ValueError`` for a non-separable 2-D user kernel."""
        if self._k1d is None:
            raise ValueError("this filter has a non-separable 2-D kernel")
        return self._k1d.clone()

    def kernel2d(self) -> Tensor:
        """The 2-D kernel (float64): the outer product of the 1-D taps, or the user 2-D kernel."""
        if self._k1d is not None:
            return torch.outer(self._k1d, self._k1d)
        assert self._k2d is not None
        return self._k2d.clone()

    def __repr__(self) -> str:
        what = f"{self.kind!r}" if self.param is None else f"{self.kind!r}, {self.param!r}"
        extra = f", size_rule={self.size_rule!r}" if self.kind == "gaussian" else ""
        return f"LowPassFilter({what}, padding={self.padding!r}{extra}, size={self.size})"

    # -- filtering -------------------------------------------------------------------------------
    def _taps(self, h: int, w: int, mode: str) -> tuple[Tensor, int, int]:
        """The 1-D taps used on an ``h×w`` image and their padding ``(before, after)``: the
        kernel bounded by the image size (module docstring), exact for ``mode``."""
        assert self._k1d is not None
        k = self._k1d
        lo, hi = _pad_amounts(k.numel())
        reach = max(h, w) - 1
        if mode == "circular" or (lo <= reach and hi <= reach):
            return k, lo, hi
        a, b = min(lo, reach), min(hi, reach)
        t = k[lo - a:lo + b + 1].clone()
        if mode != "zeros":  # replicate: every tap beyond the edge reads the edge pixel
            t[0] += k[:lo - a].sum()
            t[-1] += k[lo + b + 1:].sum()
        return t, a, b

    def _weights(self, c: int, dtype: torch.dtype, device: torch.device,
                 taps: Tensor | None = None) -> tuple[Tensor, ...]:
        key = (c, dtype, device, None if taps is None else taps.numel())
        w = self._cache.get(key)
        if w is None:
            if self._k1d is not None:
                k = (self._k1d if taps is None else taps).to(dtype=dtype, device=device)
                kk = k.numel()
                w = (k.view(1, 1, kk, 1).expand(c, 1, kk, 1).contiguous(),
                     k.view(1, 1, 1, kk).expand(c, 1, 1, kk).contiguous())
            else:
                assert self._k2d is not None
                k2 = self._k2d.to(dtype=dtype, device=device)
                w = (k2.view(1, 1, *k2.shape).expand(c, 1, *k2.shape).contiguous(),)
            self._cache[key] = w
        return w

    def _matrix(self, n: int, taps: Tensor, lo: int, hi: int, mode: str, dtype: torch.dtype,
                device: torch.device) -> Tensor:
        """``M`` (``n×n``): the 1-D filtering with ``taps`` along an axis of length ``n``, padding
        ``(lo, hi)`` in ``mode`` included, as a matrix (``y = M·x``); built in float64 by
        filtering the identity's columns, cached."""
        key = ("matrix", n, taps.numel(), lo, hi, mode, dtype, device)
        cached = self._cache.get(key)
        if cached is None:
            eye = torch.eye(n, dtype=torch.float64).view(n, 1, n, 1)  # e_j as an n×1 image
            k = taps.to(torch.float64).view(1, 1, -1, 1)
            cols = F.conv2d(self._pad_axis(eye, 2, lo, hi, mode), k)  # row j: the filtered e_j
            cached = (cols.view(n, n).T.to(dtype=dtype, device=device).contiguous(),)
            self._cache[key] = cached
        return cached[0]

    def _mode(self, kh: int, kw: int, h: int, w: int) -> str:
        mode = self.padding
        if mode == "reflect" and (kh // 2 >= h or kw // 2 >= w):
            warn_caller(
                f"reflect padding needs the kernel half-width < image size (kernel {kh}×{kw}, "
                f"image {h}×{w}); falling back to replicate padding")
            mode = "replicate"
        return mode

    @staticmethod
    def _pad_axis(x: Tensor, dim: int, lo: int, hi: int, mode: str) -> Tensor:
        if lo == 0 and hi == 0:
            return x
        if mode == "zeros":
            pad = (0, 0, lo, hi) if dim == 2 else (lo, hi, 0, 0)
            return F.pad(x, pad)
        if mode == "reflect":
            pad = (0, 0, lo, hi) if dim == 2 else (lo, hi, 0, 0)
            return F.pad(x, pad, mode="reflect")
        idx = _wrap_index(x.shape[dim], lo, hi, mode, x.device)
        return x.index_select(dim, idx)

    def __call__(self, x: Tensor) -> Tensor:
        """Filter ``x`` (``N×C×H×W``, floating) channel by channel; returns a new tensor."""
        if not isinstance(x, Tensor) or x.ndim != 4:
            raise ValueError(f"LowPassFilter expects an N×C×H×W tensor, got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"LowPassFilter expects a floating-point tensor, got {x.dtype}")
        if min(x.shape[1:]) == 0:
            raise ValueError(f"LowPassFilter expects images with C, H, W >= 1, got shape "
                             f"{tuple(x.shape)}")
        if self.is_identity or x.numel() == 0:
            return x.clone()
        n, c, h, w = x.shape
        if self._separable:
            k = self.size
            assert isinstance(k, int)
            mode = self._mode(k, k, h, w)
            taps, lo, hi = self._taps(h, w, mode)
            k = taps.numel()
            # half precision has no CPU FFT: always the direct convolutions
            half = x.dtype in (torch.float16, torch.bfloat16)
            if not half and (self.method == "matrix"
                             or (self.method == "auto" and h * w <= MATRIX_MAX_PIXELS)):
                mh = self._matrix(h, taps, lo, hi, mode, x.dtype, x.device)
                mw = mh if w == h else self._matrix(w, taps, lo, hi, mode, x.dtype, x.device)
                return torch.matmul(torch.matmul(mh, x), mw.T)
            if not half and (self.method == "fft"
                             or (self.method == "auto" and k >= FFT_MIN_SIZE)):
                k1 = taps.to(dtype=x.dtype, device=x.device)
                y = _fft_correlate(self._pad_axis(x, 2, lo, hi, mode), k1, 2)
                return _fft_correlate(self._pad_axis(y, 3, lo, hi, mode), k1, 3)
            wh, ww = self._weights(c, x.dtype, x.device, None if k == self.size else taps)
            if mode == "zeros" and lo == hi:
                y = F.conv2d(x, wh, padding=(lo, 0), groups=c)
                return F.conv2d(y, ww, padding=(0, lo), groups=c)
            y = F.conv2d(self._pad_axis(x, 2, lo, hi, mode), wh, groups=c)
            return F.conv2d(self._pad_axis(y, 3, lo, hi, mode), ww, groups=c)
        weights = self._weights(c, x.dtype, x.device)
        kh, kw = self.size  # type: ignore[misc]
        mode = self._mode(kh, kw, h, w)
        (lo_h, hi_h), (lo_w, hi_w) = _pad_amounts(kh), _pad_amounts(kw)
        y = self._pad_axis(self._pad_axis(x, 2, lo_h, hi_h, mode), 3, lo_w, hi_w, mode)
        return F.conv2d(y, weights[0], groups=c)


def _fft_correlate(xp: Tensor, k: Tensor, dim: int) -> Tensor:
    """Valid 1-D cross-correlation of ``xp`` (already padded along ``dim``) with taps ``k``.

    ``y[i] = Σ_j xp[i+j]·k[j]`` for ``i < L−K+1``; a circular correlation of length L has no
    wrap-around for those indices, so the FFT length L suffices.
    """
    big = xp.transpose(dim, -1)
    length = big.shape[-1]
    out = length - k.numel() + 1
    spec = torch.fft.rfft(big, n=length, dim=-1) * torch.fft.rfft(k, n=length).conj()
    y = torch.fft.irfft(spec, n=length, dim=-1)[..., :out]
    return y.transpose(dim, -1).contiguous()


# ----------------------------------------------------------------------------------------------
# roughness
# ----------------------------------------------------------------------------------------------

def roughness(r: Tensor, sigma_h: float = 1.0, normalized: bool = False,
              padding: str = "replicate", filter: LowPassFilter | None = None) -> Tensor:
    """Roughness of perturbations: ``Ω = ||r − h∗r||²`` per sample (sum over C, H, W).

    Args:
        r: perturbations ``N×C×H×W`` (pixel space).
        sigma_h: σ of the Gaussian filter h (default 1, i.e. 5 taps, as in the SmoothFool paper).
        normalized: return ``Ωn = Ω / ||r||²`` instead (0 where ``r = 0``); scale-invariant.
        padding: padding of h (default ``"replicate"``, so a constant perturbation has Ω = 0).
        filter: a :class:`LowPassFilter` to use as h instead of the Gaussian (``sigma_h`` and
            ``padding`` are then ignored).

    Returns:
        ``(N,)`` tensor (dtype of ``r``). ``Ω(c·r) = c²·Ω(r)`` (``inf`` where that leaves the
        dtype's range; ``Ωn`` is computed on a rescaled copy then, and stays finite). For the
        default Gaussian h (σ_h = 1, replicate padding) ``Ωn`` lies in ``[0, 1]``; for other
        filters ``Ωn`` can exceed 1 slightly where the filter's frequency response is negative
        (truncated Gaussians with large σ, box kernels) — it is not clamped.

    The paper reports Ω×10³ and Ωn×10³.
    """
    if not isinstance(r, Tensor) or r.ndim != 4 or not r.is_floating_point():
        raise ValueError("r must be a floating-point N×C×H×W tensor, got "
                         + (f"dtype {r.dtype}, shape {tuple(r.shape)}" if isinstance(r, Tensor)
                            else type(r).__name__))
    if min(r.shape[1:]) == 0:
        raise ValueError(f"r must have C, H, W >= 1, got shape {tuple(r.shape)}")
    if r.numel() and not bool(torch.isfinite(r).all()):
        raise ValueError("r contains NaN or Inf values")
    h = filter if filter is not None else _roughness_filter(float(sigma_h), padding)
    diff = (r - h(r)).flatten(1)
    omega = (diff * diff).sum(dim=1)
    if not normalized:
        return omega
    energy = (r.flatten(1) ** 2).sum(dim=1)
    big = ~torch.isfinite(omega) | ~torch.isfinite(energy)
    if bool(big.any()):  # squares beyond the dtype's range: Ωn is scale-invariant, so rescale
        rb = r[big] / r[big].flatten(1).abs().amax(dim=1).view(-1, 1, 1, 1)
        db = (rb - h(rb)).flatten(1)
        omega, energy = omega.clone(), energy.clone()
        omega[big], energy[big] = (db * db).sum(dim=1), (rb.flatten(1) ** 2).sum(dim=1)
    return torch.where(energy > 0, omega / energy.clamp_min(torch.finfo(r.dtype).tiny),
                       torch.zeros_like(omega))


_H_CACHE: dict[tuple[float, str], LowPassFilter] = {}


def _roughness_filter(sigma_h: float, padding: str) -> LowPassFilter:
    key = (sigma_h, padding)
    f = _H_CACHE.get(key)
    if f is None:
        if not sigma_h > 0 or not math.isfinite(sigma_h):
            raise ValueError(f"sigma_h must be a finite number > 0, got {sigma_h!r}")
        f = LowPassFilter("gaussian", sigma_h, padding=padding)
        if len(_H_CACHE) > 64:
            _H_CACHE.clear()
        _H_CACHE[key] = f
    return f
