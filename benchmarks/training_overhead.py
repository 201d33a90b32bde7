"""PGD adversarial training speed and the trainer's per-step overhead over a bare loop.

Two measurements with the advertorch MNIST LeNet (``mnist-lenet`` weights when ``../shared`` is
there, else the same architecture with random weights; timing does not depend on the weights) on
MNIST training images (else the embedded digits, repeated):

1. **One epoch of PGD-AT** (Madry, ℓ∞ ε = 0.3, α = ε/4, k = 7 steps, random start, w = 1)
   through ``defenses.train(model, data, method="pgd", ...)`` on ``--n`` images (default 10,000),
   batch 128, Adam, no checkpoints: wall time.
2. **Per-step overhead**: the same PGD-AT step run ``--steps`` times (default 10 batches of 128)
   (a) by the trainer (one epoch over ``steps × 128`` images, no out_dir) and (b) by a bare
   loop ``x_adv = pgd_linf(...); loss = CE(model(x_adv), y); zero_grad; backward; step`` over the
   same batches; interleaved ``--repeats`` times, medians, ratio (a)/(b). Target: ≤ 1.1.

Run:  .venv/bin/python benchmarks/training_overhead.py [--quick]
Writes benchmarks/results/training_overhead.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as H  # noqa: E402

from advsmooth import data, defenses, models  # noqa: E402
from advsmooth.defenses.methods import pgd_linf  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
EPS, STEPS, BATCH = 0.3, 7, 128


def _model() -> tuple[torch.nn.Module, str]:
    try:
        return models.load("mnist-lenet", verbose=False), "mnist-lenet (shared weights)"
    except Exception:  # noqa: BLE001 - no ../shared: same architecture, random weights
        from advsmooth.models import registry

        return registry.load("mnist-lenet", pretrained=False), "mnist-lenet (random weights)"


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        x, y = data.load("mnist", "train", sample=n, seed=0)
        return x, y, f"MNIST train, {n} seeded images"
    except Exception:  # noqa: BLE001 - no MNIST: digits repeated
        x, y = data.load("digits", "train")
        reps = -(-n // len(y))
        return x.repeat(reps, 1, 1, 1)[:n], y.repeat(reps)[:n], f"digits repeated to {n}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="n=1000, steps=4, repeats=3")
    a = ap.parse_args()
    if a.quick:
        a.n, a.steps, a.repeats = 1000, 4, 3
    torch.set_num_threads(a.threads)
    info = H.machine_info(a.threads)
    t_suite = time.perf_counter()
    base, model_desc = _model()
    x, y, data_desc = _data(max(a.n, a.steps * BATCH))
    kw = dict(method="pgd", eps=EPS, alpha=EPS / 4, steps=STEPS, w=1.0, lr=1e-4,
              batch_size=BATCH, show_progress=False, seed=0)

    # 1. one full epoch
    model = _clone(base)
    t_epoch, _ = H.timed(lambda: defenses.train(model, (x[:a.n], y[:a.n]), epochs=1, **kw))
    print(f"one epoch of PGD-AT on {a.n} images: {t_epoch:.1f} s", flush=True)

    # 2. per-step overhead, trainer vs bare loop on the same batches
    n_small = a.steps * BATCH
    xs, ys = x[:n_small], y[:n_small]
    m_tr, m_bare = _clone(base), _clone(base)
    opt = torch.optim.Adam(m_bare.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(n_small, generator=torch.Generator().manual_seed(1))

    def trainer() -> None:
        defenses.train(m_tr, (xs, ys), epochs=1, **kw)

    def bare() -> None:
        for i in range(0, n_small, BATCH):
            idx = order[i:i + BATCH]
            xb, yb = xs[idx], ys[idx]
            xa = pgd_linf(m_bare, xb, yb, eps=EPS, alpha=EPS / 4, steps=STEPS, generator=gen)
            m_bare.train()
            loss = F.cross_entropy(m_bare(xa), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    times, _ = H.interleaved({"trainer": trainer, "bare loop": bare}, a.repeats,
                             warmup={"trainer": trainer, "bare loop": bare})
    per_step = {k: H.median(v) / a.steps for k, v in times.items()}
    ratio = per_step["trainer"] / per_step["bare loop"]
    info["suite_seconds"] = time.perf_counter() - t_suite
    info["loadavg_end"] = H.loadavg()
    rows = [{"runner": k, "median_s_per_step": per_step[k], "median_s_total": H.median(times[k]),
             "all_s": [round(t, 3) for t in times[k]]} for k in times]
    payload = {"machine": info, "model": model_desc, "data": data_desc,
               "epoch": {"n": a.n, "batch": BATCH, "eps": EPS, "alpha": EPS / 4, "steps": STEPS,
                         "seconds": t_epoch, "images_per_s": a.n / t_epoch},
               "overhead": {"steps": a.steps, "repeats": a.repeats, "rows": rows,
                            "ratio_trainer_over_bare": ratio, "target": 1.1,
                            "met": ratio <= 1.1}}
    md = "\n".join([
        "# Training overhead: PGD-AT with defenses.train vs a bare loop", "",
        H.machine_md(info), f"- model: {model_desc}; data: {data_desc}", "",
        f"## One epoch of PGD-AT (ε={EPS}, α=ε/4, k={STEPS}, random start, batch {BATCH})", "",
        f"{a.n} images: **{t_epoch:.1f} s** ({a.n / t_epoch:.0f} images/s, "
        f"{t_epoch / -(-a.n // BATCH):.3f} s per step)", "",
        f"## Per-step time, {a.steps} steps of batch {BATCH}, median of {a.repeats} interleaved "
        "repeats", "",
        H.md_table(rows, [("runner", "runner"), ("median_s_per_step", "s / step"),
                          ("median_s_total", "s / run"), ("all_s", "all runs (s)")]), "",
        f"Ratio trainer / bare loop: **{ratio:.3f}** (target ≤ 1.1: "
        f"{'met' if ratio <= 1.1 else 'NOT met'}).", "",
        "The trainer's extra work per step: input/label device moves, the loss finiteness check, "
        "`float(loss)` and the accuracy count for the log, and once per epoch the shuffling, "
        "generator seeding, RNG fork and mode switches. Same PGD code (`pgd_linf`) in both.",
    ])
    jp, mp = H.write_outputs(OUT, "training_overhead", payload, md)
    print(md)
    print(f"wrote {jp} and {mp}")


def _clone(m: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(m)


if __name__ == "__main__":
    main()
