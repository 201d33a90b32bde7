"""The SQLite result store of an experiment directory (``DIR/results.sqlite``, WAL mode).

Tables:

``specs``       every spec run into this directory (hash, canonical JSON, TOML text).
``runs``        one row per invocation of the runner (start/finish time, world size, device).
``cells``       one row per cell: its configuration, provenance (spec hash, advsmooth and torch
                versions, seed, device, data and checkpoint hashes), status, timings and — for
                attack cells — the summary metrics computed from its sample rows.
``spec_cells``  which cells belong to which spec (and in which order).
``batches``     one row per committed batch (which run and rank computed it, seconds).
``samples``     one row per attacked sample (see :data:`SAMPLE_COLUMNS`).
``study_rows``  the table rows produced by study cells (JSON per row).

Every batch is committed in one transaction together with its ``batches`` row, so a process
killed at any moment leaves only whole batches behind; the ``batches`` primary key makes a
repeated batch an error rather than a silent duplicate. Summaries are recomputed from the sample
rows, so they do not depend on how a run was interrupted or sharded.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Store", "batches_committed", "SAMPLE_COLUMNS", "SUMMARY_COLUMNS", "TIMING_COLUMNS",
           "summarize", "STORE_NAME", "ARTEFACTS_SCHEMA"]

STORE_NAME = "results.sqlite"

#: per-sample columns (``samples`` table, besides cell_id, idx and batch)
SAMPLE_COLUMNS = ("source_index", "label", "clean_pred", "adv_pred", "success", "l2", "linf",
                  "x_l2", "x_linf", "omega", "omega_n", "iterations", "forward_evals", "grad_evals")
_INT_COLUMNS = {"source_index", "label", "clean_pred", "adv_pred", "success", "iterations",
                "forward_evals", "grad_evals"}

#: summary metrics of an attack cell (columns of ``cells``)
SUMMARY_COLUMNS = ("n", "n_correct", "accuracy", "adv_accuracy", "fooling_rate", "rho_adv",
                   "rho_inf", "mean_l2", "median_l2", "mean_linf", "omega", "omega_n",
                   "iterations", "forward_evals", "grad_evals")

#: columns that depend on when/where a run happened (excluded when comparing runs)
TIMING_COLUMNS = frozenset({"seconds", "seconds_per_sample", "started", "finished", "committed",
                            "run_id", "rank", "added", "pid", "host", "world_size"})

#: step artefacts (see :mod:`advsmooth.experiments.artefacts`): one row per finished step, its
#: rows and info as JSON, and the relative path and sha256 of its tensor file
ARTEFACTS_SCHEMA = """CREATE TABLE IF NOT EXISTS artefacts (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, settings_json TEXT NOT NULL, file TEXT,
    sha256 TEXT, rows_json TEXT NOT NULL, info_json TEXT NOT NULL, seconds REAL, created TEXT);
"""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS specs (
    spec_hash TEXT PRIMARY KEY, name TEXT, spec_json TEXT, spec_toml TEXT, added TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT, spec_hash TEXT, started TEXT, finished TEXT,
    world_size INTEGER, device TEXT, pid INTEGER, host TEXT);
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY, kind TEXT NOT NULL, label TEXT, dataset TEXT, model TEXT,
    attack TEXT, task TEXT, params_json TEXT, config_json TEXT,
    n_samples INTEGER, n_batches INTEGER, batch_size INTEGER, seed INTEGER,
    status TEXT NOT NULL DEFAULT 'pending',
    spec_hash TEXT, advsmooth_version TEXT, torch_version TEXT, device TEXT,
    data_hash TEXT, checkpoint_hash TEXT,
    {", ".join(f"{c} REAL" for c in SUMMARY_COLUMNS)},
    seconds REAL, seconds_per_sample REAL, started TEXT, finished TEXT);
CREATE TABLE IF NOT EXISTS spec_cells (
    spec_hash TEXT NOT NULL, cell_id TEXT NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY (spec_hash, cell_id));
CREATE TABLE IF NOT EXISTS batches (
    cell_id TEXT NOT NULL, batch INTEGER NOT NULL, start INTEGER, stop INTEGER, n INTEGER,
    run_id INTEGER, rank INTEGER, seconds REAL, committed TEXT,
    PRIMARY KEY (cell_id, batch));
CREATE TABLE IF NOT EXISTS samples (
    cell_id TEXT NOT NULL, idx INTEGER NOT NULL, batch INTEGER NOT NULL,
    {", ".join(f"{c} {'INTEGER' if c in _INT_COLUMNS else 'REAL'}" for c in SAMPLE_COLUMNS)},
    PRIMARY KEY (cell_id, idx));
CREATE TABLE IF NOT EXISTS study_rows (
    cell_id TEXT NOT NULL, row INTEGER NOT NULL, data_json TEXT NOT NULL,
    PRIMARY KEY (cell_id, row));
CREATE TABLE IF NOT EXISTS cell_weights (
    cell_id TEXT NOT NULL, model TEXT NOT NULL, hash TEXT NOT NULL,
    PRIMARY KEY (cell_id, model));
{ARTEFACTS_SCHEMA}"""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "tolist"):  # torch tensors
        return o.tolist()
    return str(o)


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys; NaN/inf kept as JSON extensions) of ``obj``."""
    return json.dumps(obj, sort_keys=True, default=_json_default)


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def summarize(cols: Mapping[str, np.ndarray], seconds: float = 0.0) -> dict[str, float | None]:
    """Summary metrics of an attack cell (:data:`SUMMARY_COLUMNS`) from its per-sample columns,
    computed by the one summary of attack results, :func:`advsmooth.attacks.summary.summarize`
    (rates over correctly classified inputs, norms and roughness over successful attacks on
    them, iterations and costs per attacked image). Undefined values (empty sets) are ``None``.
    """
    from ..attacks.summary import summarize as summarize_attack

    s = summarize_attack(cols)
    s["n_correct"] = s["attacked"]
    s["fooling_rate"] = s["success_rate"]
    return {c: _nan_to_none(s[c]) for c in SUMMARY_COLUMNS}


#: SQLite result codes that are about the disk or the file, not about the data
_SQLITE_OS_ERRORS = {
    "SQLITE_FULL": errno.ENOSPC, "SQLITE_READONLY": errno.EROFS, "SQLITE_CANTOPEN": errno.EACCES,
    "SQLITE_IOERR": errno.EIO, "SQLITE_PERM": errno.EACCES,
}
_SQLITE_MESSAGES = {"database or disk is full": "SQLITE_FULL",
                    "attempt to write a readonly database": "SQLITE_READONLY",
                    "unable to open database file": "SQLITE_CANTOPEN",
                    "disk I/O error": "SQLITE_IOERR"}


def _os_error(exc: sqlite3.Error, path: Path) -> OSError | None:
    """``exc`` as an ``OSError`` naming the store file when it is about the disk or the file
    (full disk, read-only file or folder, unreadable file), else ``None``."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    base = name if name in _SQLITE_OS_ERRORS else next(
        (code for text, code in _SQLITE_MESSAGES.items() if text in str(exc)),
        next((k for k in _SQLITE_OS_ERRORS if name.startswith(k + "_")), None))
    if base is None:
        return None
    message = str(exc).strip() or base
    if base == "SQLITE_READONLY":
        message = f"the result store is read-only ({message})"
    return OSError(_SQLITE_OS_ERRORS[base], message, str(path))


def batches_committed(out_dir: str | os.PathLike[str]) -> int:
    """How many work items (attack batches, study steps) the store in ``out_dir`` has committed;
    0 when there is no store yet. Read-only; used to count what an interrupted run computed."""
    path = Path(out_dir) / STORE_NAME
    if not path.is_file():
        return 0
    conn = Store._open_readonly(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
    except sqlite3.OperationalError:  # no batches table yet
        return 0
    finally:
        conn.close()


def _batch_insert(cell_id: str, batch: int, start: int, stop: int, run_id: int, rank: int,
                  seconds: float) -> tuple[str, Any, bool]:
    """The ``_tx`` statement recording batch (or step) ``batch`` of a cell, samples
    ``[start, stop)``, as committed."""
    return ("INSERT INTO batches VALUES (?,?,?,?,?,?,?,?,?)",
            (cell_id, int(batch), int(start), int(stop), int(stop) - int(start), run_id, rank,
             float(seconds), _now()), False)


def _mark_done(cell_id: str, meta: Mapping[str, Any], **values: Any) -> tuple[str, Any, bool]:
    """The ``_tx`` statement marking a cell done with the provenance ``meta`` and ``values``."""
    cols = {k: meta.get(k) for k in ("spec_hash", "advsmooth_version", "torch_version", "device",
                                     "data_hash", "checkpoint_hash")}
    cols.update(values)
    sets = ", ".join(f"{c}=?" for c in cols)
    return (f"UPDATE cells SET status='done', {sets} WHERE cell_id=?", (*cols.values(), cell_id),
            False)


class Store:
    """A result store at ``path`` (a ``results.sqlite`` file, or a directory holding one).

    Use as a context manager or call :meth:`close`. ``readonly=True`` opens an existing store
    without creating or migrating anything (also in a read-only folder).

    SQLite errors about the disk or the file — a full disk, a read-only store, an unreadable
    file — are raised as ``OSError`` naming the store (``errno.ENOSPC``, ``EROFS``, ...); a
    failed transaction is rolled back and leaves the store as it was.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        p = Path(path)
        if p.name != STORE_NAME and (p.is_dir() or p.suffix != ".sqlite"):
            p = p / STORE_NAME
        if p.is_dir():
            raise ValueError(f"{p} is a folder, not a result store: remove it or choose another "
                             "output folder")
        self.path = p
        self.readonly = readonly
        try:
            self._open(p, readonly)
        except sqlite3.DatabaseError as exc:
            if "not a database" not in str(exc) and "malformed" not in str(exc):
                raise
            raise ValueError(f"{p} is not an advsmooth result store ({exc}): remove it or choose "
                             "another output folder") from None
        self.conn.row_factory = sqlite3.Row

    def _open(self, p: Path, readonly: bool) -> None:
        with self._errors():
            if readonly:
                if not p.is_file():
                    raise FileNotFoundError(f"no result store at {p} (run `advsmooth run` "
                                            "first)")
                self.conn = self._open_readonly(p)
            else:
                try:
                    p.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise OSError(exc.errno, exc.strerror, str(p.parent)) from exc
                self.conn = sqlite3.connect(str(p), timeout=60, isolation_level=None)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.executescript(_SCHEMA)

    @staticmethod
    def _open_readonly(p: Path) -> sqlite3.Connection:
        """A read-only connection; in a folder where SQLite cannot create its shared-memory file
        (a read-only folder or medium) the file is opened as immutable instead."""
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=60)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
        conn = sqlite3.connect(f"file:{p}?immutable=1", uri=True, timeout=60)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Raise SQLite errors about the disk or the file as ``OSError`` naming the store."""
        try:
            yield
        except sqlite3.Error as exc:
            err = _os_error(exc, self.path)
            if err is None:
                raise
            raise err from exc

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _tx(self, statements: Iterable[tuple[str, Any, bool]]) -> None:
        """Run ``(sql, params, many)`` statements in one IMMEDIATE transaction.

        On any error the transaction is rolled back — unless SQLite already did (it does for a
        full disk, among others), so that the caller sees the original error."""
        with self._errors():
            cur = self.conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for sql, params, many in statements:
                    if many:
                        cur.executemany(sql, params)  # type: ignore[arg-type]
                    else:
                        cur.execute(sql, params)  # type: ignore[arg-type]
                cur.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    try:
                        self.conn.execute("ROLLBACK")
                    except sqlite3.Error:  # pragma: no cover - the original error matters
                        pass
                raise

    # -- runs and specs ------------------------------------------------------------------------
    def add_spec(self, spec_hash: str, name: str, spec_json: Mapping[str, Any],
                 toml_text: str) -> None:
        self._tx([
            ("INSERT OR IGNORE INTO specs VALUES (?,?,?,?,?)",
             (spec_hash, name, dumps(spec_json), toml_text, _now()), False),
            ("INSERT OR REPLACE INTO meta VALUES ('current_spec', ?)", (spec_hash,), False),
        ])

    def begin_run(self, spec_hash: str, world_size: int, device: str) -> int:
        with self._errors():
            cur = self.conn.execute(
                "INSERT INTO runs (spec_hash, started, world_size, device, pid, host) "
                "VALUES (?,?,?,?,?,?)",
                (spec_hash, _now(), world_size, device, os.getpid(), os.uname().nodename))
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int) -> None:
        with self._errors():
            self.conn.execute("UPDATE runs SET finished=? WHERE run_id=?", (_now(), run_id))

    def current_spec(self) -> tuple[str, dict[str, Any], str]:
        """``(hash, canonical spec dict, TOML text)`` of the spec last run into this store."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='current_spec'").fetchone()
        if row is None:
            raise ValueError(f"{self.path} holds no experiment (no spec recorded)")
        spec = self.conn.execute("SELECT spec_json, spec_toml FROM specs WHERE spec_hash=?",
                                 (row[0],)).fetchone()
        return row[0], json.loads(spec[0]), spec[1]

    # -- cells ---------------------------------------------------------------------------------
    def register_cells(self, spec_hash: str, cells: Sequence[Mapping[str, Any]]) -> None:
        """Insert cells not yet known (keeping finished ones) and map them to ``spec_hash``."""
        stmts: list[tuple[str, Any, bool]] = []
        for pos, c in enumerate(cells):
            stmts.append((
                "INSERT INTO cells (cell_id, kind, label, dataset, model, attack, task, "
                "params_json, config_json, n_samples, n_batches, batch_size, seed, spec_hash) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(cell_id) DO UPDATE SET "
                "label=excluded.label, dataset=excluded.dataset, model=excluded.model, "
                "attack=excluded.attack, task=excluded.task, config_json=excluded.config_json",
                (c["cell_id"], c["kind"], c["label"], c.get("dataset"), c.get("model"),
                 c.get("attack"), c.get("task"), dumps(c.get("params", {})),
                 dumps(c.get("config", {})), c.get("n_samples"), c.get("n_batches"),
                 c.get("batch_size"), c.get("seed"), spec_hash), False))
            stmts.append(("INSERT OR REPLACE INTO spec_cells VALUES (?,?,?)",
                          (spec_hash, c["cell_id"], pos), False))
        self._tx(stmts)

    def done_batches(self, cell_id: str) -> set[int]:
        rows = self.conn.execute("SELECT batch FROM batches WHERE cell_id=?", (cell_id,)).fetchall()
        return {int(r[0]) for r in rows}

    def cell_status(self, cell_id: str) -> str | None:
        row = self.conn.execute("SELECT status FROM cells WHERE cell_id=?", (cell_id,)).fetchone()
        return None if row is None else str(row[0])

    def commit_batch(self, cell_id: str, batch: int, start: int, cols: Mapping[str, np.ndarray],
                     *, run_id: int, rank: int, seconds: float) -> None:
        """Commit the per-sample rows of one batch (samples ``start .. start+len-1``) atomically."""
        n = len(cols["label"])
        idx = np.arange(start, start + n)
        data = [np.asarray(cols[c]) for c in SAMPLE_COLUMNS]
        rows = []
        for i in range(n):
            row: list[Any] = [cell_id, int(idx[i]), int(batch)]
            for name, col in zip(SAMPLE_COLUMNS, data):
                v = col[i]
                if name in _INT_COLUMNS:
                    row.append(int(v))
                else:
                    fv = float(v)
                    row.append(fv if math.isfinite(fv) else None)
            rows.append(row)
        marks = ",".join("?" * (3 + len(SAMPLE_COLUMNS)))
        self._tx([
            (f"INSERT INTO samples VALUES ({marks})", rows, True),
            _batch_insert(cell_id, batch, start, start + n, run_id, rank, seconds),
        ])

    def artefact_keys(self) -> set[str]:
        """The keys of every step artefact recorded in the store (none before the first)."""
        try:
            return {str(r[0]) for r in self.conn.execute("SELECT key FROM artefacts")}
        except sqlite3.OperationalError:  # a store that never ran a planned study
            return set()

    def reopen_steps(self, cell_id: str, steps: Sequence[int]) -> None:
        """Forget that the steps ``steps`` of a planned study cell were done (and the cell's rows,
        so that it is finished again once they are redone), atomically."""
        self._tx([("DELETE FROM batches WHERE cell_id=? AND batch=?",
                   [(cell_id, int(b)) for b in steps], True),
                  ("DELETE FROM study_rows WHERE cell_id=?", (cell_id,), False),
                  ("UPDATE cells SET status='pending' WHERE cell_id=?", (cell_id,), False)])

    def commit_step(self, cell_id: str, step: int, *, run_id: int, rank: int,
                    seconds: float) -> None:
        """Record step ``step`` of a planned study cell as done (its output is an artefact)."""
        self._tx([_batch_insert(cell_id, step, step, step + 1, run_id, rank, seconds)])

    def commit_study(self, cell_id: str, rows: Sequence[Mapping[str, Any]], *, run_id: int,
                     rank: int, seconds: float, meta: Mapping[str, Any],
                     planned: bool = False) -> None:
        """Commit the rows of a study cell and mark it done, atomically. ``planned``: the cell's
        steps were recorded one by one (:meth:`commit_step`), so no batch row is added."""
        batch = [] if planned else [_batch_insert(cell_id, 0, 0, len(rows), run_id, rank, seconds)]
        self._tx([
            ("INSERT INTO study_rows VALUES (?,?,?)",
             [(cell_id, i, json.dumps(dict(r), default=_json_default))
              for i, r in enumerate(rows)], True),
            *batch,
            _mark_done(cell_id, meta, seconds=float(seconds), finished=_now()),
        ])

    def add_cell_weights(self, cell_id: str, weights: Mapping[str, str]) -> None:
        """Record that computing ``cell_id`` used the zoo models ``weights`` (name → weight hash;
        kept over runs, so a resumed study cell still knows the models of its earlier steps)."""
        self._tx([("INSERT OR REPLACE INTO cell_weights VALUES (?,?,?)",
                   [(cell_id, str(n), str(h)) for n, h in weights.items()], True)])

    def cell_weights(self, cell_id: str) -> dict[str, str]:
        """The zoo models recorded for ``cell_id`` and their weight hashes, by name (none in a
        store written before the table existed)."""
        try:
            rows = self.conn.execute("SELECT model, hash FROM cell_weights WHERE cell_id=? "
                                     "ORDER BY model", (cell_id,)).fetchall()
        except sqlite3.OperationalError as exc:  # a read-only store from before the table
            if "no such table" not in str(exc):
                raise
            return {}
        return {m: h for m, h in rows}

    def finalize_cell(self, cell_id: str, meta: Mapping[str, Any]) -> dict[str, Any]:
        """Compute the summary of an attack cell from its samples and mark it done."""
        cols = self.samples(cell_id)
        secs = self.conn.execute("SELECT COALESCE(SUM(seconds),0), MIN(committed), MAX(committed) "
                                 "FROM batches WHERE cell_id=?", (cell_id,)).fetchone()
        summary = summarize(cols)
        n = len(cols["label"])
        self._tx([_mark_done(cell_id, meta, **{c: summary[c] for c in SUMMARY_COLUMNS},
                             seconds=float(secs[0]), seconds_per_sample=float(secs[0]) / n
                             if n else None, started=secs[1], finished=secs[2])])
        return summary

    # -- reading -------------------------------------------------------------------------------
    def cell_seconds(self, cell_id: str) -> float:
        """Seconds spent on the committed batches (or steps) of a cell."""
        return float(self.conn.execute("SELECT COALESCE(SUM(seconds),0) FROM batches WHERE "
                                       "cell_id=?", (cell_id,)).fetchone()[0])

    def cells(self, spec_hash: str | None = None) -> list[dict[str, Any]]:
        """Cells of ``spec_hash`` (default: the current spec) in spec order, as dicts with
        ``params`` and ``config`` decoded."""
        if spec_hash is None:
            spec_hash = self.current_spec()[0]
        rows = self.conn.execute(
            "SELECT c.*, s.position FROM cells c JOIN spec_cells s ON s.cell_id=c.cell_id "
            "WHERE s.spec_hash=? ORDER BY s.position", (spec_hash,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["params"] = json.loads(d.pop("params_json") or "{}")
            d["config"] = json.loads(d.pop("config_json") or "{}")
            out.append(d)
        return out

    def samples(self, cell_id: str) -> dict[str, np.ndarray]:
        """Per-sample columns of a cell ordered by sample index (``idx`` and ``batch`` included)."""
        names = ("idx", "batch", *SAMPLE_COLUMNS)
        rows = self.conn.execute(f"SELECT {', '.join(names)} FROM samples WHERE cell_id=? "
                                 "ORDER BY idx", (cell_id,)).fetchall()
        out: dict[str, np.ndarray] = {}
        for j, name in enumerate(names):
            if name in _INT_COLUMNS or name in ("idx", "batch"):
                out[name] = np.array([r[j] for r in rows], dtype=np.int64)
            else:
                out[name] = np.array([np.nan if r[j] is None else r[j] for r in rows],
                                     dtype=np.float64)
        return out

    def study_rows(self, cell_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT data_json FROM study_rows WHERE cell_id=? ORDER BY row",
                                 (cell_id,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def batch_log(self) -> list[dict[str, Any]]:
        """Every committed batch: cell_id, batch, run_id, rank, n."""
        rows = self.conn.execute("SELECT cell_id, batch, run_id, rank, n FROM batches "
                                 "ORDER BY cell_id, batch").fetchall()
        return [dict(r) for r in rows]

    def snapshot(self, *, exclude: Iterable[str] = TIMING_COLUMNS
                 ) -> dict[str, list[tuple[Any, ...]]]:
        """The contents of ``cells``, ``samples`` and ``study_rows`` (sorted rows), without the
        columns in ``exclude`` — for comparing two runs of the same spec."""
        skip = set(exclude)
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table, order in (("cells", "cell_id"), ("samples", "cell_id, idx"),
                             ("study_rows", "cell_id, row")):
            cols = [r[1] for r in self.conn.execute(f"PRAGMA table_info({table})").fetchall()
                    if r[1] not in skip]
            rows = self.conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}")
            out[table] = [tuple(r) for r in rows.fetchall()]
        return out
