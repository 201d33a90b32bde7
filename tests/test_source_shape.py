"""The source stays readable: no function in ``src/`` is longer than 80 lines, and a public
constructor with more than 12 parameters says why in a comment (``# N parameters: …``)
right above its ``def``. The walkers are tested on planted code so that they cannot pass
vacuously."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

MAX_LINES = 80
MAX_PARAMS = 12


def long_functions(path: Path, text: str | None = None) -> list[str]:
    """``path:line name (n lines)`` for every function longer than :data:`MAX_LINES`, counted
    from its first decorator (or ``def``) to its last line."""
    tree = ast.parse(path.read_text(encoding="utf-8") if text is None else text)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            length = (node.end_lineno or node.lineno) - start + 1
            if length > MAX_LINES:
                out.append(f"{path}:{node.lineno} {node.name} ({length} lines)")
    return out


def wide_constructors(path: Path, text: str | None = None) -> list[str]:
    """Public classes whose ``__init__`` takes more than :data:`MAX_PARAMS` parameters
    (``self`` excluded) and no ``# N parameters: …`` comment (N the true count) in the comment
    block right above the ``def``."""
    src = path.read_text(encoding="utf-8") if text is None else text
    lines = src.splitlines()
    out = []
    for cls in ast.walk(ast.parse(src)):
        if not isinstance(cls, ast.ClassDef) or cls.name.startswith("_"):
            continue
        for node in cls.body:
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                a = node.args
                count = len(a.posonlyargs) + len(a.args) - 1 + len(a.kwonlyargs)
                above = []
                for line in reversed(lines[:node.lineno - 1]):
                    if not line.strip().startswith("#"):
                        break
                    above.append(line.strip())
                said = any(c.startswith(f"# {count} parameters:") for c in above)
                if count > MAX_PARAMS and not said:
                    out.append(f"{path}:{node.lineno} {cls.name}.__init__ ({count} parameters)")
    return out


SOURCES = sorted((REPO / "src").rglob("*.py"))


def test_no_function_longer_than_80_lines() -> None:
    hits = [h for p in SOURCES for h in long_functions(p)]
    assert hits == [], "\n".join(hits)


def test_wide_public_constructors_say_why() -> None:
    hits = [h for p in SOURCES for h in wide_constructors(p)]
    assert hits == [], "\n".join(hits)


@pytest.mark.parametrize("body_lines, flagged", [(MAX_LINES - 2, False), (MAX_LINES - 1, True)])
def test_length_walker_counts_decorators_and_body(body_lines: int, flagged: bool) -> None:
    # decorator + def + body: body_lines + 2 lines in all
    text = "@staticmethod\ndef f():\n" + "    x = 1\n" * (body_lines - 1) + "    return x\n"
    assert bool(long_functions(Path("planted.py"), text)) is flagged


def test_constructor_walker_sees_width_and_the_comment() -> None:
    params = ", ".join(f"p{i}=0" for i in range(MAX_PARAMS + 1))
    wide = f"class A:\n    def __init__(self, *, {params}):\n        pass\n"
    n = MAX_PARAMS + 1
    said = f"class A:\n    # {n} parameters: the paper's knobs\n" \
           f"    def __init__(self, *, {params}):\n        pass\n"
    miscounted = f"class A:\n    # {n + 1} parameters: the paper's knobs\n" \
                 f"    def __init__(self, *, {params}):\n        pass\n"
    narrow = "class A:\n    def __init__(self, a, b):\n        pass\n"
    private = f"class _A:\n    def __init__(self, *, {params}):\n        pass\n"
    assert wide_constructors(Path("p.py"), wide)
    assert not wide_constructors(Path("p.py"), said)
    assert wide_constructors(Path("p.py"), miscounted)
    assert not wide_constructors(Path("p.py"), narrow)
    assert not wide_constructors(Path("p.py"), private)
