"""Committed results and the scoreboard: ``advsmooth report DIR --results R`` writes the tables
and a provenance.json that names the command, commit, machine, wall time and n; the scoreboard
is computed from claims + results, and experiments/README.md holds exactly the generated one."""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

import pytest

from advsmooth.cli import main
from advsmooth.experiments import register_task
from advsmooth.report import scoreboard as sb
from advsmooth.report.results import git_info, read_invocations

ROOT = Path(__file__).resolve().parents[1]


def _squares(params, ctx):
    return [{"k": k, "square": k * k, "seed": ctx.seed % 1000} for k in range(params["n"])]


SPEC = """
name = "squares"
seed = 3

[[studies]]
task = "test-squares"
label = "sq"
params = { n = %d }

[report]
tables = [{ kind = "study", source = "sq", name = "%s" }]
"""


def test_report_results_writes_tables_and_provenance(tmp_path):
    register_task("test-squares", _squares, replace=True)
    spec = tmp_path / "squares.toml"
    spec.write_text(SPEC % (4, "squares"))
    run, res = tmp_path / "run", tmp_path / "results" / "squares"
    assert main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
    (inv,) = read_invocations(run)
    assert inv["command"] == f"advsmooth run {spec} --out {run} --no-progress"
    assert main(["report", str(run), "--no-figures", "--results", str(res)]) == 0

    prov = json.loads((res / "provenance.json").read_text())
    assert prov["spec"] == "squares" and prov["commands"][0]["command"] == inv["command"]
    assert prov["wall_seconds"] == inv["wall_seconds"] > 0
    here = git_info()
    assert prov["code"]["commit"] == here["commit"]
    assert prov["code"]["source_tree"] == here["source_tree"]
    if here["commit"] is not None:  # the tree id names the package folder itself
        import subprocess

        pkg = Path(__import__("advsmooth").__file__).parent
        names = subprocess.run(["git", "-C", str(pkg), "ls-tree", "--full-tree", "--name-only",
                                here["source_tree"]], capture_output=True, text=True,
                               check=True).stdout.split()
        assert {"__init__.py", "report", "attacks", "experiments"} <= set(names)
    assert prov["code"]["recorded"] == "at run time"
    assert prov["machine"]["cores"] == os.cpu_count() and prov["machine"]["cpu_model"]
    assert prov["runs"] and prov["runs"][0]["finished"]
    (cell,) = prov["cells"]
    assert cell["status"] == "done" and cell["label"] == "sq"
    assert sorted(p.name for p in res.iterdir()) == prov["files"] == sorted(
        ["cells.csv", "provenance.json", "spec.toml", "squares.csv", "squares.md"])
    with open(res / "squares.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["k"]), int(r["square"])) for r in rows] == [(k, k * k) for k in range(4)]
    assert 'task = "test-squares"' in (res / "spec.toml").read_text()

    # a re-run under a changed spec renames the table: the stale file of the old one goes
    spec.write_text(SPEC % (5, "sq5"))
    assert main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
    assert main(["report", str(run), "--no-figures", "--results", str(res)]) == 0
    names = sorted(p.name for p in res.iterdir())
    assert "squares.csv" not in names and "sq5.csv" in names
    prov = json.loads((res / "provenance.json").read_text())
    assert len(prov["commands"]) == 2
    assert prov["wall_seconds"] == pytest.approx(
        sum(c["wall_seconds"] for c in prov["commands"]), abs=2e-3)
    assert [c["computed"] for c in prov["commands"]] == [1, 1]


def test_provenance_credits_the_commands_that_computed(tmp_path):
    """A run that finds every cell done does not become the code credited with the results; two
    computing runs at different commits are both named."""
    from advsmooth.report.results import record_invocation, write_results

    register_task("test-squares", _squares, replace=True)
    spec = tmp_path / "squares.toml"
    spec.write_text(SPEC % (3, "squares"))
    run = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
    assert main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
    invs = read_invocations(run)
    assert [i["computed"] for i in invs] == [1, 0]
    # pretend the no-op re-run came from another commit: the credit stays with the first
    other = {"commit": "f" * 40, "source_tree": "e" * 40, "dirty": False}
    record_invocation(run, ["run", "again"], started="2026-01-01T00:00:00Z", wall_seconds=0.1,
                      code=other, computed=0)
    prov = write_results(run, tmp_path / "r1")
    assert prov["code"]["commit"] == invs[0]["commit"] and "commits" not in prov["code"]
    # a computing run at another commit is credited, and both commits are listed
    record_invocation(run, ["run", "more"], started="2026-01-01T00:00:01Z", wall_seconds=0.1,
                      code=other, computed=2)
    prov = write_results(run, tmp_path / "r2")
    assert prov["code"]["commit"] == "f" * 40
    assert prov["code"]["commits"] == [invs[0]["commit"], "f" * 40]


def _claims(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "claims.toml"
    p.write_text('[defaults]\nrule = { kind = "rel", tol = 0.2, partly = 0.5 }\n' + body)
    return p


def _table(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


CLAIM = """
[[claims]]
claim = "{name}"
paper = "P, Table 1"
paper_value = {pv}
paper_text = "{pv}"
results = "spec/t.csv"
row = {{ model = "{model}" }}
column = "rho"
n_column = "n"
"""


def test_scoreboard_values_verdicts_and_ratios(tmp_path):
    _table(tmp_path / "spec" / "t.csv", [
        {"model": "a", "rho": 0.18, "n": 990}, {"model": "b", "rho": 0.30, "n": 980},
        {"model": "c", "rho": 0.9, "n": 10}, {"model": "r", "rho": 1.0, "n": 100},
        {"model": "r", "rho": 2.0, "n": 100}])
    body = "".join(CLAIM.format(name=n, pv=pv, model=m) for n, pv, m in [
        ("close", 0.2, "a"), ("off 50 %", 0.2, "b"), ("far", 0.2, "c"), ("repeated", 1.5, "r")])
    body += """
[[claims]]
claim = "ratio"
paper = "P, text"
paper_value = 2.0
paper_text = "twice"
results = "spec/t.csv"
row = { model = "b" }
column = "rho"
divide_by = { results = "spec/t.csv", row = { model = "a" }, column = "rho" }
rule = { kind = "min", min = 1.5, partly = 1.0 }

[[claims]]
claim = "missing results"
paper = "P, Fig. 2"
paper_value = 1.0
paper_text = "1.0"
results = "other/t.csv"
column = "rho"

[[claims]]
claim = "empty results"
paper = "P, Fig. 4"
paper_value = 1.0
paper_text = "1.0"
results = "spec/empty.csv"
column = "rho"

[[claims]]
claim = "no results named"
paper = "P, Fig. 3"
paper_text = "7.8"
"""
    (tmp_path / "spec" / "empty.csv").write_text("model,rho\n")  # a study that did not finish
    scores = sb.score(sb.load_claims(_claims(tmp_path, body)), tmp_path)
    got = {s.claim.claim: s for s in scores}
    assert got["close"].verdict == "reproduced" and got["close"].values == (0.18,)
    assert got["off 50 %"].verdict == "partly"  # |0.30 / 0.2 - 1| = 0.5
    assert got["far"].verdict == "not"
    assert got["repeated"].measured == 1.5 and got["repeated"].verdict == "reproduced"
    assert got["ratio"].values == pytest.approx((0.30 / 0.18,)) and got["ratio"].verdict == \
        "reproduced"
    assert got["missing results"].verdict == got["no results named"].verdict == "not run"
    assert got["empty results"].verdict == "not run"
    table = sb.render(scores)
    lines = table.splitlines()
    assert lines[0].startswith("| claim |") and len(lines) == 2 + len(scores)
    assert "| [0.18](results/spec/t.csv) | 990 | reproduced |" in table
    std = statistics.stdev([1.0, 2.0])
    assert f"| [1.5 ± {std:.3g}](results/spec/t.csv) | 2 × 100 | reproduced |" in table
    assert "| 7.8 | – | – | not run |" in table


def test_scoreboard_lower_bounds_from_an_unfinished_sigma_grid(tmp_path):
    """A σ^A% cell "≥ v" (the grid ends before the fooling rate drops below A) is a lower bound:
    beyond the partly tolerance it is "not", within it the run cannot decide ("open")."""
    _table(tmp_path / "spec" / "t.csv", [
        {"model": "a", "rho": "≥ 12", "n": 495}, {"model": "b", "rho": "≥ 9", "n": 490},
        {"model": "c", "rho": 8.5, "n": 480}])
    body = "".join(CLAIM.format(name=n, pv=7.8, model=m)
                   for n, m in [("far bound", "a"), ("near bound", "b"), ("exact", "c")])
    scores = {s.claim.claim: s for s in sb.score(sb.load_claims(_claims(tmp_path, body)),
                                                   tmp_path)}
    assert scores["far bound"].values == (12.0,) and scores["far bound"].lower_bound
    assert scores["far bound"].verdict == "not"        # 12 > 7.8 × 1.5
    assert scores["near bound"].verdict == "open"      # 9 ≤ 11.7: σ^20% may still be 9
    assert scores["exact"].verdict == "reproduced" and not scores["exact"].lower_bound
    table = sb.render(list(scores.values()))
    assert "| [≥ 12](results/spec/t.csv) | 495 | not |" in table
    assert sb.verdict({"kind": "min", "min": 1.0, "partly": 0.5}, 2.0, 1.0,
                      lower_bound=True) == "reproduced"


def test_sigma_threshold_table_marks_thresholds_the_grid_does_not_reach():
    from advsmooth.report.tables import sigma_threshold_table

    def cell(model, sigma, fr):
        return {"kind": "attack", "dataset": "d", "model": model, "attack": "SF",
                "params": {"sigma": sigma}, "fooling_rate": fr}

    cells = [cell("a", s, fr) for s, fr in [(2, 1.0), (4, 0.6), (8, 0.3)]] + \
        [cell("b", s, fr) for s, fr in [(2, 1.0), (4, 1.0), (8, 0.9)]]
    t = sigma_threshold_table(cells, levels=(1.0, 0.2))
    rows = {r[1]: r[3:] for r in t.rows}
    assert rows["a"] == [2.0, "≥ 8"]                # FR 30 % at the largest sigma
    assert rows["b"] == [4.0, "≥ 8"]
    assert rows["min over models"] == [2.0, "≥ 8"]
    cells.append(cell("c", 2, 0.1))                  # never reaches 20 %: nan, not a bound
    t = sigma_threshold_table(cells, levels=(0.2,))
    rows = {r[1]: r[3:] for r in t.rows}
    assert rows["c"][0] != rows["c"][0] and rows["min over models"] == ["≥ 8"]
    assert "| ≥ 8 |" in t.to_markdown() and "≥ 8" in t.to_csv() and "≥ 8" in t.to_html()
    assert "≥ 8" in str(t.to_json())
    assert "not finished" not in t.to_markdown()
    # a partly run grid: unfinished cells are left out and the table says so
    pending = {**cell("a", 16, None), "status": "pending"}
    t = sigma_threshold_table([*cells[:3], pending], levels=(0.2,))
    assert [r[3] for r in t.rows] == ["≥ 8"]
    assert "1 grid cell(s) have not finished" in t.to_markdown()


def test_scoreboard_rejects_bad_claims(tmp_path):
    _table(tmp_path / "spec" / "t.csv", [{"model": "a", "rho": 0.1, "n": 1}])
    bad_col = CLAIM.format(name="x", pv=0.1, model="a").replace('column = "rho"',
                                                                 'column = "nope"')
    with pytest.raises(ValueError, match="no column 'nope'"):
        sb.score(sb.load_claims(_claims(tmp_path, bad_col)), tmp_path)
    with pytest.raises(ValueError, match="no row"):
        sb.score(sb.load_claims(_claims(tmp_path, CLAIM.format(name="x", pv=0.1, model="z"))),
                 tmp_path)
    with pytest.raises(ValueError, match="needs paper_value"):
        sb.load_claims(_claims(tmp_path, CLAIM.format(name="x", pv=0.1, model="a").replace(
            "paper_value = 0.1\n", "")))
    with pytest.raises(ValueError, match="rule.kind"):
        sb.load_claims(_claims(tmp_path, CLAIM.format(name="x", pv=0.1, model="a")
                               + 'rule = { kind = "near" }\n'))


def test_scoreboard_cli_writes_and_checks_a_readme(tmp_path, capsys):
    _table(tmp_path / "results" / "spec" / "t.csv", [{"model": "a", "rho": 0.2, "n": 5}])
    claims = tmp_path / "results" / "claims.toml"
    claims.write_text(CLAIM.format(name="x", pv=0.2, model="a"))
    readme = tmp_path / "README.md"
    readme.write_text(f"# R\n\n{sb.BEGIN}\nold\n{sb.END}\n\nrest\n")
    args = ["scoreboard", "--claims", str(claims), "--readme", str(readme)]
    assert main([*args, "--check"]) == 1
    assert main([*args, "--write"]) == 0
    assert main([*args, "--check"]) == 0
    text = readme.read_text()
    assert text.startswith("# R\n\n") and text.endswith(f"{sb.END}\n\nrest\n")
    assert "| x | P, Table 1 | 0.2 | [0.2](results/spec/t.csv) | 5 | reproduced |" in text


def test_experiments_readme_scoreboard_is_the_generated_one():
    claims = ROOT / "experiments" / "results" / "claims.toml"
    table = sb.render(sb.score(sb.load_claims(claims), claims.parent), link_root="results")
    assert sb.sync_readme(ROOT / "experiments" / "README.md", table, write=False), \
        "experiments/README.md's scoreboard is stale: run `advsmooth scoreboard --write`"


def _interrupting(params, ctx):
    flag = Path(params["flag"])
    if flag.exists():
        if flag.read_text() == "term":  # SIGTERM, as a batch system stopping the job sends
            import signal
            import time

            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        raise KeyboardInterrupt  # what Ctrl-C raises
    return [{"k": 1}]


def test_an_interrupted_run_is_recorded_with_what_it_computed(tmp_path):
    """Ctrl-C during `advsmooth run` exits 130 and still appends the command to
    invocations.jsonl, flagged as interrupted, with the work items it committed before."""
    register_task("test-squares", _squares, replace=True)
    register_task("test-interrupt", _interrupting, replace=True)
    flag = tmp_path / "stop"
    flag.write_text("")
    spec = tmp_path / "two.toml"
    spec.write_text(f"""
name = "two"
[[studies]]
task = "test-squares"
label = "sq"
params = {{ n = 2 }}
[[studies]]
task = "test-interrupt"
label = "stop"
params = {{ flag = "{flag}" }}
""")
    run = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(run), "--no-progress"]) == 130
    (inv,) = read_invocations(run)
    assert inv["interrupted"] is True and inv["computed"] == 1
    flag.write_text("term")
    assert main(["run", str(spec), "--out", str(run), "--no-progress"]) == 130
    assert read_invocations(run)[1]["interrupted"] is True
    assert read_invocations(run)[1]["computed"] == 0
    flag.unlink()
    assert main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
    third = read_invocations(run)[2]
    assert "interrupted" not in third and third["computed"] == 1
