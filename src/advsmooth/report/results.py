"""Committed results: a run's small tables with their provenance, for a results folder in a repo.

``advsmooth report DIR --results RESULTS`` calls :func:`write_results`, which writes into
``RESULTS`` (e.g. ``experiments/results/<spec>/``):

* ``<table>.csv`` (full precision) and ``<table>.md`` for every table of the spec's ``[report]``;
* ``cells.csv`` — per cell: status, seed, spec hash, versions, device, data / checkpoint hashes,
  seconds (the report's provenance table);
* ``spec.toml`` — the spec exactly as the store recorded it;
* ``provenance.json`` — spec name and hash, the git commit of the code that computed the
  results (the last command that computed anything; ``code.commits`` lists every such commit
  when they differ), the git tree id of the package source at that commit (stable across
  rebases) and whether the source had uncommitted changes, the date, the machine (CPU model,
  cores), the exact commands that filled the store with their wall times and work items
  computed, the store's runs, and ``n`` per cell.

The commands come from ``DIR/invocations.jsonl``, one JSON line per ``advsmooth run`` that
finished, appended by :func:`record_invocation` (the ``run`` command calls it): the command line,
the commit and machine it ran on, its start and wall time, and how many work items it computed
(0 when it found every cell done: such a run does not change the commit credited).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._utils import atomic_path

__all__ = ["INVOCATIONS", "machine_info", "git_info", "record_invocation", "read_invocations",
           "write_results"]

#: the file in a run directory that lists the ``advsmooth run`` commands that filled its store
INVOCATIONS = "invocations.jsonl"


def machine_info() -> dict[str, Any]:
    """``{"cpu_model", "cores", "platform", "python"}`` of this machine: the CPU model as
    ``lscpu`` names it (``/proc/cpuinfo`` or ``platform.processor()`` where lscpu is missing)
    and the number of logical CPUs (``os.cpu_count()``)."""
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "LC_ALL": "C"}).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                      if ln.startswith("Model name:")), "")
    except (OSError, subprocess.SubprocessError):
        pass
    if not model and Path("/proc/cpuinfo").is_file():
        model = next((ln.split(":", 1)[1].strip()
                      for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), "")
    return {"cpu_model": model or platform.processor() or "unknown",
            "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def git_info(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``{"commit", "source_tree", "dirty"}`` of the git checkout holding ``path`` (default: the
    installed ``advsmooth`` package): the commit sha, the git tree id of the folder ``path`` at
    that commit (it names the code itself, so it survives a rebase that rewrites the commit:
    ``git rev-parse COMMIT:src/advsmooth`` gives it for any commit) and whether files under
    ``path`` differ from the commit (untracked files are ignored); all None outside a
    checkout."""
    where = Path(path) if path is not None else Path(__file__).resolve().parents[1]
    where = where if where.is_dir() else where.parent

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True,
                               timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout if r.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if sha is None:
        return {"commit": None, "source_tree": None, "dirty": None}
    tree = git("rev-parse", "HEAD:./")
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return {"commit": sha.strip(), "source_tree": None if tree is None else tree.strip(),
            "dirty": None if status is None else bool(status.strip())}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def record_invocation(run_dir: str | os.PathLike[str], argv: Sequence[str], *,
                      started: str, wall_seconds: float,
                      code: Mapping[str, Any] | None = None,
                      computed: int | None = None, interrupted: bool = False) -> dict[str, Any]:
    """Append one finished ``advsmooth`` command to ``run_dir/invocations.jsonl``.

    Args:
        run_dir: the experiment directory (holding ``results.sqlite``).
        argv: the command's arguments after the program name, e.g. ``["run", "spec.toml"]``.
        started: UTC start time, ``YYYY-MM-DDTHH:MM:SSZ``.
        wall_seconds: wall-clock seconds from process start to the end of the run.
        code: :func:`git_info` taken when the command started (the code it imported); default:
            taken now.
        computed: work items (batches, study steps) the command computed; 0 for a run that
            found everything done, so that the provenance does not credit it with the results.
        interrupted: the command was stopped (Ctrl-C, SIGTERM) before it finished; what it
            computed until then is in the store and is credited like any other work.

    Returns:
        The record written: command, started, wall_seconds, commit, dirty, machine[, computed].
    """
    info = dict(code) if code is not None else git_info()
    rec = {"command": "advsmooth " + shlex.join(str(a) for a in argv), "started": started,
           "wall_seconds": round(float(wall_seconds), 3), "commit": info.get("commit"),
           "source_tree": info.get("source_tree"), "dirty": info.get("dirty"),
           "machine": machine_info()}
    if computed is not None:
        rec["computed"] = int(computed)
    if interrupted:
        rec["interrupted"] = True
    path = Path(run_dir) / INVOCATIONS
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return rec


def read_invocations(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of :func:`record_invocation` in ``run_dir`` (empty if none)."""
    path = Path(run_dir) / INVOCATIONS
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _cells_n(cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    keys = ("cell_id", "kind", "dataset", "model", "label", "status", "n_samples", "seconds")
    return [{k: c.get(k) for k in keys} for c in cells]


def write_results(run_dir: str | os.PathLike[str], results_dir: str | os.PathLike[str]
                  ) -> dict[str, Any]:
    """Write the tables and provenance of the experiment in ``run_dir`` into ``results_dir``
    (see the module docstring); files a previous call listed and this one does not write are
    removed. Returns the provenance written (also ``results_dir/provenance.json``)."""
    from ..experiments.store import Store
    from .tables import build_tables

    rdir = Path(results_dir)
    with Store(run_dir, readonly=True) as store:
        shash, spec, spec_text = store.current_spec()
        tables = build_tables(store, spec)
        cells = store.cells()
        runs = [dict(zip(("started", "finished", "world_size", "device", "host"), r))
                for r in store.conn.execute(
                    "SELECT started, finished, world_size, device, host FROM runs "
                    "WHERE spec_hash=? ORDER BY run_id", (shash,))]
    invocations = read_invocations(run_dir)
    rdir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for t in tables:
        if t.name == "provenance":
            files["cells.csv"] = t.to_csv()
        else:
            files[f"{t.name}.csv"] = t.to_csv()
            files[f"{t.name}.md"] = t.to_markdown()
    files["spec.toml"] = spec_text if spec_text.endswith("\n") else spec_text + "\n"
    # the code that computed the results: the last command that computed anything (a record
    # without "computed" predates the field and counts as computing); every such commit is named
    # when they differ
    computing = [inv for inv in invocations if inv.get("computed", 1) > 0] or invocations
    last = computing[-1] if computing else {}
    code = {"commit": last.get("commit"), "source_tree": last.get("source_tree"),
            "dirty": last.get("dirty"), "recorded": "at run time"} \
        if invocations else {**git_info(), "recorded": "at report time (no invocations.jsonl)"}
    commits = list(dict.fromkeys(inv.get("commit") for inv in computing))
    if len(commits) > 1:
        code["commits"] = commits
    versions = sorted({(c.get("advsmooth_version"), c.get("torch_version")) for c in cells
                       if c.get("advsmooth_version")})
    prov = {
        "spec": spec["name"], "paper": spec.get("paper"), "spec_hash": shash,
        "generated": _now(), "code": code,
        "machine": last.get("machine") or machine_info(),
        "commands": [{k: inv.get(k) for k in ("command", "started", "wall_seconds", "commit",
                                              "source_tree", "dirty", "computed",
                                              "interrupted") if k in inv}
                     for inv in invocations],
        "wall_seconds": round(sum(float(inv.get("wall_seconds") or 0) for inv in invocations),
                              3) if invocations else None,
        "runs": runs,
        "versions": [{"advsmooth": a, "torch": b} for a, b in versions],
        "cells": _cells_n(cells),
        "files": sorted([*files, "provenance.json"]),
    }
    old = rdir / "provenance.json"
    if old.is_file():
        for name in json.loads(old.read_text(encoding="utf-8")).get("files", []):
            stale = rdir / name
            if name not in prov["files"] and "/" not in name and stale.is_file():
                stale.unlink()
    for name, text in files.items():
        _write(rdir / name, text)
    _write(old, json.dumps(prov, indent=1, ensure_ascii=False) + "\n")
    return prov
