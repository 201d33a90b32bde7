"""The ``evaluate`` study task: shards of one evaluation as spec cells. Two gloo processes write
the store one process writes; a run killed with SIGKILL after its first shard resumes to the
same rows; the rows of the shards add up to the evaluation of all samples at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from test_store import _committed, _env, _run

from advsmooth.experiments import Store, run_spec
from advsmooth.experiments.evaluate_task import combine_rows

SPEC = """
name = "evaluate-shards"
seed = 3
[[studies]]
task = "evaluate"
grid = { shard = [0, 1, 2] }
[studies.params]
model = "digits-lenet"
dataset = "digits"
sample = 12
norm = "inf"
eps = [0.05, 0.1]
shards = 3
stages = ["pgd-ce", "deepfool", "apgd-ce"]
pgd_steps = 3
apgd_steps = 4
"""


def _rows(out) -> list[dict]:
    with Store(out, readonly=True) as s:
        return [r for c in s.cells() for r in s.study_rows(c["cell_id"])]


def test_shard_rows_add_up_and_are_monotone(tmp_path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    run_spec(spec, tmp_path / "out", progress=False)
    rows = _rows(tmp_path / "out")
    assert len(rows) == 3 * 2 and sum(r["n"] for r in rows) == 2 * 12
    for r in rows:
        fooled = sum(v for k, v in r.items() if k.startswith("fooled_"))
        assert r["robust"] == r["correct"] - fooled
        assert r["robust"] <= r["pgd_robust"] <= r["correct"]
    acc = combine_rows(rows)
    assert list(acc) == [0.05, 0.1]
    assert acc[0.1]["robust_accuracy"] <= acc[0.05]["robust_accuracy"]


def test_two_gloo_processes_equal_one(tmp_path) -> None:
    pytest.importorskip("torch.distributed")
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**_env(), "OMP_NUM_THREADS": "1"}
    r1 = subprocess.run([sys.executable, "-m", "advsmooth", "run", str(spec), "--out", str(one)],
                        env=env, capture_output=True, text=True, timeout=900)
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                         "--nproc_per_node=2", "-m", "advsmooth", "run", str(spec), "--out",
                         str(two)], env=env, capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0, r2.stderr[-3000:]
    with Store(one, readonly=True) as a, Store(two, readonly=True) as b:
        assert a.snapshot() == b.snapshot()
        assert {r["rank"] for r in b.batch_log()} == {0, 1}


def test_sigkill_after_a_shard_resumes_to_the_same_rows(tmp_path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    killed = tmp_path / "killed"
    proc = _run(spec, killed)
    deadline = time.time() + 600
    while _committed(killed) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _committed(killed)
    if done == 3:
        pytest.skip("the kill landed after the last shard")
    assert done >= 1
    resumed = _run(spec, killed)
    assert resumed.wait(timeout=900) == 0, resumed.stderr.read().decode()
    ref = tmp_path / "ref"
    reference = _run(spec, ref)
    assert reference.wait(timeout=900) == 0, reference.stderr.read().decode()
    with Store(killed, readonly=True) as a, Store(ref, readonly=True) as b:
        assert a.snapshot() == b.snapshot()
        assert len({r["run_id"] for r in a.batch_log()}) == 2   # killed run + resumed run


def test_evaluate_task_checks_its_flags() -> None:
    from advsmooth.experiments.tasks import get_task

    check = get_task("evaluate").check
    base = {"model": "digits-lenet", "dataset": "digits", "eps": [0.1]}
    check({**base, "square_all": True, "deepfool": False})
    for key in ("square_all", "deepfool"):
        with pytest.raises(ValueError, match=key):
            check({**base, key: 1})
