"""``advsmooth run SPEC.toml --out DIR``: run (or resume) an experiment spec.

Under ``torchrun --nproc_per_node=N -m advsmooth run SPEC.toml`` the samples are sharded over
the N processes and rank 0 writes the store.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._common import (
    add_common,
    check_out_dir,
    models_dir_env,
    resolve_device,
    write_report,
)


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run", help="run or resume an experiment spec (TOML) into a result store",
        description="Validate SPEC, expand its grid into cells and run every batch not yet in "
                    "DIR/results.sqlite (re-running resumes). Exit status 2 on an invalid spec.")
    p.add_argument("spec", help="experiment spec (TOML), e.g. experiments/digits_deepfool.toml")
    p.add_argument("--out", "-o", default=None,
                   help="output directory (default: runs/<spec name>)")
    add_common(p, device=None, device_first=True)
    p.add_argument("--save-adversarial", action="store_true", default=None,
                   help="also save adversarial examples as .npz artefacts")
    p.add_argument("--check", action="store_true",
                   help="only validate the spec and list its cells; run nothing")
    p.add_argument("--report", action="store_true",
                   help="write the report (advsmooth report DIR) after the run")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="quick look: replace every dataset's selection by a seeded random sample "
                        "of N images and every study's n by N (the modified spec is what the "
                        "store records, so its results never mix with the full run's)")
    p.set_defaults(func=_main)
    return p


def _main(args: argparse.Namespace) -> int:
    from ..experiments import SpecError, expand_cells, load_spec, run_spec
    from ..experiments.store import batches_committed
    from ..report.results import git_info, record_invocation

    t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    code = git_info()  # the code this process imported, before anything can change it
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        print(f"advsmooth run: error: {exc}", file=sys.stderr)
        return 2
    spec_text = None
    if args.sample is not None:
        spec = with_sample(spec, args.sample)
    if args.check:
        cells = expand_cells(spec)
        print(f"{args.spec}: valid; {len(cells)} cell(s)")
        for c in cells:
            where = f"{c.dataset.key}/{c.model.key}" if c.dataset and c.model else "study"
            print(f"  {c.cell_id}  {where:28s} {c.label}")
        return 0
    if args.device is not None:
        resolve_device(args.device)
    else:
        resolve_device(spec.device, option="the spec's device")
    out = Path(args.out) if args.out is not None else Path("runs") / spec.name
    check_out_dir(out)
    before = batches_committed(out)
    try:
        with models_dir_env(args.models_dir), _sigterm_interrupts():
            result = run_spec(spec if args.sample is not None else args.spec, args.out,
                              device=args.device, data_root=args.data_root,
                              progress=not args.no_progress,
                              save_adversarial=args.save_adversarial, spec_text=spec_text)
    except KeyboardInterrupt:
        # an interrupted run (Ctrl-C, SIGTERM) still leaves the record of what it computed, so
        # the provenance of a long, resumed experiment names every command and commit behind it
        if os.environ.get("RANK", "0") == "0" and out.is_dir():
            record_invocation(out, getattr(args, "argv", None) or sys.argv[1:], started=started,
                              wall_seconds=time.perf_counter() - t0, code=code,
                              computed=batches_committed(out) - before, interrupted=True)
        raise
    if result.rank == 0:
        print(result)
        record_invocation(result.out_dir, getattr(args, "argv", None) or sys.argv[1:],
                          started=started, wall_seconds=time.perf_counter() - t0, code=code,
                          computed=result.computed_batches)
        if args.report:
            print(f"report: {write_report(result.out_dir, 'run')['html']}")
    return 0


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While running, SIGTERM raises ``KeyboardInterrupt`` like Ctrl-C (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def with_sample(spec: Any, n: int) -> Any:
    """``spec`` with every dataset drawing a seeded random sample of ``n`` images and every study
    parameter ``n`` set to ``n`` (``--sample``); ``ValueError`` if ``n < 1``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--sample must be a positive integer, got {n!r}")
    datasets = [d.model_copy(update={"sample": n, "n": None}) for d in spec.datasets]
    studies = [s.model_copy(update={"params": {**s.params, "n": n}}) if "n" in s.params else s
               for s in spec.studies]
    return spec.model_copy(update={"datasets": datasets, "studies": studies})
