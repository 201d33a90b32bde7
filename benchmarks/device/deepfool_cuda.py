"""DeepFool L2 ``clip=True`` on a GPU: advsmooth against Foolbox, side by side in one process.

Run on the device machine by ``benchmarks/device/check.sh`` (or anywhere: it falls back to the
CPU when CUDA is absent, and leaves Foolbox out when it is not installed). Per model: the first
``--limit`` correctly classified test images, batches of ``--batch-size``, the same images for
both libraries, ``--repeats`` interleaved repeats with ``torch.cuda.synchronize()`` around each
timed call, median wall time; success, median L2 and the paired median L2 ratio are judged by
one shared function (the model's own forward on the returned images). Overshoot 0.02, 50
iterations, 10 candidates, as in ``benchmarks/README.md``.

    python3 benchmarks/device/deepfool_cuda.py [--limit 512] [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import _harness as H  # noqa: E402
import _peers as P  # noqa: E402

import advsmooth as asm  # noqa: E402

CASES = [("mnist-lenet", "mnist", {"sample": 1000, "seed": 0}),
         ("cifar10-resnet20", "cifar10", {"sample": 1000, "seed": 0})]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run_case(name: str, ds: str, kw: dict, dev: torch.device, args: argparse.Namespace) -> dict:
    model = H.frozen(asm.models.load(name, device=dev, verbose=False))
    x, y = asm.data.load(ds, "test", **kw)
    x, y = x.to(dev), y.to(dev)
    ok = H.predict(model, x) == y
    x, y = x[ok][:args.limit].contiguous(), y[ok][:args.limit]
    common = {"overshoot": 0.02, "steps": 50, "candidates": 10, "batch_size": args.batch_size,
              "input_shape": tuple(x.shape[1:]), "num_classes": 10}
    libs = {"advsmooth-clip": P.deepfool("advsmooth-clip", model, clip=True, **common)}
    if importlib.util.find_spec("foolbox") is not None:
        libs["foolbox"] = P.deepfool("foolbox", model, **common)
    for run in libs.values():  # warm-up (cuDNN autotuning, the fast copy), not timed
        run(x[:16], y[:16])
    times: dict[str, list[float]] = {k: [] for k in libs}
    adv: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        for lib, run in libs.items():
            _sync(dev)
            t0 = time.perf_counter()
            adv[lib], _ = run(x, y)
            _sync(dev)
            times[lib].append(time.perf_counter() - t0)
    row: dict = {"model": name, "images": int(x.shape[0]), "device": str(dev)}
    ev = {lib: H.evaluate(model, x, y, adv[lib]) for lib in libs}
    for lib in libs:
        t = H.median(times[lib])
        row[lib] = {"median_s": t, "images_per_s": x.shape[0] / t, "times": times[lib],
                    **{k: v for k, v in ev[lib].items() if not k.startswith("_")}}
    if "foolbox" in libs:
        a, b = ev["advsmooth-clip"], ev["foolbox"]
        both = a["_ok"] & b["_ok"]
        row["speedup_vs_foolbox"] = row["foolbox"]["median_s"] / row["advsmooth-clip"]["median_s"]
        row["paired_median_l2_ratio"] = float((a["_l2"][both] / b["_l2"][both]).median())
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = {"torch": torch.__version__, "device": str(dev),
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    rows = []
    for name, ds, kw in CASES:
        r = run_case(name, ds, kw, dev, args)
        rows.append(r)
        fb = (f"; Foolbox {r['foolbox']['images_per_s']:.1f} img/s, "
              f"{r['speedup_vs_foolbox']:.2f}x, paired median L2 "
              f"{r['paired_median_l2_ratio']:.5f}" if "foolbox" in r else "")
        print(f"{name} on {dev}: advsmooth clip=True {r['advsmooth-clip']['images_per_s']:.1f} "
              f"img/s, success {r['advsmooth-clip']['success_rate']:.3f}{fb}", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps({"machine": info, "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
