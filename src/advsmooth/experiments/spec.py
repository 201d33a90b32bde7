"""Experiment specs: a TOML file describing a grid of datasets × models × attacks (+ studies).

A spec is parsed with :mod:`tomllib` and validated with pydantic *before anything runs*. Every
problem is reported as ``FILE: KEY.PATH: what was expected (got VALUE)``; all problems of a file
are collected into one :class:`SpecError` (a ``ValueError``), which the CLI turns into exit
status 2.

Validation has two passes:

1. **structure** (pydantic, ``extra="forbid"``): unknown keys, wrong types, impossible values
   (``n = 0``, an empty grid, a negative seed, ...);
2. **meaning**: dataset names and splits exist, every model name is known, every attack of
   every grid point can be constructed with its parameters (the attack constructors validate
   their own hyper-parameters), study tasks exist and accept their parameters, report tables and
   plots refer to known metrics and grid parameters.

Example::

    name = "digits-deepfool"
    seed = 0
    batch_size = 50

    [[datasets]]
    name = "digits"
    split = "test"
    sample = 100          # a seeded random subset (or n = 100: the first 100)

    [[models]]
    name = "digits-lenet"

    [[attacks]]
    name = "smoothfool"
    params = { max_iter = 20 }
    grid = { sigma = [1, 2, 5, 10] }

    [report]
    tables = ["summary", "per_class"]
    [[report.plots]]
    kind = "curve"
    x = "sigma"
    y = "fooling_rate"
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .._utils import did_you_mean

__all__ = [
    "Spec",
    "SpecError",
    "DatasetSpec",
    "ModelSpec",
    "AttackSpec",
    "StudySpec",
    "TableSpec",
    "PlotSpec",
    "ReportSpec",
    "load_spec",
    "parse_spec",
    "spec_hash",
    "ATTACK_METRICS",
    "BUILTIN_TABLES",
]

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr
ParamValue = Scalar | list[Scalar] | dict[str, Scalar | list[Scalar]] | None

#: per-cell metrics of attack cells (the columns of the ``cells`` summary, see ``store.py``)
ATTACK_METRICS: dict[str, str] = {
    "n": "number of samples",
    "n_correct": "samples classified correctly before the attack",
    "accuracy": "clean accuracy",
    "adv_accuracy": "accuracy on the adversarial inputs (all samples)",
    "fooling_rate": "fooling rate over correctly classified samples",
    "rho_adv": "mean ||r||2/||x||2 over successfully attacked correct samples",
    "rho_inf": "mean ||r||inf/||x||inf over successfully attacked correct samples",
    "mean_l2": "mean ||r||2 over successfully attacked correct samples",
    "median_l2": "median ||r||2 over successfully attacked correct samples",
    "mean_linf": "mean ||r||inf over successfully attacked correct samples",
    "omega": "mean roughness Omega (sigma_h = 1) over successfully attacked correct samples",
    "omega_n": "mean normalised roughness Omega_n over successfully attacked correct samples",
    "iterations": "mean attack iterations over correct samples",
    "forward_evals": "mean forward evaluations per image",
    "grad_evals": "mean gradient evaluations per image",
    "seconds_per_sample": "wall-clock seconds per sample",
}

#: built-in table kinds (see ``advsmooth.report.tables``)
BUILTIN_TABLES = ("summary", "per_class", "sigma_threshold", "pivot", "study")

_DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?|mps)$"


class SpecError(ValueError):
    """A spec that failed validation; ``errors`` holds one ``(key_path, message)`` per problem."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = list(errors)
        lines = [f"{source}: {path}: {msg}" if path else f"{source}: {msg}" for path, msg in errors]
        head = f"{source}: invalid experiment spec ({len(errors)} problem(s))"
        super().__init__("\n".join([head, *lines]) if len(lines) > 1 else lines[0])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class DatasetSpec(_Strict):
    """One dataset: ``name`` (``digits``, ``mnist``, ``cifar10``, ..., ``npz:PATH``), split and
    selection (``n`` first samples or a seeded random ``sample``; neither = the whole split)."""

    name: StrictStr = Field(min_length=1)
    split: StrictStr = "test"
    n: Annotated[StrictInt, Field(ge=1)] | None = None
    sample: Annotated[StrictInt, Field(ge=1)] | None = None
    seed: Annotated[StrictInt, Field(ge=0)] | None = None
    root: StrictStr | None = None
    label: StrictStr | None = None

    @model_validator(mode="after")
    def _one_selection(self) -> DatasetSpec:
        if self.n is not None and self.sample is not None:
            raise ValueError("give at most one of n (first n samples) and sample "
                             "(seeded random subset)")
        return self

    @property
    def key(self) -> str:
        return self.label or self.name


class ModelSpec(_Strict):
    """One model of the zoo (``advsmooth.models.load(name)``), optionally restricted to some
    datasets (by dataset label; default: every dataset of the spec)."""

    name: StrictStr = Field(min_length=1)
    label: StrictStr | None = None
    datasets: list[StrictStr] | None = None

    @property
    def key(self) -> str:
        return self.label or self.name


def _check_params(v: dict[str, Any]) -> dict[str, Any]:
    for k in v:
        if not k.isidentifier():
            raise ValueError(f"parameter names must be identifiers, got {k!r}")
    return v


def _check_overlap(params: dict[str, Any], grid: dict[str, Any]) -> None:
    both = sorted(set(params) & set(grid))
    if both:
        raise ValueError(f"parameter(s) {both} appear in both params and grid")


def _grid_points(params: dict[str, Any], grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """``params`` merged with every combination of ``grid`` (first key varies slowest)."""
    keys = list(grid)
    combos = itertools.product(*(grid[k] for k in keys)) if keys else [()]
    return [{**params, **dict(zip(keys, c))} for c in combos]


class _Gridded(_Strict):
    """What attacks and studies share: ``params`` and a ``grid`` of value lists (no key in
    both), expanded into one parameter set per grid point. The fields are declared by each
    subclass (their order is part of the canonical spec)."""

    _v_params = field_validator("params", "grid", check_fields=False)(_check_params)

    @model_validator(mode="after")
    def _no_overlap(self) -> _Gridded:
        _check_overlap(self.params, self.grid)  # type: ignore[attr-defined]
        for k, values in self.grid.items():  # type: ignore[attr-defined]
            seen = [json.dumps(v, sort_keys=True) for v in values]
            dup = sorted({v for v in seen if seen.count(v) > 1})
            if dup:
                raise ValueError(f"grid.{k} repeats {', '.join(dup)}: each value gives one cell")
        return self

    def points(self) -> list[dict[str, Any]]:
        """Every parameter combination of the grid (grid order: first key varies slowest)."""
        return _grid_points(self.params, self.grid)  # type: ignore[attr-defined]


class AttackSpec(_Gridded):
    """An attack (registry name or ``module:Class``), fixed ``params`` and a ``grid`` of
    parameter lists whose Cartesian product gives one cell per combination."""

    name: StrictStr = Field(min_length=1)
    label: StrictStr | None = None
    params: dict[str, ParamValue] = Field(default_factory=dict)
    grid: dict[str, Annotated[list[ParamValue], Field(min_length=1)]] = Field(default_factory=dict)
    models: list[StrictStr] | None = None
    batch_size: Annotated[StrictInt, Field(ge=1)] | None = None

    @property
    def key(self) -> str:
        return self.label or self.name


def _plan_kinds(tasks: Any, study: StudySpec) -> set[str]:
    """The step kinds of the planned study ``study`` (empty when it is not planned or its
    parameters are invalid: that is reported on its own)."""
    from .artefacts import plan_order

    try:
        task = tasks.get_task(study.task)
        steps = [] if task.plan is None else task.plan(study.points()[0], 0)
    except (ValueError, TypeError):
        return set()
    return {s.kind for s, _ in plan_order(steps)}


class StudySpec(_Gridded):
    """A registered study task (``advsmooth.experiments.tasks``) with ``params`` and an optional
    ``grid``; each grid point is one cell whose result is a table of rows."""

    task: StrictStr = Field(min_length=1)
    label: StrictStr | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.label or self.task


class TableSpec(_Strict):
    """A table of the report.

    * ``summary``: one row per attack cell with ``metrics`` as columns;
    * ``pivot``: rows = ``rows`` fields, columns = ``columns`` fields × ``metrics``
      (the layout of the papers' tables: networks down, attacks across);
    * ``per_class``: fooling rate per true class (SmoothFool Table 2);
    * ``sigma_threshold``: σ^A% for each ``levels`` entry over the grid parameter ``param``
      (SmoothFool Fig. 6 numbers);
    * ``study``: the rows of the study cells labelled ``source`` (optionally pivoted with
      ``rows``/``columns``/``value``).

    ``where`` keeps only the rows (cells or study rows) whose fields equal the given values.
    """

    kind: Literal["summary", "pivot", "per_class", "sigma_threshold", "study"]
    name: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    title: StrictStr | None = None
    metrics: list[StrictStr] | None = None
    rows: list[StrictStr] | None = None
    columns: list[StrictStr] | None = None
    value: StrictStr | None = None
    param: StrictStr = "sigma"
    levels: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=lambda: [1.0, 0.5, 0.2])
    source: StrictStr | None = None
    scale: dict[str, StrictFloat | StrictInt] = Field(default_factory=dict)
    where: dict[str, Scalar] = Field(default_factory=dict)


class PlotSpec(_Strict):
    """A figure of the report.

    * ``curve``: ``y`` against ``x``, one line per value of the ``hue`` fields (attack cells: x is a
      grid parameter and y a metric, e.g. fooling rate vs σg; studies: columns of the study rows);
    * ``heatmap``: a matrix ``rows`` × ``columns`` of ``value`` (transfer matrices);
    * ``perturbation_grid``: clean image, perturbation and adversarial image for a few samples of
      every attack cell (needs ``save_adversarial = true``);
    * ``bars``: grouped bars of the study rows' numeric fields ``values``, one bar per row (those
      matching ``where``) labelled by its ``hue`` fields (``percent``: fractions drawn as %);
    * ``step_images``: the images stored by the step ``step`` (a step kind) of the planned study
      labelled ``source`` (e.g. ``deepfool_ft.example``, DeepFool Fig. 8), drawn by the report;
    * ``image``: a PNG that the study labelled ``source`` wrote into its ``out_dir`` parameter
      (``file``, a relative path inside it), embedded as it is — for the studies that draw their own
      figures (decision-boundary maps, saliency maps, example images);
    * ``artefact``: a figure the report draws from the store artefact of a planned study's step
      (``step``, the step kind, e.g. ``"transfer.boundary"``; ``where`` filters the step's
      settings), one figure per matching step — decision-boundary maps, saliency grids.
    """

    kind: Literal["curve", "heatmap", "perturbation_grid", "image", "artefact", "bars",
                  "step_images"]
    name: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    title: StrictStr | None = None
    source: StrictStr | None = None
    x: StrictStr | None = None
    y: StrictStr | list[StrictStr] | None = None  # a list (study rows): one line per column
    hue: list[StrictStr] | None = None
    values: list[StrictStr] | None = None
    percent: StrictBool = False
    step: StrictStr | None = None
    rows: StrictStr | None = None
    columns: StrictStr | None = None
    value: StrictStr | None = None
    facet: StrictStr | None = None
    xlabel: StrictStr | None = None
    ylabel: StrictStr | None = None
    logx: StrictBool = False
    samples: Annotated[StrictInt, Field(ge=1, le=20)] = 4
    file: StrictStr | None = Field(default=None,
                                   pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*\.png$")
    where: dict[str, Scalar] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fields(self) -> PlotSpec:
        if self.kind == "artefact" and (self.step is None or self.source is None):
            raise ValueError("an artefact plot needs step (a step kind of the study's plan) and "
                             "source (the study label)")
        if self.kind not in ("artefact", "step_images") and self.step is not None:
            raise ValueError("step is only for kind = 'artefact' or 'step_images'")
        if self.kind == "curve" and (self.x is None or self.y is None):
            raise ValueError("a curve needs x and y")
        if isinstance(self.y, list) and (self.source is None or not self.y):
            raise ValueError("a list of y columns needs a study source (and one column at least)")
        if self.kind == "bars" and (self.source is None or not self.values):
            raise ValueError("bars need source (the study label) and values (row fields)")
        if self.kind == "step_images" and (self.source is None or self.step is None):
            raise ValueError("step_images need source (the study label) and step (a step kind)")
        if self.kind == "heatmap" and None in (self.rows, self.columns, self.value):
            raise ValueError("a heatmap needs rows, columns and value")
        if self.kind == "image":
            if self.file is None or self.source is None:
                raise ValueError("an image needs file (a .png path inside the study's out_dir) "
                                 "and source (the study label)")
            if ".." in self.file.split("/"):
                raise ValueError(f"file must stay inside the study's out_dir, got {self.file!r}")
        elif self.file is not None:
            raise ValueError("file is only for kind = 'image'")
        return self


def _table_from_str(v: Any) -> Any:
    if isinstance(v, str):
        return {"kind": v}
    return v


class ReportSpec(_Strict):
    """What ``advsmooth report`` produces: tables (built-in kind names or full tables), plots."""

    title: StrictStr | None = None
    tables: list[TableSpec] | None = None
    plots: list[PlotSpec] = Field(default_factory=list)

    @field_validator("tables", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [_table_from_str(t) for t in v]
        return v


def _no_repeated_cells(spec: Spec) -> None:
    """Two [[attacks]] (or [[studies]]) entries that give the same cell would compute and store
    it twice: refuse them, naming both."""
    seen: dict[str, str] = {}
    for i, a in enumerate(spec.attacks):
        for point in a.points():
            ident = json.dumps([a.name, point, a.models, a.batch_size], sort_keys=True)
            if ident in seen:
                raise ValueError(f"attacks[{i}] repeats a cell of {seen[ident]} (attack {a.name!r}"
                                 f" with {point}): each combination is run once")
            seen[ident] = f"attacks[{i}]"
    for i, st in enumerate(spec.studies):
        for point in st.points():
            ident = json.dumps(["study", st.task, point], sort_keys=True)
            if ident in seen:
                raise ValueError(f"studies[{i}] repeats {seen[ident]} (task {st.task!r} with the "
                                 "same parameters): each combination is run once")
            seen[ident] = f"studies[{i}]"


class Spec(_Strict):
    """A validated experiment spec (see the module docstring for the TOML layout)."""

    name: StrictStr = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: StrictStr = ""
    paper: StrictStr = ""
    seed: Annotated[StrictInt, Field(ge=0, lt=2**63)] = 0
    batch_size: Annotated[StrictInt, Field(ge=1)] = 64
    device: StrictStr = Field(default="auto", pattern=_DEVICE_PATTERN)
    save_adversarial: StrictBool = False
    datasets: list[DatasetSpec] = Field(default_factory=list)
    models: list[ModelSpec] = Field(default_factory=list)
    attacks: list[AttackSpec] = Field(default_factory=list)
    studies: list[StudySpec] = Field(default_factory=list)
    report: ReportSpec = Field(default_factory=ReportSpec)

    @model_validator(mode="after")
    def _consistency(self) -> Spec:
        if not self.attacks and not self.studies:
            raise ValueError("a spec needs at least one [[attacks]] or [[studies]] entry")
        if self.attacks and (not self.datasets or not self.models):
            raise ValueError("[[attacks]] need at least one [[datasets]] and one [[models]] entry")
        for what, items in (("datasets", self.datasets), ("models", self.models),
                            ("attacks", self.attacks), ("studies", self.studies)):
            keys = [i.key for i in items]
            dup = sorted({k for k in keys if keys.count(k) > 1})
            if what == "attacks":  # unlabelled attacks of one name may differ in params
                dup = sorted({k for k in dup if any(i.label == k for i in items)})
            if dup:
                raise ValueError(f"{what} labels must be unique, duplicated: {dup} "
                                 "(set label = ...)")
        _no_repeated_cells(self)
        if self.report.tables is None:  # default: a summary of the attacks, every study's rows
            self.report.tables = ([TableSpec(kind="summary")] if self.attacks else []) + [
                TableSpec(kind="study", source=s.key) for s in self.studies]
        return self

    # -- derived ------------------------------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        """The validated spec as plain JSON data (defaults filled in)."""
        return self.model_dump(mode="json")


# ----------------------------------------------------------------------------------------------
# errors and loading
# ----------------------------------------------------------------------------------------------

def _loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            s = str(part)
            # pydantic adds the union member / validator name to some locations
            if s.startswith(("function-", "list[", "dict[", "str", "int", "float", "bool",
                             "tagged-union")) and s not in ("str",):
                continue
            out += ("." if out else "") + s
    return out


def _pydantic_errors(exc: ValidationError) -> list[tuple[str, str]]:
    seen: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False):
        path = _loc(err.get("loc", ()))
        etype = err.get("type", "")
        msg = str(err.get("msg", "invalid value"))
        if etype == "extra_forbidden":
            msg = "unknown key (not part of the spec format; check the spelling)"
        elif etype == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if "input" in err and etype not in ("missing",):
            val = err["input"]
            text = repr(val)
            if len(text) > 60:
                text = text[:57] + "..."
            msg = f"{msg} (got {text})"
        seen.setdefault(path, [])
        if msg not in seen[path]:
            seen[path].append(msg)
    out = []
    for path, msgs in seen.items():
        # a union of scalar types yields one message per member: keep them on one line
        out.append((path, "expected " + " or ".join(m.replace("Input should be ", "") for m in msgs)
                    if len(msgs) > 1 else msgs[0]))
    return out


def parse_spec(data: Mapping[str, Any], *, source: str = "<spec>", check: bool = True) -> Spec:
    """Validate spec data (a dict as read from TOML); raise :class:`SpecError` on any problem.

    ``check=False`` skips the semantic pass (names of datasets/models/attacks/studies).
    """
    try:
        spec = Spec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(source, _pydantic_errors(exc)) from None
    if check:
        errors = semantic_errors(spec)
        if errors:
            raise SpecError(source, errors)
    return spec


def load_spec(path: str | os.PathLike[str], *, check: bool = True) -> Spec:
    """Read and validate the TOML spec at ``path`` (``SpecError``/``FileNotFoundError``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"experiment spec {p} is a folder, not a TOML file" if p.is_dir()
                                else f"experiment spec not found: {p}")
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(p), [("", f"not valid TOML: {exc}")]) from None
    except UnicodeDecodeError:
        raise SpecError(str(p), [("", "not a UTF-8 text file (a TOML spec is text)")]) from None
    return parse_spec(data, source=str(p), check=check)


def spec_hash(spec: Spec) -> str:
    """SHA-256 (hex, 16 chars) of the canonical JSON of the validated spec."""
    blob = json.dumps(spec.canonical(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# semantic checks
# ----------------------------------------------------------------------------------------------

def _model_info(name: str) -> Any | None:
    """The zoo entry of ``name`` (None for torchvision:/timm:/paths); ``ValueError`` if unknown."""
    from .. import models

    if ":" in name or name.endswith((".pt", ".pth")) or os.sep in name:
        return None
    return models.spec(name)


Errors = Iterator[tuple[str, str]]


def _expect_in(where: str, value: Any, allowed: Any, shown: list[str]) -> Errors:
    """``value`` at ``where`` unless it is in ``allowed`` (listed as ``shown``)."""
    if value not in allowed:
        yield where, f"expected one of {shown} (got {value!r})"


def _dataset_errors(spec: Spec) -> Errors:
    """Unknown dataset names and splits, ``n``/``sample`` above the split's size."""
    from .. import data

    for i, d in enumerate(spec.datasets):
        if d.name.startswith("npz:"):
            continue
        if d.name not in data.names():
            yield (f"datasets[{i}].name", f"unknown dataset {d.name!r}; expected one of "
                   f"{data.names()} or npz:PATH{did_you_mean(d.name, data.names())}")
            continue
        splits = data.info(d.name).splits
        if d.split not in splits:
            yield (f"datasets[{i}].split", f"expected one of {list(splits)} for "
                   f"{d.name!r} (got {d.split!r})")
        size = data.info(d.name).sizes.get(d.split)
        for key in ("n", "sample"):
            v = getattr(d, key)
            if v is not None and size is not None and v > size:
                yield (f"datasets[{i}].{key}", f"expected at most {size} (the size of "
                       f"{d.name} {d.split}) (got {v})")


def _model_errors(spec: Spec) -> Errors:
    """Unknown model names and dataset labels, input shapes that do not fit a dataset."""
    from .. import data

    ds_keys = [d.key for d in spec.datasets]
    ds_by_key = {d.key: d for d in spec.datasets}
    for i, m in enumerate(spec.models):
        try:
            minfo = _model_info(m.name)
        except ValueError as exc:
            yield f"models[{i}].name", str(exc)
            minfo = None
        for j, dk in enumerate(m.datasets or []):
            if dk not in ds_keys:
                yield (f"models[{i}].datasets[{j}]", f"expected a dataset label of this "
                       f"spec {ds_keys} (got {dk!r})")
        if minfo is None:
            continue
        for dk in (m.datasets or ds_keys):
            d = ds_by_key.get(dk)
            if d is None or d.name not in data.names():
                continue
            shape = data.info(d.name).shape
            if shape is not None and tuple(shape) != tuple(minfo.in_shape):
                yield (f"models[{i}]", f"model {m.name!r} takes inputs of shape "
                       f"{tuple(minfo.in_shape)} but dataset {dk!r} has shape "
                       f"{tuple(shape)}; restrict it with datasets = [...]")


def _attack_errors(spec: Spec) -> Errors:
    """Unknown attack names and model labels; the first grid point an attack rejects."""
    from . import tasks

    model_keys = [m.key for m in spec.models]
    for i, a in enumerate(spec.attacks):
        for j, mk in enumerate(a.models or []):
            if mk not in model_keys:
                yield (f"attacks[{i}].models[{j}]", f"expected a model label of this "
                       f"spec {model_keys} (got {mk!r})")
        try:
            tasks.attack_class(a.name)
        except (ValueError, ImportError) as exc:
            yield f"attacks[{i}].name", str(exc)
            continue
        for point in a.points():
            try:
                tasks.build_attack(a.name, point)
            except (ValueError, TypeError, ImportError) as exc:
                grid_part = {k: point[k] for k in a.grid}
                where = f"attacks[{i}]" + (f" (grid point {grid_part})" if grid_part else "")
                yield where + ".params", str(exc)
                break


def _study_errors(spec: Spec) -> Errors:
    """Unknown study tasks; the first grid point a task's ``check`` rejects."""
    from . import tasks

    for i, s in enumerate(spec.studies):
        try:
            task = tasks.get_task(s.task)
        except ValueError as exc:
            yield f"studies[{i}].task", str(exc)
            continue
        for point in s.points():
            try:
                task.check(point)
            except (ValueError, TypeError, ImportError) as exc:
                yield f"studies[{i}].params", str(exc)
                break


def _cell_fields(spec: Spec) -> tuple[set[str], set[str]]:
    """The attacks' grid/parameter names, and every field of an attack cell's row."""
    grid_params = {k for a in spec.attacks for k in (*a.grid, *a.params)}
    return grid_params, {"dataset", "model", "attack", "label", *grid_params}


def _table_errors(spec: Spec) -> Errors:
    """Report tables naming unknown studies, metrics, cell fields or grid parameters."""
    study_keys = [s.key for s in spec.studies]
    grid_params, cell_fields = _cell_fields(spec)
    for i, t in enumerate(spec.report.tables or []):
        where = f"report.tables[{i}]"
        if t.kind == "study":
            if t.source not in study_keys:
                yield (f"{where}.source", f"expected a study label of this spec "
                       f"{study_keys} (got {t.source!r})")
            continue
        for j, mname in enumerate(t.metrics or []):
            yield from _expect_in(f"{where}.metrics[{j}]", mname, ATTACK_METRICS,
                                  list(ATTACK_METRICS))
        for fld in ("rows", "columns"):
            for j, name in enumerate(getattr(t, fld) or []):
                yield from _expect_in(f"{where}.{fld}[{j}]", name, cell_fields,
                                      sorted(cell_fields))
        if t.kind == "sigma_threshold" and t.param not in grid_params:
            yield (f"{where}.param", f"expected a grid parameter of an attack "
                   f"{sorted(grid_params)} (got {t.param!r})")
        if not spec.attacks:
            yield f"{where}.kind", f"a {t.kind!r} table needs [[attacks]] cells"


def _study_plot_errors(spec: Spec, where: str, p: PlotSpec) -> Errors:
    """A plot of a study's rows (``source`` set): the study exists and has what it shows."""
    from . import tasks

    study_keys = [s.key for s in spec.studies]
    if p.source not in study_keys:
        yield (f"{where}.source", f"expected a study label of this spec "
               f"{study_keys} (or no source for attack cells) (got {p.source!r})")
        return
    study = spec.studies[study_keys.index(p.source)]
    if p.kind == "image" and "out_dir" not in study.params and "out_dir" not in study.grid:
        yield (f"{where}.source", f"an image needs a study with an out_dir "
               f"parameter; study {p.source!r} has none")
    elif p.kind == "step_images" and p.step not in _plan_kinds(tasks, study):
        yield (f"{where}.step", f"expected a step of study {p.source!r}: "
               f"{sorted(_plan_kinds(tasks, study))} (got {p.step!r})")
    elif p.kind == "perturbation_grid":
        yield f"{where}.kind", "a perturbation_grid shows attack cells; remove source"


def _cell_plot_errors(spec: Spec, where: str, p: PlotSpec) -> Errors:
    """A plot of attack cells (no ``source``): its axes name cell fields and metrics."""
    if not spec.attacks:
        yield (f"{where}.source", "plots of attack cells need [[attacks]]; set source = a study "
               "label")
        return
    grid_params, cell_fields = _cell_fields(spec)
    metrics = list(ATTACK_METRICS)
    if p.kind == "curve":
        if p.x not in cell_fields | set(ATTACK_METRICS):
            yield (f"{where}.x", f"expected a grid parameter {sorted(grid_params)} "
                   f"or a metric (got {p.x!r})")
        yield from _expect_in(f"{where}.y", p.y, ATTACK_METRICS, metrics)
        for j, h in enumerate(p.hue or []):
            yield from _expect_in(f"{where}.hue[{j}]", h, cell_fields, sorted(cell_fields))
    elif p.kind == "heatmap":
        for fld in ("rows", "columns"):
            yield from _expect_in(f"{where}.{fld}", getattr(p, fld), cell_fields,
                                  sorted(cell_fields))
        yield from _expect_in(f"{where}.value", p.value, ATTACK_METRICS, metrics)
    elif p.kind == "perturbation_grid" and not spec.save_adversarial:
        yield f"{where}.kind", "a perturbation_grid needs save_adversarial = true"


def semantic_errors(spec: Spec) -> list[tuple[str, str]]:
    """Problems that need the registries: unknown names, impossible attack parameters.

    Returns ``(where, message)`` pairs: datasets, models, attacks, studies, report tables and
    report plots, in that order."""
    errors = [*_dataset_errors(spec), *_model_errors(spec), *_attack_errors(spec),
              *_study_errors(spec), *_table_errors(spec)]
    for i, p in enumerate(spec.report.plots):
        check = _cell_plot_errors if p.source is None else _study_plot_errors
        errors += check(spec, f"report.plots[{i}]", p)
    return errors

