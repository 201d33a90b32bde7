"""Study cells record the weights they came from: ``checkpoint_hash`` names every zoo model the
cell's work loaded with the hash of its weights (the same hash attack cells record), for plain
and planned (step-by-step) studies."""

from __future__ import annotations

import pytest
import torch

import advsmooth as asm
from advsmooth.cli import main
from advsmooth.experiments import Store, run_spec
from advsmooth.experiments.runner import model_hash
from advsmooth.models import registry

SPEC = """
name = "provenance"
seed = 1
[[studies]]
task = "evaluate"
[studies.params]
model = "digits-lenet"
dataset = "digits"
n = 6
eps = [0.05]
stages = ["pgd-ce"]
pgd_steps = 2
"""


def test_study_cell_records_its_models_weights(tmp_path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    run_spec(spec, tmp_path / "out", progress=False)
    with Store(tmp_path / "out", readonly=True) as st:
        (cell,) = st.cells()
        assert st.cell_models(cell["cell_id"]) == ["digits-lenet"]
    want = model_hash(asm.models.load("digits-lenet"))
    assert cell["checkpoint_hash"] == f"digits-lenet={want}"


def test_planned_study_keeps_the_models_of_its_steps(tmp_path) -> None:
    out = tmp_path / "u"
    assert main(["attack", "uap", "--model", "digits-fc", "--data", "digits", "--n", "3",
                 "--fit-n", "3", "--eps", "0.1", "--param", "max_passes=1", "--out", str(out),
                 "--no-progress"]) == 0
    with Store(out, readonly=True) as st:
        (cell,) = st.cells()
    assert cell["checkpoint_hash"] == f"digits-fc={model_hash(asm.models.load('digits-fc'))}"


def test_registry_logs_zoo_weights_only(tmp_path) -> None:
    before = len(registry.loaded_names())
    model = asm.models.load("digits-fc")
    assert registry.loaded_names()[before:] == ["digits-fc"]
    # the zoo architecture with a user's weights is not the zoo model: not logged
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    asm.models.load("digits-fc", checkpoint=path)
    with pytest.raises(ValueError):
        asm.models.load("no-such-zoo-model")
    assert registry.loaded_names()[before:] == ["digits-fc"]
