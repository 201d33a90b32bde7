"""Atomic writes: every output goes through ``advsmooth._utils.atomic_path``.

* a failure in the middle of a write (a full disk inside the serializer, a failing rename)
  leaves the previous file byte-identical and no temporary file behind: report writer,
  ``models.save_model`` (weights + ``.json`` description)
  and the trainer's checkpoints;
* an output folder that refuses writes (simulated: the suite runs as root, where chmod does
  not stop writes) is reported as an ``OSError`` subclass naming the target path by the
  library, and as one line with exit status 2 by ``advsmooth report`` / ``advsmooth attack``;
* two writers to the same target in threads never produce a corrupt file (each temporary file
  has its own name; a fixed ``.NAME.<pid>.tmp`` shared by threads would fail this test).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
from pathlib import Path

import pytest
import torch

from advsmooth._utils import atomic_path
from advsmooth.cli import main


def _temps(root: Path) -> list[Path]:
    """Leftover temporary files of atomic_path under ``root``."""
    return [p for p in root.rglob(".*") if p.is_file() and ".tmp" in p.name]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".tmp" not in p.name}


def _disk_full_after(monkeypatch, writes_ok: int) -> list[Path]:
    """Make ``Path.write_text`` on temporary files succeed ``writes_ok`` times, then write half
    of the text and raise ENOSPC (a disk filling up in the middle of a write)."""
    real = Path.write_text
    seen: list[Path] = []

    def write_text(self, data, *args, **kwargs):
        if self.name.startswith(".") and ".tmp" in self.name:
            seen.append(self)
            if len(seen) > writes_ok:
                real(self, data[: len(data) // 2], *args, **kwargs)
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    return seen


# -- atomic_path itself ----------------------------------------------------------------------

def test_atomic_path_unique_temp_names_suffix_and_permissions(tmp_path):
    target = tmp_path / "sub" / "fig.png"
    old = os.umask(0o022)
    try:
        with atomic_path(target) as t1, atomic_path(target) as t2:
            assert t1 != t2 and t1.parent == t2.parent == target.parent  # folder created
            assert t1.suffix == t2.suffix == ".png"  # writers infer the format from it
            t1.write_text("one")
            t2.write_text("two")
    finally:
        os.umask(old)
    # the inner block is renamed first, the outer one last: the last rename wins, whole
    assert target.read_text() == "one"
    assert (target.stat().st_mode & 0o777) == 0o644  # umask applied, not mkstemp's 0o600
    assert _temps(tmp_path) == []


def test_atomic_path_error_keeps_previous_file_and_names_target(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("previous")
    with pytest.raises(OSError) as info:
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
                raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(target)  # the target, not the hidden temporary name
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise KeyError("serializer failed")
    assert target.read_text() == "previous"
    assert _temps(tmp_path) == []


# -- (a) a failure mid-write leaves the previous file intact ------------------------------------

@pytest.fixture
def store_dir(tmp_path):
    """A tiny experiment store (one study, no model) to build reports from."""
    from advsmooth.experiments import parse_spec, register_task, run_spec

    register_task("atomic-grid", lambda params, ctx: [{"a": i, "b": 2 * i} for i in range(3)],
                  replace=True)
    spec = parse_spec({"name": "atomic", "seed": 0,
                       "studies": [{"task": "atomic-grid", "label": "g"}],
                       "report": {"tables": [{"kind": "study", "source": "g"}]}})
    out = tmp_path / "run"
    run_spec(spec, out, progress=False)
    return out


@pytest.mark.parametrize("writes_ok", [0, 3, 7])  # first table, a middle one, report.html
def test_report_failure_mid_write_keeps_previous_report(store_dir, monkeypatch, writes_ok):
    from advsmooth.report.html import build_report

    paths = build_report(store_dir, figures=False)
    rdir = paths["dir"]
    n_writes = len(paths["tables"]) + 2  # tables + report.md + report.html
    assert writes_ok < n_writes
    # make every file differ from the next build's version, so that a torn or renamed-too-early
    # write would show
    for p in rdir.rglob("*"):
        if p.is_file():
            p.write_bytes(b"previous " + p.name.encode())
    before = _snapshot(rdir)
    seen = _disk_full_after(monkeypatch, writes_ok)
    with pytest.raises(OSError, match="No space left") as info:
        build_report(store_dir, figures=False)
    failed, target = seen[-1], Path(info.value.filename)  # the error names the target
    assert target.parent == failed.parent and failed.name.startswith(f".{target.name}.")
    assert target.exists()
    after = _snapshot(rdir)
    assert after[str(target.relative_to(rdir))] == before[str(target.relative_to(rdir))]
    assert set(after) == set(before)
    # files renamed before the failure are complete new versions, the rest are untouched
    changed = {k for k in after if after[k] != before[k]}
    assert len(changed) == writes_ok
    for k in changed:
        assert not after[k].startswith(b"previous")
    assert _temps(store_dir) == []


def _linear(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 2)


def test_save_model_failing_description_keeps_previous_pair(tmp_path):
    from advsmooth import models

    path = tmp_path / "m.pt"
    models.save_model(_linear(0), path, arch="fc", in_shape=(1, 2, 2), num_classes=2)
    before = _snapshot(tmp_path)
    assert set(before) == {"m.pt", "m.pt.json"}
    # the description's serializer fails after the weights were written to their temp file
    with pytest.raises(TypeError, match="JSON serializable"):
        models.save_model(_linear(1), path, arch="fc", in_shape=(1, 2, 2), num_classes=2,
                          data=object())
    assert _snapshot(tmp_path) == before
    assert _temps(tmp_path) == []
    desc = json.loads((tmp_path / "m.pt.json").read_text())
    from advsmooth.models.checkpoints import file_sha256

    assert desc["sha256"] == file_sha256(path)  # the pair still matches


def test_save_model_failing_rename_keeps_previous_pair(tmp_path, monkeypatch):
    from advsmooth import models

    path = tmp_path / "m.pt"
    models.save_model(_linear(0), path, arch="fc", in_shape=(1, 2, 2), num_classes=2)
    before = _snapshot(tmp_path)
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst) == path:
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="Input/output") as info:
        models.save_model(_linear(1), path, arch="fc", in_shape=(1, 2, 2), num_classes=2)
    assert info.value.filename == str(path)
    assert _snapshot(tmp_path) == before  # the description was not renamed either
    assert _temps(tmp_path) == []


def test_trainer_checkpoint_failure_keeps_previous_checkpoint(tmp_path, monkeypatch):
    from advsmooth import defenses

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 1, 4, 4, generator=g), torch.randint(0, 2, (16,), generator=g)
    kw = {"lr": 0.01, "batch_size": 8, "seed": 3, "show_progress": False}

    def net() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))

    out = tmp_path / "run"
    defenses.train(net(), (x, y), epochs=1, out_dir=out, **kw)
    before = _snapshot(out)
    real = torch.save

    def crash(obj, f, *a, **k):  # the disk fills up half-way through the checkpoint
        real(obj, f, *a, **k)
        data = Path(f).read_bytes()
        Path(f).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="No space left"):
        defenses.train(net(), (x, y), epochs=2, out_dir=out, resume=True, **kw)
    assert _snapshot(out) == before  # last.pt, epoch_001.pt, metrics.jsonl untouched
    assert _temps(out) == []
    monkeypatch.setattr(torch, "save", real)
    defenses.train(net(), (x, y), epochs=2, out_dir=out, resume=True, **kw)
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2]  # nothing lost, nothing repeated
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2


# -- (b) a folder that refuses writes is reported clearly ----------------------------------------

def _refuse_writes_under(monkeypatch, root: Path) -> None:
    """Creating a file under ``root`` fails with EACCES, as in a read-only folder."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
        if dir is not None and Path(dir).resolve().is_relative_to(root.resolve()):
            raise PermissionError(errno.EACCES, "Permission denied",
                                  os.path.join(dir, "tmpXXXX"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_read_only_report_dir_library_and_cli(store_dir, tmp_path, monkeypatch, capsys):
    from advsmooth.report.html import build_report

    rdir = tmp_path / "ro-report"
    _refuse_writes_under(monkeypatch, rdir)
    with pytest.raises(PermissionError) as info:
        build_report(store_dir, report_dir=rdir, figures=False)
    assert isinstance(info.value, OSError)
    assert info.value.filename.startswith(str(rdir)) and str(rdir) in str(info.value)
    capsys.readouterr()
    code = main(["report", str(store_dir), "--out", str(rdir), "--no-figures"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("advsmooth report: error:") and "Permission denied" in err
    assert str(rdir) in err  # names the path that could not be written
    assert _temps(tmp_path) == []


def test_read_only_attack_out_dir_cli(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ro-attack"
    _refuse_writes_under(monkeypatch, out)
    code = main(["attack", "fgsm", "--model", "digits-lenet", "--data", "digits", "--n", "2",
                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    # the first use of digits-lenet may print training progress first; the error is one line
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    # the run folder is locked before any work: its first write (the lock's sidecar) fails
    assert "Permission denied" in errors[0] and str(out) in errors[0]
    assert not (out / "results.sqlite").exists() and _temps(tmp_path) == []


# -- (c) concurrent writers ----------------------------------------------------------------------

def test_two_threads_writing_one_target_never_corrupt_it(tmp_path):
    target = tmp_path / "shared.txt"
    payload = {k: f"<{k}>" + k * 100_000 + f"</{k}>" for k in "ab"}
    valid = set(payload.values())
    errors: list[BaseException] = []
    done = threading.Event()
    reads = [0]

    def writer(k: str) -> None:
        try:
            for _ in range(60):
                with atomic_path(target) as tmp:
                    with open(tmp, "w") as f:  # several chunks: a wide window for a race
                        text = payload[k]
                        for s in range(0, len(text), 10_000):
                            f.write(text[s:s + 10_000])
                            f.flush()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def reader() -> None:
        while not done.is_set():
            try:
                text = target.read_text()
            except FileNotFoundError:
                continue
            reads[0] += 1
            if text not in valid:
                errors.append(AssertionError(f"torn read: {len(text)} characters"))
                return

    threads = [threading.Thread(target=writer, args=(k,)) for k in "ab"]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert not errors, errors[:3]
    assert target.read_text() in valid and reads[0] > 0
    assert _temps(tmp_path) == []


def test_torch_save_write_failure_is_an_oserror_naming_the_path(tmp_path, monkeypatch):
    """torch.save raises RuntimeError when its zip writer cannot write (e.g. a full disk)."""
    import torch

    from advsmooth._utils import atomic_path

    target = tmp_path / "weights.pt"
    target.write_bytes(b"previous")

    def failing_save(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="weights.pt") as info:
        with atomic_path(target) as tmp:
            torch.save({"a": 1}, tmp)
    assert "file write failed" in str(info.value)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pt"]
    with pytest.raises(RuntimeError, match="unrelated"):  # other RuntimeErrors pass through
        with atomic_path(target):
            raise RuntimeError("unrelated")
