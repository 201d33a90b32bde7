"""The ``advsmooth demo``: minimal (DeepFool) vs smooth (SmoothFool) perturbations on digits.

The demo is an experiment like any other: :func:`demo_spec` builds a validated spec (DeepFool,
SmoothFool at σg ∈ {1, 2, 5, 10}, FGSM) on the embedded digits data and the ``digits-lenet`` zoo
model; :func:`run_demo` runs it into a resumable SQLite store, prints the summary table and writes
the report (Markdown / CSV / JSON tables, fooling-rate-vs-σg and roughness curves, perturbation
grids and a self-contained ``report.html``). Nothing is downloaded: the model is trained on first
use (seconds) and cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DEMO_SIGMAS", "demo_spec", "run_demo"]

#: the σg grid of the demo (issue: DeepFool and SmoothFool at σg ∈ {1, 2, 5, 10})
DEMO_SIGMAS = (1.0, 2.0, 5.0, 10.0)


def demo_spec(n: int = 100, seed: int = 0, model: str = "digits-lenet") -> dict[str, Any]:
    """The demo experiment as a spec dictionary (validated by ``experiments.parse_spec``).

    Args:
        n: number of digits test images (a seeded random subset of the 360).
        seed: the experiment seed (subset and every random component).
        model: a ``digits-*`` zoo model.
    """
    return {
        "name": "digits_demo",
        "paper": "SmoothFool Table 1 / Fig. 6 (digits analogue)",
        "description": "minimal (DeepFool) vs smooth (SmoothFool) perturbations on the embedded "
                       "digits data",
        "seed": seed,
        "batch_size": 50,
        "save_adversarial": True,
        "datasets": [{"name": "digits", "sample": n}],
        "models": [{"name": model}],
        "attacks": [
            {"name": "deepfool", "label": "DeepFool"},
            {"name": "smoothfool", "label": "SmoothFool", "params": {"clip_step": 1.0},
             "grid": {"sigma": list(DEMO_SIGMAS)}},
            {"name": "fgsm", "label": "FGSM", "params": {"eps": 0.2}},
        ],
        "report": {
            "title": "advsmooth demo: minimal vs smooth adversarial perturbations on digits",
            "tables": [
                {"kind": "summary",
                 "metrics": ["n", "accuracy", "fooling_rate", "mean_l2", "omega", "omega_n",
                             "iterations", "grad_evals", "seconds_per_sample"]},
                {"kind": "sigma_threshold", "param": "sigma"},
            ],
            "plots": [
                {"kind": "curve", "x": "sigma", "y": "fooling_rate",
                 "title": "SmoothFool: fooling rate vs sigma_g"},
                {"kind": "curve", "x": "sigma", "y": "omega_n",
                 "title": "SmoothFool: normalised roughness vs sigma_g"},
                {"kind": "perturbation_grid", "samples": 4},
            ],
        },
    }


def run_demo(out_dir: str | Path = "advsmooth-demo", *, n: int = 100, seed: int = 0,
             model: str = "digits-lenet", progress: bool = True) -> dict[str, Any]:
    """Prepare the digits model, run the demo experiment, print its table, write its report.

    Re-running with the same ``out_dir`` reuses finished batches (the store is resumable).
    Returns the report's paths (``build_report``'s dictionary) plus ``"accuracy"``.
    """
    from . import data, models
    from .defenses.training import evaluate
    from .experiments import parse_spec, run_spec
    from .report import build_report

    if not model.startswith("digits-"):
        raise ValueError(f"the demo runs on the embedded digits data: model must be a digits-* "
                         f"zoo model, got {model!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    net = models.load(model)
    x, y = data.load("digits", split="test")
    acc = evaluate(net, (x, y))
    print(f"{model}: test accuracy {100 * acc:.2f} % on {len(y)} held-out digits (1x28x28)")

    spec = parse_spec(demo_spec(n=n, seed=seed, model=model))
    result = run_spec(spec, out_dir, progress=progress)
    report = build_report(result.out_dir)
    summary = next((t for t in report["tables"] if t.name.startswith("summary")
                    and t.suffix == ".md"), None)
    if summary is not None:
        print()
        print(summary.read_text(encoding="utf-8").strip())
    print()
    print(f"store:  {result.store_path}")
    print(f"report: {report['html']}  (also {report['markdown'].name}, tables/, figures/)")
    report["accuracy"] = acc
    return report
