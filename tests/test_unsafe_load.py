"""Nothing is ever unpickled from disk: a crafted pickle in a cache or results folder must not
run code, and no source file may ask torch/numpy for unsafe loading."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[1] / "src" / "advsmooth"


class _Payload:
    """Pickles to a call that creates ``marker`` when unpickled (what an attacker would plant)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": {"a": 1}, "model": _Payload(marker), "seconds": 1.0}, path)


def test_no_unsafe_load_in_source():
    bad = re.compile(r"weights_only\s*=\s*False|allow_pickle\s*=\s*True")
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if bad.search(line)]
    assert hits == []


def test_defence_study_artefacts_never_unpickle(tmp_path):
    # a trained defence of the Table 3 study is a step artefact: a payload planted at its file
    # (or at the old runs/<name>.pt cache) is never deserialised, and the defence is retrained
    from advsmooth.experiments import artefacts
    from advsmooth.experiments.artefacts import Artefacts, StepOutput
    from advsmooth.experiments.tasks import StudyContext
    from advsmooth.studies.defenses import table3_plan

    step = next(s for s in table3_plan({"n_test": 5}) for s in [s, *s.after]
                if s.kind == "table3.sat")
    built = []
    ctx = StudyContext(seed=0, device=torch.device("cpu"))
    real = artefacts._STEPS["table3.sat"]
    artefacts._STEPS["table3.sat"] = lambda s, c: (built.append(1), StepOutput(
        tensors={"w": torch.ones(2)}))[1]
    try:
        arts = Artefacts(tmp_path)
        arts.run(step, ctx)
        path = tmp_path / arts.record(step.key)["file"]
        arts.close()
        marker = tmp_path / "pwned"
        _plant(path, marker)
        _plant(tmp_path / "runs" / "sat.pt", marker)
        fresh = Artefacts(tmp_path)
        out = fresh.run(step, ctx)
        fresh.close()
    finally:
        artefacts._STEPS["table3.sat"] = real
    assert not marker.exists()
    assert built == [1, 1] and torch.equal(out.tensors["w"], torch.ones(2))
