"""Inputs a review found reaching users as tracebacks, NaN or silence: each is now one clear
error (or an honest "not run"), and the behaviour behind it is unchanged for valid inputs."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

import advsmooth as asm
from advsmooth import models
from advsmooth.attacks import DeepFool
from advsmooth.attacks.hyperplane import lp_norm
from advsmooth.checks import Check, DefenseReport
from advsmooth.cli import main
from advsmooth.data import random_subset
from advsmooth.experiments import parse_spec
from advsmooth.experiments.evaluate_task import combine_rows
from advsmooth.experiments.store import Store
from advsmooth.models.byo import load_factory
from advsmooth.report.scoreboard import load_claims, score


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


# -- specs ---------------------------------------------------------------------------------------

def _spec(attacks):
    return {"name": "t", "datasets": [{"name": "digits", "n": 4}],
            "models": [{"name": "digits-lenet"}], "attacks": attacks}


@pytest.mark.parametrize("attacks, needle", [
    ([{"name": "fgsm", "params": {"eps": 0.1}}, {"name": "fgsm", "params": {"eps": 0.1}}],
     "attacks[1] repeats a cell of attacks[0]"),
    ([{"name": "fgsm", "params": {"eps": 0.1}}, {"name": "fgsm", "grid": {"eps": [0.2, 0.1]}}],
     "attacks[1] repeats a cell of attacks[0]"),
    ([{"name": "fgsm", "grid": {"eps": [0.1, 0.1]}}], "grid.eps repeats 0.1"),
    ([{"name": "fgsm", "label": "a", "params": {"eps": 0.1}},
      {"name": "fgsm", "label": "a", "params": {"eps": 0.2}}], "labels must be unique"),
])
def test_a_spec_that_would_run_a_cell_twice_is_refused(attacks, needle):
    with pytest.raises(ValueError, match=None) as err:
        parse_spec(_spec(attacks))
    assert needle in str(err.value)


def test_unlabelled_attacks_of_one_name_with_other_params_stay_allowed():
    spec = parse_spec(_spec([{"name": "fgsm", "params": {"eps": 0.1}},
                             {"name": "fgsm", "params": {"eps": 0.2}}]))
    assert len(spec.attacks) == 2


# -- the result store ----------------------------------------------------------------------------

def test_a_store_that_is_not_sqlite_or_is_a_folder_is_one_clear_error(tmp_path):
    junk = tmp_path / "a"
    junk.mkdir()
    (junk / "results.sqlite").write_text("junk")
    with pytest.raises(ValueError, match="is not an advsmooth result store"):
        Store(junk)
    with pytest.raises(ValueError, match="is not an advsmooth result store"):
        Store(junk, readonly=True)
    folder = tmp_path / "b"
    (folder / "results.sqlite").mkdir(parents=True)
    with pytest.raises(ValueError, match="is a folder"):
        Store(folder)
    with pytest.raises(ValueError, match="is a folder"):
        Store(folder / "results.sqlite")


def test_cli_reports_a_junk_store_in_one_line(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "results.sqlite").write_text("junk")
    assert main(["report", str(out)]) == 2
    assert "is not an advsmooth result store" in _one_line(capsys)


# -- saved models and factories ------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = models.create("mlp", (1, 8, 8), 10)
    return models.save_model(net, tmp_path / "m.pt", arch="mlp", in_shape=(1, 8, 8),
                             num_classes=10)


@pytest.mark.parametrize("desc, needle", [
    ({}, "'arch'"), ([], "expected a JSON object"), ({"arch": None}, "'arch'"),
    ({"arch": "mlp", "in_shape": "abc", "num_classes": 10}, "'in_shape'"),
    ({"arch": "mlp", "in_shape": [1, 8, 8], "num_classes": 1}, "'num_classes'"),
    ({"arch": "mlp", "in_shape": [1, 8, 8], "num_classes": 10, "mean": "x"}, "'mean'"),
    ({"arch": "mlp", "in_shape": [1, 8, 8], "num_classes": 10, "kwargs": {"foo": 1}}, "foo"),
])
def test_a_malformed_model_description_names_its_file_and_field(saved, desc, needle):
    meta = saved.with_name(saved.name + ".json")
    meta.write_text(json.dumps(desc))
    with pytest.raises(ValueError, match="invalid model description") as err:
        models.load(str(saved))
    assert str(meta) in str(err.value) and needle in str(err.value)


def test_a_saved_model_whose_weights_do_not_match_its_hash_is_refused(saved):
    assert isinstance(models.load(str(saved)), torch.nn.Module)  # the pair as saved loads
    sd = torch.load(saved, weights_only=True)
    sd = {k: v + 1.0 for k, v in sd.items()}
    torch.save(sd, saved)
    with pytest.raises(ValueError, match="does not match the sha256"):
        models.load(str(saved))


def test_a_factory_that_needs_arguments_is_named():
    with pytest.raises(ValueError, match="must be callable with no arguments"):
        load_factory("json:loads")


def test_an_architecture_too_large_for_the_images_is_a_value_error():
    with pytest.raises(ValueError, match="cannot take 1x2x2 inputs"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "Initializing zero-element tensors is a no-op"
        models.create("lenet", (1, 2, 2), 10)
    net = models.create("lenet", (1, 28, 28), 10)
    assert net.training  # the size probe leaves the module in train mode


def test_cli_train_on_empty_or_one_class_data(tmp_path, capsys):
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64))
    argv = ["train", "mlp", "--data", f"npz:{empty}", "--epochs", "1", "--eval-split", "none",
            "--out", str(tmp_path / "t")]
    assert main(argv) == 2
    assert "holds no images" in _one_line(capsys)
    one = tmp_path / "one.npz"
    np.savez(one, x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    argv[3] = f"npz:{one}"
    assert main(argv) == 2
    assert "one class only" in _one_line(capsys)


@pytest.mark.parametrize("argv", [
    ["attack", "deepfool", "-m", "digits-lenet", "-d", "digits", "--out", ""],
    ["demo", "--write-spec", " "],
    ["report", ""],
])
def test_an_empty_path_is_refused_before_any_work(argv, capsys):
    assert main(argv) == 2
    assert "empty; give a name or a path" in _one_line(capsys)


# -- scoreboard ----------------------------------------------------------------------------------

def _claims(tmp_path, text):
    p = tmp_path / "claims.toml"
    p.write_text(text)
    return p


def test_scoreboard_claims_files_of_the_wrong_shape(tmp_path):
    for text, needle in [('defaults = "x"\n', "defaults must be a table"),
                         ("claims = [1, 2]\n", "claims must be an array of tables"),
                         ('claims = "abc"\n', "claims must be an array of tables"),
                         ('[[claims]]\nclaim = "c"\npaper = "p"\npaper_text = "0"\n'
                          'paper_value = 0\n', "non-zero paper_value"),
                         ('[[claims]]\nclaim = "c"\npaper = "p"\npaper_text = "x"\n'
                          'paper_value = nan\n', "finite number")]:
        with pytest.raises(ValueError, match=needle):
            load_claims(_claims(tmp_path, text))


def test_scoreboard_names_a_zero_divisor_and_a_non_number(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,c\n1,0,xyz\n")
    ref = 'results = "t.csv"\nrow = { a = "1" }\n'
    text = ('[[claims]]\nclaim = "c"\npaper = "p"\npaper_text = "2"\npaper_value = 2\n'
            f'{ref}column = "a"\ndivide_by = {{ results = "t.csv", row = {{ a = "1" }}, '
            'column = "b" }\n')
    with pytest.raises(ValueError, match="divide_by is 0"):
        score(load_claims(_claims(tmp_path, text)), tmp_path)
    text = ('[[claims]]\nclaim = "c"\npaper = "p"\npaper_text = "2"\npaper_value = 2\n'
            f'{ref}column = "c"\n')
    with pytest.raises(ValueError, match="column 'c': 'xyz' is not a number"):
        score(load_claims(_claims(tmp_path, text)), tmp_path)


# -- evaluate without PGD-CE ---------------------------------------------------------------------

def test_evaluate_without_pgd_reports_not_run_not_nan():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    x = torch.rand(6, 1, 4, 4)
    y = model(x).argmax(1)
    rep = asm.evaluate(model, x, y, eps=[0.1], stages=["deepfool"], progress_bar=False)
    assert rep.pgd_robust_accuracy[0.1] is None
    assert "| — |" in rep.table() and "nan" not in rep.table()
    json.dumps(rep.to_dict(), allow_nan=False)  # strict JSON: null, never NaN
    rows = [{"eps": 0.1, "n": 6, "correct": 6, "robust": 3, "pgd_robust": None},
            {"eps": 0.1, "n": 6, "correct": 5, "robust": 2, "pgd_robust": None}]
    acc = combine_rows(rows)[0.1]
    assert acc["pgd_robust_accuracy"] is None and acc["robust_accuracy"] == 5 / 12


# -- check-defense with nothing to check ---------------------------------------------------------

def test_a_defense_report_whose_checks_all_skipped_is_inconclusive_not_passed():
    skipped = DefenseReport([Check("unbounded", "skip", message="no correctly classified sample")],
                            n=1, n_correct=0, clean_accuracy=0.0, randomized=False,
                            eps_grid=(0.1,))
    assert skipped.inconclusive and not skipped.passed
    assert skipped.verdict.startswith("INCONCLUSIVE")
    ran = DefenseReport([Check("unbounded", "pass"), Check("nattack", "skip")], n=4,
                        n_correct=4, clean_accuracy=1.0, randomized=False, eps_grid=(0.1,))
    assert ran.passed and not ran.inconclusive


# -- numerics ------------------------------------------------------------------------------------

def test_lp_norm_does_not_underflow_for_p_near_one_dual():
    w = torch.randn(3, 784, generator=torch.Generator().manual_seed(0)) * 1e-2
    for q in (101.0, 1001.0):
        got = lp_norm(w, q)
        ref = lp_norm(w.double(), q)  # float64 holds |w|^101; compare where it does
        assert torch.all(got > 0)
        assert torch.all(got <= w.abs().amax(dim=1) * 784 ** (1 / q) * (1 + 1e-6))
        if q == 101.0:
            torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=0)
    assert lp_norm(torch.zeros(2, 5), 3.0).tolist() == [0.0, 0.0]


def test_deepfool_with_p_near_one_fools_unclipped_and_warns_when_clipped():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)).eval()
    x = torch.rand(8, 1, 8, 8) * 0.5 + 0.25
    res = DeepFool(norm=1.001)(model, x)
    assert bool(res.success.all()) and torch.isfinite(res.x_adv).all()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DeepFool(norm=1.001, clip=True)
        DeepFool(norm=1.5, clip=True)
    msgs = [str(c.message) for c in caught]
    assert len(msgs) == 1 and "p >= 1.05 or clip=False" in msgs[0]


def test_random_subset_refuses_a_negative_count():
    with pytest.raises(ValueError, match="k must be >= 0"):
        random_subset(10, -1, 0)
    assert random_subset(10, 0, 0).numel() == 0
    assert not math.isnan(float(random_subset(10, 3, 0).sum()))


@pytest.mark.parametrize("argv, needle", [
    (["check-defense", "-m", "digits-lenet", "-d", "digits", "--n", "4", "--eps", ""],
     "--eps: give at least one radius"),
    (["check-defense", "-m", "digits-lenet", "-d", "digits", "--n", "4", "--smooth-sigma", "0"],
     "--smooth-sigma"),
    (["attack", "uap", "-m", "digits-lenet", "-d", "digits", "--n", "4", "--fit-split", "nope"],
     "--fit-split must be one of"),
])
def test_options_named_in_their_errors(argv, needle, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own type errors
        rc = exc.code
    assert rc == 2
    assert needle in _one_line(capsys)


def test_a_binary_spec_or_claims_file_is_named(tmp_path, capsys):
    blob = tmp_path / "b.toml"
    blob.write_bytes(b"\xff\xfe\x00binary")
    assert main(["run", str(blob), "--out", str(tmp_path / "o")]) == 2
    assert f"{blob}: not a UTF-8 text file" in _one_line(capsys)
    with pytest.raises(ValueError, match="not a UTF-8 text file"):
        load_claims(blob)


def test_an_option_without_effect_is_warned_only_when_given():
    import argparse

    from advsmooth.cli._common import warn_unused

    given = argparse.Namespace(argv=["smooth", "--C=0.3"])
    with pytest.warns(UserWarning, match="--C has no effect without --vote weighted_c"):
        warn_unused(given, "--C", False, "without --vote weighted_c")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_unused(given, "--C", True, "without --vote weighted_c")  # it has an effect
        warn_unused(argparse.Namespace(argv=["smooth"]), "--C", False, "x")  # not given
        warn_unused(argparse.Namespace(argv=["--Cx"]), "--C", False, "x")  # another option


def test_certified_accuracy_checks_labels_and_refuses_an_empty_batch():
    from advsmooth.defenses import SmoothedClassifier
    from advsmooth.metrics.certification import certified_accuracy

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    sc = SmoothedClassifier(base, sigma=0.25, samples=4)
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\]"):
        certified_accuracy(sc, x, [55, 56], n0=4, n=8, progress_bar=False)
    with pytest.raises(ValueError, match="empty batch"):
        certified_accuracy(sc, x[:0], [], n0=4, n=8, progress_bar=False)
    rep = certified_accuracy(sc, x, [0, 1], n0=4, n=8, progress_bar=False)
    assert len(rep.radii) >= 1


def test_normalised_roughness_of_huge_perturbations_stays_finite_and_scale_invariant():
    from advsmooth.filters import roughness

    r = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) - 0.5
    ref = roughness(r, normalized=True)
    huge = roughness(r * 1e30, normalized=True)
    assert torch.isfinite(huge).all()
    torch.testing.assert_close(huge, ref, rtol=1e-5, atol=1e-7)


def test_demo_n_beyond_the_digits_test_split_names_the_option(capsys, tmp_path):
    assert main(["demo", "--n", "100000", "--out", str(tmp_path / "d")]) == 2
    line = _one_line(capsys)
    assert "--n 100000 exceeds the 359 digits test images" in line and "<spec>" not in line


def test_a_text_file_given_as_checkpoint_is_not_called_a_pickle(tmp_path):
    from advsmooth.models.checkpoints import CheckpointError, safe_load

    p = tmp_path / "bad.pt"
    p.write_text("garbage\n")
    with pytest.raises(CheckpointError) as err:
        safe_load(p)
    assert "not a PyTorch file" in str(err.value) and "pickled" not in str(err.value)
    assert "weights_only" not in str(err.value)  # no advice to load it unsafely


def test_a_repeated_warning_prints_once_per_command(capsys, tmp_path):
    rc = main(["attack", "deepfool", "-m", "digits-lenet", "-d", "digits", "--n", "4",
               "--norm", "1.001", "--out", str(tmp_path / "o")])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("p >= 1.05 or clip=False") == 1, err


def test_transfer_subset_says_when_fewer_images_than_asked_are_correct_for_every_model():
    from advsmooth.studies.transfer import _subset_correct

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    x = torch.rand(20, 1, 4, 4)
    y = net(x).argmax(1)
    y[:5] = (y[:5] + 1) % 3  # five images misclassified
    with pytest.warns(RuntimeWarning, match="only 15 of the 20 candidate images"):
        xs, _ = _subset_correct([net], x, y, n=100, seed=0)
    assert xs.shape[0] == 15
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _subset_correct([net], x, y, n=10, seed=0)[0].shape[0] == 10


def test_npz_without_a_path_and_npz_info_say_what_to_do():
    with pytest.raises(ValueError, match="needs a file path"):
        asm.data.load("npz:")
    with pytest.raises(ValueError, match="is a file, not a registered dataset"):
        asm.data.info("npz:images.npz")


def test_n_beyond_the_split_warns_and_uses_the_whole_split():
    with pytest.warns(UserWarning, match=r"n=100000 exceeds the 359 samples"):
        x, y = asm.data.load("digits", "test", n=100_000)
    assert len(x) == len(y) == 359
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(asm.data.load("digits", "test", n=359)[0]) == 359
