"""The CLI fails fast with one line, speaks one language, and survives faults.

Every user error here must exit with status 2 and print exactly one line on stderr, and (where
it matters) before any work: the functions that would do the work are replaced by ones that fail
the test. Bugs (any other exception) show their traceback and exit 1.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from advsmooth.cli import build_parser, main

DIGITS = ["--model", "digits-lenet", "--data", "digits"]

SPEC = """
name = "hardening"
seed = 3
batch_size = 2
[[datasets]]
name = "digits"
sample = 4
[[models]]
name = "digits-lenet"
[[attacks]]
name = "fgsm"
params = { eps = 0.1 }
"""


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("advsmooth"), err
    return lines[0]


@pytest.fixture
def no_work(monkeypatch):
    """Make every entry into real work fail the test (attacks, runs, studies, training)."""
    import advsmooth.checks
    import advsmooth.defenses
    import advsmooth.experiments
    import advsmooth.experiments.runner
    import advsmooth.studies.smoothing

    def boom(*a, **k):
        raise AssertionError("work started before the error was found")

    monkeypatch.setattr(advsmooth.experiments.runner, "_run", boom)
    monkeypatch.setattr(advsmooth.experiments, "run_spec", boom)
    monkeypatch.setattr(advsmooth.checks, "evaluate_defense", boom)
    monkeypatch.setattr(advsmooth.studies.smoothing, "run_smoothing_study", boom)
    monkeypatch.setattr(advsmooth.defenses, "train", boom)


@pytest.fixture
def spec_file(tmp_path):
    p = tmp_path / "spec.toml"
    p.write_text(SPEC)
    return p


# -- item 6: output folders and files, disks, read-only stores, unsafe checkpoints ------------

@pytest.mark.parametrize("make_argv", [
    lambda f, s: ["attack", "fgsm", *DIGITS, "--n", "2", "--out", str(f)],
    lambda f, s: ["run", str(s), "--out", str(f)],
    lambda f, s: ["smooth", *DIGITS, "--out", str(f)],
    lambda f, s: ["train", "lenet", "--data", "digits", "--out", str(f)],
    lambda f, s: ["transfer", "--out", str(f)],
    lambda f, s: ["demo", "--out", str(f)],
    lambda f, s: ["check-defense", *DIGITS, "--json", str(f.parent)],
])
def test_out_that_is_a_file_or_folder_fails_before_work(make_argv, tmp_path, spec_file, capsys,
                                                        no_work):
    f = tmp_path / "a-file"
    f.write_text("x")
    assert main(make_argv(f, spec_file)) == 2
    line = _one_line(capsys)
    assert "is a file" in line or "is a folder" in line


def test_unwritable_out_fails_before_work(tmp_path, monkeypatch, capsys, no_work):
    from advsmooth.cli import _common

    monkeypatch.setattr(_common, "_writable_dir", lambda folder: False)
    assert main(["attack", "fgsm", *DIGITS, "--out", str(tmp_path / "new" / "run")]) == 2
    assert "not writable" in _one_line(capsys)
    assert main(["check-defense", *DIGITS, "--json", str(tmp_path / "r.json")]) == 2
    assert "not writable" in _one_line(capsys)


def _limit_store(monkeypatch, pages: int) -> None:
    """Give every writable store a maximum size: SQLite then reports SQLITE_FULL, exactly as
    on a full disk."""
    from advsmooth.experiments import store as store_mod

    real_init = store_mod.Store.__init__

    def init(self, path, *, readonly=False):
        real_init(self, path, readonly=readonly)
        if not readonly:
            used = self.conn.execute("PRAGMA page_count").fetchone()[0]
            self.conn.execute(f"PRAGMA max_page_count={used + pages}")

    monkeypatch.setattr(store_mod.Store, "__init__", init)


def test_store_full_disk_is_one_oserror_and_rolls_back(tmp_path, monkeypatch):
    from advsmooth.experiments.store import SAMPLE_COLUMNS, Store

    _limit_store(monkeypatch, 2)
    cols = {c: np.zeros(400) for c in SAMPLE_COLUMNS}
    with Store(tmp_path) as st:
        with pytest.raises(OSError) as info:
            for b in range(50):
                st.commit_batch("c", b, 400 * b, cols, run_id=1, rank=0, seconds=0.0)
        assert info.value.errno == errno.ENOSPC
        assert "database or disk is full" in str(info.value)
        assert "rollback" not in str(info.value)
        assert not st.conn.in_transaction          # rolled back, store still usable
        done = st.done_batches("c")
        assert len(st.samples("c")["label"]) == 400 * len(done)  # only whole batches


def test_run_full_disk_one_line(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "big.toml"
    spec.write_text(SPEC.replace("sample = 4", "sample = 64").replace("batch_size = 2",
                                                                        "batch_size = 32"))
    _limit_store(monkeypatch, 0)  # not one page more: the first batch fills the "disk"
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    line = _one_line(capsys)
    assert "database or disk is full" in line and "rollback" not in line


def test_read_only_store_one_line(spec_file, tmp_path, monkeypatch, capsys):
    """A store SQLite may not write (read-only file, folder or medium) is one line."""
    out = tmp_path / "o"
    assert main(["run", str(spec_file), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    from advsmooth.experiments import store as store_mod

    real = sqlite3.connect

    def read_only(path, *a, **k):  # what a chmod -w store looks like to SQLite
        if str(path).endswith("results.sqlite"):
            return real(f"file:{path}?mode=ro", *a, uri=True, **k)
        return real(path, *a, **k)

    monkeypatch.setattr(store_mod.sqlite3, "connect", read_only)
    assert main(["run", str(spec_file), "--out", str(out), "--no-progress"]) == 2
    line = _one_line(capsys)
    assert "read-only" in line and "results.sqlite" in line


class _Payload:
    marker: Path | None = None

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# torch warns that the planted pickle uses protocol 4 before its safe unpickler refuses it
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_unsafe_resume_checkpoint_one_line_never_runs(tmp_path, capsys):
    out = tmp_path / "train"
    out.mkdir()
    marker = tmp_path / "PWNED"
    _Payload.marker = marker
    with open(out / "last.pt", "wb") as f:
        pickle.dump({"format": _Payload()}, f)
    code = main(["train", "lenet", "--data", "digits", "--epochs", "1", "--out", str(out),
                 "--resume", "--no-progress"])
    assert code == 2
    line = _one_line(capsys)
    assert "last.pt" in line and ("refused" in line or "cannot read" in line)
    assert not marker.exists()


# -- item 7: one run per folder ------------------------------------------------------------------

def test_second_run_on_a_held_folder_is_refused_naming_the_holder(spec_file, tmp_path, capsys):
    from advsmooth.experiments.lock import FolderLock

    out = tmp_path / "o"
    with FolderLock(out):
        assert main(["run", str(spec_file), "--out", str(out), "--no-progress"]) == 2
        line = _one_line(capsys)
        assert f"pid {os.getpid()}" in line and "in use" in line
        assert not (out / "results.sqlite").exists()
    # released: the folder is usable again, and the holder's sidecar is gone
    assert not (out / ".advsmooth.lock.json").exists()
    assert main(["run", str(spec_file), "--out", str(out), "--no-progress"]) == 0


def test_lock_of_a_killed_holder_is_free(tmp_path):
    """The OS drops the lock of a dead process; a stale sidecar does not block."""
    import subprocess

    from advsmooth.experiments.lock import FolderLock

    code = ("import sys, os; sys.path.insert(0, sys.argv[1]);"
            "from advsmooth.experiments.lock import FolderLock;"
            "FolderLock(sys.argv[2]).acquire(); os.kill(os.getpid(), 9)")
    src = str(Path(__file__).resolve().parents[1] / "src")
    subprocess.run([sys.executable, "-c", code, src, str(tmp_path)], check=False)
    assert (tmp_path / ".advsmooth.lock.json").exists()        # stale sidecar left behind
    with FolderLock(tmp_path):
        assert json.loads((tmp_path / ".advsmooth.lock.json").read_text())["pid"] == os.getpid()


def test_model_cache_lock_is_filelock(tmp_path):
    from filelock import FileLock

    from advsmooth.models import registry

    lock = registry._file_lock(tmp_path / "x.lock")
    assert isinstance(lock, FileLock)
    with lock:
        other = FileLock(str(tmp_path / "x.lock"), timeout=0)
        with pytest.raises(Exception, match="(?i)could not be acquired|timeout"):
            other.acquire()


# -- item 8: fail fast, one language ---------------------------------------------------------------

def _device_argvs(device: str, spec: Path) -> list[list[str]]:
    return [
        ["attack", "fgsm", *DIGITS, "--device", device],
        ["run", str(spec), "--device", device],
        ["smooth", *DIGITS, "--device", device],
        ["check-defense", *DIGITS, "--device", device],
        ["train", "lenet", "--data", "digits", "--device", device],
    ]


@pytest.mark.parametrize("k", range(5))
def test_device_gpu_and_cuda_without_cuda_one_line(k, spec_file, monkeypatch, capsys, no_work):
    assert main(_device_argvs("gpu", spec_file)[k]) == 2
    assert "--device must be cpu, cuda, cuda:N, mps or auto" in _one_line(capsys)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(_device_argvs("cuda", spec_file)[k]) == 2
    assert "CUDA is not available" in _one_line(capsys)


@pytest.mark.parametrize("cmd", ["attack", "run", "smooth", "check-defense", "train",
                                 "transfer", "models"])
def test_every_model_loading_command_takes_models_dir(cmd, capsys):
    with pytest.raises(SystemExit):
        main([cmd, "--help"])
    assert "--models-dir" in capsys.readouterr().out


def test_attack_missing_checkpoint_names_an_option_attack_has(tmp_path, capsys):
    code = main(["attack", "fgsm", "--model", "cifar10-resnet20", "--data", "npz:" + str(
        _cifar_like_npz(tmp_path)), "--models-dir", str(tmp_path)])
    assert code == 2
    line = _one_line(capsys)
    assert "not found" in line and "--models-dir" in line


def _cifar_like_npz(tmp_path: Path) -> Path:
    p = tmp_path / "c.npz"
    rng = np.random.default_rng(0)
    np.savez(p, x=rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8), y=np.arange(4))
    return p


@pytest.mark.parametrize("argv", [
    ["attack", "deepfool", "--model", "cifar10-resnet20", "--data", "mnist"],
    ["attack", "deepfool", "--model", "cifar10-resnet20", "--data", "digits"],
    ["smooth", "--model", "cifar10-resnet20", "--data", "mnist"],
    ["check-defense", "--model", "mnist-lenet", "--data", "cifar10"],
])
def test_model_data_mismatch_found_before_work(argv, capsys, no_work):
    assert main(argv) == 2
    line = _one_line(capsys)
    assert "takes 3x32x32 images" in line or "takes 1x28x28 images" in line


def test_model_data_mismatch_in_a_spec(tmp_path, capsys, no_work):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC.replace('name = "digits-lenet"', 'name = "cifar10-resnet20"'))
    assert main(["run", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert "takes inputs of shape (3, 32, 32)" in _one_line(capsys)


def test_eps_fractions_everywhere():
    from advsmooth.cli._common import parse_number
    from advsmooth.cli.cmd_attack import _literal

    p = build_parser()
    assert p.parse_args(["smooth", *DIGITS, "--eps", "8/255"]).eps == pytest.approx(8 / 255)
    assert p.parse_args(["check-defense", *DIGITS, "--eps", "4/255", "8/255"]).eps == \
        pytest.approx([4 / 255, 8 / 255])
    assert p.parse_args(["attack", "uap", *DIGITS, "--eps", "10/255"]).eps == \
        pytest.approx(10 / 255)
    assert _literal("8/255") == pytest.approx(8 / 255) and _literal("(1, 2)") == (1, 2)
    assert parse_number(" 1e-3 ") == 0.001
    for bad in ("8/0", "nan", "inf", "1/x", "8//255"):
        with pytest.raises(ValueError):
            parse_number(bad)


def test_eps_fraction_reaches_the_attack(tmp_path, capsys):
    out = tmp_path / "u"
    assert main(["attack", "uap", *DIGITS, "--n", "3", "--fit-n", "3", "--eps", "8/255",
                 "--param", "max_passes=1", "--out", str(out), "--no-progress"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["params"]["xi"] == pytest.approx(8 / 255)
    assert s["summary"]["v_linf"] <= 8 / 255 + 1e-6
    # a universal attack is a one-cell run too: its summary is the study row in the store
    from advsmooth.experiments import Store

    with Store(out, readonly=True) as st:
        (cell,) = st.cells()
        (row,) = st.study_rows(cell["cell_id"])
    assert cell["task"] == "universal_attack" and cell["status"] == "done"
    assert row["v_linf"] == pytest.approx(s["summary"]["v_linf"])
    assert (out / "report" / "report.html").is_file()


def test_one_spelling_per_option_old_ones_hidden(capsys):
    p = build_parser()
    a = p.parse_args(["smooth", *DIGITS, "--smooth-samples", "8", "--nattack-iters", "7"])
    b = p.parse_args(["smooth", *DIGITS, "--samples", "8", "--nattack-iter", "7"])
    assert (a.samples, a.nattack_iters) == (b.samples, b.nattack_iters) == (8, 7)
    c = p.parse_args(["check-defense", *DIGITS, "--nattack-iter", "9"])
    d = p.parse_args(["check-defense", *DIGITS, "--nattack-iters", "9", "--smooth-samples", "3"])
    assert c.nattack_iters == d.nattack_iters == 9 and d.smooth_samples == 3
    for cmd in ("smooth", "check-defense"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert "--nattack-iters" in out and "--nattack-iter " not in out
        assert "--smooth-samples" in out and "--samples " not in out


@pytest.mark.parametrize("argv", [["attack"], ["attack", "deepfool", *DIGITS, "--n", "x"],
                                  ["smooth", "--model", "m"], ["run"], ["nope"],
                                  ["attack", "deepfool", *DIGITS, "--bogus"]])
def test_argparse_errors_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    line = _one_line(capsys)
    assert "error:" in line and "--help" in line and "usage:" not in line


def test_check_defense_help_has_no_double_percent(capsys):
    with pytest.raises(SystemExit):
        main(["check-defense", "--help"])
    out = capsys.readouterr().out
    assert "%%" not in out and "100%" in out


# -- item 9: honest defaults --------------------------------------------------------------------

def test_cli_deepfool_defaults_to_valid_images_and_offers_unclipped(tmp_path, capsys):
    common = ["deepfool", *DIGITS, "--n", "6", "--max-iter", "30", "--param",
              "overshoot=0.5", "--no-progress"]
    assert main(["attack", *common, "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "clipped to [0, 1]" in out
    z = np.load(tmp_path / "c" / "adversarial.npz")
    assert z["x_adv"].min() >= 0.0 and z["x_adv"].max() <= 1.0
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["params"]["clip"] is True
    assert main(["attack", *common, "--no-clip", "--out", str(tmp_path / "u")]) == 0
    assert "not clipped" in capsys.readouterr().out
    z = np.load(tmp_path / "u" / "adversarial.npz")
    assert z["x_adv"].min() < 0.0 or z["x_adv"].max() > 1.0   # the paper's mode leaves [0, 1]
    assert main(["attack", "fgsm", *DIGITS, "--no-clip"]) == 2
    assert "no clip option" in _one_line(capsys)


def test_python_deepfool_default_is_documented():
    from advsmooth.attacks import DeepFool

    head = DeepFool.__doc__.split("\n\n")[0] + DeepFool.__doc__.split("\n\n")[1]
    assert DeepFool().clip is False
    assert "clip" in head and "[0, 1]" in head


def test_per_image_costs_are_per_attacked_image():
    from advsmooth.attacks.summary import summarize
    from advsmooth.experiments.store import summarize as store_summarize
    from advsmooth.report.tables import METRIC_DISPLAY

    # 4 images, the last one misclassified (skipped: one forward pass, no gradient)
    cols = {"label": np.array([0, 1, 2, 3]), "clean_pred": np.array([0, 1, 2, 0]),
            "adv_pred": np.array([1, 0, 2, 0]), "success": np.array([1, 1, 0, 1]),
            "l2": np.array([1.0, 3.0, 5.0, 0.0]), "linf": np.array([.1, .3, .5, 0.]),
            "x_l2": np.ones(4), "x_linf": np.ones(4), "iterations": np.array([2, 4, 6, 0]),
            "forward_evals": np.array([3, 5, 7, 1]), "grad_evals": np.array([20, 40, 60, 0])}
    s = summarize(cols)
    assert s["attacked"] == 3 and s["skipped"] == 1
    assert s["forward_evals"] == 5.0 and s["grad_evals"] == 40.0 and s["iterations"] == 4.0
    assert s["success_rate"] == pytest.approx(2 / 3) and s["median_l2"] == 2.0
    st = store_summarize(cols)
    assert st["forward_evals"] == 5.0 and st["fooling_rate"] == s["success_rate"]
    for key in ("forward_evals", "grad_evals", "iterations"):
        assert "attacked image" in METRIC_DISPLAY[key][0]


def test_attack_result_summary_and_repr():
    import advsmooth as asm
    from advsmooth.attacks.summary import result_columns, summarize

    model = asm.models.load("digits-lenet", verbose=False)
    x, y = asm.data.load("digits", "test", n=40)
    res = asm.attacks.FGSM(eps=0.2)(model, x, y)
    s = res.summary()
    ref = summarize(result_columns(res), seconds=res.elapsed)
    assert {k: s[k] for k in ref} == pytest.approx(ref, nan_ok=True)
    att = ~res.skipped
    assert res.mean_grad_evals == pytest.approx(float(res.grad_evals[att].double().mean()))
    text = repr(res)
    assert "\n" not in text and len(text) < 250 and "n=40" in text and "FGSM" in text


def test_progress_bars_off_without_a_terminal(monkeypatch):
    from advsmooth import _utils

    class Tty:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.delenv("ADVSMOOTH_NO_PROGRESS", raising=False)
    monkeypatch.setattr(_utils.sys, "stderr", Tty(False))
    assert not _utils.progress_enabled(True)
    monkeypatch.setattr(_utils.sys, "stderr", Tty(True))
    assert _utils.progress_enabled(True) and not _utils.progress_enabled(False)
    monkeypatch.setenv("ADVSMOOTH_NO_PROGRESS", "1")
    assert not _utils.progress_enabled(True)
    monkeypatch.setenv("ADVSMOOTH_NO_PROGRESS", "0")
    assert _utils.progress_enabled(True)
    assert "ADVSMOOTH_NO_PROGRESS" in (Path(__file__).parents[1] / "docs" / "cli.md").read_text()


# -- user errors vs bugs -------------------------------------------------------------------------

@pytest.mark.parametrize("exc,code", [
    (TypeError("unsupported operand"), 1), (KeyError("x"), 1), (ImportError("no module"), 1),
    (AttributeError("oops"), 1), (ValueError("bad value"), 2),
    (FileNotFoundError("missing.npz"), 2)])
def test_bugs_show_traceback_user_errors_one_line(exc, code, monkeypatch, capsys):
    from advsmooth.cli import cmd_data

    def raise_it(args):
        raise exc

    monkeypatch.setattr(cmd_data, "_main", raise_it)
    assert main(["data"]) == code
    err = capsys.readouterr().err
    if code == 1:
        assert "Traceback" in err and "please report it" in err
    else:
        assert len(err.strip().splitlines()) == 1 and "error:" in err


def test_missing_extra_is_a_user_error(monkeypatch, capsys):
    from advsmooth._utils import MissingDependency
    from advsmooth.cli import cmd_data

    def raise_it(args):
        raise MissingDependency("'matplotlib' is required: pip install 'advsmooth[plot]'")

    monkeypatch.setattr(cmd_data, "_main", raise_it)
    assert main(["data"]) == 2
    assert "advsmooth[plot]" in _one_line(capsys)


# -- one pipeline: attack is a one-cell run ------------------------------------------------------

def test_attack_out_is_a_run_folder_with_store_and_report(tmp_path, capsys):
    from advsmooth.experiments import Store

    out = tmp_path / "df"
    assert main(["attack", "deepfool", *DIGITS, "--n", "5", "--max-iter", "20", "--out",
                 str(out), "--no-progress"]) == 0
    record = json.loads((out / "summary.json").read_text())
    assert (out / "report" / "report.html").is_file()
    with Store(out, readonly=True) as st:
        (cell,) = st.cells()
        assert cell["status"] == "done" and cell["attack"] == "deepfool" and cell["n"] == 5
        assert cell["fooling_rate"] == pytest.approx(record["summary"]["success_rate"])
        assert cell["grad_evals"] == pytest.approx(record["summary"]["grad_evals_per_image"])
        cols = st.samples(cell["cell_id"])
    z = np.load(out / "adversarial.npz")
    assert np.array_equal(z["indices"], cols["source_index"])
    assert np.array_equal(z["success"], cols["success"].astype(bool))
    # re-running resumes: nothing is recomputed, the same table comes back
    first = capsys.readouterr().out
    assert main(["attack", "deepfool", *DIGITS, "--n", "5", "--max-iter", "20", "--out",
                 str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out == first


def test_without_matplotlib_attack_and_report_write_tables_and_say_how(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "o"
    assert main(["attack", "fgsm", *DIGITS, "--n", "3", "--out", str(out),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "advsmooth[plot]" in err
    assert (out / "adversarial.npz").is_file() and (out / "summary.json").is_file()
    assert not (out / "examples.png").exists()
    assert list((out / "report" / "tables").glob("*.csv"))
    assert main(["report", str(out)]) == 0
    assert "advsmooth[plot]" in capsys.readouterr().err
    assert (out / "report" / "report.html").is_file()


def test_stale_temp_files_are_removed(tmp_path):
    import subprocess

    from advsmooth._utils import atomic_path

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / f".report.html.{int(dead.stdout)}-abc123.tmp.html"
    stale.write_bytes(b"")
    live = tmp_path / f".table.csv.{os.getpid()}-zzz999.tmp.csv"
    live.write_bytes(b"")
    with atomic_path(tmp_path / "report.html") as tmp:
        assert str(os.getpid()) in tmp.name
        tmp.write_text("<html></html>")
    assert not stale.exists() and live.exists()


def test_smooth_models_dir_does_not_leak_into_the_process(tmp_path, monkeypatch, capsys, no_work):
    # --models-dir applies to that call only, as in every other command
    monkeypatch.delenv("ADVSMOOTH_MODELS", raising=False)
    argv = ["smooth", "--model", "cifar10-resnet20", "--data", "mnist", "--models-dir",
            str(tmp_path)]
    assert main(argv) == 2
    _one_line(capsys)
    assert "ADVSMOOTH_MODELS" not in os.environ


# -- a user's audit, 2026-12-07: each of these reached the user as a traceback or a silent misread

@pytest.mark.parametrize("argv,needle", [
    (["train", "mlp", "--data", "digits", "--method-param", "eps=0.3"],
     "training method 'standard' has no parameter(s) ['eps']"),
    (["train", "mlp", "--data", "digits", "--method", "pgd", "--method-param", "epss=0.3"],
     "its parameters: eps, alpha"),
    (["attack", "deepfool", "-m", "runs/typo/model.pt", "-d", "digits", "--n", "2"],
     "no model file runs/typo/model.pt"),
    (["attack", "deepfool", *DIGITS, "--n", "1000"], "--n 1000 exceeds the 359 images"),
    (["evaluate", *DIGITS, "--eps", "0.1", "--n", "1000"], "--n 1000 exceeds the 359 images"),
    (["certify", *DIGITS, "--sigma", "0.25", "--n", "1000"], "--n 1000 exceeds"),
    (["smooth", "-m", "digits-lenet", "-d", "digits", "--n", "1000"], "--n 1000 exceeds"),
    (["certify", *DIGITS, "--sigma", "0.25", "--N", "9"], "use --N 10 or more"),
    (["certify", *DIGITS, "--sigma", "0.25", "--alpha", "0.125", "--N", "2"], "use --N 3 or more"),
    (["evaluate", *DIGITS, "--eps", "0.1", "--smooth-sigma", "nan"], "--smooth-sigma"),
    (["check-defense", *DIGITS, "--eps", "0.1", "0.05"], "--eps must be increasing"),
    (["attack", "deepfool", *DIGITS, "--n", "3", "--seed", "-5"],
     "--seed: expected an integer >= 0"),
    (["evaluate", *DIGITS, "--eps", "0.1", "--seed", "-5"], "--seed: expected an integer >= 0"),
])
def test_audited_user_errors_are_one_line_before_work(argv, needle, capsys, no_work, tmp_path,
                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:  # argparse's own errors exit through SystemExit(2)
        code = main([*argv, "--out", str(tmp_path / "o")] if argv[0] == "train" else argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    line = _one_line(capsys)
    assert needle in line, line


def test_run_names_a_folder_given_as_spec(tmp_path, capsys, no_work):
    assert main(["run", str(tmp_path)]) == 2
    assert "is a folder, not a TOML file" in _one_line(capsys)


def test_diverging_training_and_a_resume_of_another_architecture_are_user_errors(tmp_path,
                                                                                capsys):
    out = tmp_path / "t"
    assert main(["train", "mlp", "--data", "digits", "--epochs", "1", "--optimizer", "sgd",
                 "--lr", "100", "--out", str(out), "--no-progress"]) == 2
    assert "the training diverged; try a smaller learning rate (lr=100)" in _one_line(capsys)
    assert main(["train", "mlp", "--data", "digits", "--epochs", "1", "--out", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "lenet", "--data", "digits", "--epochs", "2", "--out", str(out),
                 "--resume", "--no-progress"]) == 2
    assert "its weights do not fit this model (another architecture?)" in _one_line(capsys)


def test_smooth_refuses_labels_the_model_cannot_output(tmp_path, capsys):
    x = (np.random.default_rng(0).random((6, 28, 28)) * 255).astype(np.uint8)
    path = tmp_path / "y15.npz"
    np.savez(path, x=x, y=np.array([0, 1, 2, 3, 4, 15]))
    assert main(["smooth", "-m", "digits-lenet", "-d", f"npz:{path}", "--n", "6", "--samples",
                 "4", "--draws", "1", "--steps", "1"]) == 2
    assert "y must be class indices in [0, 9] for this model" in _one_line(capsys)


@pytest.mark.parametrize("argv,needle", [
    (["demo", "--n", "0"], "error: --n must be >= 1"),
    (["attack", "deepfool", *DIGITS, "--n", "3", "--max-iter", "0"], "error: --max-iter must be"),
])
def test_library_parameter_names_become_the_commands_options(argv, needle, capsys, no_work):
    assert main(argv) == 2
    assert needle in _one_line(capsys)


def test_option_naming_leaves_other_messages_alone():
    from advsmooth.cli import _as_option

    opts = {"--max-iter", "--n", "--seed"}
    assert _as_option("max_iter must be >= 1", opts) == "--max-iter must be >= 1"
    assert _as_option("seed: Input should be >= 0", opts) == "--seed: Input should be >= 0"
    assert _as_option("x has dtype float64", opts) == "x has dtype float64"
    assert _as_option("steps must be >= 1", opts) == "steps must be >= 1"  # no --steps here
    assert _as_option("nothing to do", opts) == "nothing to do"
    # the filter's `param` is not the command's --param KEY=VALUE
    msg = "param (kernel size k) = 2 gives an all-zero triangular kernel"
    assert _as_option(msg, opts | {"--param"}) == msg


def test_a_multi_line_error_keeps_its_details_on_one_line():
    from advsmooth.cli import _one_line
    from advsmooth.experiments.spec import SpecError

    exc = SpecError("attack x", [("seed", "must be >= 0"), ("datasets[0].seed", "must be >= 0")])
    assert _one_line(exc) == ("attack x: invalid experiment spec (2 problem(s)): attack x: seed: "
                              "must be >= 0; attack x: datasets[0].seed: must be >= 0")


@pytest.mark.parametrize("argv,hint", [
    (["attack", "deepfool", "--model", "digits-lenet", "--data", "Digits", "--n", "2"], "'digits'"),
    (["attack", "deepfol", "--model", "digits-lenet", "--data", "digits", "--n", "2"],
     "'deepfool'"),
    (["evaluate", "--model", "digits-lenett", "--data", "digits", "--eps", "0.1", "--n", "4"],
     "'digits-lenet'"),
    (["train", "digits-lenet", "--data", "digits", "--method", "fgsm-at"], "'fgsm_at'"),
])
def test_cli_misspelt_names_get_a_suggestion(argv, hint, capsys, no_work):
    assert main(argv) == 2
    line = _one_line(capsys)
    assert line.endswith(f"did you mean {hint}?"), line
