"""Smoothed inference on MNIST (analogue of the smoothing paper's Tables 1, 3, 4 and Figs 1/2/B.3).

Run from the repository root (needs ../shared/data and ../shared/models):

    .venv/bin/python experiments/smoothing_mnist/run.py [SEGMENT ...]

Segments (each writes experiments/smoothing_mnist/results/<segment>/ with its rows as JSON and
the main table as Markdown; the digits/MNIST specs in experiments/ run the same study through the
runner, with a report):
  pgd_model   mnist-lenet-pgd: clean / PGD-40 / EPGD-40 (M_b = 8) / transfer PGD and PGD-s from
              mnist-mlp; base vs prediction / weighted / soft smoothing; σ × M sweep
  clean_model the same for mnist-lenet (no transfer)
  nattack     NAttack (reduced population / iterations) on the base and the smoothed lenet-pgd
  budget      PGD vs EPGD vs SmoothAdv-PGD at equal k×M (Fig. B.3 analogue)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from advsmooth.studies.smoothing import MAIN_COLUMNS, rows_to_markdown, run_smoothing_study

HERE = Path(__file__).resolve().parent
COMMON = dict(data="mnist", split="test", data_seed=0, sigma=0.25, samples=32, eps=0.3,
              steps=40, m_backward=8, votes=("prediction", "weighted", "soft"), seed=0)

SEGMENTS = {
    "pgd_model": dict(model="mnist-lenet-pgd", n=100, draws=3,
                      attacks=("none", "pgd", "epgd", "transfer_pgd", "transfer_pgd_s"),
                      source="mnist-mlp", sweep=True, sweep_draws=1,
                      sweep_sigmas=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
                      sweep_samples=(1, 2, 4, 8, 16, 32)),
    "clean_model": dict(model="mnist-lenet", n=50, draws=3, attacks=("none", "pgd", "epgd"),
                        sweep=True, sweep_draws=1, sweep_sigmas=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
                        sweep_samples=(1, 2, 4, 8, 16, 32)),
    "nattack": dict(model="mnist-lenet-pgd", n=20, draws=3, samples=8, attacks=("nattack",),
                    nattack={"population": 50, "max_iter": 20, "sigma": 0.1, "lr": 0.02}),
    "nattack_base": dict(model="mnist-lenet-pgd", n=20, draws=3, samples=8,
                         attacks=("nattack",), nattack_on_base=True,
                         nattack={"population": 50, "max_iter": 20, "sigma": 0.1, "lr": 0.02}),
    "budget": dict(model="mnist-lenet-pgd", n=30, draws=1, attacks=("none",),
                   budgets=(8, 16, 32)),
}


def main(names: list[str]) -> None:
    torch.manual_seed(0)
    for name in names or list(SEGMENTS):
        kw = {**COMMON, **SEGMENTS[name]}
        out = HERE / "results" / name
        t0 = time.perf_counter()
        rows = run_smoothing_study(**kw)
        secs = time.perf_counter() - t0
        meta = {"segment": name, "seconds": round(secs, 1), "torch": torch.__version__,
                "threads": torch.get_num_threads(), "params": kw}
        out.mkdir(parents=True, exist_ok=True)
        (out / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        (out / "rows.json").write_text(json.dumps(rows, indent=1))
        main_rows = [r for r in rows if r["table"] == "main"]
        (out / "smoothing_main.md").write_text(rows_to_markdown(main_rows, MAIN_COLUMNS))
        print(f"== {name} ({secs:.0f} s)\n" + rows_to_markdown(main_rows, MAIN_COLUMNS),
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
