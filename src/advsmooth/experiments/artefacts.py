"""Study steps and their store artefacts.

A paper study (train the defences, craft adversarial examples, evaluate them, ...) is a list of
**steps**. A step is a registered function of a JSON settings dict::

    out = fn(settings, ctx)        # -> StepOutput(rows=[...], tensors={...}, info={...})

Its output is an **artefact** of the experiment's store: the tensors (a trained model's
``state_dict``, a batch of adversarial images, a perturbation) go to a file named by the content
hash of ``(kind, settings)`` under ``DIR/artefacts/steps/<kind>/``; the file's sha256, the rows and
the JSON ``info`` go to the store's ``artefacts`` table in one transaction. A step that needs
another step's output asks the context for it (:meth:`Artefacts.run`): a recorded artefact whose
file still has the recorded sha256 is read back with ``torch.load(weights_only=True)``; a missing
record, a missing file or a hash mismatch recomputes the step — nothing on disk is trusted, and
nothing is ever unpickled.

So a study resumes where it was killed (every finished step is an artefact), two studies that
need the same trained defence share it, and the runner can deal independent steps to different
processes: a study task that defines ``plan(params)`` has its steps scheduled by the runner like
the batches of an attack cell (see :mod:`advsmooth.experiments.runner`).

Example — a two-step study::

    from advsmooth.experiments.artefacts import Step, StepOutput, register_step

    @register_step("demo.square")
    def _square(s, ctx):
        t = torch.arange(s["n"], dtype=torch.float64)
        return StepOutput(tensors={"sq": t * t})

    @register_step("demo.sum")
    def _sum(s, ctx):
        sq = ctx.artefacts.run(Step("demo.square", {"n": s["n"]}), ctx).tensors["sq"]
        return StepOutput(rows=[{"n": s["n"], "sum": float(sq.sum())}])
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._utils import atomic_path, check_int_at_least
from ..models import registry as model_registry
from .store import ARTEFACTS_SCHEMA, STORE_NAME

__all__ = ["Step", "StepOutput", "Artefacts", "register_step", "step_kinds", "step_key",
           "STEPS_DIR"]

#: folder of step artefacts inside an experiment directory
STEPS_DIR = Path("artefacts") / "steps"
#: the key of a step's ``info`` holding the zoo models it used (name → weight hash)
WEIGHTS_KEY = "zoo_weights"

def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def step_key(kind: str, settings: Mapping[str, Any]) -> str:
    """The content hash naming the artefact of step ``kind`` with ``settings`` (32 hex digits);
    the kind's code version (:func:`register_step`) is part of it from version 2 on."""
    payload: dict[str, Any] = {"kind": kind, "settings": settings}
    if _VERSIONS.get(kind, 1) != 1:
        payload["version"] = _VERSIONS[kind]
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Step:
    """One step of a study: a registered step ``kind`` and its JSON ``settings``.

    ``rows=False`` marks a step whose rows are not part of the study's table (a training step
    whose output only feeds later steps). ``after`` lists the steps it needs, so a scheduler can
    run it once they are done (a step that asks for a missing one computes it itself anyway).
    """

    kind: str
    settings: Mapping[str, Any]
    rows: bool = True
    after: tuple[Step, ...] = ()

    @property
    def key(self) -> str:
        return step_key(self.kind, self.settings)


@dataclass
class StepOutput:
    """What a step returns: table ``rows`` (JSON values), ``tensors`` (saved as the artefact's
    file) and ``info`` (small JSON facts: training time, sizes, ...)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


StepFn = Callable[[dict[str, Any], Any], StepOutput]
_STEPS: dict[str, StepFn] = {}
_VERSIONS: dict[str, int] = {}


def register_step(kind: str, version: int = 1) -> Callable[[StepFn], StepFn]:
    """Decorator registering ``fn(settings, ctx) -> StepOutput`` as step ``kind``.

    ``version``: raise it when a change of the code behind the step changes its output (an
    algorithm's result, not its speed): the step's key changes, so stores recompute it instead
    of reusing what the old code made. A key does not include the keys of the steps it needs,
    so raise the version of the steps that read its output too. Version 1 keeps the key of a
    kind registered without one.
    """
    check_int_at_least("version", version, 1)

    def deco(fn: StepFn) -> StepFn:
        if kind in _STEPS and _STEPS[kind] is not fn:
            raise ValueError(f"step kind {kind!r} is already registered")
        _STEPS[kind], _VERSIONS[kind] = fn, version
        return fn

    return deco


def step_kinds() -> list[str]:
    """Names of the registered step kinds."""
    return sorted(_STEPS)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Artefacts:
    """The step artefacts of one experiment directory ``root`` (its ``results.sqlite`` and
    ``artefacts/steps/``), or an in-memory memo when ``root`` is None (a study called from Python
    without a store: steps are computed once per :class:`Artefacts` object and kept in memory).

    Every process that computes steps opens its own connection; each artefact is recorded in one
    transaction, so concurrent processes (``torchrun`` ranks) can share a directory.
    """

    def __init__(self, root: str | Path | None, *, readonly: bool = False) -> None:
        self.root = None if root is None else Path(root)
        self.readonly = readonly
        self._memo: dict[str, StepOutput] = {}
        self._conn: sqlite3.Connection | None = None
        self.computed: list[str] = []  # keys computed by this object (for tests and logs)

    # -- database ------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            assert self.root is not None
            path = self.root / STORE_NAME
            if self.readonly:
                self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
            else:
                self.root.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(str(path), timeout=60, isolation_level=None)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.executescript(ARTEFACTS_SCHEMA)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def record(self, key: str) -> dict[str, Any] | None:
        """The ``artefacts`` row of ``key`` (decoded), or None."""
        if self.root is None:
            return None
        try:
            row = self._db().execute(
                "SELECT kind, settings_json, file, sha256, rows_json, info_json, seconds "
                "FROM artefacts WHERE key=?", (key,)).fetchone()
        except sqlite3.OperationalError:  # a read-only store written before artefacts existed
            return None
        if row is None:
            return None
        return {"kind": row[0], "settings": json.loads(row[1]), "file": row[2], "sha256": row[3],
                "rows": json.loads(row[4]), "info": json.loads(row[5]), "seconds": row[6]}

    # -- reading and writing -------------------------------------------------------------------
    def load(self, step: Step) -> StepOutput | None:
        """The stored output of ``step``, or None when it is not recorded or its file is missing
        or does not have the recorded sha256 (the file is then never deserialised)."""
        key = step.key
        if key in self._memo:
            return self._memo[key]
        rec = self.record(key)
        if rec is None or rec["kind"] != step.kind:
            return None
        tensors: dict[str, Tensor] = {}
        if rec["file"]:
            assert self.root is not None
            path = self.root / rec["file"]
            if not path.is_file() or _sha256(path) != rec["sha256"]:
                return None
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(blob, dict) or not all(
                    isinstance(k, str) and isinstance(v, Tensor) for k, v in blob.items()):
                return None
            tensors = blob
        out = StepOutput(rows=rec["rows"], tensors=tensors, info=rec["info"])
        self._memo[key] = out
        return out

    def save(self, step: Step, out: StepOutput, seconds: float) -> None:
        """Record ``out`` as the artefact of ``step`` (file first, then its row)."""
        key = step.key
        self._memo[key] = out
        if self.root is None or self.readonly:
            return
        rows_json = json.dumps(out.rows, allow_nan=True, default=_json_default)
        info_json = json.dumps(out.info, allow_nan=True, default=_json_default)
        rel, digest = None, None
        if out.tensors:
            rel = (STEPS_DIR / step.kind / f"{key}.pt").as_posix()
            path = self.root / rel
            with atomic_path(path) as tmp:
                torch.save({k: v.detach().cpu().contiguous() for k, v in out.tensors.items()},
                           tmp)
            digest = _sha256(path)
        self._db().execute(
            "INSERT OR REPLACE INTO artefacts VALUES (?,?,?,?,?,?,?,?,?)",
            (key, step.kind, _canonical(step.settings), rel, digest, rows_json, info_json,
             float(seconds), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))

    def run(self, step: Step, ctx: Any) -> StepOutput:
        """The output of ``step``: the stored artefact when it is valid, else computed by the
        registered step function (with ``ctx``) and stored."""
        out = self.load(step)
        if out is not None:
            # the models behind the stored result count as used (provenance of the cell)
            model_registry.note_weights(out.info.get(WEIGHTS_KEY) or {})
            return out
        if step.kind not in _STEPS:
            raise ValueError(f"unknown step kind {step.kind!r}; registered: {step_kinds()}")
        t0 = time.perf_counter()
        # The global RNG is seeded from the step's key (and restored after), so a step gives the
        # same output wherever and whenever it is computed: by the runner, on another rank, or
        # inline because a later step needs it.
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with model_registry.recording_weights() as used, torch.random.fork_rng(devices=cuda):
            torch.manual_seed(int(step.key[:15], 16))
            out = _STEPS[step.kind](dict(step.settings), ctx)
        if not isinstance(out, StepOutput):
            raise TypeError(f"step {step.kind!r} must return a StepOutput, got "
                            f"{type(out).__name__}")
        # the zoo models it used (its own loads and those behind the steps it reused), kept
        # with the artefact so that a run reusing it still knows them
        out.info[WEIGHTS_KEY] = used
        self.save(step, out, time.perf_counter() - t0)
        self.computed.append(step.key)
        return out


def _json_default(o: Any) -> Any:
    if isinstance(o, Tensor):
        return o.tolist()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def plan_order(steps: list[Step]) -> list[tuple[Step, int]]:
    """Every step of ``steps`` and of their ``after`` lists, once each (by key), with its depth
    (0 for a step that needs none), prerequisites first."""
    depth: dict[str, int] = {}
    order: list[Step] = []

    def visit(s: Step, stack: tuple[str, ...]) -> int:
        if s.key in stack:
            raise ValueError(f"step {s.kind} depends on itself")
        if s.key in depth:
            return depth[s.key]
        d = 1 + max((visit(p, (*stack, s.key)) for p in s.after), default=-1)
        depth[s.key] = d
        order.append(s)
        return d

    for s in steps:
        visit(s, ())
    return [(s, depth[s.key]) for s in order]
