"""Evaluation of smoothed inference as a defence (ALGORITHMS.md §9, §10, §13, §14, §18.4).

* :func:`smoothed_accuracy` — accuracy of the base model and of each vote over ``R`` evaluation
  draws (mean ± std; a single draw of a randomised model overstates or understates robustness).
  One set of ``M`` noisy copies per draw serves every vote.
* :func:`sigma_samples_sweep` — accuracy vs σ for ``M = 1, 2, 4, …`` (the paper's Figs 1, 2,
  B.1): per σ and draw one pass with the largest ``M``; smaller ``M`` use its first copies.
* :func:`craft` — adversarial examples by name: ``"pgd"`` (on the base model), ``"epgd"``
  (:class:`~advsmooth.attacks.ExpectationGradient`, seed Eq. 25), ``"epgd_ref"`` (expected loss),
  ``"smoothadv"`` (:class:`~advsmooth.attacks.SmoothAdvGradient`), ``"transfer_pgd"`` /
  ``"transfer_pgd_s"`` (PGD / EPGD-style PGD on an independently trained source model),
  ``"nattack"`` (score-based, querying the smoothed classifier).
* :func:`budget_study` — PGD vs EPGD vs SmoothAdv-PGD at equal ``k×M`` (Fig. B.3).
* :func:`run_smoothing_study` — the whole table (Tables 1/3/4 analogue) as rows, optionally the
  sweeps and the plots; used by ``advsmooth smooth`` and the experiment runner.

σ here is in pixel units unless ``noise_space="normalized"`` (see
:mod:`advsmooth.defenses.smoothing`).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import atomic_path, check_choice, check_int_at_least, check_nonnegative
from ..attacks import PGD, ExpectationGradient, NAttack, SmoothAdvGradient
from ..defenses.smoothing import VOTES, SmoothedClassifier, votes_from_logits

__all__ = [
    "ATTACKS",
    "smoothed_accuracy",
    "sigma_samples_sweep",
    "craft",
    "budget_study",
    "run_smoothing_study",
    "rows_to_markdown",
    "write_csv",
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
# tables
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


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write ``rows`` as CSV (union of keys, in first-seen order), atomically (temporary file +
    rename: a failed write leaves a previous ``path`` intact)."""
    path = Path(path)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys and k != "values"]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8", newline="")
    return path


# ----------------------------------------------------------------------------------------------
# the whole study
# ----------------------------------------------------------------------------------------------

def _resolve_model(m: nn.Module | str, device: str) -> nn.Module:
    if isinstance(m, nn.Module):
        return m.eval()
    from .. import models

    return models.load(m, device=device, verbose=False)


def run_smoothing_study(
    model: nn.Module | str,
    data: str | tuple[Tensor, Tensor] = "mnist",
    *,
    split: str = "test",
    n: int | None = 200,
    data_seed: int = 0,
    data_root: str | None = None,
    sigma: float = 0.25,
    samples: int = 64,
    votes: Sequence[str] = ("prediction", "weighted", "soft"),
    C: float = 0.5,
    attacks: Sequence[str] = ("none", "pgd", "epgd"),
    eps: float = 0.3,
    steps: int = 40,
    alpha: float | None = None,
    m_backward: int = 8,
    source: nn.Module | str | None = None,
    nattack: dict[str, Any] | None = None,
    nattack_vote: str = "prediction",
    nattack_on_base: bool = False,
    draws: int = 3,
    seed: int = 0,
    noise_space: str = "pixel",
    std: Any = None,
    sweep: bool = False,
    sweep_sigmas: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    sweep_samples: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    sweep_attack: str = "pgd",
    sweep_draws: int | None = None,
    budgets: Sequence[int] = (),
    out: str | Path | None = None,
    device: str = "cpu",
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """Base vs smoothed accuracy, clean and under attack (Tables 1/3/4 analogue), as rows.

    For each attack in ``attacks`` (see :func:`craft`), the adversarial set is crafted once
    (seed ``seed``) and scored by the base model and by every vote of the smoothed classifier
    (σ = ``sigma``, ``samples`` copies) over ``draws`` evaluation draws (mean ± std). NAttack
    queries the smoothed classifier with vote ``nattack_vote`` (its accuracy is the share of
    samples it never broke, one run; the draws then re-score its output);
    ``nattack_on_base=True`` attacks the base model's logits instead (black-box baseline).

    With ``sweep=True`` also the σ × M sweep on clean inputs and on ``sweep_attack`` examples
    (Figs 1/2/B.1); with ``budgets`` the equal-budget study (Fig. B.3). With ``out`` the rows go
    to ``out/*.csv``, Markdown tables to ``out/*.md`` and plots to ``out/*.png`` (matplotlib).

    Rows: ``{"table": "main", "attack", "classifier", "sigma", "M", "acc_mean", "acc_std",
    "draws", "n", "grad_evals", "attack_seconds"}`` (``table="sweep"`` / ``"budget"`` rows as in
    :func:`sigma_samples_sweep` / :func:`budget_study`).
    """
    for a in attacks:
        check_choice("attack", a, ATTACKS)
    for v in votes:
        check_choice("vote", v, VOTES)
    base = _resolve_model(model, device)
    src = _resolve_model(source, device) if source is not None else None
    if isinstance(data, str):
        from .. import data as data_mod

        kw: dict[str, Any] = {"sample": n, "seed": data_seed} if n is not None else {}
        x, y = data_mod.load(data, split, root=data_root, **kw)
    else:
        x, y = data
    x, y = x.to(device), y.to(device)
    n_eff = int(x.shape[0])
    rows: list[dict[str, Any]] = []
    adv_sets: dict[str, Tensor] = {}
    t_all = time.perf_counter()
    for kind in attacks:
        smoothed = None
        if kind == "nattack" and not nattack_on_base:
            smoothed = SmoothedClassifier(base, sigma, samples, vote=nattack_vote,
                                          C=C if nattack_vote == "weighted_c" else None,
                                          noise_space=noise_space, std=std, seed=seed)
        x_adv, info = craft(kind, base, x, y, eps=eps, steps=steps, alpha=alpha, sigma=sigma,
                            m_backward=m_backward, source=src, smoothed=smoothed,
                            noise_space=noise_space, std=std, seed=seed, nattack=nattack)
        adv_sets[kind] = x_adv
        acc = smoothed_accuracy(base, x_adv, y, sigma=sigma, samples=samples, votes=votes, C=C,
                                draws=draws, seed=seed + 1, noise_space=noise_space, std=std)
        common = {"table": "main", "attack": kind, "n": n_eff, "draws": draws,
                  "grad_evals": info["grad_evals"], "attack_seconds": round(info["seconds"], 2)}
        for name, a in acc.items():
            rows.append({**common, "classifier": name, "sigma": 0.0 if name == "base" else sigma,
                         "M": 1 if name == "base" else samples,
                         "acc_mean": a["mean"], "acc_std": a["std"],
                         "draws": 1 if name == "base" else draws})
        if kind == "nattack":
            broken = info["broken"]
            who = "base" if nattack_on_base else nattack_vote
            rows.append({**common, "classifier": f"{who} (NAttack search)",
                         "sigma": 0.0 if nattack_on_base else sigma,
                         "M": 1 if nattack_on_base else samples,
                         "acc_mean": float((~broken).double().mean()), "acc_std": 0.0,
                         "draws": 1, "queries": info["queries"]})
        if verbose:
            print(f"[smoothing] {kind}: done in {info['seconds']:.1f}s", flush=True)
    if sweep:
        for label, xs in (("clean", x), (sweep_attack, adv_sets.get(sweep_attack))):
            if xs is None:
                xs, _ = craft(sweep_attack, base, x, y, eps=eps, steps=steps, alpha=alpha,
                              sigma=sigma, m_backward=m_backward, source=src,
                              noise_space=noise_space, std=std, seed=seed)
            for r in sigma_samples_sweep(base, xs, y, sigmas=sweep_sigmas, samples=sweep_samples,
                                         votes=votes, C=C, draws=sweep_draws or draws,
                                         seed=seed + 2,
                                         noise_space=noise_space, std=std, label=label):
                rows.append({"table": "sweep", **r, "n": n_eff})
        if verbose:
            print("[smoothing] sweep done", flush=True)
    if budgets:
        for r in budget_study(base, x, y, budgets=budgets, eps=eps, sigma=sigma,
                              m_backward=m_backward, inference_samples=(1, m_backward, samples),
                              draws=draws, seed=seed, noise_space=noise_space, std=std):
            rows.append({"table": "budget", **r, "n": n_eff})
    if out is not None:
        _write_outputs(rows, Path(out))
    if verbose:
        print(f"[smoothing] total {time.perf_counter() - t_all:.1f}s", flush=True)
    return rows


MAIN_COLUMNS = ("attack", "classifier", "sigma", "M", "acc_mean", "acc_std", "draws", "n",
                "grad_evals", "attack_seconds")


def _write_outputs(rows: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for table in ("main", "sweep", "budget"):
        sel = [{k: v for k, v in r.items() if k != "table"} for r in rows if r["table"] == table]
        if not sel:
            continue
        write_csv(sel, out / f"smoothing_{table}.csv")
        cols = MAIN_COLUMNS if table == "main" else None
        with atomic_path(out / f"smoothing_{table}.md") as tmp:
            tmp.write_text(rows_to_markdown(sel, cols), encoding="utf-8")
    from ..report import smoothing_plots

    sweep = [r for r in rows if r["table"] == "sweep"]
    if sweep:
        for vote in sorted({r["vote"] for r in sweep}):
            smoothing_plots.plot_sigma_sweep(sweep, out / f"sweep_sigma_{vote}.png", vote=vote)
        smoothing_plots.plot_samples_sweep(sweep, out / "sweep_samples.png")
    budget = [r for r in rows if r["table"] == "budget"]
    if budget:
        smoothing_plots.plot_budget(budget, out / "budget.png")
