"""advsmooth benchmark suites: speed and cost against peers and against bare PyTorch lower bounds.

Usage (from the repository root; the peers live in a separate venv, see benchmarks/README.md)::

    .venv-peers/bin/python benchmarks/run.py --suite deepfool|engine|smoothing|all \
        [--quick] [--peers all|none|foolbox,torchattacks,art] [--out benchmarks/results]

Each suite writes ``<out>/<suite>.json`` (every number, raw repeat times, machine information)
and ``<out>/<suite>.md`` (the tables). Wall times are medians over ``--repeats`` repeats run
interleaved (the order of the contestants rotates every repeat), after one untimed warm-up each,
with ``torch.set_num_threads(--threads)`` (default 2).

``--quick`` is a smoke mode (a few images, one repeat, digits only): it checks that the harness
runs, not how fast anything is.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

os.environ.setdefault("ADVSMOOTH_NO_PROGRESS", "1")
# OpenMP threads that spin while waiting are pathological on a shared, oversubscribed CPU (measured
# here: 2 spinning threads 5x slower than 1 thread at load 30 on 2 cores); passive waiting costs
# nothing on an idle machine. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import _harness as H  # noqa: E402
import _peers as P  # noqa: E402
import torch  # noqa: E402

SUITES = ("deepfool", "engine", "smoothing")
PEERS = ("foolbox", "torchattacks", "art")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=(*SUITES, "all"), default="all")
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: digits only, few images, 1 repeat (no meaningful timings)")
    p.add_argument("--peers", default="all",
                   help="'all' (those installed), 'none', or a comma list of "
                        "foolbox,torchattacks,art")
    p.add_argument("--out", default=str(HERE / "results"), help="output folder")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3, quick 1)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per attack call, same for every library (default 500; quick 8)")
    p.add_argument("--cases", default=None,
                   help="deepfool cases, comma list of digits,digits-resnet20,mnist,cifar10 "
                        "(default all)")
    p.add_argument("--limit", type=int, default=None,
                   help="attack only the first N correctly classified images of each case")
    p.add_argument("--slow-subset", type=int, default=None,
                   help="images torchattacks DeepFool (a per-sample loop) is timed on; its time "
                        "is extrapolated to the full set (default digits/mnist 100, cifar10 40)")
    p.add_argument("--peer-subset", default="",
                   help="time Foolbox/ART DeepFool on the first N images of a case and "
                        "extrapolate, "
                        "e.g. 'mnist=300,cifar10=150' (default: the whole set)")
    p.add_argument("--variants", default=None,
                   help="advsmooth DeepFool rows, comma list (default all: advsmooth, "
                        "advsmooth-clip, advsmooth-clip-clamp, advsmooth-paper, "
                        "advsmooth-all-faces)")
    p.add_argument("--no-smoothfool", action="store_true")
    p.add_argument("--smoothfool-cases", default="digits",
                   help="cases for the SmoothFool comparison (comma list; default digits)")
    p.add_argument("--smoothfool-limit", type=int, default=None)
    p.add_argument("--sigmas", default=None, help="SmoothFool σg values (default 2,5; quick 2)")
    p.add_argument("--models", default=None,
                   help="engine/smoothing models, comma list of digits-lenet,mnist-lenet,"
                        "cifar10-resnet20 (default: per suite)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.batch_size = args.batch_size or (8 if args.quick else 500)
    args.cases = (args.cases or ("digits" if args.quick
                                 else "digits,digits-resnet20,mnist,cifar10")).split(",")
    args.variants = (args.variants.split(",") if args.variants
                     else list(P.ADVSMOOTH_DEEPFOOL))
    bad = [v for v in args.variants if v not in P.ADVSMOOTH_DEEPFOOL]
    if bad:
        raise SystemExit(f"unknown --variants {bad}; choose from {list(P.ADVSMOOTH_DEEPFOOL)}")
    args.smoothfool_cases = args.smoothfool_cases.split(",") if args.smoothfool_cases else []
    args.sigmas = args.sigmas or ("2" if args.quick else "2,5")
    args.sigmas = [float(s) for s in args.sigmas.split(",") if s]
    if args.quick and args.limit is None:
        args.limit = 8
    if args.quick and args.smoothfool_limit is None:
        args.smoothfool_limit = 4
    if args.quick and args.slow_subset is None:
        args.slow_subset = 4
    args.models = args.models.split(",") if args.models else None
    args.peer_subset = {k: int(v) for k, v in
                        (item.split("=") for item in args.peer_subset.split(",") if item)}
    return args


def select_peers(spec: str) -> list[str]:
    if spec == "none":
        return []
    wanted = list(PEERS) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    bad = [w for w in wanted if w not in PEERS]
    if bad:
        raise SystemExit(f"unknown peer(s) {bad}; choose from {PEERS}")
    have = [w for w in wanted if H.peer_available(w)]
    missing = sorted(set(wanted) - set(have))
    if missing and spec != "all":
        raise SystemExit(f"peer(s) not installed: {missing}")
    return have


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    peers = select_peers(args.peers)
    out = Path(args.out)
    suites = SUITES if args.suite == "all" else (args.suite,)

    def log(msg: str) -> None:
        print(msg, flush=True)

    for suite in suites:
        info = H.machine_info(args.threads)
        t0 = time.perf_counter()
        log(f"== suite {suite} (peers: {', '.join(peers) or 'none'})")
        if suite == "deepfool":
            import bench_deepfool as B
            payload: dict[str, Any] = B.run(args, [*args.variants, *peers], log)
        elif suite == "engine":
            import bench_engine as B
            payload = B.run(args, ["advsmooth", *peers], log)
        else:
            import bench_smoothing as B
            payload = B.run(args, log)
        info["suite_seconds"] = round(time.perf_counter() - t0, 1)
        info["loadavg_end"] = H.loadavg()
        info["quick"] = bool(args.quick)
        payload = {"machine": info, "argv": list(sys.argv[1:] if argv is None else argv),
                   **payload}
        jp, mp = H.write_outputs(out, suite, payload, B.markdown(payload))
        log(f"   wrote {jp} and {mp} ({info['suite_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
