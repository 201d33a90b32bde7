"""``advsmooth report DIR``: Markdown/CSV/JSON tables, PNG/SVG figures and a self-contained
``report.html`` from the result store of an experiment directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="write tables, figures and report.html from an experiment's result store",
        description="Read DIR/results.sqlite (written by `advsmooth run`) and write DIR/report/: "
                    "tables (md, csv, json), figures (png, svg), report.md and a self-contained "
                    "report.html that opens offline; with --results also the files to "
                    "commit as a spec's results.")
    p.add_argument("dir", help="experiment output directory (holding results.sqlite)")
    p.add_argument("--out", "-o", default=None, help="report folder (default: DIR/report)")
    p.add_argument("--no-figures", action="store_true",
                   help="tables only (also what happens, with a note, without matplotlib)")
    p.add_argument("--results", default=None, metavar="RESULTS_DIR",
                   help="also write the small tables (csv, md), the spec and provenance.json "
                        "(commit, date, machine, commands, wall time, n) into RESULTS_DIR, e.g. "
                        "experiments/results/<spec> for committing")
    p.set_defaults(func=_main)
    return p


def _main(args: argparse.Namespace) -> int:
    from . import UserError
    from ._common import check_out_dir, write_report

    folder = Path(args.dir)
    if not folder.is_dir():
        raise UserError(f"{args.dir}: no such experiment folder")
    check_out_dir(args.out if args.out is not None else folder / "report",
                  "--out" if args.out is not None else "report folder")
    paths = write_report(args.dir, "report", report_dir=args.out, figures=not args.no_figures)
    print(f"{len(paths['tables']) // 3} table(s), {len(paths['figures']) // 2} figure(s) -> "
          f"{paths['dir']}")
    print(f"open {paths['html']}")
    if args.results is not None:
        from ..report.results import write_results

        prov = write_results(args.dir, args.results)
        print(f"{len(prov['files'])} result file(s) -> {args.results}")
    return 0
