"""A/B of the fast copy's pooling rewrite: DeepFool ``clip=True`` with and without it.

The fast model copy that attacks differentiate computes ``max_pool(relu(a))`` as
``relu(max_pool(a))`` (``advsmooth.attacks.execution.pool_before_relu``; the same values and
gradients). This script times DeepFool ``clip=True`` (batches of 128, 2 threads by default) on
the first ``--limit`` correctly classified test images of the LeNets, alternating a copy with
the rewrite and one without it (everything else equal: BatchNorm folding, channels-last layout,
threads), ``--repeats`` times, and checks that the adversarial images are identical.

Run:  .venv/bin/python benchmarks/pool_rewrite_ab.py [--repeats 7] [--limit 256]
Writes benchmarks/results/pool_rewrite_ab.json and .md. ``mnist-lenet`` needs ../shared.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as H  # noqa: E402

import advsmooth as asm  # noqa: E402
import advsmooth.attacks.execution as E  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
CASES = [("digits-lenet", "digits", {}, []),
         ("mnist-lenet", "mnist", {"sample": 1000, "seed": 0},
          ["data/mnist_test.npz", "models/mnist_lenet_clean.pt"])]


def run_case(name: str, ds: str, kw: dict, args: argparse.Namespace) -> dict:
    model = H.frozen(asm.models.load(name))
    x, y = asm.data.load(ds, "test", **kw)
    ok = H.predict(model, x) == y
    x, y = x[ok][:args.limit].contiguous(), y[ok][:args.limit]
    attack = asm.attacks.DeepFool(clip=True)
    rewrite = E.pool_before_relu
    times: dict[str, list[float]] = {"with rewrite": [], "without": []}
    out: dict[str, torch.Tensor] = {}
    try:
        for _ in range(args.repeats):
            for mode in times:
                E._FOLDED.clear()  # a fresh fast copy, with or without the rewrite
                E.pool_before_relu = rewrite if mode == "with rewrite" else (lambda gm: 0)
                attack(model, x[:8], y[:8])  # builds (and warms) the copy
                t0 = time.perf_counter()
                res = [attack(model, x[i:i + 128], y[i:i + 128]) for i in range(0, len(x), 128)]
                times[mode].append(time.perf_counter() - t0)
                out[mode] = torch.cat([r.x_adv for r in res])
    finally:
        E.pool_before_relu = rewrite
        E._FOLDED.clear()
    a, b = (H.median(times[m]) for m in ("with rewrite", "without"))
    return {"model": name, "images": int(x.shape[0]), "times": times,
            "median_with": a, "median_without": b, "ratio": a / b,
            "max_abs_diff_x_adv": float((out["with rewrite"] - out["without"]).abs().max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--limit", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = H.machine_info(args.threads)
    rows = []
    for name, ds, kw, needs in CASES:
        if any(not (H.SHARED / p).exists() for p in needs):
            print(f"skip {name}: ../shared lacks {needs}")
            continue
        rows.append(run_case(name, ds, kw, args))
        r = rows[-1]
        print(f"{name}: {r['median_with']:.3f} s with the rewrite, {r['median_without']:.3f} s "
              f"without ({r['ratio']:.3f}x), max |Δx_adv| {r['max_abs_diff_x_adv']:.1e}")
    md = ["# Pooling rewrite of the fast copy: DeepFool clip=True with and without it", "",
          f"{args.repeats} alternating repeats, batches of 128, median wall time.", "",
          H.machine_md(info), "",
          "| model | images | with rewrite (s) | without (s) | ratio | max abs Δ x_adv |",
          "| --- | --- | --- | --- | --- | --- |"]
    md += [f"| {r['model']} | {r['images']} | {r['median_with']:.3f} | {r['median_without']:.3f} "
           f"| {r['ratio']:.3f} | {r['max_abs_diff_x_adv']:.1e} |" for r in rows]
    H.write_outputs(args.out, "pool_rewrite_ab", {"machine": info, "rows": rows}, "\n".join(md))


if __name__ == "__main__":
    main()
