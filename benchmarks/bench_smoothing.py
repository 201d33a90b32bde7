"""smoothing suite.

1. ``SmoothedClassifier`` throughput vs the ideal ``base images/s ÷ M`` for M ∈ {8, 64, 512}
   (target ≥ 0.85). Every contestant evaluates the same number of model rows (``rows`` noisy
   images: ``rows / M`` inputs for the smoothed classifier, ``rows`` images for the base model)
   under ``torch.no_grad``. "base images/s" is the base model's *best* throughput over calls of
   128, 512 and 2,048 rows (the strictest reference); the smoothed classifier runs with its
   defaults.
2. EPGD (``PGD`` + ``ExpectationGradient``, k steps, M samples, all copies in one chunk) vs the
   bare cost of k·M batched gradient evaluations (k forward+backward passes of the ``M·N``-row
   batch; target ≤ 1.15).
"""

from __future__ import annotations

from typing import Any

import _harness as H
import torch
import torch.nn.functional as F

MODELS = {
    "digits-lenet": ("digits", []),
    "mnist-lenet": ("mnist", ["data/mnist_test.npz", "models/mnist_lenet_clean.pt"]),
    "cifar10-resnet20": ("cifar10", ["data/cifar10_test.npz", "models/cifar10_resnet20.pt"]),
}
SAMPLES = (8, 64, 512)
SIGMA = 0.25
EPGD = {"steps": 7, "samples": 8, "eps": 8 / 255, "alpha": 2 / 255, "sigma": 0.25}


def _load(name: str, n: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    import advsmooth as asm
    model = H.frozen(asm.models.load(name))
    x, y = asm.data.load(MODELS[name][0], "test", sample=n, seed=0)
    return model, x.contiguous(), y.contiguous()


#: batch sizes the base model is timed at; its best one defines "base images/s"
BASE_BATCHES = (128, 512, 2048)


def throughput(name: str, args: Any, log: Any) -> dict[str, Any]:
    import advsmooth as asm
    rows_total = 256 if args.quick else 2048
    batches = (256,) if args.quick else BASE_BATCHES
    samples = (8, 64) if args.quick else SAMPLES
    model, x, y = _load(name, max(rows_total // min(samples), 1))
    base_x = x.repeat((rows_total + x.shape[0] - 1) // x.shape[0], 1, 1, 1)[:rows_total]

    def base(batch: int):
        @torch.no_grad()
        def f() -> None:
            for i in range(0, rows_total, batch):
                model(base_x[i:i + batch])
        return f

    # the smoothed classifier with its defaults (batch_size, noise blocks)
    smoothed = {m: asm.defenses.SmoothedClassifier(model, sigma=SIGMA, samples=m,
                                                   vote="prediction", seed=0)
                for m in samples}

    def job(m: int):
        xs = x[:max(rows_total // m, 1)]

        @torch.no_grad()
        def f() -> None:
            smoothed[m](xs)
        return f

    jobs: dict[str, Any] = {**{f"base@{b}": base(b) for b in batches},
                            **{f"M={m}": job(m) for m in samples}}
    log(f"  throughput on {name}: {rows_total} model rows per contestant; base model in calls "
        f"of {', '.join(map(str, batches))} rows (the best defines base images/s)")
    warm = {} if args.quick else {"base": lambda: model(x[:8]),
                                  **{f"M={m}": (lambda m=m: smoothed[m](x[:1])) for m in samples}}
    with torch.no_grad():
        times, _ = H.interleaved(jobs, args.repeats, warm, log)
    rows = []
    for b in batches:
        tb = H.median(times[f"base@{b}"])
        rows.append({"model": name, "M": 1, "contestant": f"base model, calls of {b} rows",
                     "inputs": rows_total, "seconds": tb, "images_per_s": rows_total / tb,
                     "times": times[f"base@{b}"]})
    base_ips = max(r["images_per_s"] for r in rows)
    for r in rows:
        r["ideal_images_per_s"] = base_ips
        r["ratio"] = r["images_per_s"] / base_ips
    for m in samples:
        n_in = max(rows_total // m, 1)
        t = H.median(times[f"M={m}"])
        ips = n_in / t
        rows.append({"model": name, "M": m, "contestant": "SmoothedClassifier(prediction)",
                     "inputs": n_in, "seconds": t, "images_per_s": ips,
                     "ideal_images_per_s": base_ips / m, "ratio": ips / (base_ips / m),
                     "target": 0.85, "pass": ips / (base_ips / m) >= 0.85,
                     "times": times[f"M={m}"]})
    return {"model": name, "rows": rows}


def bare_grads(model: Any, x: torch.Tensor, y: torch.Tensor, m: int, steps: int) -> None:
    n = x.shape[0]
    for _ in range(steps):
        xin = x.unsqueeze(0).expand(m, *x.shape).reshape(m * n, *x.shape[1:]).clone()
        xin.requires_grad_(True)
        loss = F.cross_entropy(model(xin), y.repeat(m), reduction="sum")
        torch.autograd.grad(loss, xin)


def epgd(name: str, args: Any, log: Any) -> dict[str, Any]:
    import advsmooth as asm
    n = 8 if args.quick else 64
    k, m = (2, 4) if args.quick else (EPGD["steps"], EPGD["samples"])
    model, x, y = _load(name, n)
    rows = []
    for variant in ("prob_average", "expected_loss"):
        atk = asm.attacks.PGD(eps=EPGD["eps"], alpha=EPGD["alpha"], steps=k, norm="inf",
                              random_start=True, gradient=asm.attacks.ExpectationGradient(
                                  sigma=EPGD["sigma"], samples=m, variant=variant))
        jobs = {"epgd": lambda atk=atk: atk(model, x, y),
                "bare": lambda: bare_grads(model, x, y, m, k)}
        log(f"  EPGD ({variant}) on {name}: {n} images, k={k}, M={m}")
        warm = {} if args.quick else {
            "epgd": lambda atk=atk: atk(model, x[:2], y[:2]),
            "bare": lambda: bare_grads(model, x[:2], y[:2], m, 1)}
        times, outs = H.interleaved(jobs, args.repeats, warm, log)
        te, tb = H.median(times["epgd"]), H.median(times["bare"])
        res = outs["epgd"]
        rows.append({"model": name, "variant": variant, "images": n, "k": k, "M": m,
                     "epgd_s": te, "bare_s": tb, "ratio": te / tb, "target": 1.15,
                     "pass": te / tb <= 1.15,
                     "own_forward_per_image": float(res.forward_evals.double().mean()),
                     "own_grad_per_image": float(res.grad_evals.double().mean()),
                     "times": times})
    return {"model": name, "rows": rows}


THR_COLUMNS = [("model", "model"), ("contestant", "contestant"), ("M", "M"),
               ("inputs", "inputs"), ("seconds", "wall time (s, median)"),
               ("images_per_s", "images/s"), ("ideal_images_per_s", "base images/s ÷ M"),
               ("ratio", "ratio"), ("pass", "≥ 0.85")]
EPGD_COLUMNS = [("model", "model"), ("variant", "variant"), ("images", "images"), ("k", "k"),
                ("M", "M"), ("epgd_s", "EPGD (s)"), ("bare_s", "bare k·M grads (s)"),
                ("ratio", "ratio"), ("pass", "≤ 1.15"), ("own_forward_per_image", "fwd / image"),
                ("own_grad_per_image", "grad / image")]


def markdown(payload: dict[str, Any]) -> str:
    cfg = payload["config"]
    lines = ["# smoothing suite", "",
             f"{cfg['repeats']} interleaved repeat(s) after a warm-up, median wall times. "
             f"Throughput: σ = {SIGMA}, vote='prediction', the same number of model rows for "
             "every contestant. EPGD: L∞ ε = 8/255, α = 2/255, random start, σ = 0.25, all M "
             "copies in one chunk; bare = k forward+backward passes of the M·N-row batch.", "",
             H.machine_md(payload["machine"]), "", "## SmoothedClassifier throughput", "",
             H.md_table([r for t in payload["throughput"] for r in t["rows"]], THR_COLUMNS), "",
             "## EPGD cost vs bare k·M gradient evaluations", "",
             H.md_table([r for t in payload["epgd"] for r in t["rows"]], EPGD_COLUMNS), "",
             "## Targets", "", H.md_table(payload["targets"], [("target", "target"),
                                                               ("value", "measured"),
                                                               ("pass", "met")]), ""]
    return "\n".join(lines)


def run(args: Any, log: Any) -> dict[str, Any]:
    default = ["digits-lenet"] if args.quick else ["mnist-lenet", "cifar10-resnet20"]
    names = args.models or default
    skipped = [n for n in names if any(not (H.SHARED / p).exists() for p in MODELS[n][1])]
    names = [n for n in names if n not in skipped]
    for n in skipped:
        log(f"  skip {n}: ../shared missing")
    thr = [throughput(n, args, log) for n in names]
    ep = [epgd(n, args, log) for n in names]
    tg = [{"target": f"{r['model']}: SmoothedClassifier M={r['M']} throughput ≥ 0.85 × base/M",
           "value": r["ratio"], "pass": r["pass"]} for t in thr for r in t["rows"] if "pass" in r]
    tg += [{"target": f"{r['model']}: EPGD ({r['variant']}) k={r['k']} M={r['M']} ≤ 1.15 × bare",
            "value": r["ratio"], "pass": r["pass"]} for t in ep for r in t["rows"]]
    return {"suite": "smoothing",
            "config": {"models": names, "skipped": skipped, "samples": SAMPLES, "sigma": SIGMA,
                       "epgd": EPGD, "repeats": args.repeats},
            "throughput": thr, "epgd": ep, "targets": tg}
