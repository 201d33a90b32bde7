"""Crash safety and safe loading.

* an ``advsmooth run`` killed with SIGKILL three times at random (seeded) moments and resumed
  ends with exactly the store of an uninterrupted run (no lost, no duplicated rows); reuses the
  helpers of tests/test_store.py;
* an ``advsmooth report`` killed with SIGKILL while it writes leaves only complete files (plus
  hidden temporary files that the next report removes), and the next report is identical to an
  uninterrupted one;
* outputs are written atomically (temp file + ``os.replace``): checkpoints, and
  ``advsmooth attack``'s npz/json/png are written via temp file + ``os.replace``;
* a read-only output directory gives one clear line and exit status 2 (skipped as root, where
  chmod does not stop writes);
* safe loading: ``.npz`` with ``allow_pickle=False`` (a crafted object-array npz is refused and
  its payload never runs), checkpoints with ``weights_only=True`` (tested in
  tests/test_models.py::test_malicious_pickle_refused_without_executing), specs are TOML data
  and never evaluated.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_store import _committed, _run

from advsmooth.cli import main
from advsmooth.experiments import Store

SPEC = """
name = "killme-often"
seed = 5
batch_size = 1
[[datasets]]
name = "digits"
sample = 8
[[models]]
name = "digits-lenet"
[[attacks]]
name = "pgd"
params = { eps = 0.1, alpha = 0.02, steps = 100, random_start = true }
grid = { norm = ["inf", 2] }
"""
TOTAL = 16  # 2 cells × 8 batches of 1
# (100 PGD steps make a batch take ~0.1 s, longer than the random 0-50 ms landing window below,
# so a kill aimed inside a batch cannot land after the last one on a fast machine)
KILLS = 3


def test_three_random_sigkills_then_resume_equal_uninterrupted(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    rng = random.Random(1234)
    killed = tmp_path / "killed"
    kills = 0
    committed_at_kill = []
    for _ in range(KILLS):
        start = _committed(killed)
        if start >= TOTAL - 1:
            break
        target = rng.randint(start + 1, min(start + 4, TOTAL - 1))
        proc = _run(spec, killed)
        deadline = time.time() + 300
        while _committed(killed) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.05))      # land anywhere inside the next batch
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert proc.returncode == -signal.SIGKILL
            kills += 1
        committed_at_kill.append(_committed(killed))
    assert kills == KILLS, f"only {kills} kills landed (committed: {committed_at_kill})"
    assert committed_at_kill == sorted(committed_at_kill)
    assert committed_at_kill[-1] < TOTAL
    resumed = _run(spec, killed)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()
    ref_dir = tmp_path / "reference"
    ref = _run(spec, ref_dir)
    assert ref.wait(timeout=600) == 0, ref.stderr.read().decode()
    with Store(killed, readonly=True) as a, Store(ref_dir, readonly=True) as b:
        log = a.batch_log()
        assert len(log) == TOTAL                                   # nothing lost
        assert len({(r["cell_id"], r["batch"]) for r in log}) == TOTAL  # nothing duplicated
        assert len({r["run_id"] for r in log}) >= 2
        sa, sb = a.snapshot(), b.snapshot()
        assert len(sa["samples"]) == TOTAL and sa == sb
        assert all(c["status"] == "done" for c in a.cells())


REPORT_SPEC = """
name = "report-kill"
seed = 2
batch_size = 4
save_adversarial = true
[[datasets]]
name = "digits"
sample = 8
[[models]]
name = "digits-lenet"
[[attacks]]
name = "fgsm"
grid = { eps = [0.05, 0.1, 0.2] }
"""


def _report(out: Path) -> subprocess.Popen:
    from test_store import _env

    return subprocess.Popen([sys.executable, "-m", "advsmooth", "report", str(out)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and ".tmp" in p.name]


def test_sigkill_during_report_then_report_again(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(REPORT_SPEC)
    out = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    reference = tmp_path / "reference"
    assert main(["report", str(out), "--out", str(reference)]) == 0
    rng = random.Random(99)
    kills = 0
    for _ in range(6):
        proc = _report(out)
        deadline = time.time() + 300
        while not (out / "report").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.6))        # land somewhere inside the writing
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        # whatever the moment: every visible file is a complete one
        for p in (out / "report").rglob("*"):
            if p.is_file() and not p.name.startswith("."):
                if p.suffix in (".md", ".csv", ".json") and p.parent.name == "tables":
                    assert p.read_bytes() == (reference / "tables" / p.name).read_bytes(), p
                elif p.suffix == ".html":
                    assert p.read_text().rstrip().endswith("</html>"), p
                else:
                    assert p.stat().st_size > 0, p
        if kills >= 3:
            break
    assert kills >= 1, "no kill landed while the report was being written"
    again = _report(out)
    assert again.wait(timeout=600) == 0, again.stderr.read().decode()
    assert _temp_files(out / "report") == []              # stale temporary files removed
    tables = sorted(p.name for p in (reference / "tables").iterdir())
    assert sorted(p.name for p in (out / "report" / "tables").iterdir()) == tables
    for name in tables:
        assert (out / "report" / "tables" / name).read_bytes() == \
            (reference / "tables" / name).read_bytes()
    assert sorted(p.name for p in (out / "report" / "figures").iterdir()) == \
        sorted(p.name for p in (reference / "figures").iterdir())


# -- atomic writes -------------------------------------------------------------------------------

def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    """A crash inside torch.save leaves the previous checkpoint intact and no partial file."""
    from advsmooth.models import registry

    net = torch.nn.Linear(4, 2)
    path = tmp_path / "m.pt"
    registry.save_model(net, path, arch="fc", in_shape=(1, 2, 2), num_classes=2)
    before = path.read_bytes()
    real_save = torch.save

    def crash(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        Path(f).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(registry.torch, "save", crash)
    with torch.no_grad():
        net.weight.add_(1)
    with pytest.raises(OSError, match="No space"):
        registry.save_model(net, path, arch="fc", in_shape=(1, 2, 2), num_classes=2)
    assert path.read_bytes() == before


def test_cli_attack_outputs_are_atomic(tmp_path, monkeypatch, capsys):
    out = tmp_path / "o"
    args = ["attack", "fgsm", "--model", "digits-lenet", "--data", "digits", "--n", "4",
            "--out", str(out)]
    assert main(args) == 0
    before = (out / "adversarial.npz").read_bytes()
    real = np.savez_compressed

    def crash(file, *a, **k):
        real(file, *a, **k)
        Path(file).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", crash)
    assert main(args) == 2  # a full disk is reported as one line, exit 2
    assert "No space left" in capsys.readouterr().err
    assert (out / "adversarial.npz").read_bytes() == before
    assert not [p for p in out.iterdir() if ".tmp" in p.name]  # no temporary file left


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: chmod does not stop root from writing")
def test_read_only_output_dir_one_line_exit_2(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code = main(["attack", "fgsm", "--model", "digits-lenet", "--data", "digits", "--n",
                     "2", "--out", str(ro / "sub")])
    finally:
        ro.chmod(0o700)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "error" in err and "Permission" in err


# -- safe loading ----------------------------------------------------------------------------------

class _Payload:
    marker: Path | None = None

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_object_array_npz_refused_without_executing(tmp_path):
    import advsmooth as asm

    marker = tmp_path / "PWNED"
    _Payload.marker = marker
    evil = np.empty(2, dtype=object)
    evil[0], evil[1] = _Payload(), _Payload()
    path = tmp_path / "evil.npz"
    np.savez(path, x=evil, y=np.array([0, 1]))
    assert not marker.exists()
    with pytest.raises(ValueError, match="(?i)pickle|object"):
        asm.data.load(f"npz:{path}")
    assert not marker.exists(), "the payload executed"
    # the CLI reports it as a user error (one line, exit 2)
    assert main(["attack", "fgsm", "--model", "digits-lenet", "--data", f"npz:{path}"]) == 2
    assert not marker.exists()


def test_checkpoint_loading_covered_elsewhere():
    """weights_only=True is proven by tests/test_models.py (a malicious pickle is refused and
    its payload never runs); make sure that test still exists."""
    src = (Path(__file__).parent / "test_models.py").read_text()
    assert "def test_malicious_pickle_refused_without_executing" in src


def test_spec_strings_are_never_evaluated(tmp_path):
    from advsmooth.experiments.spec import load_spec

    marker = tmp_path / "PWNED"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    spec = tmp_path / "spec.toml"
    spec.write_text(f'''
name = "{code.replace('"', "'")}"
seed = 0
[[datasets]]
name = "digits"
sample = 2
[[models]]
name = "digits-lenet"
[[attacks]]
name = "fgsm"
params = {{ eps = "{code.replace('"', "'")}" }}
''')
    try:
        load_spec(spec)
    except (ValueError, TypeError):
        pass
    assert not marker.exists(), "a spec string was evaluated"
