"""Tasks an experiment cell can run: the built-in ``attack`` task and pluggable *study* tasks.

* The **attack task** (``[[attacks]]`` in a spec) runs one configured attack on one model over the
  selected samples of one dataset, batch by batch; each batch yields per-sample rows (see
  :func:`attack_rows`) that the runner commits to the store.
* A **study task** (``[[studies]]``) is any function ``fn(params, ctx) -> list[dict]`` returning
  the rows of a table (one dict per row, JSON-serialisable values). Register one with
  :func:`register_task`; ``check(params)`` validates parameters before anything runs.

The built-in studies (:mod:`advsmooth.experiments.studies_builtin`) are registered when
:mod:`advsmooth.experiments` is imported.

Example::

    from advsmooth.experiments import tasks

    def my_study(params, ctx):
        return [{"k": k, "square": k * k} for k in range(params["n"])]

    tasks.register_task("squares", my_study, check=lambda p: None, description="demo")
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import attacks, filters
from .._utils import check_int_at_least, did_you_mean
from ..attacks import registry
from ..attacks.base import Attack
from .artefacts import Artefacts, Step, StepOutput, plan_order

__all__ = [
    "Task",
    "StudyContext",
    "register_task",
    "get_task",
    "task_names",
    "attack_class",
    "build_attack",
    "attack_names",
    "attack_rows",
    "batch_seed",
    "roughness",
    "run_plan",
    "plan_rows",
    "plan_progress",
]


# ----------------------------------------------------------------------------------------------
# attacks by name
# ----------------------------------------------------------------------------------------------

def _norm_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _attack_classes() -> dict[str, type]:
    """The concrete :class:`~advsmooth.attacks.Attack` classes exported by
    :mod:`advsmooth.attacks`, by class name."""
    return {n: obj for n in attacks.__all__ if inspect.isclass(obj := getattr(attacks, n, None))
            and issubclass(obj, Attack) and not inspect.isabstract(obj)}


def attack_names() -> list[str]:
    """Attack names accepted in specs: the attack registry's, and the classes' lower-case
    names."""
    out = list(registry.names())
    out += [n.lower() for n in _attack_classes() if n.lower() not in out]
    return sorted(out)


def attack_class(name: str) -> type:
    """The :class:`~advsmooth.attacks.Attack` subclass named ``name``.

    ``name`` is a registry name (``"deepfool"``, ``"smoothfool"``, ...; see
    :mod:`advsmooth.attacks.registry`), a class name (case and ``-``/``_`` ignored) or an import
    path ``"package.module:ClassName"`` (a user's own attack).
    """
    if ":" in name:
        mod, _, cls_name = name.partition(":")
        try:
            obj = getattr(importlib.import_module(mod), cls_name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import attack {name!r}: {exc}") from None
        if not (inspect.isclass(obj) and issubclass(obj, Attack)):
            raise ValueError(f"{name!r} is not an advsmooth.attacks.Attack subclass")
        return obj
    if name in registry.REGISTRY:
        e = registry.entry(name)
        if e.kind != "sample":
            raise ValueError(f"{name!r} builds a universal perturbation, not a per-sample "
                             "attack; use the 'uap' study ([[studies]] task = \"uap\")")
        obj = e.resolve()
        return obj if inspect.isclass(obj) else Attack
    want = _norm_name(name)
    for n, obj in _attack_classes().items():
        if _norm_name(n) == want:
            return obj
    raise ValueError(f"unknown attack {name!r}; expected one of {attack_names()} or "
                     f"'module:ClassName'{did_you_mean(name, attack_names())}")


#: ``gradient = {kind = ...}`` tables in attack parameters -> gradient estimator classes
GRADIENTS = registry.GRADIENTS


def _resolve_objects(params: dict[str, Any]) -> dict[str, Any]:
    """Turn a ``gradient = {kind = "smoothed", sigma = 0.06, samples = 20}`` table into the
    estimator object (sg-FGSM / sg-IGSM / EPGD in a spec)."""
    out = dict(params)
    g = out.get("gradient")
    if isinstance(g, dict):
        kw = dict(g)
        out["gradient"] = registry.build_gradient(kw.pop("kind", None), **kw)
    return out


def build_attack(name: str, params: dict[str, Any]) -> Any:
    """Construct the attack ``name`` with keyword ``params`` (``ValueError``/``TypeError`` on bad
    parameters, naming them): through the attack registry for a registered name, else the class
    of :func:`attack_class`. A ``gradient = {kind = ..., ...}`` table builds a gradient
    estimator (see :data:`advsmooth.attacks.registry.GRADIENTS`)."""
    params = _resolve_objects(params)
    if name in registry.REGISTRY:
        try:
            return registry.build(name, **params)
        except TypeError as exc:
            raise TypeError(f"{name}: {exc}") from None
    cls = attack_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise TypeError(f"{name}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------------------------

def batch_seed(seed: int, cell_id: str, batch: int) -> int:
    """A 63-bit seed derived from ``(spec seed, cell id, batch index)`` only.

    Resumed and sharded runs therefore draw exactly the random numbers of an uninterrupted
    single-process run.
    """
    h = hashlib.sha256(f"{int(seed)}:{cell_id}:{int(batch)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


# ----------------------------------------------------------------------------------------------
# the attack task: per-sample rows of one batch
# ----------------------------------------------------------------------------------------------

def roughness(r: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample ``(Ω, Ωn)`` of perturbations ``r`` (N×C×H×W): the roughness and the normalised
    roughness with a Gaussian filter h of σh = 1 (:func:`advsmooth.filters.roughness`)."""
    with torch.no_grad():
        r = r.double()
        return (filters.roughness(r, sigma_h=1.0, normalized=False).reshape(-1),
                filters.roughness(r, sigma_h=1.0, normalized=True).reshape(-1))


def attack_rows(attack: Any, model: nn.Module, x: Tensor, y: Tensor, *,
                generator: torch.Generator) -> tuple[dict[str, np.ndarray], Tensor, float]:
    """Run ``attack`` on one batch; return the per-sample columns, ``x_adv`` and the seconds.

    Columns (numpy arrays of length N): label, clean_pred, adv_pred, success, l2, linf (of
    ``r = x_adv − x``), x_l2, x_linf (of the clean input), omega, omega_n (roughness at σh = 1),
    iterations, forward_evals, grad_evals.
    """
    from ..attacks.summary import result_columns

    res = attack(model, x, y, generator=generator)
    cols = result_columns(res)
    cols.pop("target", None)
    rough = roughness((res.x_adv - res.x).detach())
    cols["omega"] = rough[0].cpu().numpy().astype(np.float64)
    cols["omega_n"] = rough[1].cpu().numpy().astype(np.float64)
    return cols, res.x_adv.detach(), float(res.elapsed)


# ----------------------------------------------------------------------------------------------
# study tasks
# ----------------------------------------------------------------------------------------------

@dataclass
class StudyContext:
    """What a study task receives besides its parameters.

    Attributes:
        seed: a seed derived from the spec seed and the cell (use it for every random choice).
        device: the torch device to run on.
        data_root: the ``--data-root`` given to the runner (or None).
        progress: whether progress bars are wanted.
        cell_id: the id of the cell being run.
        artefacts: the experiment's step artefacts (in memory when no store is given).
    """

    seed: int
    device: torch.device
    data_root: str | None = None
    progress: bool = True
    cell_id: str = ""
    artefacts: Artefacts = field(default_factory=lambda: Artefacts(None))
    _models: dict[str, nn.Module] = field(default_factory=dict)

    def step(self, step: Step) -> StepOutput:
        """The output of ``step``: its stored artefact when valid, else computed and stored (see
        :mod:`advsmooth.experiments.artefacts`)."""
        return self.artefacts.run(step, self)

    @property
    def generator(self) -> torch.Generator:
        """A fresh generator seeded with :attr:`seed` on :attr:`device`."""
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed)
        return g

    def load_model(self, name: str) -> nn.Module:
        """``advsmooth.models.load(name)`` in eval mode on :attr:`device` (cached per cell)."""
        if name not in self._models:
            from .. import models

            self._models[name] = models.load(name).to(self.device).eval()
        return self._models[name]

    def load_data(self, name: str, split: str = "test", **kw: Any) -> tuple[Tensor, Tensor]:
        """``advsmooth.data.load(name, split, root=data_root, **kw)`` moved to :attr:`device`."""
        from .. import data

        x, y = data.load(name, split, root=self.data_root, **kw)
        return x.to(self.device), y.to(self.device)


@dataclass
class Task:
    """A registered study task: ``fn(params, ctx) -> list[dict]`` plus a parameter check.

    A task may instead (or also) define ``plan(params, seed) -> list[Step]``: the steps whose
    rows make its table (``seed`` is the cell's seed). The runner then schedules the steps — and
    the steps they need — like the batches of an attack cell: each finished step is a store
    artefact, a killed run resumes after the last finished step, and steps that do not need each
    other run on different ``torchrun`` ranks. ``fn`` of a planned task runs the plan in order.
    """

    name: str
    fn: Callable[[dict[str, Any], StudyContext], list[dict[str, Any]]]
    check: Callable[[dict[str, Any]], None] = lambda params: None
    description: str = ""
    plan: Callable[[dict[str, Any], int], list[Step]] | None = None


def run_plan(steps: Sequence[Step], ctx: StudyContext) -> list[dict[str, Any]]:
    """Run ``steps`` (and the steps they need) in order; the rows of the steps marked ``rows``."""
    for s, _ in plan_order(list(steps)):
        ctx.step(s)
    return plan_rows(steps, ctx.artefacts)


def plan_rows(steps: Sequence[Step], artefacts: Artefacts) -> list[dict[str, Any]]:
    """The study table of a finished plan: the rows of its ``rows`` steps, in plan order."""
    out: list[dict[str, Any]] = []
    for s in _row_steps(steps):
        done = artefacts.load(s)
        if done is None:
            raise RuntimeError(f"step {s.kind} ({s.key}) has no valid artefact")
        out.extend(dict(r) for r in done.rows)
    return out


def _row_steps(steps: Sequence[Step]) -> list[Step]:
    """The steps of a plan that give table rows, each once, in plan order."""
    out: list[Step] = []
    seen: set[str] = set()
    for s in steps:
        if s.rows and s.key not in seen:
            seen.add(s.key)
            out.append(s)
    return out


def cell_plan(cell: Mapping[str, Any]) -> list[Step] | None:
    """The plan of a study cell (``task``, ``params``, ``seed``, ``cell_id``: a store cell
    record), built as the runner builds it; ``None`` when its task has no plan."""
    task = get_task(cell["task"])
    if task.plan is None:
        return None
    return task.plan(dict(cell["params"]), batch_seed(cell["seed"], cell["cell_id"], 0))


def plan_progress(cell: Mapping[str, Any], root: str | Path
                  ) -> tuple[list[dict[str, Any]], int, int]:
    """A planned study cell of the store in ``root`` that has not finished: the rows its finished
    steps have recorded so far (in plan order, as the finished table will hold them), the number
    of its row-giving steps that have finished, and the number it plans. ``([], 0, 0)`` for a
    task without a plan. ``cell`` is a store cell record (``task``, ``params``, ``seed``,
    ``cell_id``); the plan is rebuilt exactly as the runner builds it. Only the rows recorded in
    the store are read, never an artefact file."""
    steps = cell_plan(cell)
    if steps is None:
        return [], 0, 0
    wanted = _row_steps(steps)
    arts = Artefacts(root, readonly=True)
    rows: list[dict[str, Any]] = []
    done = 0
    try:
        for s in wanted:
            rec = arts.record(s.key)
            if rec is not None and rec["kind"] == s.kind:
                done += 1
                rows.extend(dict(r) for r in rec["rows"])
    finally:
        arts.close()
    return rows, done, len(wanted)


_TASKS: dict[str, Task] = {}


def register_task(name: str,
                  fn: Callable[[dict[str, Any], StudyContext], list[dict[str, Any]]] | None = None,
                  *, check: Callable[[dict[str, Any]], None] | None = None,
                  description: str = "", replace: bool = False,
                  plan: Callable[[dict[str, Any], int], list[Step]] | None = None) -> Task:
    """Register a study task under ``name`` (``ValueError`` if taken, unless ``replace``): a
    function ``fn(params, ctx) -> rows``, or a ``plan(params, seed) -> steps`` (see
    :class:`Task`), or both."""
    if fn is None and plan is None:
        raise ValueError("register_task needs fn or plan")
    if fn is None:
        assert plan is not None
        planned = plan

        def fn(params: dict[str, Any], ctx: StudyContext) -> list[dict[str, Any]]:
            return run_plan(planned(params, ctx.seed), ctx)
    if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"task name must be a non-empty identifier-like string, got {name!r}")
    if name == "attack":
        raise ValueError("'attack' is the built-in attack task; choose another name")
    if name in _TASKS and not replace:
        raise ValueError(f"task {name!r} is already registered (pass replace=True)")
    task = Task(name, fn, check or (lambda params: None), description, plan)
    _TASKS[name] = task
    return task


def check_params(p: Mapping[str, Any], allowed: Sequence[str] | None = None,
                 required: Sequence[str] = (), ints: Sequence[tuple[str, int]] = ()) -> None:
    """A task's parameter check: ``ValueError`` for a parameter not in ``allowed`` (when given),
    a missing ``required`` one, or one named in ``ints`` (``(name, low)`` pairs) that is given
    but not an integer >= ``low``, in that order."""
    unknown = sorted(set(p) - set(allowed)) if allowed is not None else []
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; expected some of {sorted(allowed)}")
    missing = [k for k in required if k not in p]
    if missing:
        raise ValueError(f"missing parameter(s) {missing}")
    for key, low in ints:
        if p.get(key) is not None:
            check_int_at_least(key, p[key], low)


def get_task(name: str) -> Task:
    """The study task registered as ``name`` (``ValueError`` naming the known ones)."""
    if name not in _TASKS:
        raise ValueError(f"unknown study task {name!r}; expected one of {task_names()}"
                         f"{did_you_mean(name, task_names())}")
    return _TASKS[name]


def task_names() -> list[str]:
    """Names of the registered study tasks."""
    return sorted(_TASKS)
