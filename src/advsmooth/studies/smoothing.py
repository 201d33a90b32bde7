"""Evaluation of smoothed inference as a defence (docs/algorithms.md).

* :func:`smoothed_accuracy` — accuracy of the base model and of each vote over ``R`` evaluation
  draws (mean ± std; a single draw of a randomised model overstates or understates robustness).
  One set of ``M`` noisy copies per draw serves every vote.
* :func:`sigma_samples_sweep` — accuracy vs σ for ``M = 1, 2, 4, …`` (the paper's Figs 1, 2,
  B.1): per σ and draw one pass with the largest ``M``; smaller ``M`` use its first copies.
* :func:`craft` — adversarial examples by name: ``"pgd"`` (on the base model), ``"epgd"``
  (:class:`~advsmooth.attacks.ExpectationGradient`, EPGD), ``"epgd_ref"`` (expected loss),
  ``"smoothadv"`` (:class:`~advsmooth.attacks.SmoothAdvGradient`), ``"transfer_pgd"`` /
  ``"transfer_pgd_s"`` (PGD / EPGD-style PGD on an independently trained source model),
  ``"nattack"`` (score-based, querying the smoothed classifier).
* :func:`budget_study` — PGD vs EPGD vs SmoothAdv-PGD at equal ``k×M`` (Fig. B.3).
* :class:`SmoothingSettings` and :func:`plan` — the whole study (Tables 1/3/4 analogue, optionally
  the sweeps) as store steps of the experiment runner (task ``smoothing``, also behind
  ``advsmooth smooth``): per attack one step crafts the adversarial set (an artefact) and one
  scores it; the sweep and each equal-budget point are steps of their own. The figures (Figs
  1/2) are drawn by the report from the rows.
* :func:`run_smoothing_study` — the same parts in memory, for models and tensors given from
  Python.

σ here is in pixel units unless ``noise_space="normalized"`` (see
:mod:`advsmooth.defenses.smoothing`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._tensors import check_labels
from .._utils import check_choice, check_int_at_least, check_nonnegative
from ..attacks import PGD, ExpectationGradient, NAttack, SmoothAdvGradient
from ..defenses import noise_parameters
from ..defenses.smoothing import VOTES, SmoothedClassifier, votes_from_logits
from ..experiments.artefacts import Step, StepOutput, register_step
from ._settings import load_module_tensors, module_tensors
from .training import (
    TRAIN_DEFAULTS,
    _method_kwargs,
    _noisy_copy,
    sample_split,
    train_base,
    train_recipe,
)

__all__ = [
    "ATTACKS",
    "smoothed_accuracy",
    "sigma_samples_sweep",
    "craft",
    "budget_study",
    "run_smoothing_study",
    "rows_to_markdown",
    "SmoothingSettings",
    "plan",
    "MAIN_COLUMNS",
    "TRAIN_DEFAULTS",  # the recipe helpers live in studies/training.py (shared with the PNI study)
    "train_recipe",
    "train_base",
]

#: attack names understood by :func:`craft`
ATTACKS = ("none", "pgd", "epgd", "epgd_ref", "smoothadv", "transfer_pgd", "transfer_pgd_s",
           "nattack")


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    t = torch.tensor(list(values), dtype=torch.float64)
    std = float(t.std(unbiased=True)) if t.numel() > 1 else 0.0
    return float(t.mean()), std


def _draw_seed(seed: int, draw: int) -> int:
    return int(seed) * 1_000_003 + int(draw)


@torch.no_grad()
def _base_accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024) -> float:
    bs = batch_size
    pred = torch.cat([model(x[s:s + bs]).argmax(1) for s in range(0, x.shape[0], bs)])
    return float((pred == y).double().mean())


def smoothed_accuracy(model: nn.Module, x: Tensor, y: Tensor, *, sigma: float, samples: int,
                      votes: Sequence[str] = ("prediction", "weighted", "soft"), C: float = 0.5,
                      draws: int = 3, seed: int = 0, noise_space: str = "pixel",
                      std: Any = None, batch_size: int | None = None) -> dict[str, dict[str, Any]]:
    """Accuracy of ``model`` (key ``"base"``) and of every smoothing vote on ``(x, y)``.

    Each of the ``draws`` evaluation draws uses fresh noise (seed ``seed``, draw ``r``); the votes
    of one draw share its ``samples`` noisy copies. Returns ``{name: {"mean", "std", "values"}}``
    (accuracies in [0, 1]; ``std`` is the sample std over draws, 0 for one draw).
    """
    check_int_at_least("draws", draws, 1)
    for v in votes:
        check_choice("vote", v, VOTES)
    out: dict[str, dict[str, Any]] = {}
    acc = _base_accuracy(model, x, y)
    out["base"] = {"mean": acc, "std": 0.0, "values": [acc]}
    sm = SmoothedClassifier(model, sigma, samples, noise_space=noise_space, std=std,
                            batch_size=batch_size)
    per: dict[str, list[float]] = {v: [] for v in votes}
    for r in range(draws):
        z = sm.copy_logits(x, noise_seed=_draw_seed(seed, r))
        for v in votes:
            s = votes_from_logits(z, v, C=C if v == "weighted_c" else 0.0)
            per[v].append(float((s.argmax(1) == y).double().mean()))
    for v in votes:
        m, s = _mean_std(per[v])
        out[v] = {"mean": m, "std": s, "values": per[v]}
    return out


def sigma_samples_sweep(model: nn.Module, x: Tensor, y: Tensor, *, sigmas: Sequence[float],
                        samples: Sequence[int] = tuple(2**i for i in range(10)),
                        votes: Sequence[str] = ("prediction",), C: float = 0.5, draws: int = 1,
                        seed: int = 0, noise_space: str = "pixel", std: Any = None,
                        batch_size: int | None = None, label: str = "clean"
                        ) -> list[dict[str, Any]]:
    """Accuracy vs (σ, M) for each vote: rows ``{input, vote, sigma, M, acc_mean, acc_std}``.

    Per σ and draw, one pass with ``max(samples)`` copies; every smaller ``M`` uses its first
    ``M`` copies (nested samples, so the curves over M share noise).
    """
    ms = sorted({check_int_at_least("samples", int(m), 1) for m in samples})
    rows = []
    for sigma in sigmas:
        check_nonnegative("sigma", sigma)
        sm = SmoothedClassifier(model, float(sigma), ms[-1], noise_space=noise_space, std=std,
                                batch_size=batch_size)
        accs: dict[tuple[str, int], list[float]] = {}
        for r in range(draws):
            z = sm.copy_logits(x, noise_seed=_draw_seed(seed, r))
            for v in votes:
                for m in ms:
                    s = votes_from_logits(z[:m], v, C=C if v == "weighted_c" else 0.0)
                    accs.setdefault((v, m), []).append(float((s.argmax(1) == y).double().mean()))
        for (v, m), vals in accs.items():
            mean, sd = _mean_std(vals)
            rows.append({"input": label, "vote": v, "sigma": float(sigma), "M": m,
                         "acc_mean": mean, "acc_std": sd, "draws": draws})
    return rows


def craft(kind: str, model: nn.Module, x: Tensor, y: Tensor, *, eps: float = 0.3,
          steps: int = 40, alpha: float | None = None, sigma: float = 0.25, m_backward: int = 8,
          source: nn.Module | None = None, smoothed: SmoothedClassifier | None = None,
          noise_space: str = "pixel", std: Any = None, seed: int = 0,
          nattack: dict[str, Any] | None = None) -> tuple[Tensor, dict[str, Any]]:
    """Adversarial examples of attack ``kind`` (one of :data:`ATTACKS`) and their cost.

    White-box attacks target ``model`` (the base of the smoothed classifier), with a random
    start, ``steps`` steps of size ``alpha`` (default ``2.5·eps/steps``) in the ℓ∞ ball ``eps``;
    the smoothing-aware ones (``epgd``, ``epgd_ref``, ``smoothadv``) use ``m_backward`` noisy
    copies of std ``sigma`` per step. ``transfer_*`` craft on ``source`` (``_s``: with EPGD-style
    smoothing on the source). ``nattack`` queries ``smoothed`` (kwargs in ``nattack=``) and adds
    ``"broken"`` (bool per sample) to the info.

    Returns ``(x_adv, info)`` with ``info`` = ``{"grad_evals", "forward_evals", "seconds", ...}``
    (per-image means).
    """
    check_choice("attack", kind, ATTACKS)
    if kind == "none":
        return x.clone(), {"grad_evals": 0.0, "forward_evals": 0.0, "seconds": 0.0}
    start = time.perf_counter()
    if kind == "nattack":
        target = smoothed if smoothed is not None else model
        kw = {"eps": eps, "seed": seed, **(nattack or {})}
        res = NAttack(**kw)(target, x, y)
        broken = res.extras["broken"] | (res.clean_pred != y)
        return res.x_adv, {"grad_evals": 0.0, "forward_evals": res.mean_forward_evals,
                           "queries": float(res.extras["queries"].double().mean()),
                           "broken": broken, "seconds": time.perf_counter() - start}
    gradient = None
    if kind in ("epgd", "transfer_pgd_s"):
        gradient = ExpectationGradient(sigma, m_backward, noise_space=noise_space, std=std)
    elif kind == "epgd_ref":
        gradient = ExpectationGradient(sigma, m_backward, variant="expected_loss",
                                       noise_space=noise_space, std=std)
    elif kind == "smoothadv":
        gradient = SmoothAdvGradient(sigma, m_backward, noise_space=noise_space, std=std)
    attacked = model
    if kind.startswith("transfer"):
        if source is None:
            raise ValueError(f"attack {kind!r} needs a source model (--source)")
        attacked = source
    att = PGD(eps=eps, alpha=alpha, steps=steps, random_start=True, gradient=gradient, seed=seed)
    res = att(attacked, x, y)
    return res.x_adv, {"grad_evals": res.mean_grad_evals, "forward_evals": res.mean_forward_evals,
                       "seconds": time.perf_counter() - start}


def budget_study(model: nn.Module, x: Tensor, y: Tensor, *, budgets: Sequence[int],
                 eps: float = 0.3, sigma: float = 0.25, m_backward: int = 8,
                 inference_samples: Sequence[int] = (1, 8, 64), vote: str = "prediction",
                 draws: int = 1, seed: int = 0, noise_space: str = "pixel",
                 std: Any = None) -> list[dict[str, Any]]:
    """PGD vs EPGD vs SmoothAdv-PGD at equal ``k×M`` gradient budget (Fig. B.3 analogue).

    For each budget ``B``: PGD with ``B`` steps; EPGD / SmoothAdv-PGD with ``B // m_backward``
    steps of ``m_backward`` copies (step size ``2.5·eps/steps``). Each adversarial set is scored
    by the smoothed classifier with each inference ``M`` (σ = ``sigma``). Rows:
    ``{attack, budget, steps, M_backward, M, acc_mean, acc_std, grad_evals}``.
    """
    rows = []
    ms = sorted(set(int(m) for m in inference_samples))
    for b in budgets:
        for kind in ("pgd", "epgd", "smoothadv"):
            mb = 1 if kind == "pgd" else m_backward
            if b < mb:
                continue
            steps = b // mb
            x_adv, info = craft(kind, model, x, y, eps=eps, steps=steps, sigma=sigma,
                                m_backward=m_backward, noise_space=noise_space, std=std,
                                seed=seed)
            sweep = sigma_samples_sweep(model, x_adv, y, sigmas=[sigma], samples=ms, votes=[vote],
                                        draws=draws, seed=seed + 1, noise_space=noise_space,
                                        std=std, label=kind)
            for r in sweep:
                rows.append({"attack": kind, "budget": b, "steps": steps, "M_backward": mb,
                             "M": r["M"], "vote": vote, "sigma": sigma,
                             "acc_mean": r["acc_mean"], "acc_std": r["acc_std"],
                             "grad_evals": info["grad_evals"]})
    return rows


# ----------------------------------------------------------------------------------------------
# a noise-trained base model (the smoothed-inference paper trains its bases with noise injection
# and adversarial training before smoothing them)
# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# the whole study: settings, parts and steps
# ----------------------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return str(v)


def rows_to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (``columns``: default the keys of the first row)."""
    if not rows:
        return "(no rows)\n"
    cols = list(columns) if columns is not None else [k for k in rows[0] if k != "values"]
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out) + "\n"


MAIN_COLUMNS = ("attack", "classifier", "sigma", "M", "acc_mean", "acc_std", "draws", "n",
                "grad_evals", "attack_seconds")


# One field per study parameter (the spec's ``params`` table and ``advsmooth smooth``'s options),
# so the constructor has more than 12 parameters; all but ``model`` have defaults.
@dataclass(frozen=True)
class SmoothingSettings:
    """Settings of the smoothing study (Tables 1/3/4, Figs 1/2/B.3 analogue).

    ``model`` / ``source`` are zoo names or checkpoint paths, ``data`` a dataset name of
    :func:`advsmooth.data.load` (a seeded random subset of ``n`` images of ``split``, seed
    ``data_seed``; ``n=None``: the whole split). σ, ``eps`` and ``alpha`` are in pixel units
    unless ``noise_space="normalized"``. ``train`` (a recipe, :func:`train_recipe`) makes the
    base a copy of ``model`` with noise layers trained on ``train.n_train`` seeded images of
    ``data``'s training split (seed ``train.seed``) before anything is attacked: a store artefact of
    its own (step ``smoothing.train``), so the study never trains it twice. See
    :func:`run_smoothing_study` for the meaning of the other fields.
    """

    model: str
    data: str = "mnist"
    split: str = "test"
    n: int | None = 200
    data_seed: int = 0
    sigma: float = 0.25
    samples: int = 64
    votes: tuple[str, ...] = ("prediction", "weighted", "soft")
    C: float = 0.5
    attacks: tuple[str, ...] = ("none", "pgd", "epgd")
    eps: float = 0.3
    steps: int = 40
    alpha: float | None = None
    m_backward: int = 8
    source: str | None = None
    nattack: dict[str, Any] | None = None
    nattack_vote: str = "prediction"
    nattack_on_base: bool = False
    draws: int = 3
    seed: int = 0
    noise_space: str = "pixel"
    std: Any = None
    sweep: bool = False
    sweep_sigmas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    sweep_samples: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    sweep_attack: str = "pgd"
    sweep_draws: int | None = None
    budgets: tuple[int, ...] = ()
    train: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", train_recipe(self.train))
        for key in ("votes", "attacks", "sweep_sigmas", "sweep_samples", "budgets"):
            v = getattr(self, key)
            if isinstance(v, str) or not isinstance(v, Sequence):
                raise ValueError(f"{key} must be a list, got {v!r}")
            object.__setattr__(self, key, tuple(v))
        for a in (*self.attacks, self.sweep_attack):
            check_choice("attack", a, ATTACKS)
        for v in (*self.votes, self.nattack_vote):
            check_choice("vote", v, VOTES)
        check_int_at_least("draws", self.draws, 1)
        if any(a.startswith("transfer") for a in self.attacks) and self.source is None:
            raise ValueError("the transfer attacks (transfer_pgd, transfer_pgd_s) need source = "
                             "a model name")

    @classmethod
    def fields(cls) -> list[str]:
        """The names of the settings (the study task's parameters)."""
        return [f.name for f in dataclasses.fields(cls)]

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON object (the settings of the study's steps)."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}


def _attack_rows(s: SmoothingSettings, kind: str, base: nn.Module, x_adv: Tensor, y: Tensor,
                 info: dict[str, Any], broken: Tensor | None) -> list[dict[str, Any]]:
    """Rows of the main table for the adversarial set of attack ``kind``: the base model and
    every vote of the smoothed classifier (``draws`` evaluation draws), plus NAttack's own
    count of the samples it never broke."""
    acc = smoothed_accuracy(base, x_adv, y, sigma=s.sigma, samples=s.samples, votes=s.votes,
                            C=s.C, draws=s.draws, seed=s.seed + 1, noise_space=s.noise_space,
                            std=s.std)
    common = {"table": "main", "attack": kind, "n": int(y.shape[0]), "draws": s.draws,
              "grad_evals": info["grad_evals"], "attack_seconds": round(info["seconds"], 2)}
    rows = []
    for name, a in acc.items():
        rows.append({**common, "classifier": name, "sigma": 0.0 if name == "base" else s.sigma,
                     "M": 1 if name == "base" else s.samples,
                     "acc_mean": a["mean"], "acc_std": a["std"],
                     "draws": 1 if name == "base" else s.draws})
    if kind == "nattack":
        assert broken is not None
        who = "base" if s.nattack_on_base else s.nattack_vote
        rows.append({**common, "classifier": f"{who} (NAttack search)",
                     "sigma": 0.0 if s.nattack_on_base else s.sigma,
                     "M": 1 if s.nattack_on_base else s.samples,
                     "acc_mean": float((~broken).double().mean()), "acc_std": 0.0,
                     "draws": 1, "queries": info["queries"]})
    return rows


def _craft(s: SmoothingSettings, kind: str, base: nn.Module, src: nn.Module | None, x: Tensor,
           y: Tensor) -> tuple[Tensor, dict[str, Any]]:
    """:func:`craft` with the study's settings (NAttack queries the smoothed classifier with
    vote ``nattack_vote`` unless ``nattack_on_base``)."""
    smoothed = None
    if kind == "nattack" and not s.nattack_on_base:
        smoothed = SmoothedClassifier(base, s.sigma, s.samples, vote=s.nattack_vote,
                                      C=s.C if s.nattack_vote == "weighted_c" else None,
                                      noise_space=s.noise_space, std=s.std, seed=s.seed)
    return craft(kind, base, x, y, eps=s.eps, steps=s.steps, alpha=s.alpha, sigma=s.sigma,
                 m_backward=s.m_backward, source=src, smoothed=smoothed,
                 noise_space=s.noise_space, std=s.std, seed=s.seed, nattack=s.nattack)


def _sweep_rows(s: SmoothingSettings, label: str, base: nn.Module, xs: Tensor,
                y: Tensor) -> list[dict[str, Any]]:
    """Rows of the σ × M sweep on ``xs`` (clean or adversarial, named ``label``)."""
    return [{"table": "sweep", **r, "n": int(y.shape[0])}
            for r in sigma_samples_sweep(base, xs, y, sigmas=s.sweep_sigmas,
                                         samples=s.sweep_samples, votes=s.votes, C=s.C,
                                         draws=s.sweep_draws or s.draws, seed=s.seed + 2,
                                         noise_space=s.noise_space, std=s.std, label=label)]


def _budget_rows(s: SmoothingSettings, budget: int, base: nn.Module, x: Tensor,
                 y: Tensor) -> list[dict[str, Any]]:
    """Rows of the equal-budget comparison (Fig. B.3) at ``k×M = budget``."""
    return [{"table": "budget", **r, "n": int(y.shape[0])}
            for r in budget_study(base, x, y, budgets=[budget], eps=s.eps, sigma=s.sigma,
                                  m_backward=s.m_backward,
                                  inference_samples=(1, s.m_backward, s.samples), draws=s.draws,
                                  seed=s.seed, noise_space=s.noise_space, std=s.std)]


def _resolve_model(m: nn.Module | str, device: str) -> nn.Module:
    if isinstance(m, nn.Module):
        return m.eval()
    from .. import models

    return models.load(m, device=device, verbose=False)


def run_smoothing_study(model: nn.Module | str, data: str | tuple[Tensor, Tensor] = "mnist", *,
                        source: nn.Module | str | None = None, data_root: str | None = None,
                        device: str = "cpu", **settings: Any) -> list[dict[str, Any]]:
    """Base vs smoothed accuracy, clean and under attack (Tables 1/3/4 analogue), as rows.

    ``model`` / ``source`` are models or zoo names, ``data`` a dataset name or ``(x, y)``;
    ``settings`` are the other fields of :class:`SmoothingSettings`. For each attack in
    ``attacks`` (see :func:`craft`), the adversarial set is crafted once (seed ``seed``) and
    scored by the base model and by every vote of the smoothed classifier (σ = ``sigma``,
    ``samples`` copies) over ``draws`` evaluation draws (mean ± std). NAttack queries the
    smoothed classifier with vote ``nattack_vote`` (its accuracy is the share of samples it
    never broke, one run; the draws then re-score its output); ``nattack_on_base=True`` attacks
    the base model's logits instead (black-box baseline). With ``sweep=True`` also the σ × M
    sweep on clean inputs and on ``sweep_attack`` examples (Figs 1/2/B.1); with ``budgets`` the
    equal-budget study (Fig. B.3).

    The experiment runner runs the same parts as store steps (task ``smoothing``); this
    function runs them in memory, for models and tensors given from Python.

    Rows: ``{"table": "main", "attack", "classifier", "sigma", "M", "acc_mean", "acc_std",
    "draws", "n", "grad_evals", "attack_seconds"}`` (``table="sweep"`` / ``"budget"`` rows as in
    :func:`sigma_samples_sweep` / :func:`budget_study`).
    """
    s = SmoothingSettings(model=model if isinstance(model, str) else "(given)",
                          data=data if isinstance(data, str) else "(given)",
                          source=None if source is None else "(given)", **settings)
    base = _resolve_model(model, device)
    src = _resolve_model(source, device) if source is not None else None
    if isinstance(data, str):
        x, y = _load_data(s, data_root)
    else:
        x, y = data
    if s.train is not None:
        if not isinstance(data, str):
            raise ValueError("train needs data given by name (its training split is used)")
        base = train_base(base, *_train_data(s, data_root), s.train).to(device)
    x, y = x.to(device), y.to(device)
    _check_classes(base, x, y)
    rows: list[dict[str, Any]] = []
    adv: dict[str, Tensor] = {}
    for kind in s.attacks:
        x_adv, info = _craft(s, kind, base, src, x, y)
        adv[kind] = x_adv
        rows += _attack_rows(s, kind, base, x_adv, y, info, info.get("broken"))
    if s.sweep:
        rows += _sweep_rows(s, "clean", base, x, y)
        xs = adv.get(s.sweep_attack)
        if xs is None:
            xs = _craft(s, s.sweep_attack, base, src, x, y)[0]
        rows += _sweep_rows(s, s.sweep_attack, base, xs, y)
    for b in s.budgets:
        rows += _budget_rows(s, b, base, x, y)
    return rows


def _load_data(s: SmoothingSettings, root: str | None) -> tuple[Tensor, Tensor]:
    from .. import data as data_mod

    kw: dict[str, Any] = {"sample": s.n, "seed": s.data_seed} if s.n is not None else {}
    return data_mod.load(s.data, s.split, root=root, **kw)


def _check_classes(base: nn.Module, x: Tensor, y: Tensor) -> None:
    """``ValueError`` unless every label is a class of ``base`` (a label it cannot output would
    only count as an error, silently). The probe runs on a copy: a noise layer's own generator
    in ``base`` must not advance, or the study's noise would depend on the check."""
    with torch.no_grad():
        z = copy.deepcopy(base)(x[:1])
    check_labels(y, x.shape[0], int(z.shape[1]) if z.ndim == 2 and z.shape[1] > 1 else 2,
                 y.device)


def _train_data(s: SmoothingSettings, root: str | None) -> tuple[Tensor, Tensor]:
    """The recipe's ``n_train`` seeded images of the training split of ``s.data``."""
    assert s.train is not None
    return sample_split(s.data, "train", s.train["n_train"], s.train["seed"], root)


# ----------------------------------------------------------------------------------------------
# store steps (task ``smoothing`` of the experiment runner)
# ----------------------------------------------------------------------------------------------

def _inputs(st: dict[str, Any], ctx: Any) -> tuple[SmoothingSettings, nn.Module,
                                                   nn.Module | None, Tensor, Tensor]:
    s = SmoothingSettings(**st["study"])
    base = ctx.load_model(s.model)
    if s.train is not None:
        weights = ctx.step(train_step(s)).tensors
        base = load_module_tensors(_noisy_copy(base, s.train, s.seed), weights).to(ctx.device)
    src = ctx.load_model(s.source) if s.source is not None else None
    x, y = _load_data(s, ctx.data_root)
    x, y = x.to(ctx.device), y.to(ctx.device)
    _check_classes(base, x, y)
    return s, base, src, x, y


def train_step(s: SmoothingSettings) -> Step:
    """The step training the study's noise-trained base (settings: the model, the data and the
    recipe only, so that changing an attack or the study's seed never retrains it)."""
    return Step("smoothing.train", {"model": s.model, "data": s.data, "train": s.train})


@register_step("smoothing.train")
def _train_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """The trained base's weights and one row (``table = "train"``): the recipe, the training
    time (s), the accuracy on the clean training images and the mean learned noise scale |α|
    over the noise layers (info: |α| per layer)."""
    s = SmoothingSettings(model=st["model"], data=st["data"], train=st["train"])
    x, y = _train_data(s, ctx.data_root)
    x, y = x.to(ctx.device), y.to(ctx.device)
    start = time.perf_counter()
    model = train_base(ctx.load_model(s.model), x, y, st["train"])
    seconds = time.perf_counter() - start
    alphas = [float(p.detach().abs().mean()) for p in noise_parameters(model)]
    r = st["train"]
    row = {"table": "train", "model": s.model, "method": r["method"],
           "noise": "none" if r["noise"] is None else ", ".join(
               f"{k}={v}" for k, v in sorted(r["noise"].items())),
           "n_train": int(y.shape[0]), "epochs": r["epochs"], "lr": r["lr"],
           "method_params": ", ".join(f"{k}={v}" for k, v in sorted(_method_kwargs(r).items())),
           "train_seconds": round(seconds, 1), "train_accuracy": _base_accuracy(model, x, y),
           "mean_abs_alpha": sum(alphas) / len(alphas) if alphas else float("nan")}
    return StepOutput(rows=[row], tensors=module_tensors(model), info={"abs_alpha": alphas})


@register_step("smoothing.craft")
def _craft_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """The adversarial set of attack ``st["attack"]`` (tensors ``x_adv`` and, for NAttack,
    ``broken``; info: its per-image cost)."""
    s, base, src, x, y = _inputs(st, ctx)
    x_adv, info = _craft(s, st["attack"], base, src, x, y)
    tensors = {"x_adv": x_adv}
    if "broken" in info:
        tensors["broken"] = info.pop("broken")
    return StepOutput(tensors=tensors, info=info)


@register_step("smoothing.main")
def _main_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """Main-table rows of one attack (its adversarial set from the ``smoothing.craft`` step)."""
    s, base, _, _, y = _inputs(st, ctx)
    crafted = ctx.step(craft_step(s, st["attack"]))
    return StepOutput(rows=_attack_rows(s, st["attack"], base, crafted.tensors["x_adv"], y,
                                        crafted.info, crafted.tensors.get("broken")))


@register_step("smoothing.sweep")
def _sweep_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """σ × M sweep rows on clean inputs (``input = "clean"``) or on an attack's examples."""
    s, base, _, x, y = _inputs(st, ctx)
    xs = x if st["input"] == "clean" else ctx.step(craft_step(s, st["input"])).tensors["x_adv"]
    return StepOutput(rows=_sweep_rows(s, st["input"], base, xs, y))


@register_step("smoothing.budget")
def _budget_step(st: dict[str, Any], ctx: Any) -> StepOutput:
    """Equal-budget rows (Fig. B.3) of one budget ``k×M``."""
    s, base, _, x, y = _inputs(st, ctx)
    return StepOutput(rows=_budget_rows(s, int(st["budget"]), base, x, y))


def craft_step(s: SmoothingSettings, kind: str) -> Step:
    """The step crafting the adversarial set of attack ``kind`` (shared by the main table and
    the sweep)."""
    return Step("smoothing.craft", {"study": s.to_json(), "attack": kind}, rows=False,
                after=() if s.train is None else (train_step(s),))


def plan(s: SmoothingSettings) -> list[Step]:
    """The steps of the study, in table order: per attack its main rows (after crafting), the
    sweep on clean and attacked inputs, one step per budget."""
    steps = []
    study = s.to_json()
    trained = () if s.train is None else (train_step(s),)
    steps += trained
    for kind in s.attacks:
        steps.append(Step("smoothing.main", {"study": study, "attack": kind},
                          after=(craft_step(s, kind),)))
    if s.sweep:
        steps.append(Step("smoothing.sweep", {"study": study, "input": "clean"}, after=trained))
        steps.append(Step("smoothing.sweep", {"study": study, "input": s.sweep_attack},
                          after=(craft_step(s, s.sweep_attack),)))
    steps += [Step("smoothing.budget", {"study": study, "budget": int(b)}, after=trained)
              for b in s.budgets]
    return steps
