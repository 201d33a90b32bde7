"""advsmooth: adversarial robustness through smoothness, in PyTorch.

Submodules: :mod:`advsmooth.data`, :mod:`advsmooth.models`, :mod:`advsmooth.attacks`,
:mod:`advsmooth.defenses`, :mod:`advsmooth.metrics`, :mod:`advsmooth.filters`.

>>> import advsmooth as asm
>>> asm.__version__  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("attacks", "data", "defenses", "filters", "metrics", "models", "report")


def __getattr__(name: str) -> Any:  # lazy submodule import keeps `import advsmooth` fast
    if name == "evaluate":  # advsmooth.evaluate(model, x, y, eps=...): the robustness report
        from .metrics.evaluation import evaluate

        globals()[name] = evaluate
        return evaluate
    if name in _SUBMODULES:
        module = importlib.import_module(f"advsmooth.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'advsmooth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES, "evaluate"])
