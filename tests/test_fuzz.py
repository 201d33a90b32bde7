"""Fuzzed inputs across the public API (hypothesis).

Every attack (the whole registry + NAttack + EPGD), the defences (SmoothedClassifier forward /
predict / certify, inject_noise) and the metrics (roughness, fooling_rate, robustness,
destruction_rate, transfer_matrix, LowPassFilter) get random shapes, dtypes (float16/32/64,
integers, bool), NaN/Inf, out-of-range values, empty batches, single samples, labels out of
range and mismatched lengths. Each call must either work (output shapes, ranges, finiteness are
checked) or raise ``ValueError``/``TypeError`` with a message; anything else (IndexError,
RuntimeError from torch internals, a silent wrong result) fails the test. The number of cases
tried is printed at the end of the module (``FUZZ CASES TRIED: ...``; run with ``-s``).
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import timedelta

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_invariance import ALL_NAMES, is_universal, make_attack
from torch import nn

import advsmooth as asm
from advsmooth.defenses import SmoothedClassifier, inject_noise
from advsmooth.filters import LowPassFilter, roughness
from advsmooth.metrics import destruction_rate, fooling_rate, robustness, transfer_matrix

CASES: Counter[str] = Counter()
FUZZ = settings(max_examples=12, deadline=timedelta(seconds=20), derandomize=True,
                suppress_health_check=list(HealthCheck), database=None)
EXPECTED = (ValueError, TypeError)


@pytest.fixture(scope="module", autouse=True)
def _report_cases():
    yield
    print(f"\nFUZZ CASES TRIED: {sum(CASES.values())} ({dict(CASES)}); "
          f"{KNOWN['calls']} hit known bugs")


class AnySize(nn.Module):
    """A classifier for any H×W: 1×1 conv, adaptive pooling, linear; K classes."""

    def __init__(self, channels: int, k: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(channels * 10 + k)
        self.conv = nn.Conv2d(channels, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, k)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


MODELS = {(c, k): AnySize(c, k).eval() for c in (1, 3) for k in (2, 3, 5)}

DTYPES = [torch.float32, torch.float32, torch.float32, torch.float64, torch.float16,
          torch.uint8, torch.int64, torch.bool]
CORRUPT = ["none", "none", "none", "nan", "inf", "high", "low"]
LABELS = ["valid", "valid", "valid", "none", "out_of_range", "negative", "too_long", "float",
          "2d"]


@st.composite
def cases(draw):
    n = draw(st.sampled_from([0, 1, 1, 2, 3]))
    c = draw(st.sampled_from([1, 3]))
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 9))
    k = draw(st.sampled_from([2, 3, 5]))
    dtype = draw(st.sampled_from(DTYPES))
    corrupt = draw(st.sampled_from(CORRUPT))
    labels = draw(st.sampled_from(LABELS))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    if n and corrupt != "none":
        i = draw(st.integers(0, n * c * h * w - 1))
        val = {"nan": math.nan, "inf": math.inf, "high": 1.5, "low": -0.25}[corrupt]
        x.view(-1)[i] = val
    if dtype == torch.bool:
        x = x > 0.5
    elif not dtype.is_floating_point:
        x = (x.nan_to_num(0).clamp(0, 1) * 255).to(dtype) if dtype == torch.uint8 else \
            x.nan_to_num(0).clamp(0, 1).round().to(dtype)
    else:
        x = x.to(dtype)
    y = torch.randint(0, k, (n,), generator=g)
    y = {"valid": y, "none": None, "out_of_range": y + k, "negative": y - k,
         "too_long": torch.cat([y, y.new_zeros(1)]), "float": y.float(),
         "2d": y[:, None]}[labels]
    valid_x = dtype == torch.float32 and (corrupt == "none" or n == 0)
    # with an empty batch a label problem may only show as a length mismatch
    valid_y = labels in ("valid", "none") or (n == 0 and labels in ("out_of_range",
                                                                    "negative"))
    return dict(n=n, c=c, h=h, w=w, k=k, x=x, y=y, valid_x=valid_x, valid_y=valid_y,
                model=MODELS[(c, k)], desc=f"n={n} c={c} {h}x{w} k={k} {dtype} {corrupt} "
                                           f"labels={labels}")


def expect_error(fn):
    with pytest.raises(EXPECTED) as info:
        fn()
    assert str(info.value).strip(), f"{type(info.value).__name__} without a message"


KNOWN: Counter[str] = Counter()


def known_bug(fn):
    """Inputs that hit a bug reported with a strict-xfail reproducer below: run, don't judge."""
    KNOWN["calls"] += 1
    try:
        fn()
    except Exception:  # noqa: BLE001 - the reproducers below pin the behaviour
        pass


def check_images_out(out, like, *, box=True):
    assert out.shape == like.shape and out.dtype == like.dtype
    assert torch.isfinite(out).all()
    if box and out.numel():
        assert float(out.min()) >= 0 and float(out.max()) <= 1


# -- attacks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_NAMES)
@FUZZ
@given(case=cases())
def test_attack_fuzz(name, case):
    CASES[f"attack:{name}"] += 1
    atk = make_attack(name)
    model, x, y = case["model"], case["x"], case["y"]
    rgb_only = name == "color-shift" and case["c"] != 3
    if is_universal(name):
        if case["x"].is_floating_point() and case["x"].dtype != torch.float32:
            return expect_error(lambda: atk.fit(model, x))  # dtype differs from the model
        ok = case["valid_x"] and case["n"] > 0
        if not ok:
            return expect_error(lambda: atk.fit(model, x))
        v = atk.fit(model, x)
        assert v.shape == (1, *x.shape[1:]) and torch.isfinite(v).all()
        return None
    ok = case["valid_x"] and case["valid_y"] and not rgb_only
    if not ok:
        return expect_error(lambda: atk(model, x, y))
    r = atk(model, x, y)
    check_images_out(r.x_adv, x, box=name not in ("deepfool", "smoothfool"))
    n = case["n"]
    for t in (r.success, r.iterations, r.forward_evals, r.grad_evals, r.adv_pred):
        assert t.shape == (n,)
    with torch.no_grad():
        pred = model(r.x_adv).argmax(1) if n else r.adv_pred
    assert torch.equal(r.adv_pred, pred)
    assert torch.equal(r.success, r.adv_pred != r.labels)
    assert bool((r.forward_evals >= (1 if n else 0)).all())
    return None


# -- defences ---------------------------------------------------------------------------------

@FUZZ
@given(case=cases(), samples=st.integers(1, 4), sigma=st.sampled_from([0.0, 0.1, 0.5]))
def test_smoothed_classifier_fuzz(case, samples, sigma):
    CASES["smoothed"] += 1
    s = SmoothedClassifier(case["model"], sigma=sigma, samples=samples, seed=0)
    x, n, k = case["x"], case["n"], case["k"]
    if n == 0 or x.dtype != torch.float32 or not case["valid_x"]:
        expect_error(lambda: s(x))
        expect_error(lambda: s.predict(x, n=4, alpha=0.1))
        expect_error(lambda: s.certify(x, n0=2, n=4, alpha=0.1))
        return
    scores = s(x)
    assert scores.shape == (n, k) and torch.isfinite(scores).all()
    if n:
        assert torch.allclose(scores.sum(1), torch.ones(n))
    p = s.predict(x, n=4, alpha=0.1)
    assert p.shape == (n,) and bool(((p >= -1) & (p < k)).all())
    cert = s.certify(x, n0=2, n=4, alpha=0.1)
    assert cert.prediction.shape == (n,) and cert.radius.shape == (n,)
    assert not torch.isnan(cert.radius).any() and bool((cert.radius >= 0).all())


def test_smoothed_classifier_rejects_bad_params():
    m = MODELS[(1, 2)]
    for kw in ({"sigma": -1.0}, {"sigma": math.nan}, {"samples": 0}, {"vote": "majority"},
               {"batch_size": 0}):
        CASES["smoothed-params"] += 1
        expect_error(lambda kw=kw: SmoothedClassifier(m, **{"sigma": 0.1, **kw}))
    expect_error(lambda: SmoothedClassifier("model", sigma=0.1))


@FUZZ
@given(where=st.sampled_from(["weights", "activations", "both", "nowhere"]),
       kind=st.sampled_from(["pni", "cni", "gaussian"]),
       granularity=st.sampled_from([None, "layerwise", "channelwise", "elementwise", "pixel"]),
       case=cases())
def test_inject_noise_fuzz(where, kind, granularity, case):
    CASES["inject_noise"] += 1
    base = MODELS[(case["c"], case["k"])]
    valid = where != "nowhere" and kind in ("pni", "cni") and granularity != "pixel" and not (
        kind == "cni" and granularity is not None)
    kw = {} if granularity is None else {"granularity": granularity}
    if not valid:
        try:
            inject_noise(base, where=where, kind=kind, **kw)
        except EXPECTED as exc:
            assert str(exc).strip()
        return
    noisy = inject_noise(base, where=where, kind=kind, **kw)
    assert noisy is not base
    if case["valid_x"] and case["n"]:
        out = noisy(case["x"])
        assert out.shape == (case["n"], case["k"]) and torch.isfinite(out).all()


# -- metrics ----------------------------------------------------------------------------------

@FUZZ
@given(case=cases(), sigma_h=st.sampled_from([0.5, 1.0, 2.0, -1.0, 0.0, math.nan]),
       normalized=st.booleans())
def test_roughness_fuzz(case, sigma_h, normalized):
    CASES["roughness"] += 1
    x = case["x"]
    r = x - 0.5 if x.is_floating_point() else x
    finite = not x.is_floating_point() or bool(torch.isfinite(x).all())
    ok = (x.is_floating_point() and finite and sigma_h > 0 and x.dtype != torch.float16)
    if not ok:
        try:
            out = roughness(r, sigma_h=sigma_h, normalized=normalized)
        except EXPECTED as exc:
            assert str(exc).strip()
            return
        # accepted: must still be a sensible answer (float16 promoted; NaN/Inf propagated)
        assert out.shape == (case["n"],)
        assert sigma_h > 0, f"accepted sigma_h={sigma_h}"
        if not finite:
            assert not bool(torch.isfinite(out).all()), "NaN/Inf input gave a finite roughness"
        return
    out = roughness(r, sigma_h=sigma_h, normalized=normalized)
    assert out.shape == (case["n"],) and torch.isfinite(out).all() and bool((out >= 0).all())
    if normalized:
        assert bool((out <= 1 + 1e-4).all()) or case["h"] * case["w"] <= 4


@FUZZ
@given(case=cases(), kind=st.sampled_from(["gaussian", "linear", "uniform", "box", None]),
       param=st.sampled_from([1, 2, 3, 0, -1, 1.5]))
def test_low_pass_filter_fuzz(case, kind, param):
    CASES["LowPassFilter"] += 1
    try:
        f = LowPassFilter(kind, param)
    except EXPECTED as exc:
        assert str(exc).strip()
        return
    assert kind in ("gaussian", "linear", "uniform"), f"accepted kind {kind!r}"
    x = case["x"]
    if not (x.is_floating_point() and bool(torch.isfinite(x).all())):
        try:
            f(x)
        except EXPECTED as exc:
            assert str(exc).strip()
        return
    out = f(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


@FUZZ
@given(case=cases(), shift=st.sampled_from(["same", "nan", "shape", "int"]))
def test_fooling_rate_and_robustness_fuzz(case, shift):
    CASES["fooling_rate/robustness"] += 1
    model, x, y = case["model"], case["x"], case["y"]
    if case["valid_x"]:
        x_adv = {"same": (x + 0.1).clamp(0, 1), "nan": x.clone().fill_(math.nan),
                 "shape": torch.cat([x, x], dim=3), "int": (x * 255).to(torch.uint8)}[shift]
    else:
        x_adv = x
    if x.is_floating_point() and x.dtype != torch.float32:
        return expect_error(lambda: fooling_rate(model, x, x, y))  # dtype differs from model
    ok = case["valid_x"] and case["valid_y"] and y is not None and (
        shift == "same" or (shift == "nan" and case["n"] == 0))
    if not ok:
        expect_error(lambda: fooling_rate(model, x, x_adv, y))
    else:
        fr = fooling_rate(model, x, x_adv, y)
        assert fr.n_used + fr.n_excluded == case["n"]
        assert math.isnan(fr.rate) == (fr.n_used == 0)
        assert math.isnan(fr.rate) or 0 <= fr.rate <= 1
    if case["valid_x"] and shift == "same" and case["n"]:
        rho = robustness(x_adv - x, x)
        assert math.isnan(rho) or rho >= 0
    elif not case["valid_x"] and x.is_floating_point() and x.dtype == torch.float32 and case["n"]:
        # NaN/Inf perturbations must not give a finite robustness
        try:
            rho = robustness(x, x.nan_to_num(0.5).clamp(0.01, 1))
        except EXPECTED as exc:
            assert str(exc).strip()
        else:
            assert torch.isfinite(x).all() or not math.isfinite(rho)


@FUZZ
@given(case=cases())
def test_transfer_metrics_fuzz(case):
    CASES["transfer"] += 1
    model, x, y = case["model"], case["x"], case["y"]
    tf = asm.metrics.GaussianNoise(0.1) if hasattr(asm.metrics, "GaussianNoise") else None
    ok = case["valid_x"] and case["valid_y"] and y is not None
    if ok and case["n"] == 0:
        assert math.isnan(destruction_rate(model, x, x, y, tf))  # denominator 0
        return None
    if not ok:
        expect_error(lambda: destruction_rate(model, x, x, y, tf))
        return
    d = destruction_rate(model, x, (x + 0.2).clamp(0, 1), y, tf)
    assert math.isnan(d) or 0 <= d <= 1
    if case["n"]:
        atk = asm.attacks.FGSM(eps=0.1)
        tm = transfer_matrix([model, model], [model], atk, (x, y))
        assert len(tm.sources) == 2 and len(tm.targets) == 1 and 0 <= tm.n <= case["n"]


# -- bugs found by the fuzzer in other modules: minimal reproducers (strict xfail) ----------------

_TINY = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()


def test_fixed_uap_dtype_is_a_value_error():
    with pytest.raises(ValueError, match="dtype"):
        asm.attacks.UniversalPerturbation(max_passes=1, progress_bar=False).fit(
            _TINY, torch.rand(2, 1, 2, 2, dtype=torch.float64))


def test_fixed_smoothed_classifier_input_checks():
    sc = SmoothedClassifier(_TINY, sigma=0.1, samples=2)
    with pytest.raises(ValueError, match="empty"):
        sc(torch.rand(0, 1, 2, 2))
    with pytest.raises(ValueError, match="dtype"):
        sc(torch.rand(1, 1, 2, 2, dtype=torch.float64))
    x = torch.rand(1, 1, 2, 2)
    x[0, 0, 0, 0] = math.nan
    for call in (lambda: sc(x), lambda: sc.predict(x, n=4, alpha=0.1),
                 lambda: sc.certify(x, n0=2, n=4, alpha=0.1)):
        with pytest.raises(ValueError, match="NaN"):
            call()


def test_fixed_metrics_dtype_and_empty_batches():
    x = torch.rand(1, 1, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="dtype"):
        fooling_rate(_TINY, x, x, torch.tensor([0]))
    assert math.isnan(robustness(torch.zeros(0, 1, 2, 2), torch.zeros(0, 1, 2, 2)))
    assert math.isnan(destruction_rate(_TINY, torch.zeros(0, 1, 2, 2), torch.zeros(0, 1, 2, 2),
                                       torch.zeros(0, dtype=torch.long),
                                       asm.metrics.GaussianNoise(0.1)))


def test_empty_batch_with_mismatched_labels_is_refused():
    """Fixed in attacks/base.py: labels of the wrong length were ignored for an empty batch."""
    with pytest.raises(ValueError, match="entries"):
        asm.attacks.FGSM(eps=0.1)(_TINY, torch.rand(0, 1, 2, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="entries"):
        asm.attacks.FGSM(eps=0.1)(_TINY, torch.rand(0, 1, 2, 2), target=torch.tensor([1]))


# -- hostile models, layouts and extreme parameters (the engine of tests/fuzz_long.py) ----------

TARGETS = ["attack", "smoothed", "metric", "filter", "data"]


@pytest.fixture(scope="module")
def npz_pool():
    import random

    from fuzz_long import NpzPool

    return NpzPool(random.Random(0))


@pytest.mark.parametrize("target", TARGETS)
@settings(max_examples=16, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck), database=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_hostile_fuzz(target, seed, npz_pool):
    """One seeded call of ``tests/fuzz_long.py`` (NaN/Inf/short/integer/tuple/binary model
    outputs, non-contiguous / channels-last / empty / wrong-dtype inputs, extreme parameters,
    broken .npz files): it must work and pass every check, or raise a one-line
    ``ValueError``/``TypeError`` where that is the documented answer."""
    import random

    import fuzz_long as fz

    CASES[f"hostile:{target}"] += 1
    rng = random.Random(seed)
    make = {"attack": fz.t_attack, "smoothed": fz.t_smoothed, "metric": fz.t_metric,
            "filter": fz.t_filter}.get(target)
    name, call, expect_ok, check = make(rng) if make else fz.t_data(rng, npz_pool)
    outcome, detail = fz.classify(call, expect_ok, check)
    assert outcome in ("ok", "clean error"), f"{name} (seed {seed}): {outcome}: {detail}"
