"""The ``advsmooth demo``: minimal (DeepFool) vs smooth (SmoothFool) perturbations on digits.

The demo is an experiment like any other: :func:`demo_spec` builds a validated spec (DeepFool,
SmoothFool at σg ∈ {1, 2, 5, 10}, FGSM) on the embedded digits data and the ``digits-lenet`` zoo
model; :func:`run_demo` runs it into a resumable SQLite store, prints the summary table and writes
the report (Markdown / CSV / JSON tables, fooling-rate-vs-σg and roughness curves, perturbation
grids and a self-contained ``report.html``). Nothing is downloaded: the model is trained on first
use (seconds) and cached.

:func:`demo_spec` is the single source of the demo experiment: ``experiments/digits_demo.toml``
is generated from it (:func:`demo_spec_toml`, ``advsmooth demo --write-spec PATH``) and a test
checks that the file in the repository still equals it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEMO_N", "DEMO_SIGMAS", "demo_spec", "demo_spec_toml", "run_demo", "write_demo_spec"]

#: the σg grid of the demo (issue: DeepFool and SmoothFool at σg ∈ {1, 2, 5, 10})
DEMO_SIGMAS = (1.0, 2.0, 5.0, 10.0)
#: default number of digits test images (``advsmooth demo --n``)
DEMO_N = 40


def demo_spec(n: int = DEMO_N, seed: int = 0, model: str = "digits-lenet") -> dict[str, Any]:
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
                 "metrics": ["n", "accuracy", "fooling_rate", "rho_adv", "mean_l2", "omega",
                             "omega_n", "iterations", "grad_evals", "seconds_per_sample"]},
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


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML: {v!r}")


def _toml_table(table: Mapping[str, Any], prefix: str, lines: list[str]) -> None:
    def is_tables(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)

    def is_section(v: Any) -> bool:  # flat mappings are written inline: params = { ... }
        return is_tables(v) or (isinstance(v, Mapping) and any(
            isinstance(x, Mapping) or is_tables(x) for x in v.values()))

    for k, v in table.items():
        if not is_section(v):
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in table.items():
        name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
        if not is_section(v):
            continue
        if isinstance(v, Mapping):
            lines += ["", f"[{name}]"]
            _toml_table(v, name, lines)
        elif is_tables(v):
            for item in v:
                lines += ["", f"[[{name}]]"]
                _toml_table(item, name, lines)


def demo_spec_toml(n: int = DEMO_N, seed: int = 0, model: str = "digits-lenet") -> str:
    """:func:`demo_spec` as TOML text (what ``experiments/digits_demo.toml`` holds).

    ``tomllib.loads(demo_spec_toml(...)) == demo_spec(...)``.
    """
    lines = [
        "# The `advsmooth demo` experiment: DeepFool, SmoothFool over a sigma_g grid and FGSM on",
        "# the embedded digits data, with tables, curves and perturbation grids.",
        "# GENERATED from advsmooth.demo.demo_spec() -- do not edit by hand; regenerate with",
        "#   advsmooth demo --write-spec experiments/digits_demo.toml",
    ]
    _toml_table(demo_spec(n=n, seed=seed, model=model), "", lines)
    return "\n".join(lines) + "\n"


def write_demo_spec(path: str | os.PathLike[str], *, n: int = DEMO_N, seed: int = 0,
                    model: str = "digits-lenet") -> Path:
    """Write :func:`demo_spec_toml` to ``path`` (atomically) and return the path."""
    from ._utils import atomic_path

    text = demo_spec_toml(n=n, seed=seed, model=model)
    out = Path(path)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


def run_demo(out_dir: str | Path = "advsmooth-demo", *, n: int = DEMO_N, seed: int = 0,
             model: str = "digits-lenet", progress: bool = True) -> dict[str, Any]:
    """Prepare the digits model, run the demo experiment, print its table, write its report.

    Re-running with the same ``out_dir`` reuses finished batches (the store is resumable).
    Returns the report's paths (``build_report``'s dictionary) plus ``"accuracy"``.
    """
    from . import data, models
    from .experiments import parse_spec, run_spec
    from .models.training import evaluate
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
