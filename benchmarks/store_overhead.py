"""Overhead of the experiment runner's SQLite store on the digits DeepFool spec.

Compares, on the same cells, batches and per-batch seeds:

* **bare**: loading data/models and calling the attack task on every batch (the work itself);
* **runner**: ``advsmooth.experiments.run_spec`` into a fresh directory (validation excluded:
  the spec is parsed once up front), i.e. the same work plus registering cells, committing every
  batch (samples + batch row) in its own transaction, computing per-cell summaries and hashes.

Reports the median wall time of each (interleaved repeats), the relative overhead
``runner / bare − 1``, and the time the runner itself measured inside store operations
(``RunResult.store_seconds``) as a fraction of its wall time — the latter is insensitive to
machine load. Writes ``benchmarks/results/store_overhead.{json,md}``.

    python benchmarks/store_overhead.py        # experiments/digits_deepfool.toml, 3 repeats
    python benchmarks/store_overhead.py --repeats 5 --spec experiments/digits_deepfool.toml
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from advsmooth import __version__
from advsmooth.experiments import expand_cells, load_spec, run_spec, tasks
from advsmooth.experiments.runner import _Resources

ROOT = Path(__file__).resolve().parents[1]


def bare(spec) -> float:
    """Wall seconds of the attack work alone (same batches and seeds as the runner)."""
    t0 = time.perf_counter()
    res = _Resources(spec, torch.device("cpu"), None)
    for cell in expand_cells(spec):
        if cell.kind != "attack":
            continue
        x, y, _ = res.data(cell.dataset)
        model, attack = res.model(cell.model), res.attack(cell)
        for b in range(0, x.shape[0], cell.batch_size):
            seed = tasks.batch_seed(cell.seed, cell.cell_id, b // cell.batch_size)
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            tasks.attack_rows(attack, model, x[b:b + cell.batch_size],
                              y[b:b + cell.batch_size], generator=gen)
    return time.perf_counter() - t0


def runner(spec, workdir: Path, i: int) -> tuple[float, float]:
    out = workdir / f"run{i}"
    t0 = time.perf_counter()
    r = run_spec(spec, out, device="cpu", progress=False)
    return time.perf_counter() - t0, r.store_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "experiments" / "digits_deepfool.toml"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    spec = load_spec(args.spec)
    bare(spec)  # warm-up: trains/caches the digits models on first use, warms the allocator
    b_times, r_times, s_times = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            b_times.append(bare(spec))
            wall, store_s = runner(spec, Path(tmp), i)
            r_times.append(wall)
            s_times.append(store_s)
            print(f"repeat {i + 1}/{args.repeats}: bare {b_times[-1]:.2f} s, runner {wall:.2f} s "
                  f"(store {store_s:.3f} s)", flush=True)
    b, r = statistics.median(b_times), statistics.median(r_times)
    frac = statistics.median(s / w for s, w in zip(s_times, r_times))
    result = {
        "spec": os.path.relpath(args.spec, ROOT), "repeats": args.repeats,
        "cells": len(expand_cells(spec)),
        "bare_seconds": b_times, "runner_seconds": r_times, "store_seconds": s_times,
        "median_bare_s": b, "median_runner_s": r, "overhead_wall": r / b - 1.0,
        "store_fraction_of_runner": frac, "target": "< 5 %",
        "meets_target": bool(frac < 0.05),
        "advsmooth": __version__, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "store_overhead.json").write_text(json.dumps(result, indent=1))
    md = (f"# Store overhead ({result['spec']})\n\n"
          f"| median bare (s) | median runner (s) | wall overhead | store ops / runner wall |\n"
          f"| --- | --- | --- | --- |\n"
          f"| {b:.2f} | {r:.2f} | {100 * (r / b - 1):+.1f} % | {100 * frac:.2f} % |\n\n"
          f"{args.repeats} interleaved repeats; advsmooth {__version__}, "
          f"torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), load average {result['load_average']:.1f} at the "
          f"end; {result['date']}. Target: store overhead < 5 % of the run time. The wall "
          "overhead is noisy on a shared machine; the store-ops fraction is measured inside the "
          "runner (time spent in SQLite calls, summaries included).\n")
    (out / "store_overhead.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
