"""The reproduction scoreboard: paper claims against committed results, with a verdict each.

A claims file (TOML, e.g. ``experiments/results/claims.toml``) lists ``[[claims]]``::

    [[claims]]
    claim = "DeepFool ρ_adv (ℓ2), LeNet, MNIST"     # what is claimed (and on which model)
    paper = "DeepFool (arXiv:1511.04599), Table 1"  # where the paper states it
    paper_value = 0.20                              # the number, for the verdict
    paper_text = "2.0 × 10⁻¹"                       # the number exactly as printed
    results = "mnist_deepfool/table1.csv"           # a committed results table (CSV), relative
    row = { model = "mnist-lenet" }                 #   to the claims file's folder; the rows
    column = "deepfool[norm=2] ρ_adv"               #   whose fields equal ``row``, this column
    n_column = "deepfool[norm=2] n"                 # optional: the number of images
    divide_by = { results = "...", row = {...}, column = "..." }   # optional: a ratio
    rule = { kind = "rel", tol = 0.2, partly = 0.5 }               # optional (see below)

The measured value is the column's value in the matching row; where several rows match
(repeated runs) it is their mean ± standard deviation. Verdict rules (``[defaults] rule`` sets the
default):

* ``rel`` — *reproduced* if ``|measured / paper − 1| ≤ tol``, *partly* if ``≤ partly``, else
  *not*;
* ``min`` — *reproduced* if ``measured ≥ min``, *partly* if ``measured ≥ partly``, else *not*
  (claims of a trend, e.g. a ratio above one).

A results cell ``"≥ v"`` (a σ^A% that the grid does not reach: the value is at least ``v``) is a
lower bound: *not* if ``v`` already lies beyond the ``partly`` tolerance above the paper's value
(``rel``) or meets ``min`` (``min``: *reproduced*), else *open* — the run cannot tell.

A claim without ``results``, or whose results file is not there or has no rows, is *not run*.
:func:`render` makes the Markdown table; :func:`sync_readme` writes it between the markers
``<!-- scoreboard:begin -->`` and ``<!-- scoreboard:end -->`` of a README, or checks that it is
there unchanged (``advsmooth scoreboard --write`` / ``--check``).
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tables import LOWER_BOUND

__all__ = ["Claim", "Score", "load_claims", "score", "verdict", "render", "sync_readme", "BEGIN",
           "END"]

BEGIN = "<!-- scoreboard:begin -->"
END = "<!-- scoreboard:end -->"
_RULE_KINDS = {"rel": ("tol", "partly"), "min": ("min", "partly")}
_CLAIM_KEYS = {"claim", "paper", "paper_value", "paper_text", "results", "row", "column",
               "n_column", "divide_by", "rule"}


@dataclass(frozen=True)
class Claim:
    """One claim of a claims file (see the module docstring)."""

    claim: str
    paper: str
    paper_value: float | None
    paper_text: str
    ref: dict[str, Any] | None
    n_column: str | None
    divide_by: dict[str, Any] | None
    rule: dict[str, Any]


@dataclass(frozen=True)
class Score:
    """A claim with its measured value (``None``: not run), ``n`` and verdict."""

    claim: Claim
    values: tuple[float, ...]
    n: tuple[float, ...]
    verdict: str
    #: the values are lower bounds (``"≥ v"`` cells)
    lower_bound: bool = False

    @property
    def measured(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None


def _check_ref(ref: Any, where: str) -> dict[str, Any]:
    if not isinstance(ref, Mapping) or not isinstance(ref.get("results"), str) \
            or not isinstance(ref.get("column"), str) \
            or not isinstance(ref.get("row", {}), Mapping):
        raise ValueError(f"{where}: needs results (a CSV path), column (a header) and row (a "
                         "table of field = value)")
    return {"results": ref["results"], "row": dict(ref.get("row", {})), "column": ref["column"]}


def _check_rule(rule: Any, where: str) -> dict[str, Any]:
    if not isinstance(rule, Mapping) or rule.get("kind") not in _RULE_KINDS:
        raise ValueError(f"{where}: rule.kind must be one of {sorted(_RULE_KINDS)}")
    need = _RULE_KINDS[rule["kind"]]
    bad = [k for k in need if isinstance(rule.get(k), bool)
           or not isinstance(rule.get(k), int | float)]
    if bad or set(rule) - {"kind", *need}:
        raise ValueError(f"{where}: a {rule['kind']!r} rule has exactly the numbers {list(need)}")
    return dict(rule)


def load_claims(path: str | os.PathLike[str]) -> list[Claim]:
    """Parse and check a claims file (``ValueError`` naming the claim and what is wrong)."""
    with open(path, "rb") as f:
        try:
            doc = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a UTF-8 text file") from None
    defaults, claims = doc.get("defaults", {}), doc.get("claims", [])
    if not isinstance(defaults, Mapping):
        raise ValueError(f"{path}: defaults must be a table ([defaults])")
    if not isinstance(claims, list) or not all(isinstance(c, Mapping) for c in claims):
        raise ValueError(f"{path}: claims must be an array of tables ([[claims]])")
    default = defaults.get("rule", {"kind": "rel", "tol": 0.2, "partly": 0.5})
    out = []
    for i, c in enumerate(claims):
        where = f"{path}: claims[{i}]"
        unknown = sorted(set(c) - _CLAIM_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; expected {sorted(_CLAIM_KEYS)}")
        for key in ("claim", "paper", "paper_text"):
            if not isinstance(c.get(key), str) or not c[key]:
                raise ValueError(f"{where}: {key} must be a non-empty string")
        pv = c.get("paper_value")
        if pv is not None and (isinstance(pv, bool) or not isinstance(pv, int | float)
                               or not math.isfinite(pv)):
            raise ValueError(f"{where}: paper_value must be a finite number")
        ref = _check_ref(c, where) if "results" in c else None
        if ref is not None and pv is None:
            raise ValueError(f"{where}: a claim with results needs paper_value for its verdict")
        rule = _check_rule(c.get("rule", default), where)
        if rule["kind"] == "rel" and pv == 0:
            raise ValueError(f"{where}: a 'rel' rule compares measured / paper_value and needs a "
                             "non-zero paper_value (use a 'min' rule for a bound)")
        out.append(Claim(c["claim"], c["paper"], None if pv is None else float(pv),
                         c["paper_text"], ref, c.get("n_column"),
                         _check_ref(c["divide_by"], f"{where}.divide_by")
                         if "divide_by" in c else None, rule))
    return out


def _rows(root: Path, ref: Mapping[str, Any]) -> list[dict[str, str]] | None:
    path = root / ref["results"]
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        every = list(csv.DictReader(f))
    if not every:  # a table without rows: e.g. a study cell that has not finished
        return None
    rows = [r for r in every if all(r.get(k) == str(v) for k, v in ref["row"].items())]
    if not rows:
        raise ValueError(f"{path}: no row with {ref['row']}")
    if ref["column"] not in rows[0]:
        raise ValueError(f"{path}: no column {ref['column']!r}; columns: {list(rows[0])}")
    return rows


def _number(v: str | None, where: str = "") -> float:
    if v in (None, ""):
        return math.nan
    try:
        return float(v.removeprefix(LOWER_BOUND).strip())  # type: ignore[union-attr]
    except ValueError:
        raise ValueError(f"{where}: {v!r} is not a number") from None


def _is_bound(v: str | None) -> bool:
    return bool(v) and v.startswith(LOWER_BOUND)  # type: ignore[union-attr]


def verdict(rule: Mapping[str, Any], measured: float, paper: float, *,
            lower_bound: bool = False) -> str:
    """``"reproduced"``, ``"partly"``, ``"not"`` (or ``"open"`` for an undecided
    ``lower_bound``) by ``rule`` (see the module docstring)."""
    if math.isnan(measured):
        return "not"
    if lower_bound:
        if rule["kind"] == "rel":
            return "not" if measured > paper * (1.0 + rule["partly"]) else "open"
        return "reproduced" if measured >= rule["min"] else "open"
    if rule["kind"] == "rel":
        dev = abs(measured / paper - 1.0) if paper != 0 else abs(measured)
        return "reproduced" if dev <= rule["tol"] else "partly" if dev <= rule["partly"] \
            else "not"
    return "reproduced" if measured >= rule["min"] else "partly" \
        if measured >= rule["partly"] else "not"


def score(claims: Sequence[Claim], root: str | os.PathLike[str]) -> list[Score]:
    """Measure every claim from the results under ``root`` (the claims file's folder)."""
    base = Path(root)
    out = []
    for c in claims:
        rows = _rows(base, c.ref) if c.ref is not None else None
        div = _rows(base, c.divide_by) if c.divide_by is not None else None
        if rows is None or (c.divide_by is not None and div is None):
            out.append(Score(c, (), (), "not run"))
            continue
        col = c.ref["column"]  # type: ignore[index]
        where = f"{base / c.ref['results']}, column {col!r}"  # type: ignore[index]
        vals = [_number(r[col], where) for r in rows]
        bound = any(_is_bound(r[col]) for r in rows)
        if div is not None:
            dc = c.divide_by["column"]  # type: ignore[index]
            dwhere = f"{base / c.divide_by['results']}, column {dc!r}"  # type: ignore[index]
            d = statistics.fmean(_number(r[dc], dwhere) for r in div)
            if d == 0:
                raise ValueError(f"{dwhere}: divide_by is 0 in the rows {c.divide_by['row']} "
                                 f"(claim {c.claim!r})")
            vals = [v / d for v in vals]
        ns = (tuple(_number(r.get(c.n_column), f"{where} n_column") for r in rows)
              if c.n_column else ())
        m = statistics.fmean(vals)
        assert c.paper_value is not None
        out.append(Score(c, tuple(vals), ns,
                         verdict(c.rule, m, c.paper_value, lower_bound=bound), bound))
    return out


def _fmt(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:.3g}"


def render(scores: Sequence[Score], *, link_root: str = "results") -> str:
    """The scoreboard as a Markdown table (claim, paper, paper value, measured, n, verdict)."""
    lines = ["| claim | paper | paper value | measured | n | verdict |",
             "| --- | --- | --- | --- | --- | --- |"]
    for s in scores:
        c = s.claim
        if not s.values:
            measured = "–"
        elif len(s.values) == 1:
            measured = _fmt(s.values[0])
        else:
            measured = f"{_fmt(statistics.fmean(s.values))} ± {_fmt(statistics.stdev(s.values))}"
        if s.lower_bound and s.values:
            measured = f"{LOWER_BOUND} {measured}"
        if c.ref is not None and s.values:
            measured = f"[{measured}]({link_root}/{c.ref['results']})"
        n = "–"
        if s.n and not any(math.isnan(v) for v in s.n):
            n = f"{int(s.n[0]):,}" if len(s.n) == 1 else f"{len(s.n)} × {int(s.n[0]):,}"
        lines.append(f"| {c.claim} | {c.paper} | {c.paper_text} | {measured} | {n} | "
                     f"{s.verdict} |")
    return "\n".join(lines) + "\n"


def sync_readme(readme: str | os.PathLike[str], table: str, *, write: bool) -> bool:
    """Whether ``readme`` holds ``table`` between :data:`BEGIN` and :data:`END`; with ``write``
    the block is replaced by ``table`` first (``ValueError`` if the markers are missing)."""
    path = Path(readme)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{path} must hold one {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    new = f"{head}{BEGIN}\n{table}{END}{tail}"
    if write and new != text:
        path.write_text(new, encoding="utf-8")
        return True
    return new == text
