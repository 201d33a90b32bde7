"""Study cells record the weights they came from: ``checkpoint_hash`` names every model the
cell's work loaded (zoo weights, user checkpoints, saved and factory models) with the hash of its
weights (the same hash attack cells record), for plain
and planned (step-by-step) studies."""

from __future__ import annotations

import pytest
import torch

import advsmooth as asm
from advsmooth.cli import main
from advsmooth.experiments import Store, run_spec
from advsmooth.experiments.runner import model_hash
from advsmooth.experiments.spec import Spec
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
        want = model_hash(asm.models.load("digits-lenet"))
        assert st.cell_weights(cell["cell_id"]) == {"digits-lenet": want}
    assert cell["checkpoint_hash"] == f"digits-lenet={want}"


def test_planned_study_keeps_the_models_of_its_steps(tmp_path) -> None:
    out = tmp_path / "u"
    assert main(["attack", "uap", "--model", "digits-fc", "--data", "digits", "--n", "3",
                 "--fit-n", "3", "--eps", "0.1", "--param", "max_passes=1", "--out", str(out),
                 "--no-progress"]) == 0
    with Store(out, readonly=True) as st:
        (cell,) = st.cells()
    assert cell["checkpoint_hash"] == f"digits-fc={model_hash(asm.models.load('digits-fc'))}"


def test_reused_steps_still_name_their_models(tmp_path) -> None:
    """A run killed after a step stored its result but before the cell was committed: the
    resumed run reuses the stored step (loading no model) and still records its weights."""
    import sqlite3

    out = tmp_path / "u"
    assert main(["attack", "uap", "--model", "digits-fc", "--data", "digits", "--n", "3",
                 "--fit-n", "3", "--eps", "0.1", "--param", "max_passes=1", "--out", str(out),
                 "--no-progress"]) == 0
    want = f"digits-fc={model_hash(asm.models.load('digits-fc'))}"
    db = sqlite3.connect(out / "results.sqlite")
    with db:  # forget everything but the stored step
        for table in ("cell_weights", "batches", "study_rows"):
            db.execute(f"DELETE FROM {table}")
        db.execute("UPDATE cells SET status='pending', checkpoint_hash=NULL")
    db.close()
    with Store(out, readonly=True) as st:
        (cell,) = st.cells()
        assert cell["status"] != "done" and cell["checkpoint_hash"] is None
    with Store(out, readonly=True) as st:
        spec = Spec.model_validate(st.current_spec()[1])
    run_spec(spec, out, progress=False)
    with Store(out, readonly=True) as st:
        (cell,) = st.cells()
    assert cell["status"] == "done" and cell["checkpoint_hash"] == want


def test_registry_logs_every_loaded_weights_under_their_source(tmp_path, monkeypatch) -> None:
    before = len(registry.loaded_weights())
    model = asm.models.load("digits-fc")
    assert registry.loaded_weights()[before:] == [("digits-fc", model_hash(model))]
    # the zoo architecture with a user's weights: logged under NAME@FILE with those weights' hash
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    mine = asm.models.load("digits-fc", checkpoint=path)
    assert registry.loaded_weights()[-1] == (f"digits-fc@{path}", model_hash(mine))
    assert model_hash(mine) != registry.loaded_weights()[before][1]
    # an architecture without weights is not logged; an unknown name logs nothing
    asm.models.load("digits-fc", pretrained=False)
    with pytest.raises(ValueError):
        asm.models.load("no-such-zoo-model")
    assert len(registry.loaded_weights()) == before + 2
    # a package.module:factory model, with the checkpoint's weights
    (tmp_path / "mymodels.py").write_text(
        "import advsmooth as asm\n"
        "def build():\n    return asm.models.load('digits-fc', pretrained=False)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from advsmooth.models.byo import load_factory

    built = load_factory("mymodels:build", checkpoint=path)
    assert registry.loaded_weights()[-1] == (f"mymodels:build@{path}", model_hash(built))
    assert model_hash(built) == model_hash(mine)


def test_evaluate_cell_with_user_weights_records_them(tmp_path) -> None:
    model = asm.models.load("digits-lenet")
    with torch.no_grad():
        next(model.parameters()).mul_(0.5)
    path = tmp_path / "half.pt"
    torch.save(model.state_dict(), path)
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace('model = "digits-lenet"',
                                 f'model = "digits-lenet"\ncheckpoint = "{path}"'))
    run_spec(spec, tmp_path / "out", progress=False)
    with Store(tmp_path / "out", readonly=True) as st:
        (cell,) = st.cells()
    assert cell["checkpoint_hash"] == f"digits-lenet@{path}={model_hash(model)}"
