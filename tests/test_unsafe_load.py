"""Nothing is ever unpickled from disk: a crafted pickle in a cache or results folder must not
run code, and no source file may ask torch/numpy for unsafe loading."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

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


def test_defence_study_cache_never_unpickles(tmp_path):
    from advsmooth.studies.defenses import _cached, _state_path

    marker = tmp_path / "pwned"
    _plant(_state_path(tmp_path, "fgsm_at"), marker)
    net = nn.Linear(3, 2)
    built = []
    m, _, _ = _cached(tmp_path, "fgsm_at", {"a": 1}, net, lambda: built.append(1) or {})
    assert not marker.exists()
    assert built == [1]  # the planted file was refused and the step recomputed
    # the rewritten cache is then reused, and it loads safely
    m2, _, _ = _cached(tmp_path, "fgsm_at", {"a": 1}, nn.Linear(3, 2),
                       lambda: built.append(2) or {})
    assert built == [1]
    assert torch.equal(m2.weight, m.weight)
