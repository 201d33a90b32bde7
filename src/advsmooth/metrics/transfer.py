"""Transferability metrics (Wu et al., arXiv:1802.09707; docs/algorithms.md).

* :func:`transfer_matrix` — success of adversarial examples crafted on each source model (or
  ensemble) against each target model, top-1 and top-5, untargeted or targeted, on the images
  that every model classifies correctly.
* :func:`destruction_rate` / :func:`destruction_curve` — fraction of successful adversarial
  examples that a transform (rotation, noise, blur, JPEG) turns back into correct predictions.
* :func:`gradient_similarity` — cosine between the source's smoothed gradient ``G_A^{(m)}`` and the
  target's gradient ``g_B`` as a function of ``m`` (nested noise draws).
* :func:`decision_boundary_map` — target predictions on the plane spanned by ``Ĝ_A`` and the
  orthogonal remainder ``ĥ_A`` of the source gradient (sg transfer paper Fig. 3b / 9).

Every function leaves the models' modes and parameter flags and the global RNG untouched.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._tensors import check_images, check_labels, frozen_model
from .._utils import check_int_at_least, check_nonnegative, make_generator
from ..attacks.base import Attack, run_batched
from ..attacks.gradients import AttackObjective
from ..data import random_subset
from .transforms import Transform, make_transform

__all__ = [
    "TransferMatrix",
    "transfer_matrix",
    "named_models",
    "correct_by_all",
    "random_wrong_targets",
    "topk_success",
    "destruction_rate",
    "destruction_curve",
    "GradientSimilarity",
    "gradient_similarity",
    "DecisionBoundaryMap",
    "decision_boundary_map",
]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def named_models(models: Any, prefix: str = "model") -> list[tuple[str, nn.Module]]:
    """``{name: model}``, a sequence of ``(name, model)`` pairs, or a sequence of models
    (named ``prefix0, prefix1, ...``) → list of ``(name, model)``."""
    if isinstance(models, nn.Module):
        models = [models]
    if isinstance(models, Mapping):
        items = [(str(k), v) for k, v in models.items()]
    else:
        items = []
        for i, m in enumerate(models):
            if isinstance(m, tuple) and len(m) == 2 and isinstance(m[1], nn.Module):
                items.append((str(m[0]), m[1]))
            else:
                items.append((f"{prefix}{i}", m))
    if not items:
        raise ValueError("at least one model is required")
    for name, m in items:
        if not isinstance(m, nn.Module):
            raise TypeError(f"model {name!r} must be a torch.nn.Module, got {type(m).__name__}")
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    return items


def _data_xy(data: Any) -> tuple[Tensor, Tensor]:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    else:
        raise TypeError("data must be an (x, y) pair of tensors")
    check_images(x)
    return x, check_labels(y, x.shape[0], None, x.device)


@torch.no_grad()
def _logits(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    with frozen_model(model), torch.no_grad():
        outs = [model(x[s:s + batch_size]) for s in range(0, x.shape[0], batch_size)]
    return torch.cat(outs) if outs else x.new_zeros((0, 0))


def correct_by_all(models: Sequence[nn.Module], x: Tensor, y: Tensor,
                   batch_size: int = 512) -> Tensor:
    """``(N,)`` bool: images that every model classifies correctly (top-1)."""
    ok = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for m in models:
        ok &= _logits(m, x, batch_size).argmax(1) == y
    return ok


def random_wrong_targets(y: Tensor, num_classes: int, seed: int = 0) -> Tensor:
    """Targets drawn uniformly among the ``K − 1`` wrong classes of each label (fixed seed)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    gen = make_generator(seed, "cpu")
    off = torch.randint(1, num_classes, (y.shape[0],), generator=gen)
    return (y.cpu() + off).remainder(num_classes).to(y.device)


def topk_success(logits: Tensor, y: Tensor, target: Tensor | None = None,
                 k: int = 1) -> Tensor:
    """``(N,)`` bool success: untargeted ``y ∉ top-k``; targeted ``t ∈ top-k``; ``k`` from 1 to
    the number of classes (``ValueError`` otherwise: top-0 or top-(K+1) success means nothing)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k must be an integer in [1, {logits.shape[1]}] (the number of "
                         f"classes), got {k!r}")
    top = logits.topk(k, dim=1).indices
    if target is None:
        return ~(top == y[:, None]).any(1)
    return (top == target[:, None]).any(1)


def _members(model: nn.Module) -> list[nn.Module]:
    members = getattr(model, "members", None)
    return list(members) if isinstance(members, nn.ModuleList) else []


# ----------------------------------------------------------------------------------------------
# transfer matrix
# ----------------------------------------------------------------------------------------------

@dataclass
class TransferMatrix:
    """Transfer success rates, rows = sources, columns = targets (fractions in ``[0, 1]``).

    Attributes:
        sources, targets: model names.
        top1, top5: ``(S, T)`` success rates (untargeted: label not in top-k; targeted: target in
            top-k).
        white_box: ``(S, T)`` bool, the target is the source (or a member of the source ensemble).
        n: number of images used (correct for every model).
        targeted: whether the attack was targeted.
        attack: ``repr`` of the attack.
        grad_evals: ``(S,)`` mean gradient evaluations per image spent by the attack per source.
        adv: optional ``{source: x_adv}`` (when ``keep_adv=True``).
        x, y, target: the evaluation images, labels and (targeted) target labels.
    """

    sources: list[str]
    targets: list[str]
    top1: np.ndarray
    top5: np.ndarray
    white_box: np.ndarray
    n: int
    targeted: bool
    attack: str
    grad_evals: np.ndarray
    adv: dict[str, Tensor] = field(default_factory=dict, repr=False)
    x: Tensor | None = field(default=None, repr=False)
    y: Tensor | None = field(default=None, repr=False)
    target: Tensor | None = field(default=None, repr=False)

    def matrix(self, metric: str = "top1") -> np.ndarray:
        if metric not in ("top1", "top5"):
            raise ValueError(f"metric must be 'top1' or 'top5', got {metric!r}")
        return self.top1 if metric == "top1" else self.top5

    def black_box_mean(self, metric: str = "top1") -> np.ndarray:
        """``(S,)`` mean success over the non-white-box targets of each source (NaN if none)."""
        mat = self.matrix(metric)
        out = np.full(len(self.sources), np.nan)
        for i in range(len(self.sources)):
            sel = ~self.white_box[i]
            if sel.any():
                out[i] = float(mat[i, sel].mean())
        return out

    def to_markdown(self, metric: str = "top1", *, percent: bool = True, digits: int = 1,
                    title: str | None = None) -> str:
        """A Markdown table; white-box cells are marked with ``*``."""
        mat = self.matrix(metric)
        kind = "targeted" if self.targeted else "untargeted"
        lines = []
        if title:
            lines += [f"**{title}**", ""]
        lines.append(f"| source \\ target ({metric}, {kind}) | " + " | ".join(self.targets) + " |")
        lines.append("|---" * (len(self.targets) + 1) + "|")
        for i, s in enumerate(self.sources):
            cells = []
            for j in range(len(self.targets)):
                v = mat[i, j] * (100 if percent else 1)
                cell = f"{v:.{digits}f}"
                cells.append(cell + "*" if self.white_box[i, j] else cell)
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"n = {self.n} images correctly classified by every model; success rate"
                     f"{' in %' if percent else ''}; * = white-box cell; attack: {self.attack}")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """Long-format CSV: ``source,target,top1,top5,white_box,n,targeted,grad_evals``."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["source", "target", "top1", "top5", "white_box", "n", "targeted",
                    "grad_evals"])
        for i, s in enumerate(self.sources):
            for j, t in enumerate(self.targets):
                w.writerow([s, t, f"{self.top1[i, j]:.6f}", f"{self.top5[i, j]:.6f}",
                            int(self.white_box[i, j]), self.n, int(self.targeted),
                            f"{self.grad_evals[i]:.2f}"])
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {"sources": self.sources, "targets": self.targets, "top1": self.top1.tolist(),
                "top5": self.top5.tolist(), "white_box": self.white_box.tolist(), "n": self.n,
                "targeted": self.targeted, "attack": self.attack,
                "grad_evals": self.grad_evals.tolist()}


def transfer_matrix(
    sources: Any,
    targets: Any,
    attack: Attack,
    data: Any,
    *,
    targeted: bool = False,
    n: int | None = None,
    seed: int = 0,
    target_seed: int = 0,
    batch_size: int = 256,
    keep_adv: bool = False,
    progress: bool = False,
) -> TransferMatrix:
    """Attack every source model and evaluate the adversarial images on every target model.

    Args:
        sources: source models (``{name: model}``, ``[(name, model)]`` or ``[model]``); an
            :class:`~advsmooth.models.Ensemble` is a valid source.
        targets: target models, same forms.
        attack: a configured attack (e.g. ``IGSM(eps=..., gradient=SmoothedGradient(...))``).
        data: ``(x, y)`` evaluation images and labels.
        targeted: targeted attack; targets drawn uniformly among the wrong classes with
            ``target_seed`` (the same targets for every source).
        n: use a seeded random subset of ``n`` of the images that every model classifies
            correctly (default: all of them).
        seed: seed of the subset choice and of the attack's generator (one generator per source,
            seeded identically, so every source gets the same random stream).
        batch_size: attack/evaluation batch size.
        keep_adv: keep ``{source: x_adv}`` in the result.
        progress: show progress bars.

    Returns:
        :class:`TransferMatrix` (fractions; white-box cells flagged).
    """
    srcs = named_models(sources, "source")
    tgts = named_models(targets, "target")
    x, y = _data_xy(data)
    unique: list[nn.Module] = []
    for _, m in srcs + tgts:
        if all(m is not u for u in unique):
            unique.append(m)
    ok = correct_by_all(unique, x, y, batch_size)
    idx = torch.nonzero(ok).flatten()
    if n is not None:
        check_int_at_least("n", n, 1)
        if idx.numel() > n:
            pick = random_subset(idx.numel(), n, seed, sort=True)
            idx = idx[pick.to(idx.device)]
    xs, ys = x[idx], y[idx]
    num_classes = int(_logits(tgts[0][1], x[:1]).shape[1])
    tgt = random_wrong_targets(ys, num_classes, target_seed) if targeted else None
    s_n, t_n = len(srcs), len(tgts)
    top1 = np.full((s_n, t_n), np.nan)
    top5 = np.full((s_n, t_n), np.nan)
    wb = np.zeros((s_n, t_n), dtype=bool)
    grad_evals = np.zeros(s_n)
    adv: dict[str, Tensor] = {}
    for i, (sname, smodel) in enumerate(srcs):
        members = _members(smodel)
        for j, (tname, tmodel) in enumerate(tgts):
            wb[i, j] = tmodel is smodel or any(tmodel is m for m in members) or tname == sname
        if xs.shape[0] == 0:
            continue
        res = run_batched(attack, smodel, xs, ys, target=tgt, batch_size=batch_size,
                          progress_bar=progress, generator=make_generator(seed, xs.device))
        grad_evals[i] = res.mean_grad_evals
        if keep_adv:
            adv[sname] = res.x_adv
        for j, (_, tmodel) in enumerate(tgts):
            z = _logits(tmodel, res.x_adv, batch_size)
            top1[i, j] = float(topk_success(z, ys, tgt, 1).double().mean())
            top5[i, j] = float(topk_success(z, ys, tgt, min(5, z.shape[1])).double().mean())
    return TransferMatrix(
        sources=[s for s, _ in srcs], targets=[t for t, _ in tgts], top1=top1, top5=top5,
        white_box=wb, n=int(xs.shape[0]), targeted=targeted, attack=repr(attack),
        grad_evals=grad_evals, adv=adv, x=xs, y=ys, target=tgt,
    )


# ----------------------------------------------------------------------------------------------
# destruction rate
# ----------------------------------------------------------------------------------------------

def destruction_rate(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor,
                     transform: Transform | Any, *, batch_size: int = 512) -> float:
    """Destruction rate of ``transform`` on adversarial examples (Kurakin et al.).

    ``d = Σ C(x)·¬C(x_adv)·C(T(x_adv)) / Σ C(x)·¬C(x_adv)`` with ``C(·) = 1[pred = y]`` on
    ``model`` (the target). Returns NaN when no image is correct on ``x`` and wrong on ``x_adv``.
    The identity transform gives 0.
    """
    check_images(x)
    check_images(x_adv, "x_adv")
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(x_adv.shape)}")
    y = check_labels(y, x.shape[0], None, x.device)
    if not callable(transform):
        raise TypeError("transform must be callable (e.g. metrics.transforms.Rotation(10))")
    if x.shape[0] == 0:
        return float("nan")
    c_x = _logits(model, x, batch_size).argmax(1) == y
    c_adv = _logits(model, x_adv, batch_size).argmax(1) == y
    denom = c_x & ~c_adv
    if not bool(denom.any()):
        return float("nan")
    # transform the whole batch (a seeded random transform then does not depend on which
    # images happen to be in the denominator), evaluate the selected ones
    xt = transform(x_adv)
    if xt.shape != x_adv.shape:
        raise ValueError("transform changed the image shape")
    c_t = _logits(model, xt[denom], batch_size).argmax(1) == y[denom]
    return float(c_t.double().mean())


def destruction_curve(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, kind: str,
                      strengths: Sequence[float], *, seed: int = 0,
                      batch_size: int = 512) -> list[float]:
    """Destruction rates for ``make_transform(kind, s, seed=seed)`` over ``strengths``."""
    return [destruction_rate(model, x, x_adv, y, make_transform(kind, s, seed=seed),
                             batch_size=batch_size) for s in strengths]


# ----------------------------------------------------------------------------------------------
# gradient similarity
# ----------------------------------------------------------------------------------------------

def _input_grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    obj = AttackObjective.for_model(model, "ce", y)
    xv = x.detach().clone().requires_grad_(True)
    val = obj.value(obj.forward(model, xv))
    (g,) = torch.autograd.grad(val.sum(), xv)
    return g.detach()


def _cos(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    den = a.norm(dim=1) * b.norm(dim=1)
    return (a * b).sum(1) / den.clamp_min(1e-300)


@dataclass
class GradientSimilarity:
    """Cosine similarity between ``G_A^{(m)}`` and ``g_B`` (sg transfer paper Fig. 3a).

    Attributes:
        ms: sample counts.
        mean: ``(len(ms),)`` mean over images of ``cos(G_A^{(m)}, g_B)``.
        per_image: ``(N, len(ms))``.
        baseline: mean ``cos(g_A, g_B)`` (plain gradients); baseline_per_image: ``(N,)``.
        sigma: noise std (pixels).
    """

    ms: list[int]
    mean: np.ndarray
    per_image: np.ndarray
    baseline: float
    baseline_per_image: np.ndarray
    sigma: float


def gradient_similarity(model_a: nn.Module, model_b: nn.Module, x: Tensor, y: Tensor, *,
                        sigma: float = 15 / 255,
                        ms: Sequence[int] = (1, 2, 5, 10, 20, 50, 100, 200),
                        seed: int = 0, batch_size: int = 32,
                        chunk_size: int = 20) -> GradientSimilarity:
    """``cos(G_A^{(m)}, g_B)`` for every ``m`` in ``ms`` with nested noise draws.

    ``g_B = ∇J_B(x)``, ``G_A^{(m)} = (1/m) Σ_{i≤m} ∇J_A(x + ξ_i)`` with ``ξ ~ N(0, σ²I)`` drawn once
    per image batch as ``(max(ms), B, C, H, W)`` (the first ``m`` copies of one long draw), ``J`` =
    cross-entropy w.r.t. the true label, pixel-space gradients. Copies are evaluated
    ``chunk_size`` at a time.
    """
    check_images(x)
    y = check_labels(y, x.shape[0], None, x.device)
    check_nonnegative("sigma", sigma)
    ms = sorted({check_int_at_least("m", int(m), 1) for m in ms})
    if not ms:
        raise ValueError("ms must contain at least one sample count")
    check_int_at_least("batch_size", batch_size, 1)
    check_int_at_least("chunk_size", chunk_size, 1)
    m_max = ms[-1]
    gen = make_generator(seed, x.device)
    per_img = np.zeros((x.shape[0], len(ms)))
    base = np.zeros(x.shape[0])
    with frozen_model(model_a), frozen_model(model_b):
        for s in range(0, x.shape[0], batch_size):
            xb, yb = x[s:s + batch_size], y[s:s + batch_size]
            g_b = _input_grad(model_b, xb, yb)
            g_a = _input_grad(model_a, xb, yb)
            base[s:s + xb.shape[0]] = _cos(g_a, g_b).cpu().numpy()
            noise = torch.randn((m_max, *xb.shape), generator=gen, device=x.device,
                                dtype=x.dtype) * sigma
            total = torch.zeros_like(xb)
            done = 0
            k = 0
            while done < m_max:
                e = min(m_max, done + chunk_size)
                if k < len(ms) and ms[k] < e:
                    e = ms[k]
                xin = (xb.unsqueeze(0) + noise[done:e]).reshape(-1, *xb.shape[1:])
                g = _input_grad(model_a, xin, yb.repeat(e - done))
                total = total + g.reshape(e - done, *xb.shape).sum(0)
                done = e
                while k < len(ms) and ms[k] == done:
                    per_img[s:s + xb.shape[0], k] = _cos(total / done, g_b).cpu().numpy()
                    k += 1
    return GradientSimilarity(ms=list(ms), mean=per_img.mean(0), per_image=per_img,
                              baseline=float(base.mean()), baseline_per_image=base,
                              sigma=float(sigma))


# ----------------------------------------------------------------------------------------------
# decision-boundary map
# ----------------------------------------------------------------------------------------------

@dataclass
class DecisionBoundaryMap:
    """Predicted labels on the plane ``x + u·d₁ + v·d₂`` (sg transfer paper Fig. 3b / 9).

    Attributes:
        u, v: ``(R,)`` grid coordinates (pixel units along the unit directions, or per-pixel
            amounts along sign directions when ``sign=True``).
        labels: ``{target name: (R, R) int array}``, ``labels[name][i, j]`` = prediction at
            ``(u[j], v[i])`` (rows = v, columns = u).
        y: true label of the image.
        d1, d2: the two directions ``(C, H, W)`` (``Ĝ`` and ``ĥ``, or their signs).
        cos_g_h: cosine between the smoothed and plain source gradients.
        sign: whether sign directions were used.
    """

    u: np.ndarray
    v: np.ndarray
    labels: dict[str, np.ndarray]
    y: int
    d1: Tensor
    d2: Tensor
    cos_g_h: float
    sign: bool


def decision_boundary_map(model_a: nn.Module, targets: Any, x: Tensor, y: Tensor | int, *,
                          sigma: float = 15 / 255, samples: int = 1000,
                          extent: float = 40 / 255, resolution: int = 101, sign: bool = False,
                          seed: int = 0, chunk_size: int = 100,
                          batch_size: int = 1024) -> DecisionBoundaryMap:
    """Decision-boundary map of ``targets`` around one image in the (Ĝ_A, ĥ_A) plane.

    ``Ĝ = G_A/‖G_A‖`` with ``G_A`` the smoothed gradient of ``model_a`` (``samples`` copies,
    noise std ``sigma``), ``h = g_A − ⟨g_A, Ĝ⟩Ĝ`` the part of the plain gradient orthogonal to it,
    ``ĥ = h/‖h‖``; grid ``(u, v) ∈ [−extent, extent]²`` with ``resolution²`` points, image
    ``clamp(x + u·Ĝ + v·ĥ, 0, 1)`` (``sign=True``: ``x + u·sign(G) + v·sign(h)``, Fig. 9).

    Args:
        model_a: source model.
        targets: models to colour the plane with (``{name: model}`` / pairs / list).
        x: one image, ``(C, H, W)`` or ``(1, C, H, W)``; y: its label.
    """
    if x.ndim == 3:
        x = x.unsqueeze(0)
    check_images(x)
    if x.shape[0] != 1:
        raise ValueError(f"decision_boundary_map takes one image, got a batch of {x.shape[0]}")
    yt = torch.as_tensor([int(y)] if not isinstance(y, Tensor) else y.reshape(-1)[:1],
                         device=x.device).long()
    check_int_at_least("samples", samples, 1)
    check_int_at_least("resolution", resolution, 2)
    check_nonnegative("sigma", sigma)
    check_nonnegative("extent", extent)
    tg = named_models(targets, "target")
    gen = make_generator(seed, x.device)
    with frozen_model(model_a):
        g = _input_grad(model_a, x, yt)[0]
        noise = torch.randn((samples, *x.shape[1:]), generator=gen, device=x.device,
                            dtype=x.dtype) * sigma
        total = torch.zeros_like(x[0])
        for s in range(0, samples, chunk_size):
            e = min(samples, s + chunk_size)
            gc = _input_grad(model_a, x + noise[s:e], yt.repeat(e - s))
            total = total + gc.sum(0)
        big_g = total / samples
    gd, hd = big_g.double(), g.double()
    g_hat = gd / gd.norm().clamp_min(1e-300)
    h = hd - (hd * g_hat).sum() * g_hat
    h_hat = h / h.norm().clamp_min(1e-300)
    cos_gh = float(_cos(big_g[None], g[None])[0])
    if sign:
        d1, d2 = big_g.sign(), h.sign().to(x.dtype)
    else:
        d1, d2 = g_hat.to(x.dtype), h_hat.to(x.dtype)
    grid = torch.linspace(-extent, extent, resolution, dtype=torch.float64)
    vv, uu = torch.meshgrid(grid, grid, indexing="ij")
    uu = uu.reshape(-1).to(x.device, x.dtype)
    vv = vv.reshape(-1).to(x.device, x.dtype)
    labels: dict[str, np.ndarray] = {}
    for name, m in tg:
        preds = []
        with frozen_model(m), torch.no_grad():
            for s in range(0, uu.numel(), batch_size):
                u_b, v_b = uu[s:s + batch_size], vv[s:s + batch_size]
                imgs = (x + u_b.view(-1, 1, 1, 1) * d1 + v_b.view(-1, 1, 1, 1) * d2).clamp(0, 1)
                preds.append(m(imgs).argmax(1))
        labels[name] = torch.cat(preds).reshape(resolution, resolution).cpu().numpy()
    return DecisionBoundaryMap(u=grid.numpy(), v=grid.numpy(), labels=labels, y=int(yt[0]),
                               d1=d1.detach(), d2=d2.detach(), cos_g_h=cos_gh, sign=sign)

