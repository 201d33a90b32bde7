"""Run experiment specs and record or compare their result tables.

A refactoring must not change results. This script runs each spec into its own store and writes
the tables it produced — every cell's summary metrics and every study row, floats rounded to 9
significant digits, timing fields dropped — as ``<dir>/<spec>.json``; ``compare`` then lists
every difference between two such folders.

    python experiments/check_tables.py record runs/before experiments/digits_*.toml
    python experiments/check_tables.py record runs/after experiments/digits_*.toml
    python experiments/check_tables.py compare runs/before runs/after

``--sample N`` runs the specs with ``advsmooth run --sample N`` (for the MNIST / CIFAR-10 specs).
Cells are matched by their label (the spec's attack/study key and grid point), not by their id,
so a change in how a study's parameters are hashed does not hide a change in its numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TIMING = {"seconds", "seconds_per_sample", "started", "finished", "committed", "run_id", "rank",
          "added", "pid", "host", "world_size", "wall_s", "time_s", "train_seconds", "elapsed"}


def _round(v: Any) -> Any:
    if isinstance(v, float):
        if not math.isfinite(v):
            return repr(v)
        return float(f"{v:.9g}")
    if isinstance(v, dict):
        return {k: _round(x) for k, x in sorted(v.items()) if not _is_timing(k)}
    if isinstance(v, list | tuple):
        return [_round(x) for x in v]
    return v


def _is_timing(key: str) -> bool:
    return key in TIMING or key.endswith("_seconds") or key.endswith("_s") or "time" in key


def tables(store_dir: Path) -> dict[str, Any]:
    """``{cell label: {"summary": {...}, "rows": [...]}}`` of the store in ``store_dir``."""
    from advsmooth.experiments.store import SUMMARY_COLUMNS, Store

    out: dict[str, Any] = {}
    with Store(store_dir, readonly=True) as st:
        for c in st.cells():
            entry = {"kind": c["kind"], "status": c["status"],
                     "summary": _round({k: c[k] for k in SUMMARY_COLUMNS}),
                     "rows": _round(st.study_rows(c["cell_id"]))}
            label = c["label"]
            if c.get("dataset"):
                label = f"{c['dataset']}/{c['model']}/{label}"
            out[label] = entry
    return out


def record(dest: Path, specs: list[Path], sample: int | None) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    failed = 0
    for spec in specs:
        run_dir = dest / "runs" / spec.stem
        cmd = [sys.executable, "-m", "advsmooth", "run", str(spec), "--out", str(run_dir),
               "--no-progress"]
        if sample is not None:
            cmd += ["--sample", str(sample)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        secs = time.perf_counter() - t0
        if proc.returncode != 0:
            failed += 1
            print(f"{spec.stem}: FAILED ({proc.returncode}) {proc.stderr.strip()[-500:]}")
            continue
        (dest / f"{spec.stem}.json").write_text(json.dumps(tables(run_dir), indent=1,
                                                           sort_keys=True) + "\n")
        print(f"{spec.stem}: recorded ({secs:.0f} s)")
    return 1 if failed else 0


def _diff(a: Any, b: Any, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'after' if k not in a else 'before'}")
            else:
                _diff(a[k], b[k], f"{path}/{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append(f"{path}: {a!r} -> {b!r}")


def compare(before: Path, after: Path) -> int:
    bad = 0
    for f in sorted(before.glob("*.json")):
        g = after / f.name
        if not g.exists():
            print(f"{f.stem}: missing in {after}")
            bad += 1
            continue
        diffs: list[str] = []
        _diff(json.loads(f.read_text()), json.loads(g.read_text()), "", diffs)
        print(f"{f.stem}: {'same' if not diffs else f'{len(diffs)} difference(s)'}")
        for d in diffs[:20]:
            print("   ", d)
        bad += bool(diffs)
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="run specs and write their tables into DIR")
    r.add_argument("dir", type=Path)
    r.add_argument("specs", type=Path, nargs="+")
    r.add_argument("--sample", type=int, default=None)
    c = sub.add_parser("compare", help="list the differences between two recorded folders")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    a = ap.parse_args()
    if a.cmd == "record":
        return record(a.dir, a.specs, a.sample)
    return compare(a.before, a.after)


if __name__ == "__main__":
    raise SystemExit(main())
