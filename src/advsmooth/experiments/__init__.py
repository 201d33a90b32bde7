"""Experiments as data: validated TOML specs, a resumable SQLite result store, a runner that
shards over ``torch.distributed`` ranks, and pluggable study tasks.

>>> from advsmooth.experiments import parse_spec
>>> spec = parse_spec({"name": "demo", "datasets": [{"name": "digits", "n": 8}],
...                    "models": [{"name": "digits-lenet"}],
...                    "attacks": [{"name": "deepfool", "grid": {"overshoot": [0.02, 0.1]}}]})
>>> [c.label for c in expand_cells(spec)]
['deepfool[overshoot=0.02]', 'deepfool[overshoot=0.1]']

See docs/experiments.md.
"""

from . import attack_universal, evaluate_task, studies_builtin, tasks  # noqa: F401  (register the built-in studies)
from .runner import Cell, RunResult, expand_cells, model_hash, run_spec, select_indices, tensor_hash
from .spec import (
    ATTACK_METRICS,
    AttackSpec,
    DatasetSpec,
    ModelSpec,
    PlotSpec,
    ReportSpec,
    Spec,
    SpecError,
    StudySpec,
    TableSpec,
    load_spec,
    parse_spec,
    spec_hash,
)
from .store import SAMPLE_COLUMNS, SUMMARY_COLUMNS, TIMING_COLUMNS, Store, summarize
from .tasks import StudyContext, batch_seed, get_task, register_task, task_names

__all__ = [
    "ATTACK_METRICS",
    "AttackSpec",
    "Cell",
    "DatasetSpec",
    "ModelSpec",
    "PlotSpec",
    "ReportSpec",
    "RunResult",
    "SAMPLE_COLUMNS",
    "SUMMARY_COLUMNS",
    "Spec",
    "SpecError",
    "Store",
    "StudyContext",
    "StudySpec",
    "TIMING_COLUMNS",
    "TableSpec",
    "batch_seed",
    "expand_cells",
    "get_task",
    "load_spec",
    "model_hash",
    "parse_spec",
    "register_task",
    "run_spec",
    "select_indices",
    "spec_hash",
    "summarize",
    "task_names",
    "tasks",
    "tensor_hash",
]
