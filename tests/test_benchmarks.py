"""The benchmark harness (benchmarks/run.py) runs in --quick mode and writes the documented outputs.

No timing assertions: only that the suites run end to end on the embedded digits data with
advsmooth alone (no peers), that the JSON/Markdown carry the documented fields, and that the
shared pieces (evaluation counter, evaluation function) measure what they claim.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import _harness as H  # noqa: E402


def test_counting_model_matches_advsmooth_cost_accounting(affine_model):
    import advsmooth as asm

    x = torch.rand(6, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    counter = H.CountingModel(affine_model)
    res = asm.attacks.DeepFool(candidates=3)(counter, x)
    assert counter.forward_rows == int(res.forward_evals.sum())
    assert counter.grad_rows == int(res.grad_evals.sum())
    assert counter.grad_rows > 0 and counter.training == affine_model.training
    counter.reset()
    assert counter.forward_rows == counter.grad_rows == 0


def test_evaluate_uses_the_model_not_claims():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    x = torch.tensor([[0.9, 0.1, 0, 0], [0.8, 0.0, 0, 0]]).view(2, 1, 2, 2)
    y = torch.tensor([0, 0])
    x_adv = x.clone()
    x_adv[0, 0, 0, 1] = 1.0          # sample 0 now predicted as class 1 (fooled)
    x_adv[1, 0, 1, 0] = 1.5          # sample 1 unchanged class, outside the box
    ev = H.evaluate(model, x, y, x_adv)
    assert ev["success_rate"] == 0.5
    assert math.isclose(ev["median_l2"], 0.9, rel_tol=1e-6)
    assert math.isclose(ev["box_violation"], 0.5, rel_tol=1e-6)
    assert math.isclose(ev["rho_adv"], 0.9 / math.hypot(0.9, 0.1), rel_tol=1e-6)


def test_quick_run_writes_documented_outputs(tmp_path):
    import run

    threads = torch.get_num_threads()
    try:
        assert run.main(["--suite", "all", "--quick", "--peers", "none", "--threads", "1",
                         "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)

    for suite in ("deepfool", "engine", "smoothing"):
        data = json.loads((tmp_path / f"{suite}.json").read_text())
        md = (tmp_path / f"{suite}.md").read_text()
        assert data["suite"] == suite
        m = data["machine"]
        for key in ("cpu", "torch_threads", "versions", "loadavg_start", "suite_seconds"):
            assert key in m
        assert m["versions"]["torch"] == torch.__version__
        assert data["targets"]
        assert all({"target", "value", "pass"} <= set(t) for t in data["targets"])
        assert "## Targets" in md and "| target | measured | met |" in md

    df = json.loads((tmp_path / "deepfool.json").read_text())
    case = df["cases"][0]
    assert case["case"] == "digits" and case["n_attacked"] == 8
    libs = [r["library"] for r in case["rows"]]
    assert libs == ["advsmooth", "advsmooth-clip", "advsmooth-clip-clamp", "advsmooth-paper",
                    "advsmooth-all-faces"]
    row = case["rows"][0]
    for key in ("seconds", "times", "ms_per_image", "success_rate", "median_l2", "rho_adv",
                "forward_per_image", "grad_per_image", "own_forward_per_image",
                "own_grad_per_image", "box_violation"):
        assert key in row, key
    assert len(row["times"]) == df["config"]["repeats"] == 1
    assert row["success_rate"] == 1.0
    # the counting wrapper and advsmooth's own accounting agree
    assert row["forward_per_image"] == pytest.approx(row["own_forward_per_image"])
    assert row["grad_per_image"] == pytest.approx(row["own_grad_per_image"])
    assert case["rows"][1]["box_violation"] == 0  # clip=True stays in the box
    assert "| advsmooth |" in (tmp_path / "deepfool.md").read_text()
    sf = df["smoothfool"][0]
    assert [r["attack"] for r in sf["rows"]] == ["DeepFool", "SmoothFool σg=2"]
    for r in sf["rows"]:
        assert {"seconds", "success_rate", "median_l2", "omega_n_x1e3", "grad_per_image",
                "time_vs_deepfool", "omega_n_vs_deepfool"} <= set(r)
        assert 0 <= r["omega_n_x1e3"] <= 1000

    eng = json.loads((tmp_path / "engine.json").read_text())
    kinds = {r["measure"].split(" ")[0] for o in eng["overhead"] for r in o["rows"]}
    assert kinds == {"PGD-10", "sg-IGSM"}
    assert all(r["ratio"] > 0 for o in eng["overhead"] for r in o["rows"])
    assert set(eng["peers"][0]["attacks"]) == {"pgd", "mifgsm"}

    sm = json.loads((tmp_path / "smoothing.json").read_text())
    assert [r["M"] for r in sm["throughput"][0]["rows"]][0] == 1
    assert {r["variant"] for r in sm["epgd"][0]["rows"]} == {"prob_average", "expected_loss"}


def test_counting_wrapper_equals_advsmooth_accounting():
    """The deepfool and engine suites add advsmooth's own counts for its rows (so that the attack
    gets the bare, foldable model); this holds only if both counts agree where both apply."""
    from advsmooth.attacks import DeepFool

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 10)).eval()
    x = torch.rand(9, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    counter = H.CountingModel(model)
    res = DeepFool(chunk_size=4)(counter, x)
    assert res.iterations.sum() > 0
    assert counter.forward_rows == int(res.forward_evals.sum())
    assert counter.grad_rows == int(res.grad_evals.sum())
    # the engine suite does the same for PGD / MI-FGSM (labels chosen so that some images are
    # misclassified: they cost the shared first backward, which the wrapper sees too)
    from advsmooth.attacks import MIFGSM, PGD

    y = torch.arange(9) % 10
    for atk in (PGD(eps=0.1, alpha=0.02, steps=4, random_start=False, threads=1),
                MIFGSM(eps=0.1, alpha=0.02, steps=4, threads=1)):
        counter.reset()
        res = atk(counter, x, y)
        assert bool(res.skipped.any()) and bool((~res.skipped).any())
        assert counter.forward_rows == int(res.forward_evals.sum())
        assert counter.grad_rows == int(res.grad_evals.sum())
