"""Every spec shipped in experiments/*.toml parses and validates (names of datasets, models,
attacks and studies exist; attack parameters are accepted; report references are known)."""

from __future__ import annotations

from pathlib import Path

import pytest

from advsmooth.experiments import expand_cells, load_spec

SPECS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.toml"))


def test_specs_exist():
    names = {p.stem for p in SPECS}
    assert {"digits_demo", "digits_deepfool", "digits_smoothfool_fig6"} <= names


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_validates(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    cells = expand_cells(spec)
    assert cells and len({c.cell_id for c in cells}) == len(cells)
    if path.stem.startswith("digits"):
        # digits versions run on the embedded data only
        assert all(d.name == "digits" for d in spec.datasets)


def test_every_spec_is_listed_in_the_experiments_readme():
    readme = (SPECS[0].parent / "README.md").read_text()
    missing = [p.name for p in SPECS if f"`{p.name}`" not in readme]
    assert not missing, f"experiments/README.md does not list {missing}"
