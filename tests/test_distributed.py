"""``torchrun --nproc_per_node=2 -m advsmooth run``: 2 CPU processes (gloo) write exactly the
store a single process writes (timing and rank columns aside)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from advsmooth.experiments import Store

dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

SPEC = """
name = "dist"
seed = 5
batch_size = 3
save_adversarial = true
[[datasets]]
name = "digits"
sample = 10
[[models]]
name = "digits-lenet"
[[attacks]]
name = "pgd"
params = { eps = 0.1, alpha = 0.02, steps = 5, random_start = true }
grid = { norm = ["inf", 2] }
[[attacks]]
name = "deepfool"
params = { max_iter = 5, candidates = 3 }
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # the same number of intra-op threads in both runs, so float reductions are identical
    env.update(OMP_NUM_THREADS="1", ADVSMOOTH_NO_PROGRESS="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    return env


def test_two_gloo_processes_equal_one(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = subprocess.run([sys.executable, "-m", "advsmooth", "run", str(spec), "--out", str(one)],
                        env=_env(), capture_output=True, text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                         "--nproc_per_node=2", "-m", "advsmooth", "run", str(spec), "--out",
                         str(two)], env=_env(), capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    with Store(one, readonly=True) as a, Store(two, readonly=True) as b:
        sa, sb = a.snapshot(), b.snapshot()
        assert len(sa["samples"]) == 3 * 10 and sa == sb
        ranks = {r["rank"] for r in b.batch_log()}
        assert ranks == {0, 1}  # both processes did work
        assert {r["rank"] for r in a.batch_log()} == {0}
    # artefacts written by both ranks are the same files
    for f in sorted((one / "artefacts").rglob("*.npz")):
        g = two / f.relative_to(one)
        import numpy as np

        with np.load(f) as x, np.load(g) as y:
            assert set(x.files) == set(y.files)
            for k in x.files:
                assert np.array_equal(x[k], y[k]), (f, k)
