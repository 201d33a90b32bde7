"""The Table 3 study's pieces that run without ../shared: GreyShift and the study task."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyCNN

from advsmooth.defenses.magnet import Autoencoder
from advsmooth.experiments import tasks
from advsmooth.studies.defenses import GreyShift


def test_grey_shift_is_seeded_in_the_box_and_successes_are_real():
    model = TinyCNN(channels=1, seed=0).eval()
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    a = GreyShift(trials=30, max_shift=0.8, seed=3)
    r1, r2 = a(model, x, y), a(model, x, y)
    assert torch.equal(r1.x_adv, r2.x_adv) and torch.equal(r1.success, r2.success)
    assert r1.x_adv.min() >= 0 and r1.x_adv.max() <= 1
    assert bool(r1.success.any())
    pred = model(r1.x_adv).argmax(1)
    assert torch.equal(pred != y, r1.success)
    assert torch.equal(r1.x_adv[~r1.success], x[~r1.success])
    with pytest.raises(ValueError, match="trials"):
        GreyShift(trials=0)


def test_autoencoder_activation_is_validated():
    with pytest.raises(ValueError, match="activation"):
        Autoencoder(1, activation="tanh")


def test_table3_task_is_registered_and_checks_params():
    task = tasks.get_task("smoothfool_table3")
    task.check({"out_dir": "x", "n_test": 5})
    with pytest.raises(ValueError, match="unknown"):
        task.check({"out_dir": "x", "n_tset": 5})
    with pytest.raises(ValueError, match="missing"):
        task.check({"n_test": 5})
