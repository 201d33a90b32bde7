"""Reporting: figures (matplotlib, optional extra ``plot``), tables and reports.

Submodules: :mod:`advsmooth.report.figures` (perturbation grids, fooling rate vs σ). Other
modules of this package are imported by their own name. matplotlib is imported lazily, only when
a figure is drawn.
"""

from .figures import fooling_rate_vs_sigma, perturbation_grid

__all__ = ["perturbation_grid", "fooling_rate_vs_sigma"]

from .html import build_report  # noqa: E402
from .tables import Table, build_tables  # noqa: E402

__all__ += ["build_report", "build_tables", "Table"]
