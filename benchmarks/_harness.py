"""Shared machinery of the benchmark suites: timing, evaluation counting, the one evaluation
function every library is judged by, machine information and JSON/Markdown output.

Nothing here is advsmooth-specific except :func:`evaluate`, which runs the model (the same
``nn.Module`` every library attacked) on the returned ``x_adv``: success and norms are never taken
from a library's own claims.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ADVSMOOTH_SHARED", REPO.parent / "shared"))


# ----------------------------------------------------------------------------------------------
# environment
# ----------------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a missing/broken peer is simply reported as absent
        return None
    return str(getattr(mod, "__version__", "unknown"))


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info(threads: int) -> dict[str, Any]:
    """CPU, core count, load, Python/torch versions and the versions of the peer libraries."""
    return {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_start": loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in
                     ("advsmooth", "torch", "numpy", "foolbox", "eagerpy", "torchattacks", "art")},
    }


def peer_available(name: str) -> bool:
    return _version(name) is not None


# ----------------------------------------------------------------------------------------------
# counting evaluations
# ----------------------------------------------------------------------------------------------

class _CountBackward(torch.autograd.Function):
    """Identity on the logits whose backward counts the rows of every backward pass."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, counter: CountingModel) -> Tensor:  # type: ignore[override]
        ctx.counter = counter
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        ctx.counter.grad_rows += int(grad.shape[0])
        return grad, None


class CountingModel(nn.Module):
    """Wraps a classifier and counts the images it evaluates.

    ``forward_rows``: images passed through ``forward`` (a batch of ``B`` images counts ``B``).
    ``grad_rows``: images in every backward pass that reaches the logits (one backward of a scalar
    objective over a batch of ``B`` images counts ``B``; a K-row Jacobian computed with K backward
    passes counts ``K·B``). This is the same unit as advsmooth's ``forward_evals`` /
    ``grad_evals`` (per-image evaluations), so counts are comparable across libraries; rows that a
    library evaluates although they are already finished are counted too (that is compute spent).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_rows = 0
        self.grad_rows = 0
        self.train(model.training)  # a fresh Module is in training mode; mirror the model's

    def reset(self) -> None:
        self.forward_rows = 0
        self.grad_rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.forward_rows += int(x.shape[0])
        z = self.model(x)
        if z.requires_grad:
            z = _CountBackward.apply(z, self)
        return z


def frozen(model: nn.Module) -> nn.Module:
    """Eval mode, parameter gradients off: the setting every library is given (advsmooth does the
    same internally), so no library wastes time on weight gradients."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleaved(contestants: dict[str, Callable[[], Any]], repeats: int,
                warmup: dict[str, Callable[[], Any]] | None = None,
                log: Callable[[str], None] = print
                ) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Time every contestant ``repeats`` times, interleaved (the order rotates every repeat so that
    background noise spreads over all of them). ``warmup`` callables run once first, untimed.

    Returns ``(times, last_outputs)``: ``times[name]`` is the list of wall times (seconds).
    """
    for name, fn in (warmup or {}).items():
        t, _ = timed(fn)
        log(f"    warm-up {name}: {t:.2f} s")
    names = list(contestants)
    times: dict[str, list[float]] = {n: [] for n in names}
    outputs: dict[str, Any] = {}
    for r in range(repeats):
        k = r % len(names) if names else 0
        for name in names[k:] + names[:k]:
            t, out = timed(contestants[name])
            times[name].append(t)
            outputs[name] = out
            log(f"    repeat {r + 1}/{repeats} {name}: {t:.3f} s")
    return times, outputs


def median(ts: Sequence[float]) -> float:
    return float(statistics.median(ts)) if ts else float("nan")


# ----------------------------------------------------------------------------------------------
# the one evaluation function
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 500) -> Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch_size]).argmax(1)
                      for i in range(0, x.shape[0], batch_size)])


def _median(t: Tensor) -> float:
    # mean of the two middle values for an even count (statistics.median semantics), unlike
    # torch.median's lower middle value
    return float(statistics.median(t.double().tolist())) if t.numel() else float("nan")


def evaluate(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, *,
             target: Tensor | None = None, batch_size: int = 500) -> dict[str, float]:
    """Judge adversarial examples with ``model``'s own forward pass (identical for every library).

    ``success``: prediction on ``x_adv`` differs from ``y`` (or equals ``target``). Norms are of
    ``x_adv - x``; median/mean L2 and L∞ and ρ_adv (mean ``||r||₂/||x||₂``, pixel space) are over
    the successful samples. ``box_violation``: largest distance of ``x_adv`` outside ``[0, 1]``
    (0 for a library that clips). NaN/Inf in ``x_adv`` count as failures.
    """
    x_adv = x_adv.detach().to(x.dtype)
    finite = torch.isfinite(x_adv.flatten(1)).all(1)
    x_eval = torch.where(finite[:, None, None, None], x_adv, x)
    pred = predict(model, x_eval, batch_size)
    ok = (pred != y) if target is None else (pred == target)
    ok &= finite
    r = (x_eval - x).flatten(1).double()
    l2 = r.norm(dim=1)
    linf = r.abs().amax(dim=1)
    rho = l2 / x.flatten(1).double().norm(dim=1).clamp_min(1e-12)
    viol = float(torch.maximum(x_eval - 1, -x_eval).clamp_min(0).max()) if x.numel() else 0.0
    n = x.shape[0]
    return {
        "_l2": l2, "_ok": ok,  # per-sample, for paired comparisons (not written out)
        "n": n,
        "success_rate": float(ok.double().mean()) if n else float("nan"),
        "median_l2": _median(l2[ok]),
        "mean_l2": float(l2[ok].mean()) if ok.any() else float("nan"),
        "median_linf": _median(linf[ok]),
        "rho_adv": float(rho[ok].mean()) if ok.any() else float("nan"),
        "box_violation": viol,
    }


# ----------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------

def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 0.01:
            return f"{v:.{digits - 1}g}" if a < 1 else f"{v:.{digits}g}"
        return f"{v:.3g}"
    return str(v)


def md_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """``columns``: (key, header) pairs. Missing keys print as an em dash."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def machine_md(info: dict[str, Any]) -> str:
    v = info["versions"]
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if val is not None)
    missing = [k for k, val in v.items() if val is None]
    lines = [
        f"- date (UTC): {info['date_utc']}; wall time of the suite: "
        f"{fmt(info.get('suite_seconds'))} s",
        f"- CPU: {info['cpu']} ({info['logical_cores']} logical cores, shared with other jobs); "
        f"torch threads: {info['torch_threads']} (OMP_WAIT_POLICY={info.get('omp_wait_policy')})",
        f"- load average (1/5/15 min) at start: {info.get('loadavg_start')}, at end: "
        f"{info.get('loadavg_end')}",
        f"- Python {info['python']}; {vers}"
        + (f"; not installed: {', '.join(missing)}" if missing else ""),
    ]
    return "\n".join(lines)


def write_outputs(out_dir: Path, suite: str, payload: dict[str, Any],
                  markdown: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    jp = out_dir / f"{suite}.json"
    mp = out_dir / f"{suite}.md"

    def clean(o: Any) -> Any:
        if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items() if not str(k).startswith("_")}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    jp.write_text(json.dumps(clean(payload), indent=2) + "\n")
    mp.write_text(markdown.rstrip() + "\n")
    return jp, mp
