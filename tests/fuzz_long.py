"""Long fuzz run of the public API (not collected by pytest; the suite runs ``test_fuzz.py``).

Makes ``--calls`` (default 10,000) seeded random calls across every attack of the registry plus
NAttack, EPGD, DeepFool with clipping and SmoothFool; ``SmoothedClassifier`` forward / predict /
certify; the metrics (fooling_rate, per_class_fooling_rate, robustness, roughness); the
low-pass filters; and ``data.load("npz:…")``. Inputs carry NaN/Inf, out-of-range values, empty
batches and images, wrong rank, wrong dtype (float16/64, bfloat16, integers, bool, ndarray),
non-contiguous and channels-last layouts, bad labels; models are hostile (NaN/Inf logits,
NaN only away from the clean images, NaN gradients, one row short, integer logits, a tuple,
one binary score, huge logits) with 1, 2, 3 or 5 outputs; parameters are extreme (NaN, negative,
0, 1e9, σ = 1e12, ...). Each outcome is one of

* ``ok``: the call returned and every check passed;
* ``clean error``: ``ValueError``/``TypeError`` with a one-line message (the documented errors);
* ``other exception``: anything else (a traceback from inside torch/numpy, a multi-line
  message, an ``IndexError``, ...);
* ``non-finite``: a returned tensor/number holds NaN/Inf where the API promises finite values;
* ``silent wrong``: a result that is wrong without an error — ``x_adv`` outside ``[0, 1]`` with
  clipping on, outside the ε-ball, ``success``/``adv_pred`` disagreeing with a fresh forward of
  the model, an invalid input or hostile model accepted, a filter that breaks a constant image,
  a certificate with a negative radius, a fooling rate outside ``[0, 1]``, ...

Run (a few minutes on two CPU cores)::

    PYTHONPATH=src ADVSMOOTH_NO_PROGRESS=1 python tests/fuzz_long.py --calls 10000 --seed 0

It prints one JSON report (``--json PATH`` also writes it) with the counts per outcome and per
target, and up to ``--show`` examples of each failure; the exit status is 1 if any call ended in
``other exception``, ``non-finite`` or ``silent wrong``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

import advsmooth as asm
from advsmooth.attacks import DeepFool, SmoothFool
from advsmooth.attacks.registry import REGISTRY, build
from advsmooth.defenses import SmoothedClassifier
from advsmooth.filters import LowPassFilter, roughness
from advsmooth.metrics import fooling_rate, per_class_fooling_rate, robustness

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_fuzz import AnySize  # noqa: E402 - the tests folder is no package
from test_invariance import EXTRA as INVARIANCE_EXTRA  # noqa: E402
from test_invariance import SMALL  # noqa: E402

#: tiny budgets per registered attack, and the attacks outside the registry (shared with the
#: invariance tests), plus DeepFool with clipping and SmoothFool with a small gradient budget
EXTRA: dict[str, Callable[[], Any]] = {
    **INVARIANCE_EXTRA,
    "deepfool-clip": lambda: DeepFool(max_iter=5, clip=True),
    "smoothfool-budget": lambda: SmoothFool(sigma=1.0, max_iter=50, grad_budget=20,
                                            progress_bar=False),
}
ATTACKS = sorted(REGISTRY) + sorted(EXTRA)
#: extreme values tried for the attacks' main parameter
EXTREME = [math.nan, math.inf, -1.0, 0.0, 1e-12, 1e9, 2, "x", None, True]
HOSTILE = ["nan", "inf", "nan_away", "nan_grad", "short", "int", "tuple", "huge"]
CLEAN_ERRORS = (ValueError, TypeError)


class Tiny(AnySize):
    """The fuzz tests' any-size classifier with ``k`` outputs, made hostile by ``kind``
    (``"ok"`` is benign; ``k = 1`` is a binary classifier with one score)."""

    def __init__(self, c: int, k: int, kind: str = "ok") -> None:
        super().__init__(c, k)
        self.kind = kind

    def forward(self, x: torch.Tensor) -> Any:
        z = super().forward(x)
        kind = self.kind
        if kind == "nan":
            return z * math.nan
        if kind == "inf":
            return z - math.inf
        if kind == "nan_away":  # finite on the clean images (>= 0.3), NaN where a pixel < 0.3
            return z + torch.log(x.flatten(1).amin(1, keepdim=True) - 0.29)
        if kind == "nan_grad":
            return z + torch.sqrt(x.flatten(1)[:, :1] * 0.0)
        if kind == "short":
            return z[:-1] if z.shape[0] else z[:0, :0]
        if kind == "int":
            return z.round().to(torch.int64)
        if kind == "tuple":
            return (z, z)
        if kind == "huge":
            return z * 1e36
        return z


_MODELS: dict[tuple[int, int, str], Tiny] = {}


def model_for(c: int, k: int, kind: str) -> Tiny:
    key = (c, k, kind)
    if key not in _MODELS:
        _MODELS[key] = Tiny(c, k, kind).eval()
    return _MODELS[key]


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------

CORRUPT = ["none"] * 40 + ["nan", "inf", "high", "low", "float64", "float16", "bfloat16",
                           "uint8", "int64", "bool", "rank3", "rank5", "noncontig", "noncontig",
                           "channels_last", "zero_hw", "ndarray", "list"]
LABELS = ["valid"] * 30 + ["none", "out_of_range", "negative", "too_long", "float", "2d",
                          "ndarray"]


def make_input(rng: random.Random) -> dict[str, Any]:
    n = rng.choice([0, 1, 1, 2, 3, 4])
    c = rng.choice([1, 3])
    h, w = rng.randint(1, 9), rng.randint(1, 9)
    corrupt = rng.choice(CORRUPT)
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    base = torch.rand(n, c, h, w, generator=g) * 0.7 + 0.3   # >= 0.3: "nan_away" is finite here
    x: Any = base
    valid = True
    if corrupt in ("nan", "inf", "high", "low"):
        if n:
            x = base.clone()
            x.view(-1)[rng.randrange(x.numel())] = {"nan": math.nan, "inf": math.inf,
                                                    "high": 1.5, "low": -0.25}[corrupt]
            valid = False
    elif corrupt in ("float64", "float16", "bfloat16"):
        x = base.to(getattr(torch, corrupt))
        valid = False  # the models are float32
    elif corrupt == "uint8":
        x, valid = (base * 255).to(torch.uint8), False
    elif corrupt == "int64":
        x, valid = base.round().to(torch.int64), False
    elif corrupt == "bool":
        x, valid = base > 0.5, False
    elif corrupt == "rank3":
        x, valid = base[:, 0], False
    elif corrupt == "rank5":
        x, valid = base[None], False
    elif corrupt == "noncontig":  # the same values, a strided view
        x = torch.rand(n, c, w, h, generator=g).mul(0.7).add(0.3).transpose(2, 3)
        base = x
    elif corrupt == "channels_last":  # N×H×W×C handed over as if it were N×C×H×W
        h, w = rng.randint(5, 9), rng.randint(5, 9)
        x = torch.rand(n, h, w, c, generator=g) * 0.7 + 0.3
        valid = False
    elif corrupt == "zero_hw":
        x, valid = torch.zeros(n, c, 0, w), False
    elif corrupt == "ndarray":
        x, valid = base.numpy(), False
    elif corrupt == "list":
        x, valid = base.tolist(), False
    return dict(n=n, c=c, h=h, w=w, x=x, base=base, valid=valid, corrupt=corrupt, g=g)


def make_labels(rng: random.Random, n: int, k: int, g: torch.Generator) -> tuple[Any, bool]:
    kind = rng.choice(LABELS)
    kk = max(k, 2)
    y = torch.randint(0, kk, (n,), generator=g)
    out = {"valid": y, "none": None, "out_of_range": y + kk, "negative": y - kk,
           "too_long": torch.cat([y, y.new_zeros(1)]), "float": y.float(), "2d": y[:, None],
           "ndarray": y.numpy()}[kind]
    ok = kind in ("valid", "none", "ndarray") or (n == 0 and kind in ("out_of_range", "negative"))
    return out, ok


# ----------------------------------------------------------------------------------------------
# the checks
# ----------------------------------------------------------------------------------------------

class Wrong(Exception):
    """A silent wrong result (the message says what)."""


class NonFinite(Exception):
    """A non-finite output."""


def finite(t: Any, what: str) -> None:
    if isinstance(t, torch.Tensor):
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            raise NonFinite(what)
    elif isinstance(t, float) and not math.isfinite(t):
        raise NonFinite(what)


def fresh_pred(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        z = model(x)
    z = z[:, None] if z.ndim == 1 else z
    return (z[:, 0] > 0).long() if z.shape[1] == 1 else z.argmax(1)


def check_attack(name: str, atk: Any, model: nn.Module, x: torch.Tensor, res: Any) -> None:
    n = x.shape[0]
    for f in ("success", "iterations", "forward_evals", "grad_evals", "adv_pred", "labels"):
        if getattr(res, f).shape != (n,):
            raise Wrong(f"{f} has shape {tuple(getattr(res, f).shape)} for {n} inputs")
    if res.x_adv.shape != x.shape or res.x_adv.dtype != x.dtype:
        raise Wrong("x_adv shape/dtype differs from x")
    finite(res.x_adv, "x_adv")
    clip = getattr(atk, "clip", True) if isinstance(atk, DeepFool) else True
    if clip and res.x_adv.numel() and (float(res.x_adv.min()) < 0 or float(res.x_adv.max()) > 1):
        raise Wrong(f"x_adv in [{float(res.x_adv.min()):.3g}, {float(res.x_adv.max()):.3g}] "
                    "with clipping on")
    eps = getattr(atk, "eps", None)
    if isinstance(eps, float) and n:
        norm = getattr(atk, "norm", "inf")
        d = (res.x_adv - x).flatten(1).double()
        size = d.abs().amax(1) if norm in ("inf", math.inf) else d.norm(dim=1)
        if bool((size > eps * (1 + 1e-5) + 1e-6).any()):
            raise Wrong(f"perturbation {float(size.max()):.4g} outside the eps = {eps} ball")
    if n:
        pred = fresh_pred(model, res.x_adv)
        if not torch.equal(pred, res.adv_pred):
            raise Wrong("adv_pred disagrees with a fresh forward of the model at x_adv")
        want = pred != res.labels if res.target is None else pred == res.target
        if not torch.equal(want, res.success):
            raise Wrong("success disagrees with a fresh forward of the model at x_adv")


# ----------------------------------------------------------------------------------------------
# the targets: each returns (callable, expected_ok, checker)
# ----------------------------------------------------------------------------------------------

def t_attack(rng: random.Random) -> tuple[str, Callable[[], Any], bool, Callable[[Any], None]]:
    name = rng.choice(ATTACKS)
    inp = make_input(rng)
    k = rng.choice([1, 2, 2, 2, 3, 3, 5, 5])
    kind = "ok" if rng.random() < 0.85 else rng.choice(HOSTILE)
    c = inp["c"]
    model = model_for(c, k, kind)
    y, y_ok = make_labels(rng, inp["n"], k, inp["g"])
    extreme = rng.random() < 0.1
    params = dict(SMALL.get(name, {}))
    key = None
    if extreme:
        key = next((p for p in ("eps", "sigma", "max_iter", "steps") if p in params), None)
        if key is not None:
            params[key] = rng.choice(EXTREME)

    def make() -> Any:
        return EXTRA[name]() if name in EXTRA else build(name, **params, seed=0)

    universal = name in REGISTRY and REGISTRY[name].kind == "universal"
    x = inp["x"]
    rgb_only = name == "color-shift" and c != 3
    hostile_hard = kind in ("nan", "inf", "short", "int", "tuple")
    # None: either a clean error or a checked result is right (an extreme value that may be
    # legal, NaN only away from the clean images, a binary score some attacks support)
    expect_ok: bool | None = (inp["valid"] and not hostile_hard and not rgb_only
                              and (not universal or inp["n"] > 0) and (universal or y_ok))
    if expect_ok and ((extreme and key is not None and name not in EXTRA) or k == 1
                      or kind in ("nan_away", "nan_grad", "huge")):
        expect_ok = None
    if inp["n"] == 0 and hostile_hard and inp["valid"]:
        expect_ok = None  # an empty batch never reaches the model
    if universal:

        def call() -> Any:
            return make().fit(model, x)

        def check(v: Any) -> None:
            finite(v, "universal perturbation")
            if v.shape != (1, *x.shape[1:]):
                raise Wrong(f"perturbation shape {tuple(v.shape)}")
        return f"attack:{name}", call, expect_ok, check

    def call() -> Any:
        return make()(model, x, y)

    def check(res: Any) -> None:
        check_attack(name, make(), model, x, res)
    return f"attack:{name}", call, expect_ok, check


def t_smoothed(rng: random.Random) -> tuple[str, Callable[[], Any], bool, Callable[[Any], None]]:
    inp = make_input(rng)
    k = rng.choice([1, 2, 3, 5])
    kind = "ok" if rng.random() < 0.6 else rng.choice(HOSTILE)
    model = model_for(inp["c"], k, kind)
    sigma = rng.choice([0.0, 0.1, 0.5, 0.25] + ([-1.0, math.nan, 1e12] if rng.random() < .1
                                                else []))
    samples = rng.choice([1, 2, 4, 8])
    vote = rng.choice(["prediction", "soft", "logit_mean", "weighted"])
    what = rng.choice(["forward", "predict", "predict_alpha", "certify"])
    x = inp["x"]
    bad_params = not (isinstance(sigma, float) and math.isfinite(sigma) and sigma >= 0)
    # a binary score (k = 1) is no N×K logits: the smoothed classifier refuses it
    expect_ok: bool | None = (inp["valid"] and inp["n"] > 0 and k > 1 and not bad_params
                              and kind in ("ok", "nan_away", "nan_grad", "huge"))
    if expect_ok and (kind in ("nan_away", "huge") or sigma == 1e12):
        expect_ok = None  # NaN/overflow only where the noise takes the copies

    def call() -> Any:
        sc = SmoothedClassifier(model, sigma=sigma, samples=samples, vote=vote, seed=0)
        if what == "forward":
            return sc(x)
        if what == "predict":
            return sc.predict(x)
        if what == "predict_alpha":
            return sc.predict(x, alpha=0.1, n=8)
        return sc.certify(x, n0=4, n=16, alpha=0.05)

    def check(out: Any) -> None:
        n = inp["n"]
        if what == "forward":
            finite(out, "smoothed scores")
            if out.shape != (n, k):
                raise Wrong(f"scores shape {tuple(out.shape)}")
            if vote != "logit_mean" and not torch.allclose(out.sum(1), torch.ones(n), atol=1e-4):
                raise Wrong("vote shares do not sum to 1")
        elif what.startswith("predict"):
            if out.shape != (n,) or bool(((out < -1) | (out >= k)).any()):
                raise Wrong(f"predictions {out.tolist()} outside [-1, {k})")
            if what == "predict" and sigma == 0.0 and vote in ("prediction", "soft"):
                if not torch.equal(out, fresh_pred(model, x)):
                    raise Wrong("sigma = 0 prediction differs from the base model")
        else:
            finite(out.radius, "certified radius")
            finite(out.p_lower, "p_lower")
            if bool((out.radius < 0).any()) or bool(((out.p_lower < 0) | (out.p_lower > 1)).any()):
                raise Wrong("negative radius or p_lower outside [0, 1]")
            if bool(((out.prediction == -1) & (out.radius != 0)).any()):
                raise Wrong("an abstention with a non-zero radius")
    return f"smoothed:{what}", call, expect_ok, check


def t_metric(rng: random.Random) -> tuple[str, Callable[[], Any], bool, Callable[[Any], None]]:
    inp = make_input(rng)
    what = rng.choice(["fooling_rate", "per_class", "robustness", "roughness"])
    x = inp["x"]
    n = inp["n"]
    if what in ("fooling_rate", "per_class"):
        k = rng.choice([1, 2, 3, 5])
        kind = "ok" if rng.random() < 0.7 else rng.choice(HOSTILE)
        model = model_for(inp["c"], k, kind)
        y, y_ok = make_labels(rng, n, k, inp["g"])
        shift = rng.choice(["same", "same", "nan", "shape", "int"])
        if inp["valid"]:
            xa = {"same": (x + 0.1).clamp(0, 1), "nan": x.clone().fill_(math.nan),
                  "shape": torch.cat([x, x], dim=3), "int": (x * 255).to(torch.uint8)}[shift]
        else:
            xa = x
        expect_ok = (inp["valid"] and y_ok and y is not None
                     and kind in ("ok", "nan_away", "nan_grad", "huge")
                     and (shift == "same" or (shift == "nan" and n == 0)))
        if n == 0 and kind in HOSTILE:
            expect_ok = None  # an empty batch never reaches the model
        fn = fooling_rate if what == "fooling_rate" else per_class_fooling_rate

        def call() -> Any:
            return fn(model, x, xa, y)

        def check(out: Any) -> None:
            rates = [out.rate] if what == "fooling_rate" else [v["rate"] for v in out.values()]
            for r in rates:
                if not (math.isnan(r) or 0 <= r <= 1):
                    raise Wrong(f"fooling rate {r}")
            if what == "fooling_rate":
                if out.n_used + out.n_excluded != n or math.isnan(out.rate) != (out.n_used == 0):
                    raise Wrong("inconsistent counts")
        return f"metric:{what}", call, expect_ok, check
    if what == "robustness":
        r = x - 0.5 if isinstance(x, torch.Tensor) and x.is_floating_point() else x
        p = rng.choice([2, "inf", 1, 0.5, -1, "two"])
        xr = inp["base"] if rng.random() < 0.9 else inp["base"].numpy()
        # any floating, finite r of x's shape (no range, any rank >= 1)
        r_ok = (isinstance(r, torch.Tensor) and r.is_floating_point() and r.ndim >= 1
                and bool(torch.isfinite(r).all()) and r.shape == inp["base"].shape)
        expect_ok = r_ok and p not in (-1, "two") and isinstance(xr, torch.Tensor)

        def call() -> Any:
            return robustness(r, xr, p)

        def check(out: Any) -> None:
            if n == 0:
                if not math.isnan(out):
                    raise Wrong("robustness of no sample is not NaN")
                return
            finite(out, "robustness")
            if out < 0:
                raise Wrong("negative robustness")
        return "metric:robustness", call, expect_ok, check
    sigma_h = rng.choice([0.5, 1.0, 2.0, 30.0, -1.0, 0.0, math.nan, 1e12])
    normalized = rng.random() < 0.5
    r = x - 0.5 if isinstance(x, torch.Tensor) and x.is_floating_point() else x
    r_ok = (isinstance(r, torch.Tensor) and r.ndim == 4 and r.is_floating_point()
            and min(r.shape[1:]) > 0 and bool(torch.isfinite(r).all()))
    expect_ok = r_ok and math.isfinite(sigma_h) and 0 < sigma_h <= 1e4

    def call() -> Any:
        return roughness(r, sigma_h=sigma_h, normalized=normalized)

    def check(out: Any) -> None:
        if out.shape != (n,):
            raise Wrong(f"roughness shape {tuple(out.shape)}")
        finite(out, "roughness")
        if bool((out < 0).any()):
            raise Wrong("negative roughness")
    return "metric:roughness", call, expect_ok, check


def t_filter(rng: random.Random) -> tuple[str, Callable[[], Any], bool, Callable[[Any], None]]:
    inp = make_input(rng)
    kind = rng.choice(["gaussian", "gaussian", "linear", "uniform", "box", None])
    param = rng.choice([1, 2, 3, 5, 0.3, 1.5, 40.0, 0, -1, math.nan, math.inf, 1e6, 1e8, 1e12,
                        10**9, True])
    padding = rng.choice(["zeros", "replicate", "reflect", "circular", "mirror"])
    method = rng.choice(["auto", "direct", "fft"])
    x = inp["x"]
    const = rng.random() < 0.3 and isinstance(x, torch.Tensor) and x.is_floating_point() \
        and x.ndim == 4 and x.numel() > 0
    if const:
        x = torch.full_like(x, 0.37)
    param_ok = (kind == "gaussian" and not isinstance(param, bool)
                and isinstance(param, (int, float)) and math.isfinite(param)
                and 0 < param <= 1e4) or (
        kind in ("linear", "uniform") and isinstance(param, int) and not isinstance(param, bool)
        and 1 <= param <= 50_001 and not (kind == "linear" and param == 2))
    x_ok = (isinstance(x, torch.Tensor) and x.ndim == 4 and x.is_floating_point()
            and min(x.shape[1:]) > 0)
    expect_ok = param_ok and padding != "mirror" and x_ok

    def call() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return LowPassFilter(kind, param, padding=padding, method=method)(x)

    def check(out: Any) -> None:
        if out.shape != x.shape or out.dtype != x.dtype:
            raise Wrong("filter changed the shape/dtype")
        if bool(torch.isfinite(x).all()):
            finite(out, "filtered image")
        if const and padding in ("replicate", "circular") or (const and padding == "reflect"):
            tol = 2e-2 if x.dtype in (torch.float16, torch.bfloat16) else 1e-4
            if float((out.float() - 0.37).abs().max()) > tol:
                raise Wrong(f"a constant image is not preserved with {padding} padding")
    return "filters:LowPassFilter", call, expect_ok, check


class NpzPool:
    """A folder of .npz files, good and bad, each with the outcome it must give."""

    def __init__(self, rng: random.Random) -> None:
        self.dir = tempfile.mkdtemp(prefix="advsmooth-fuzz-")
        self.files: list[tuple[str, bool]] = []
        nr = np.random.default_rng(rng.randrange(2**31))

        def save(name: str, ok: bool, **arrays: Any) -> None:
            path = os.path.join(self.dir, name)
            np.savez(path, **arrays)
            self.files.append((path, ok))

        y3 = np.array([0, 1, 2])
        save("hw.npz", True, x=nr.integers(0, 256, (3, 8, 8), dtype=np.uint8), y=y3)
        save("hwc.npz", True, x=nr.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8), y=y3)
        save("chw_u8.npz", True, x=nr.integers(0, 256, (3, 3, 8, 8), dtype=np.uint8), y=y3)
        save("float.npz", True, x=nr.random((3, 2, 5, 6), dtype=np.float32), y=y3)
        save("nc.npz", True, x=nr.random((3, 1, 4, 4)).astype(np.float32), y=y3,
             num_classes=np.array(3))
        save("empty.npz", True, x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, np.int64))
        save("neg.npz", False, x=np.zeros((3, 8, 8), np.uint8), y=np.array([0, -5, 1]))
        save("big.npz", False, x=np.zeros((3, 8, 8), np.uint8), y=np.array([0, 2**40, 1]))
        save("nc_bad.npz", False, x=np.zeros((3, 8, 8), np.uint8), y=y3, num_classes=np.array(2))
        save("amb.npz", False, x=np.zeros((3, 4, 4, 5), np.uint8), y=y3)
        save("hwc_f.npz", False, x=np.zeros((3, 32, 32, 3), np.float32), y=y3)
        save("range_f.npz", False, x=np.full((3, 1, 4, 4), 1.5, np.float32), y=y3)
        save("nan_f.npz", False, x=np.full((3, 1, 4, 4), np.nan, np.float32), y=y3)
        save("yfloat.npz", False, x=np.zeros((3, 8, 8), np.uint8), y=y3.astype(float))
        save("ylen.npz", False, x=np.zeros((3, 8, 8), np.uint8), y=y3[:2])
        save("noy.npz", False, x=np.zeros((3, 8, 8), np.uint8))
        save("rank1.npz", False, x=np.zeros(3, np.uint8), y=y3)
        save("int16.npz", False, x=np.zeros((3, 8, 8), np.int16), y=y3)
        save("obj.npz", False, x=np.array([{"a": 1}] * 3, dtype=object), y=y3)
        good = self.files[0][0]
        data = open(good, "rb").read()
        for i, cut in enumerate((10, len(data) // 2, len(data) - 5)):
            p = os.path.join(self.dir, f"trunc{i}.npz")
            with open(p, "wb") as f:
                f.write(data[:cut])
            self.files.append((p, False))
        p = os.path.join(self.dir, "text.npz")
        with open(p, "w") as f:
            f.write("x,y\n1,2\n")
        self.files.append((p, False))
        p = os.path.join(self.dir, "plain.npz")
        with open(p, "wb") as f:
            np.save(f, np.zeros(3))
        self.files.append((p, False))


def t_data(rng: random.Random, pool: NpzPool
           ) -> tuple[str, Callable[[], Any], bool, Callable[[Any], None]]:
    path, ok = rng.choice(pool.files)

    def call() -> Any:
        return asm.data.load(f"npz:{path}")

    def check(out: Any) -> None:
        x, y = out
        if x.dtype != torch.float32 or x.ndim != 4 or y.dtype != torch.int64:
            raise Wrong("loaded arrays of the wrong dtype/rank")
        finite(x, "loaded images")
        if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
            raise Wrong("loaded images outside [0, 1]")
        if y.numel() and int(y.min()) < 0:
            raise Wrong("negative label loaded")
    return "data:npz", call, ok, check


# ----------------------------------------------------------------------------------------------
# the driver
# ----------------------------------------------------------------------------------------------

def classify(call: Callable[[], Any], expect_ok: bool | None, check: Callable[[Any], None]
             ) -> tuple[str, str]:
    """``(outcome, detail)`` of one call."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = call()
    except CLEAN_ERRORS as exc:
        msg = str(exc).strip()
        if not msg or "\n" in msg:
            return "other exception", f"{type(exc).__name__} without a one-line message: {msg!r}"
        if expect_ok:
            return "rejected valid input", f"{type(exc).__name__}: {msg}"
        return "clean error", ""
    except Exception as exc:  # noqa: BLE001 - the point of the fuzzer
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        return "other exception", (f"{type(exc).__name__}: {str(exc)[:200]} "
                                   f"(at {os.path.basename(tb.filename)}:{tb.lineno})")
    try:
        check(out)
    except NonFinite as exc:
        return "non-finite", str(exc)
    except Wrong as exc:
        return "silent wrong", str(exc)
    if expect_ok is False:
        return "silent wrong", "an invalid input / hostile model / absurd parameter was accepted"
    return "ok", ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the report here")
    ap.add_argument("--show", type=int, default=5, help="examples kept per failure kind")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)  # no component reads the global RNG; belt and braces
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    pool = NpzPool(rng)
    outcomes: Counter[str] = Counter()
    per_target: dict[str, Counter[str]] = defaultdict(Counter)
    examples: dict[str, list[str]] = defaultdict(list)
    weights = [("attack", 0.45), ("smoothed", 0.2), ("metric", 0.15), ("filter", 0.1),
               ("data", 0.1)]
    start = time.perf_counter()
    for i in range(args.calls):
        what = rng.choices([w for w, _ in weights], [p for _, p in weights])[0]
        case_seed = rng.randrange(2**31)
        crng = random.Random(case_seed)
        target, call, expect_ok, check = (
            t_attack(crng) if what == "attack" else t_smoothed(crng) if what == "smoothed"
            else t_metric(crng) if what == "metric" else t_filter(crng) if what == "filter"
            else t_data(crng, pool))
        outcome, detail = classify(call, expect_ok, check)
        outcomes[outcome] += 1
        per_target[target][outcome] += 1
        if outcome not in ("ok", "clean error") and len(examples[outcome]) < args.show:
            examples[outcome].append(f"call {i} (case seed {case_seed}) {target}: {detail}")
        if (i + 1) % 1000 == 0:
            print(f"{i + 1} calls, {time.perf_counter() - start:.0f} s: {dict(outcomes)}",
                  file=sys.stderr, flush=True)
    report = {
        "calls": args.calls, "seed": args.seed,
        "seconds": round(time.perf_counter() - start, 1),
        "ok": outcomes["ok"], "clean documented errors": outcomes["clean error"],
        "other exceptions": outcomes["other exception"],
        "non-finite outputs": outcomes["non-finite"],
        "silent wrong results": outcomes["silent wrong"],
        "valid inputs rejected": outcomes["rejected valid input"],
        "per target": {t: dict(c) for t, c in sorted(per_target.items())},
        "examples": dict(examples),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    bad = outcomes["other exception"] + outcomes["non-finite"] + outcomes["silent wrong"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
