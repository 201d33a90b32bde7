"""The SQLite result store: atomic batches, summaries from sample rows, and a run killed with
SIGKILL mid-way that, started again, ends with exactly the tables of an uninterrupted run and
recomputes no committed batch."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from advsmooth.experiments import TIMING_COLUMNS, Store, summarize

SLOW_SPEC = """
name = "killme"
seed = 11
batch_size = 1
[[datasets]]
name = "digits"
sample = 20
[[models]]
name = "digits-lenet"
[[attacks]]
name = "pgd"
params = { eps = 0.1, alpha = 0.01, steps = 15, random_start = true }
grid = { norm = ["inf", 2] }
"""


def cols(n: int, **over):
    base = {
        "source_index": np.arange(n), "label": np.zeros(n, int), "clean_pred": np.zeros(n, int),
        "adv_pred": np.ones(n, int), "success": np.ones(n, int), "l2": np.full(n, 2.0),
        "linf": np.full(n, 0.5), "x_l2": np.full(n, 4.0), "x_linf": np.ones(n),
        "omega": np.full(n, np.nan), "omega_n": np.full(n, 0.1), "iterations": np.full(n, 3),
        "forward_evals": np.full(n, 5), "grad_evals": np.full(n, 4)}
    base.update(over)
    return base


def test_batches_are_atomic_and_never_duplicated(tmp_path):
    with Store(tmp_path) as st:
        assert st.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        st.add_spec("h", "s", {"name": "s"}, "name = 's'")
        st.register_cells("h", [{"cell_id": "c1", "kind": "attack", "label": "a"}])
        st.commit_batch("c1", 0, 0, cols(3), run_id=1, rank=0, seconds=0.1)
        with pytest.raises(sqlite3.IntegrityError):
            st.commit_batch("c1", 0, 0, cols(3), run_id=2, rank=0, seconds=0.1)
        # a failing batch leaves nothing behind (sample 5 would collide with nothing, but the
        # batch row 0 does): the whole transaction is rolled back
        with pytest.raises(sqlite3.IntegrityError):
            st.commit_batch("c1", 0, 5, cols(2), run_id=2, rank=0, seconds=0.1)
        assert st.done_batches("c1") == {0}
        assert len(st.samples("c1")["idx"]) == 3
        assert st.batch_log() == [{"cell_id": "c1", "batch": 0, "run_id": 1, "rank": 0, "n": 3}]


def test_summary_from_rows():
    c = cols(4, label=np.array([0, 1, 2, 3]), clean_pred=np.array([0, 1, 2, 0]),
             adv_pred=np.array([5, 1, 6, 0]), success=np.array([1, 0, 1, 1]),
             l2=np.array([1.0, 0.0, 3.0, 9.0]), omega=np.array([1.0, np.nan, 2.0, 100.0]))
    s = summarize(c)
    assert s["n"] == 4 and s["n_correct"] == 3 and s["accuracy"] == 0.75
    assert s["fooling_rate"] == pytest.approx(2 / 3)  # over the 3 correct samples
    assert s["adv_accuracy"] == 0.25
    assert s["mean_l2"] == pytest.approx(2.0)  # D_s = samples 0 and 2
    assert s["rho_adv"] == pytest.approx((1 / 4 + 3 / 4) / 2)
    assert s["omega"] == pytest.approx(1.5)
    assert summarize(cols(0))["fooling_rate"] is None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", ADVSMOOTH_NO_PROGRESS="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    return env


def _run(spec: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "advsmooth", "run", str(spec), "--out",
                             str(out)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _committed(out: Path) -> int:
    db = out / "results.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
            return int(c.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SLOW_SPEC)
    total = 40  # 2 cells × 20 batches of 1
    killed_dir = tmp_path / "killed"
    proc = _run(spec, killed_dir)
    deadline = time.time() + 300
    while _committed(killed_dir) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _committed(killed_dir)
    assert 1 <= before < total, "the run finished before it could be killed"
    with Store(killed_dir, readonly=True) as st:
        first_log = {(b["cell_id"], b["batch"]) for b in st.batch_log()}
    resumed = _run(spec, killed_dir)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()
    ref_dir = tmp_path / "reference"
    ref = _run(spec, ref_dir)
    assert ref.wait(timeout=600) == 0, ref.stderr.read().decode()
    with Store(killed_dir, readonly=True) as a, Store(ref_dir, readonly=True) as b:
        log = a.batch_log()
        assert len(log) == total
        # batches committed before the kill were not recomputed by the second run
        assert {(r["cell_id"], r["batch"]) for r in log if r["run_id"] == 1} == first_log
        assert {r["run_id"] for r in log} == {1, 2}
        sa, sb = a.snapshot(), b.snapshot()
        assert len(sa["samples"]) == 40 and sa == sb
        assert not TIMING_COLUMNS & {"cell_id", "l2", "fooling_rate"}
        assert all(c["status"] == "done" for c in a.cells())
