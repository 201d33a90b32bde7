"""Study steps and store artefacts: planned studies run step by step through the runner, resume
after the last finished step, never deserialise a file whose hash does not match, and give the
same output wherever a step is computed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from advsmooth.experiments import parse_spec, run_spec
from advsmooth.experiments.artefacts import Artefacts, Step, StepOutput, plan_order, register_step
from advsmooth.experiments.runner import _rounds, expand_cells
from advsmooth.experiments.store import Store
from advsmooth.experiments.tasks import StudyContext, register_task, run_plan

CALLS: list[str] = []


@register_step("test.noise")
def _noise(s, ctx):
    CALLS.append(f"noise{s['n']}")
    flag = s.get("fail_flag")
    if flag and Path(flag).exists():
        raise RuntimeError("planned failure")
    return StepOutput(tensors={"v": torch.rand(s["n"], dtype=torch.float64)},
                      info={"n": s["n"]})


@register_step("test.total")
def _total(s, ctx):
    CALLS.append(f"total{s['n']}")
    v = ctx.step(Step("test.noise", s["noise"])).tensors["v"]
    return StepOutput(rows=[{"n": s["n"], "sum": float(v.sum()), "scale": s["scale"]}])


def _plan(params, seed):
    noise = {"n": params["n"], "fail_flag": params.get("fail_flag")}
    first = Step("test.noise", noise, rows=False)
    return [Step("test.total", {"n": params["n"], "noise": noise, "scale": k}, after=(first,))
            for k in (1, 2)]


register_task("test-planned", plan=_plan, replace=True)


def _spec(**params):
    return parse_spec({"name": "p", "studies": [{"task": "test-planned", "params": params}]})


def test_plan_order_puts_prerequisites_first_once():
    steps = _plan({"n": 3}, 0)
    order = plan_order(steps)
    assert [s.kind for s, _ in order] == ["test.noise", "test.total", "test.total"]
    assert [d for _, d in order] == [0, 1, 1]
    cells = expand_cells(_spec(n=3))
    assert cells[0].n_batches == 3
    # one rank per round at most, and a step never shares a round with one it needs
    rounds = _rounds([(0, 0), (0, 1), (0, 2)], cells, world=4)
    assert rounds == [[(0, 0)], [(0, 1), (0, 2)]]


def test_rounds_take_a_ready_step_of_any_depth():
    # the DeepFool fine-tuning plan: start, two training sets, five runs (the clean run needs
    # only the start); rounds by depth alone would leave the FGSM set a round of its own
    spec = parse_spec({"name": "ft", "studies": [{"task": "deepfool_finetuning", "params": {
        "dataset": "digits", "model": "digits-lenet", "example_alphas": []}}]})
    cells = expand_cells(spec)
    steps = cells[0].steps
    pending = [(0, j) for j in range(len(steps))]
    rounds = _rounds(pending, cells, world=2)
    assert sorted(i for r in rounds for i in r) == pending  # each item once
    assert all(len(r) <= 2 for r in rounds)
    when = {item: k for k, r in enumerate(rounds) for item in r}
    by_key = {s.key: (0, j) for j, (s, _) in enumerate(steps)}
    for j, (s, _) in enumerate(steps):
        assert all(when[by_key[p.key]] < when[(0, j)] for p in s.after)
    assert [len(r) for r in rounds] == [2, 2, 2, 2]  # 8 items on 2 ranks: no rank ever idle
    # items committed before are not waited for
    rest = [p for p in pending if steps[p[1]][0].kind != "deepfool_ft.start"]
    assert len(_rounds(rest, cells, world=7)[0]) == 3  # the two sets and the clean run


def test_planned_study_runs_resumes_and_reuses_artefacts(tmp_path):
    flag = tmp_path / "fail"
    spec = _spec(n=4, fail_flag=str(flag))
    out = tmp_path / "run"
    CALLS.clear()
    first = run_spec(spec, out, progress=False)
    assert first.computed_batches == 3
    assert CALLS == ["noise4", "total4", "total4"]  # the noise step ran once, reused after
    with Store(out, readonly=True) as st:
        cell = st.cells()[0]
        rows = st.study_rows(cell["cell_id"])
    assert cell["status"] == "done"
    assert [r["scale"] for r in rows] == [1, 2] and rows[0]["sum"] == rows[1]["sum"]
    # a re-run computes nothing; the store's rows are unchanged
    CALLS.clear()
    again = run_spec(spec, out, progress=False)
    assert again.computed_batches == 0 and CALLS == []
    # a planned failure in the second run of a fresh folder leaves the first steps' artefacts,
    # and the resumed run does not compute them again
    out2 = tmp_path / "run2"
    arts = Artefacts(out2)
    noise_step = _plan({"n": 4, "fail_flag": str(flag)}, 0)[0].after[0]
    arts.run(noise_step, StudyContext(seed=0, device=torch.device("cpu")))
    arts.close()
    CALLS.clear()
    run_spec(spec, out2, progress=False)
    assert CALLS == ["total4", "total4"]
    with Store(out2, readonly=True) as st:
        assert st.study_rows(st.cells()[0]["cell_id"]) == rows


def test_the_global_rng_of_a_step_depends_on_its_key_only(tmp_path):
    step = Step("test.noise", {"n": 5, "fail_flag": None})
    ctx = StudyContext(seed=0, device=torch.device("cpu"))
    torch.manual_seed(123)
    a = Artefacts(None).run(step, ctx).tensors["v"]
    state = torch.get_rng_state()
    torch.manual_seed(999)
    b = Artefacts(tmp_path).run(step, ctx).tensors["v"]
    assert torch.equal(a, b)
    torch.manual_seed(123)
    Artefacts(None).run(step, ctx)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left untouched


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_a_tampered_artefact_is_recomputed_never_unpickled(tmp_path):
    step = Step("test.noise", {"n": 3, "fail_flag": None})
    ctx = StudyContext(seed=0, device=torch.device("cpu"))
    arts = Artefacts(tmp_path)
    good = arts.run(step, ctx).tensors["v"]
    rec = arts.record(step.key)
    arts.close()
    path = tmp_path / rec["file"]
    marker = tmp_path / "pwned"
    torch.save({"v": _Payload(str(marker))}, path)  # same name, other bytes
    fresh = Artefacts(tmp_path)
    assert fresh.load(step) is None  # sha256 mismatch: refused before any unpickling
    assert not marker.exists()
    CALLS.clear()
    again = fresh.run(step, ctx).tensors["v"]
    assert CALLS == ["noise3"] and torch.equal(again, good) and not marker.exists()
    # a file planted where no artefact was recorded is never read
    other = Step("test.noise", {"n": 7, "fail_flag": None})
    planted = tmp_path / "artefacts" / "steps" / "test.noise" / f"{other.key}.pt"
    torch.save({"v": _Payload(str(marker))}, planted)
    assert fresh.load(other) is None and not marker.exists()
    fresh.close()


def test_run_plan_without_a_store_and_bad_steps():
    ctx = StudyContext(seed=0, device=torch.device("cpu"))
    rows = run_plan(_plan({"n": 2}, 0), ctx)
    assert [r["scale"] for r in rows] == [1, 2]
    with pytest.raises(ValueError, match="unknown step kind"):
        ctx.step(Step("test.absent", {}))
    with pytest.raises(ValueError, match="needs fn or plan"):
        register_task("test-empty")


def test_report_of_an_unfinished_planned_study_shows_the_finished_steps_rows(tmp_path):
    """A planned study killed after some steps: the report's study table holds the rows of the
    steps that finished, in plan order, and says how many have; once the study finishes the note
    goes and the table is the store's own."""
    from advsmooth.report.tables import study_table

    register_task("test-partial", plan=_partial_plan, replace=True)
    flag = tmp_path / "fail"
    flag.write_text("")
    spec = parse_spec({"name": "q", "studies": [
        {"task": "test-partial", "label": "part", "params": {"n": 3, "fail_flag": str(flag)}}]})
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="planned failure"):
        run_spec(spec, out, progress=False)
    with Store(out, readonly=True) as st:
        cells = st.cells()
        assert cells[0]["status"] != "done" and st.study_rows(cells[0]["cell_id"]) == []
        t = study_table(st, cells, "part")
    assert [r["k"] for r in t.raw] == [0, 1]
    assert "2 of its 3 row-giving steps finished" in t.notes
    flag.unlink()
    run_spec(spec, out, progress=False)
    with Store(out, readonly=True) as st:
        cells = st.cells()
        t = study_table(st, cells, "part")
        assert [r["k"] for r in t.raw] == [0, 1, 2] == [
            r["k"] for r in st.study_rows(cells[0]["cell_id"])]
    assert t.notes == ""


@register_step("test.row")
def _row(s, ctx):
    if s["k"] == 2 and s["fail_flag"] and Path(s["fail_flag"]).exists():
        raise RuntimeError("planned failure")
    return StepOutput(rows=[{"k": s["k"], "sq": s["k"] ** 2}])


def _partial_plan(params, seed):
    return [Step("test.row", {"k": k, "fail_flag": params.get("fail_flag")})
            for k in range(params["n"])]


def test_step_version_changes_only_that_kinds_key(tmp_path):
    """A step kind's code version is part of its key from version 2 on: a store recomputes the
    step instead of reusing what the old code made; version 1 keeps the key of a kind registered
    without one, and other kinds' keys do not move."""
    from advsmooth.experiments import artefacts as A

    settings = {"n": 4}
    plain = A.step_key("test.versioned", settings)
    calls = []

    def make(tag):
        def fn(s, ctx):
            calls.append(tag)
            return StepOutput(rows=[{"tag": tag}])
        return fn

    try:
        register_step("test.versioned")(make("v1"))
        assert Step("test.versioned", settings).key == plain
        arts = Artefacts(tmp_path)
        assert arts.run(Step("test.versioned", settings), None).rows == [{"tag": "v1"}]
        A._STEPS.pop("test.versioned")
        register_step("test.versioned", version=2)(make("v2"))
        v2 = Step("test.versioned", settings).key
        assert v2 != plain
        assert A.step_key("test.noise", {"n": 4}) == Step("test.noise", {"n": 4}).key
        fresh = Artefacts(tmp_path)
        assert fresh.run(Step("test.versioned", settings), None).rows == [{"tag": "v2"}]
        assert calls == ["v1", "v2"]
        with pytest.raises(ValueError, match="version"):
            register_step("test.other", version=0)
    finally:
        A._STEPS.pop("test.versioned", None)
        A._VERSIONS.pop("test.versioned", None)


def test_a_finished_study_redoes_the_steps_whose_version_changed(tmp_path):
    """Raising a step kind's version makes a re-run of a finished planned study redo that step
    (its key changed) and the steps that need it are reused only where their keys still match;
    the cell is finished again with the new rows, in the same store."""
    from advsmooth.experiments import artefacts as A

    spec = _spec(n=3)
    out = tmp_path / "run"
    CALLS.clear()
    run_spec(spec, out, progress=False)
    with Store(out, readonly=True) as st:
        old = st.study_rows(st.cells()[0]["cell_id"])
    noise_fn = A._STEPS["test.noise"]
    total_fn = A._STEPS["test.total"]
    try:
        A._VERSIONS["test.total"] = 2  # a new version of the code behind the table's rows
        CALLS.clear()
        again = run_spec(spec, out, progress=False)
        assert again.computed_batches == 2 and CALLS == ["total3", "total3"]
        with Store(out, readonly=True) as st:
            cell = st.cells()[0]
            assert cell["status"] == "done"
            assert st.study_rows(cell["cell_id"]) == old  # same function: same rows
        CALLS.clear()
        assert run_spec(spec, out, progress=False).computed_batches == 0 and CALLS == []
    finally:
        A._VERSIONS["test.total"] = 1
        assert A._STEPS["test.noise"] is noise_fn and A._STEPS["test.total"] is total_fn
