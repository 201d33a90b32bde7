"""``advsmooth.demo.demo_spec`` is the single source of the demo experiment:
``experiments/digits_demo.toml`` is generated from it and must not drift (the demo runs
σg ∈ {1, 2, 5, 10})."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from advsmooth.cli import main
from advsmooth.demo import DEMO_N, DEMO_SIGMAS, demo_spec, demo_spec_toml
from advsmooth.experiments import expand_cells, load_spec, parse_spec

SHIPPED = Path(__file__).resolve().parents[1] / "experiments" / "digits_demo.toml"


def test_demo_spec_runs_the_issue_grid():
    spec = demo_spec()
    assert DEMO_SIGMAS == (1.0, 2.0, 5.0, 10.0)
    sf = next(a for a in spec["attacks"] if a["name"] == "smoothfool")
    assert sf["grid"]["sigma"] == [1.0, 2.0, 5.0, 10.0]
    assert spec["datasets"] == [{"name": "digits", "sample": DEMO_N}]
    cells = expand_cells(parse_spec(spec))
    # DeepFool + SmoothFool × 4 σg + FGSM
    assert [c.attack.name for c in cells] == ["deepfool"] + ["smoothfool"] * 4 + ["fgsm"]
    assert [c.params.get("sigma") for c in cells if c.attack.name == "smoothfool"] == [
        1.0, 2.0, 5.0, 10.0]


@pytest.mark.parametrize("kw", [{}, {"n": 7, "seed": 3, "model": "digits-fc"}])
def test_toml_round_trips_to_demo_spec(kw):
    text = demo_spec_toml(**kw)
    assert tomllib.loads(text) == demo_spec(**kw)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="experiments/ is not shipped with the package")
def test_shipped_toml_equals_demo_spec():
    text = SHIPPED.read_text(encoding="utf-8")
    assert tomllib.loads(text) == demo_spec(), (
        "experiments/digits_demo.toml differs from advsmooth.demo.demo_spec(); regenerate it "
        "with `advsmooth demo --write-spec experiments/digits_demo.toml`")
    assert text == demo_spec_toml()  # byte-identical to the generator's output
    assert load_spec(SHIPPED).name == "digits_demo"


def test_cli_write_spec(tmp_path, capsys):
    out = tmp_path / "sub" / "demo.toml"
    assert main(["demo", "--write-spec", str(out), "--n", "12", "--seed", "4"]) == 0
    assert str(out) in capsys.readouterr().out
    assert tomllib.loads(out.read_text(encoding="utf-8")) == demo_spec(n=12, seed=4)
    assert [p.name for p in out.parent.iterdir()] == ["demo.toml"]  # no temporary file left
    assert main(["demo", "--write-spec", str(out), "--model", "mnist-lenet"]) == 2
    assert main(["demo", "--write-spec", str(out), "--n", "0"]) == 2
