"""The experiment runner: expand a spec into cells, run them batch by batch, commit every batch.

:func:`run_spec` is what ``advsmooth run SPEC.toml --out DIR`` calls. The run is

* **resumable** — every finished batch is committed to ``DIR/results.sqlite`` in one transaction;
  a re-run skips committed batches and finished cells, so a run killed at any moment (even with
  SIGKILL) and started again ends with exactly the tables of an uninterrupted run;
* **deterministic per batch** — batch ``b`` of cell ``c`` always holds samples
  ``[b·B, (b+1)·B)`` of the cell's selection and draws its random numbers from a generator seeded
  with :func:`~advsmooth.experiments.tasks.batch_seed` ``(spec seed, c, b)`` (the global torch RNG
  is seeded the same way before the batch, for models that draw noise from it);
* **shardable** — under ``torchrun --nproc_per_node=N -m advsmooth run ...`` (or any launcher that
  sets ``WORLD_SIZE``/``RANK``) the pending batches are dealt round-robin to the ranks
  (``torch.distributed``, gloo on CPU, NCCL on GPUs), the per-sample rows are gathered on rank 0
  and rank 0 alone writes the store. 1-process and N-process runs give the same tables;
* **exclusive** — rank 0 holds a lock on the output folder (:class:`~.lock.FolderLock`) for the
  whole run, so a second run on the same folder is refused at once with a message naming the
  holder, instead of computing the same batches twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import __version__
from .._tensors import model_hash, tensor_hash
from .._utils import atomic_path
from .._utils import progress as progress_bar
from ..models import registry as model_registry
from . import tasks
from .artefacts import Artefacts, Step, plan_order
from .lock import FolderLock
from .spec import AttackSpec, DatasetSpec, ModelSpec, Spec, StudySpec, load_spec, spec_hash
from .store import STORE_NAME, Store, dumps

__all__ = ["Cell", "RunResult", "expand_cells", "run_spec", "select_indices", "tensor_hash",
           "model_hash", "ARTEFACTS_DIR"]

ARTEFACTS_DIR = "artefacts"


# ----------------------------------------------------------------------------------------------
# cells
# ----------------------------------------------------------------------------------------------

@dataclass
class Cell:
    """One unit of an experiment: an attack on (dataset, model) at one grid point, or one grid
    point of a study. ``cell_id`` is a hash of everything that determines its results."""

    cell_id: str
    kind: str
    label: str
    params: dict[str, Any]
    seed: int
    dataset: DatasetSpec | None = None
    model: ModelSpec | None = None
    attack: AttackSpec | None = None
    study: StudySpec | None = None
    batch_size: int = 1
    n_samples: int = 1
    grid: dict[str, Any] = field(default_factory=dict)
    #: a planned study's steps (the task's plan) and every step to run, with its depth
    plan: list[Step] | None = None
    steps: list[tuple[Step, int]] | None = None

    @property
    def n_batches(self) -> int:
        if self.steps is not None:
            return len(self.steps)
        if self.kind != "attack":
            return 1
        return max(1, -(-self.n_samples // self.batch_size)) if self.n_samples else 0

    def record(self) -> dict[str, Any]:
        """The row describing this cell in the store's ``cells`` table."""
        config: dict[str, Any] = {"grid": self.grid}
        if self.dataset is not None:
            config["dataset"] = self.dataset.model_dump(mode="json")
        if self.model is not None:
            config["model"] = self.model.model_dump(mode="json")
        if self.study is not None:
            config["study"] = self.study.key
        return {
            "cell_id": self.cell_id, "kind": self.kind, "label": self.label,
            "dataset": None if self.dataset is None else self.dataset.key,
            "model": None if self.model is None else self.model.key,
            "attack": None if self.attack is None else self.attack.key,
            "task": None if self.study is None else self.study.task,
            "params": self.params, "config": config, "n_samples": self.n_samples,
            "n_batches": self.n_batches, "batch_size": self.batch_size, "seed": self.seed,
        }


def _hash(obj: Any) -> str:
    return hashlib.sha256(dumps(obj).encode()).hexdigest()[:16]


def _point_label(key: str, grid: Mapping[str, Any]) -> str:
    if not grid:
        return key
    return f"{key}[{', '.join(f'{k}={v}' for k, v in grid.items())}]"


def expand_cells(spec: Spec) -> list[Cell]:
    """The cells of ``spec`` in run order: datasets × models × attacks × grid points, then the
    grid points of every study. ``n_samples`` is the requested count (resolved at run time)."""
    cells: list[Cell] = []
    for ds in spec.datasets:
        ds_seed = spec.seed if ds.seed is None else ds.seed
        ds_id = {"name": ds.name, "split": ds.split, "n": ds.n, "sample": ds.sample,
                 "seed": ds_seed if ds.sample is not None else None}
        for m in spec.models:
            if m.datasets is not None and ds.key not in m.datasets:
                continue
            for a in spec.attacks:
                if a.models is not None and m.key not in a.models:
                    continue
                bs = a.batch_size or spec.batch_size
                for point in a.points():
                    grid = {k: point[k] for k in a.grid}
                    ident = {"kind": "attack", "dataset": ds_id, "model": m.name,
                             "attack": a.name, "params": point, "batch_size": bs,
                             "seed": spec.seed}
                    cells.append(Cell(
                        cell_id=_hash(ident), kind="attack", label=_point_label(a.key, grid),
                        params=point, seed=spec.seed, dataset=ds, model=m, attack=a,
                        batch_size=bs, n_samples=ds.n or ds.sample or 0, grid=grid))
    for s in spec.studies:
        for point in s.points():
            grid = {k: point[k] for k in s.grid}
            ident = {"kind": "study", "task": s.task, "params": point, "seed": spec.seed}
            cell = Cell(cell_id=_hash(ident), kind="study", label=_point_label(s.key, grid),
                        params=point, seed=spec.seed, study=s, grid=grid)
            cell.plan = tasks.cell_plan({"task": s.task, "params": point, "seed": spec.seed,
                                         "cell_id": cell.cell_id})
            if cell.plan is not None:
                cell.steps = plan_order(cell.plan)
            cells.append(cell)
    return cells


def _rounds(pending: list[tuple[int, int]], cells: list[Cell], world: int
            ) -> list[list[tuple[int, int]]]:
    """Deal the pending work items into rounds of at most ``world`` items (one per rank); a
    study step comes only after every step it needs, i.e. in a later round than all of them.

    List scheduling: each round takes, in order of depth then spec order, the items whose
    pending prerequisites are all in earlier rounds, so a rank is not left idle while a step of
    another depth is ready (a study's clean run beside its last training set)."""
    def depth(item: tuple[int, int]) -> int:
        steps = cells[item[0]].steps
        return 0 if steps is None else steps[item[1]][1]

    index = {ci: {s.key: j for j, (s, _) in enumerate(cells[ci].steps or [])}
             for ci in {ci for ci, _ in pending}}

    def needs(item: tuple[int, int]) -> set[tuple[int, int]]:
        steps = cells[item[0]].steps
        if steps is None:
            return set()
        return {(item[0], index[item[0]][p.key]) for p in steps[item[1]][0].after}

    order = sorted(pending, key=depth)  # stable: spec order within a depth
    todo = set(pending)
    waiting = [needs(item) & todo for item in order]
    placed: set[tuple[int, int]] = set()
    taken = [False] * len(order)
    rounds: list[list[tuple[int, int]]] = []
    first = 0  # every item before it is taken
    while first < len(order):
        ready: list[int] = []
        for i in range(first, len(order)):
            if not taken[i] and waiting[i] <= placed:
                ready.append(i)
                if len(ready) == world:
                    break
        if not ready:  # unreachable for a plan from plan_order (no cycles); never loop forever
            ready = [first]
        for i in ready:
            taken[i] = True
        placed.update(order[i] for i in ready)
        rounds.append([order[i] for i in ready])
        while first < len(order) and taken[first]:
            first += 1
    return rounds


# ----------------------------------------------------------------------------------------------
# data, models, hashes
# ----------------------------------------------------------------------------------------------

def select_indices(ds: DatasetSpec, spec_seed: int, root: str | None = None) -> Tensor:
    """Indices into the split selected by ``ds``: the first ``n``, a seeded random ``sample``
    (the same subset as ``advsmooth.data.load(..., sample=k, seed=s)``), or all."""
    from .. import data

    total = None
    if not ds.name.startswith("npz:"):
        total = data.info(ds.name).sizes.get(ds.split)
    if total is None:
        total = len(data.dataset(ds.name, ds.split, root=ds.root or root))  # type: ignore[arg-type]
    if ds.n is not None:
        return torch.arange(min(ds.n, total))
    if ds.sample is not None:
        if ds.sample > total:
            raise ValueError(f"dataset {ds.key!r}: sample={ds.sample} exceeds the {total} samples")
        seed = spec_seed if ds.seed is None else ds.seed
        return data.random_subset(total, ds.sample, seed)
    return torch.arange(total)


class _Resources:
    """Per-process caches of loaded data, models, attacks and their hashes."""

    def __init__(self, spec: Spec, device: torch.device, data_root: str | None) -> None:
        self.spec = spec
        self.device = device
        self.data_root = data_root
        self._data: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        self._models: dict[str, nn.Module] = {}
        self._attacks: dict[str, Any] = {}
        self._hashes: dict[str, str] = {}

    def data(self, ds: DatasetSpec) -> tuple[Tensor, Tensor, Tensor]:
        if ds.key not in self._data:
            from .. import data

            sel = select_indices(ds, self.spec.seed, self.data_root)
            x, y = data.load(ds.name, ds.split, root=ds.root or self.data_root, indices=sel)
            self._data[ds.key] = (x.to(self.device), y.to(self.device), sel)
        return self._data[ds.key]

    def model(self, m: ModelSpec) -> nn.Module:
        if m.name not in self._models:
            from .. import models

            self._models[m.name] = models.load(m.name, device=self.device).eval()
        return self._models[m.name]

    def attack(self, cell: Cell) -> Any:
        if cell.cell_id not in self._attacks:
            assert cell.attack is not None
            self._attacks[cell.cell_id] = tasks.build_attack(cell.attack.name, cell.params)
        return self._attacks[cell.cell_id]

    def data_hash(self, ds: DatasetSpec) -> str:
        key = "data:" + ds.key
        if key not in self._hashes:
            x, y, _ = self.data(ds)
            self._hashes[key] = tensor_hash(x, y)
        return self._hashes[key]

    def model_hash(self, m: ModelSpec) -> str:
        key = "model:" + m.name
        if key not in self._hashes:
            self._hashes[key] = model_hash(self.model(m))
        return self._hashes[key]


# ----------------------------------------------------------------------------------------------
# distributed helpers
# ----------------------------------------------------------------------------------------------

def _dist_setup(device_req: str) -> tuple[int, int, int, bool]:
    """(rank, world size, local rank, whether we initialised the process group)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False
    if world <= 1:
        return 0, 1, 0, False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_req.startswith("cuda") or (device_req == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), local, True


def _resolve_device(req: str, world: int, local_rank: int) -> torch.device:
    if req == "auto":
        req = "cuda" if torch.cuda.is_available() else "cpu"
    if req == "cuda" and world > 1:
        return torch.device(f"cuda:{local_rank}")
    if req.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {req!r} requested but CUDA is not available")
    return torch.device(req)


def _broadcast(obj: Any, world: int) -> Any:
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    """What :func:`run_spec` did: where the store is, how many batches it computed or skipped."""

    out_dir: Path
    store_path: Path
    spec_hash: str
    cells: int
    computed_batches: int
    skipped_batches: int
    seconds: float
    world_size: int = 1
    rank: int = 0
    store_seconds: float = 0.0

    def __str__(self) -> str:
        return (f"{self.cells} cell(s): {self.computed_batches} batch(es) computed, "
                f"{self.skipped_batches} already done, {self.seconds:.1f} s -> {self.store_path}")


def _artefact_path(out_dir: Path, cell_id: str, batch: int) -> Path:
    return out_dir / ARTEFACTS_DIR / cell_id / f"batch_{batch:05d}.npz"


def read_adversarial(out_dir: Path, cell_id: str, keys: tuple[str, ...],
                     limit: int | None = None) -> dict[str, np.ndarray] | None:
    """The arrays ``keys`` (and ``idx``) of a cell's saved batches in sample order — the first
    ``limit`` samples when given (fewer batch files are read) — or ``None`` when none is saved."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("idx", *keys)}
    total = 0
    for f in sorted((Path(out_dir) / ARTEFACTS_DIR / cell_id).glob("batch_*.npz")):
        with np.load(f, allow_pickle=False) as z:
            for k in parts:
                parts[k].append(z[k])
        total += len(parts["idx"][-1])
        if limit is not None and total >= limit:
            break
    if not parts["idx"]:
        return None
    idx = np.concatenate(parts.pop("idx"))
    order = np.argsort(idx, kind="stable")[:limit]
    return {"idx": idx[order], **{k: np.concatenate(v)[order] for k, v in parts.items()}}


def _write_artefact(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)


def _compute(cell: Cell, batch: int, res: _Resources, out_dir: Path, save_adv: bool,
             rank: int, progress: bool) -> dict[str, Any]:
    """Compute one work item; exceptions are returned (so other ranks are not left waiting)."""
    try:
        seed = tasks.batch_seed(cell.seed, cell.cell_id, batch)
        torch.manual_seed(seed)
        gen = torch.Generator(device=res.device)
        gen.manual_seed(seed)
        t0 = time.perf_counter()
        if cell.steps is not None:
            step = cell.steps[batch][0]
            ctx = tasks.StudyContext(seed=seed, device=res.device, data_root=res.data_root,
                                     progress=progress, cell_id=cell.cell_id,
                                     artefacts=Artefacts(out_dir))
            with model_registry.recording_weights() as used:
                try:
                    ctx.step(step)
                finally:
                    ctx.artefacts.close()
            return {"cell": cell.cell_id, "batch": batch, "step": True, "rank": rank,
                    "seconds": time.perf_counter() - t0, "models": used}
        if cell.kind == "study":
            assert cell.study is not None
            ctx = tasks.StudyContext(seed=seed, device=res.device, data_root=res.data_root,
                                     progress=progress, cell_id=cell.cell_id,
                                     artefacts=Artefacts(out_dir))
            with model_registry.recording_weights() as used:
                rows = tasks.get_task(cell.study.task).fn(dict(cell.params), ctx)
            rows = [dict(r) for r in rows]
            json.loads(dumps(rows))  # must be JSON-serialisable
            return {"cell": cell.cell_id, "batch": 0, "rows": rows, "rank": rank,
                    "seconds": time.perf_counter() - t0, "models": used}
        assert cell.dataset is not None and cell.model is not None
        # loading (and first-use training) is not part of the batch's time
        x, y, sel = res.data(cell.dataset)
        model = res.model(cell.model)
        attack = res.attack(cell)
        t0 = time.perf_counter()
        start = batch * cell.batch_size
        stop = min(start + cell.batch_size, x.shape[0])
        cols, x_adv, _ = tasks.attack_rows(attack, model, x[start:stop], y[start:stop],
                                           generator=gen)
        cols["source_index"] = sel[start:stop].numpy().astype(np.int64)
        seconds = time.perf_counter() - t0
        if save_adv:
            _write_artefact(_artefact_path(out_dir, cell.cell_id, batch),
                            idx=np.arange(start, stop), source_index=cols["source_index"],
                            x=x[start:stop].cpu().numpy().astype(np.float32),
                            x_adv=x_adv.cpu().numpy().astype(np.float32),
                            label=cols["label"], adv_pred=cols["adv_pred"])
        return {"cell": cell.cell_id, "batch": batch, "start": start, "cols": cols,
                "rank": rank, "seconds": seconds}
    except Exception as exc:  # noqa: BLE001 - reported on every rank below
        return {"cell": cell.cell_id, "batch": batch, "rank": rank,
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                "exc": exc if isinstance(exc, (ValueError, OSError)) else None}


def run_spec(spec: str | os.PathLike[str] | Spec, out_dir: str | os.PathLike[str] | None = None,
             *, device: str | None = None, data_root: str | None = None, progress: bool = True,
             save_adversarial: bool | None = None, spec_text: str | None = None) -> RunResult:
    """Run (or resume) an experiment and write its results to ``out_dir/results.sqlite``.

    Args:
        spec: path of a TOML spec (validated before anything runs) or a validated :class:`Spec`.
        out_dir: output directory (default ``runs/<spec name>``); created if needed.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (default: the spec's).
        data_root: folder holding dataset files (see ``advsmooth.data``).
        progress: show progress bars (overall and per cell) on rank 0.
        save_adversarial: also save adversarial examples as ``.npz`` artefacts under
            ``out_dir/artefacts/<cell>/`` (default: the spec's ``save_adversarial``).
        spec_text: the spec's source text to record (read from ``spec`` when it is a path).

    Returns:
        A :class:`RunResult`. Under ``torchrun`` every rank returns one; only rank 0 writes.
    """
    if not isinstance(spec, Spec):
        path = Path(spec)
        spec = load_spec(path)
        spec_text = path.read_text(encoding="utf-8") if spec_text is None else spec_text
    spec_text = spec_text if spec_text is not None else json.dumps(spec.canonical(), indent=1)
    out = Path(out_dir) if out_dir is not None else Path("runs") / spec.name
    save_adv = spec.save_adversarial if save_adversarial is None else bool(save_adversarial)
    dev_req = device or spec.device
    rank, world, local_rank, created = _dist_setup(dev_req)
    locks: list[FolderLock] = []
    try:
        return _run(spec, spec_text, out, dev_req, data_root, progress, save_adv, rank, world,
                    local_rank, locks)
    finally:
        for lock in locks:
            lock.release()
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


def _pending_work(store: Store, cells: list[Cell]) -> tuple[list[tuple[int, int]], int]:
    """The work items ``(cell index, batch or step)`` not yet committed to ``store``, and how
    many were committed before (a finished plain study counts as one)."""
    pending: list[tuple[int, int]] = []
    skipped = 0
    known: set[str] | None = None  # the store's artefact keys, read once if a study needs them
    for ci, c in enumerate(cells):
        if c.kind == "study" and c.steps is None:
            if store.cell_status(c.cell_id) != "done":
                pending.append((ci, 0))
            else:
                skipped += 1
            continue
        done = store.done_batches(c.cell_id)
        if c.kind == "study" and done:
            # a step committed with another key (its kind's code version or its settings
            # changed since) is redone, and its cell finished again
            known = store.artefact_keys() if known is None else known
            stale = sorted(b for b in done if c.steps[b][0].key not in known)
            if stale:
                store.reopen_steps(c.cell_id, stale)
                done -= set(stale)
        if c.kind == "study" and store.cell_status(c.cell_id) == "done":
            skipped += c.n_batches
            continue
        skipped += len(done)
        pending.extend((ci, b) for b in range(c.n_batches) if b not in done)
    return pending, skipped


def _raise_first(errors: list[dict[str, Any]]) -> None:
    """Re-raise the first failed work item's error (its own exception for value/OS errors)."""
    first = errors[0]
    if first.get("exc") is not None:
        raise first["exc"]
    raise RuntimeError(f"cell {first['cell']} batch {first['batch']} failed on rank "
                       f"{first['rank']}: {first['error']}\n{first['traceback']}")


class _Run:
    """The state of one run on one process: its cells, the store and counters (rank 0 only
    writes), and the progress bars."""

    def __init__(self, spec: Spec, out: Path, device: torch.device, data_root: str | None,
                 rank: int, world: int) -> None:
        self.spec, self.out, self.device, self.data_root = spec, out, device, data_root
        self.rank, self.world = rank, world
        self.shash = spec_hash(spec)
        self.cells = expand_cells(spec)
        self.res = _Resources(spec, device, data_root)
        self.store: Store | None = None
        self.run_id = 0
        self.store_seconds = 0.0
        self.skipped = 0
        self.computed = 0
        self.remaining: dict[int, int] = {}
        self.meta_common = {"spec_hash": self.shash, "advsmooth_version": __version__,
                            "torch_version": torch.__version__, "device": str(device)}
        self.overall: Any = None
        self.cell_bar: Any = None
        self.cell_bar_ci = -1

    # -- planning (rank 0), shared with every rank ---------------------------------------------
    def plan(self, spec_text: str, locks: list[FolderLock]) -> dict[str, Any]:
        """Rank 0: lock the folder, open the store, register the cells and list the pending
        work; an exception is returned as ``{"error": exc}`` for the other ranks."""
        spec, cells = self.spec, self.cells
        try:
            # one writer per folder: a second run is refused (released by run_spec)
            locks.append(FolderLock(self.out).acquire())
            for c in cells:  # resolve sample counts (cheap: no images are loaded here)
                if c.kind == "attack":
                    assert c.dataset is not None
                    c.n_samples = int(select_indices(c.dataset, spec.seed,
                                                     self.data_root).numel())
            self.out.mkdir(parents=True, exist_ok=True)
            ts = time.perf_counter()
            self.store = store = Store(self.out / STORE_NAME)
            store.add_spec(self.shash, spec.name, spec.canonical(), spec_text)
            store.register_cells(self.shash, [c.record() for c in cells])
            self.run_id = store.begin_run(self.shash, self.world, str(self.device))
            pending, skipped = _pending_work(store, cells)
            self.store_seconds += time.perf_counter() - ts
            return {"n_samples": [c.n_samples for c in cells], "pending": pending,
                    "skipped": skipped, "run_id": self.run_id}
        except Exception as exc:  # noqa: BLE001 - tell the other ranks, then raise
            return {"error": exc}

    def adopt(self, plan: dict[str, Any] | None) -> list[tuple[int, int]]:
        """Take rank 0's plan (raising its error) and return the pending work items."""
        assert plan is not None
        if "error" in plan:
            if self.store is not None:
                self.store.close()
            raise plan["error"]
        for c, n in zip(self.cells, plan["n_samples"]):
            c.n_samples = n
        self.skipped = plan["skipped"]
        pending = [tuple(p) for p in plan["pending"]]
        for ci, _ in pending:
            self.remaining[ci] = self.remaining.get(ci, 0) + 1
        return pending  # type: ignore[return-value]

    # -- rank 0: committing ----------------------------------------------------------------------
    def finalize(self, ci: int) -> None:
        """Write the summary of a finished attack cell, or the table of a planned study."""
        store = self.store
        assert store is not None
        c = self.cells[ci]
        if store.cell_status(c.cell_id) == "done" or (c.kind != "attack" and c.plan is None):
            return
        ts = time.perf_counter()
        if c.plan is not None:  # a planned study: its table from the steps' artefacts
            arts = Artefacts(self.out)
            with model_registry.recording_weights() as used:
                try:
                    rows = tasks.plan_rows(c.plan, arts)
                finally:
                    arts.close()
            store.add_cell_weights(c.cell_id, used)
            store.commit_study(c.cell_id, rows, run_id=self.run_id, rank=0,
                               seconds=store.cell_seconds(c.cell_id),
                               meta=self.study_meta(c.cell_id), planned=True)
        else:
            assert c.dataset is not None and c.model is not None
            meta = dict(self.meta_common, data_hash=self.res.data_hash(c.dataset),
                        checkpoint_hash=self.res.model_hash(c.model))
            store.finalize_cell(c.cell_id, meta)
        self.store_seconds += time.perf_counter() - ts

    def study_meta(self, cell_id: str) -> dict[str, Any]:
        """The provenance of a study cell: the common one, with ``checkpoint_hash`` naming each
        zoo model its work used — loaded, or behind a stored step it reused — and the hash of
        that model's weights (as attack cells'), ``"name=hash; …"``."""
        assert self.store is not None
        weights = self.store.cell_weights(cell_id)
        return dict(self.meta_common,
                    checkpoint_hash="; ".join(f"{n}={h}" for n, h in weights.items()) or None)

    def commit(self, p: dict[str, Any]) -> int:
        """Commit one computed work item; finalize its cell when it was the last. Returns the
        cell's index."""
        store = self.store
        assert store is not None
        ci = next(i for i, c in enumerate(self.cells) if c.cell_id == p["cell"])
        c = self.cells[ci]
        ts = time.perf_counter()
        if p.get("models"):
            store.add_cell_weights(c.cell_id, p["models"])
        if p.get("step"):
            store.commit_step(c.cell_id, p["batch"], run_id=self.run_id, rank=p["rank"],
                              seconds=p["seconds"])
        elif c.kind == "study":
            store.commit_study(c.cell_id, p["rows"], run_id=self.run_id, rank=p["rank"],
                               seconds=p["seconds"], meta=self.study_meta(c.cell_id))
        else:
            store.commit_batch(c.cell_id, p["batch"], p["start"], p["cols"],
                               run_id=self.run_id, rank=p["rank"], seconds=p["seconds"])
        self.store_seconds += time.perf_counter() - ts
        self.computed += 1
        self.remaining[ci] -= 1
        if self.remaining[ci] == 0:
            self.finalize(ci)
        return ci

    def advance_bars(self, ci: int) -> None:
        """One more item done in cell ``ci``: step the overall bar and the cell's own bar."""
        self.overall.update(1)
        if ci != self.cell_bar_ci:
            if self.cell_bar is not None:
                self.cell_bar.close()
            c = self.cells[ci]
            where = f"{c.dataset.key}/{c.model.key}" if c.dataset and c.model else "study"
            self.cell_bar = progress_bar(
                total=c.n_batches, desc=f"  {c.label} ({where})", enabled=True,
                initial=c.n_batches - self.remaining[ci] - 1, position=1, unit="batch")
            self.cell_bar_ci = ci
        self.cell_bar.update(1)

    # -- every rank: the rounds ------------------------------------------------------------------
    def execute(self, pending: list[tuple[int, int]], progress: bool, save_adv: bool) -> None:
        """Compute the pending items round by round (one per rank), gather them on rank 0 and
        commit them there; the store is closed at the end, also on error."""
        rank, cells = self.rank, self.cells
        show = progress and rank == 0
        self.overall = progress_bar(total=sum(c.n_batches for c in cells),
                                    desc=f"{self.spec.name} ({self.world} proc)", enabled=show,
                                    initial=self.skipped, position=0, unit="batch")
        try:
            if rank == 0:  # cells whose batches were all committed before a kill
                for ci, c in enumerate(cells):
                    if (c.kind == "attack" or c.plan is not None) and ci not in self.remaining:
                        self.finalize(ci)
            for work in _rounds(pending, cells, self.world):
                mine = work[rank] if rank < len(work) else None
                payload = None
                if mine is not None:
                    payload = _compute(cells[mine[0]], mine[1], self.res, self.out, save_adv,
                                       rank, progress)
                gathered = _gather(payload, self.world)
                errors = [p for p in gathered if p is not None and "error" in p]
                if rank == 0:
                    for p in gathered:
                        if p is not None and "error" not in p:
                            ci = self.commit(p)
                            if show:
                                self.advance_bars(ci)
                if errors:
                    _raise_first(errors)
            if rank == 0:
                assert self.store is not None
                self.store.finish_run(self.run_id)
        finally:
            if self.cell_bar is not None:
                self.cell_bar.close()
            self.overall.close()
            if self.store is not None:
                self.store.close()


def _run(spec: Spec, spec_text: str, out: Path, dev_req: str, data_root: str | None,
         progress: bool, save_adv: bool, rank: int, world: int, local_rank: int,
         locks: list[FolderLock]) -> RunResult:
    t_start = time.perf_counter()
    device = _resolve_device(dev_req, world, local_rank)
    run = _Run(spec, out, device, data_root, rank, world)
    plan = run.plan(spec_text, locks) if rank == 0 else None
    pending = run.adopt(_broadcast(plan, world))
    run.execute(pending, progress, save_adv)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return RunResult(out_dir=out, store_path=out / STORE_NAME, spec_hash=run.shash,
                     cells=len(run.cells), computed_batches=run.computed if rank == 0 else 0,
                     skipped_batches=int(run.skipped), seconds=time.perf_counter() - t_start,
                     world_size=world, rank=rank, store_seconds=run.store_seconds)
