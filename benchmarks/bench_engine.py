"""engine suite: the iterative gradient engine against its bare lower bound and
against the peers.

1. PGD, 10 steps, L∞, no random start vs a bare loop of 10 × (forward + backward) of the summed
   cross-entropy on the same batch (target: ≤ 1.15×). A hand-written minimal PGD (the bare loop
   plus sign step, ε-ball projection and box clamp) is shown for reference.
2. sg-IGSM, m = 20 (σ = 15/255), T = 5 steps (budget 100) vs the bare cost of its 20·T gradient
   evaluations done as the same batched chunks (target: ≤ 1.2×).
3. PGD and MI-FGSM (10 steps, same ε/α, no random start) in advsmooth, torchattacks, Foolbox and
   ART: median wall time and success rate judged by the shared evaluation function.
"""

from __future__ import annotations

import time
from typing import Any

import _harness as H
import _peers as P
import torch
import torch.nn.functional as F

#: model -> (dataset, load kwargs, ε, α, images for overhead, images for sg, sg chunk, shared files)
MODELS = {
    "digits-lenet": ("digits", {}, 0.1, 0.02, 256, 64, 10, []),
    "mnist-lenet": ("mnist", {"sample": 1000, "seed": 0}, 0.3, 0.03, 256, 64, 10,
                    ["data/mnist_test.npz", "models/mnist_lenet_clean.pt"]),
    "cifar10-resnet20": ("cifar10", {"sample": 500, "seed": 0}, 8 / 255, 2 / 255, 256, 32, 10,
                         ["data/cifar10_test.npz", "models/cifar10_resnet20.pt"]),
}
STEPS = 10
#: libraries whose attack call also returns per-sample success flags
RETURNS_SUCCESS = {"advsmooth", "foolbox"}
SG = {"samples": 20, "sigma": 15 / 255, "steps": 5}


def _load(name: str, args: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
    import advsmooth as asm
    ds, kw = MODELS[name][0], MODELS[name][1]
    model = H.frozen(asm.models.load(name))
    x, y = asm.data.load(ds, "test", **kw)
    ok = H.predict(model, x) == y
    return model, x[ok].contiguous(), y[ok].contiguous()


def bare_fwd_bwd(model: Any, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    xa = x.detach()
    for _ in range(steps):
        xg = xa.requires_grad_(True) if not xa.requires_grad else xa
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        torch.autograd.grad(loss, xg)
        xa = x.detach()


def bare_pgd(model: Any, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
             steps: int) -> torch.Tensor:
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xa)
        xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), x - eps), x + eps).clamp_(0, 1)
    return xa


def bare_chunks(model: Any, x: torch.Tensor, y: torch.Tensor, samples: int, chunk: int,
                steps: int) -> None:
    """``steps`` × (``samples`` copies of the batch, ``chunk`` copies per forward+backward)."""
    n = x.shape[0]
    for _ in range(steps):
        for s in range(0, samples, chunk):
            c = min(chunk, samples - s)
            xin = x.unsqueeze(0).expand(c, *x.shape).reshape(c * n, *x.shape[1:]).clone()
            xin.requires_grad_(True)
            loss = F.cross_entropy(model(xin), y.repeat(c), reduction="sum")
            torch.autograd.grad(loss, xin)


def overhead(name: str, args: Any, log: Any) -> dict[str, Any]:
    import advsmooth as asm
    ds, kw, eps, alpha, n_pgd, n_sg, chunk, needs = MODELS[name]
    model, x, y = _load(name, args)
    n_pgd = min(n_pgd, x.shape[0]) if not args.quick else min(8, x.shape[0])
    n_sg = min(n_sg, x.shape[0]) if not args.quick else min(4, x.shape[0])
    xp, yp = x[:n_pgd], y[:n_pgd]
    xs, ys = x[:n_sg], y[:n_sg]
    pgd = asm.attacks.PGD(eps=eps, alpha=alpha, steps=STEPS, norm="inf", random_start=False)
    # the same attack without the engine's thread split (its overhead alone)
    pgd1 = asm.attacks.PGD(eps=eps, alpha=alpha, steps=STEPS, norm="inf", random_start=False,
                           threads=1)
    sg = asm.attacks.IGSM(eps=eps, alpha=eps / SG["steps"], steps=SG["steps"],
                          gradient=asm.attacks.SmoothedGradient(
                              sigma=SG["sigma"], samples=SG["samples"], chunk_size=chunk))
    log(f"  overhead on {name}: PGD batch {n_pgd}, sg-IGSM batch {n_sg} (chunk {chunk} copies)")
    jobs = {
        "advsmooth PGD-10": lambda: pgd(model, xp, yp),
        "advsmooth PGD-10 threads=1": lambda: pgd1(model, xp, yp),
        "bare 10×(fwd+bwd)": lambda: bare_fwd_bwd(model, xp, yp, STEPS),
        "hand-written PGD-10": lambda: bare_pgd(model, xp, yp, eps, alpha, STEPS),
        "advsmooth sg-IGSM m=20 T=5": lambda: sg(model, xs, ys),
        "bare 100 grads in chunks": lambda: bare_chunks(model, xs, ys, SG["samples"], chunk,
                                                        SG["steps"]),
    }
    # warm-up: every code path once on a few images (cheap; the timed calls are full batches)
    warm = {} if args.quick else {
        "advsmooth PGD-10": lambda: pgd(model, xp[:4], yp[:4]),
        "advsmooth PGD-10 threads=1": lambda: pgd1(model, xp[:4], yp[:4]),
        "bare 10×(fwd+bwd)": lambda: bare_fwd_bwd(model, xp[:4], yp[:4], 2),
        "advsmooth sg-IGSM m=20 T=5": lambda: sg(model, xs[:2], ys[:2]),
        "bare 100 grads in chunks": lambda: bare_chunks(model, xs[:2], ys[:2], 4, 2, 1),
    }
    times, outs = H.interleaved(jobs, args.repeats, warm, log)
    med = {k: H.median(v) for k, v in times.items()}
    res_pgd = outs["advsmooth PGD-10"]
    res_sg = outs["advsmooth sg-IGSM m=20 T=5"]
    rows = [
        {"model": name, "measure": "PGD-10 (L∞, no random start)", "images": n_pgd,
         "advsmooth_s": med["advsmooth PGD-10"], "bare_s": med["bare 10×(fwd+bwd)"],
         "ratio": med["advsmooth PGD-10"] / med["bare 10×(fwd+bwd)"], "target": 1.15,
         "handwritten_s": med["hand-written PGD-10"],
         "threads1_s": med["advsmooth PGD-10 threads=1"],
         "ratio_threads1": med["advsmooth PGD-10 threads=1"] / med["bare 10×(fwd+bwd)"],
         "ratio_vs_handwritten": med["advsmooth PGD-10"] / med["hand-written PGD-10"],
         "own_forward_per_image": float(res_pgd.forward_evals.double().mean()),
         "own_grad_per_image": float(res_pgd.grad_evals.double().mean()),
         "times": {k: times[k] for k in ("advsmooth PGD-10", "advsmooth PGD-10 threads=1",
                                         "bare 10×(fwd+bwd)", "hand-written PGD-10")}},
        {"model": name, "measure": "sg-IGSM m=20, T=5 (100 gradients / image)", "images": n_sg,
         "advsmooth_s": med["advsmooth sg-IGSM m=20 T=5"],
         "bare_s": med["bare 100 grads in chunks"],
         "ratio": med["advsmooth sg-IGSM m=20 T=5"] / med["bare 100 grads in chunks"],
         "target": 1.2,
         "own_forward_per_image": float(res_sg.forward_evals.double().mean()),
         "own_grad_per_image": float(res_sg.grad_evals.double().mean()),
         "times": {k: times[k] for k in ("advsmooth sg-IGSM m=20 T=5",
                                         "bare 100 grads in chunks")}},
    ]
    for r in rows:
        r["pass"] = r["ratio"] <= r["target"]
    return {"model": name, "rows": rows}


def peers(name: str, libs: list[str], args: Any, log: Any) -> dict[str, Any]:
    ds, kw, eps, alpha, *_ = MODELS[name]
    model, x, y = _load(name, args)
    if args.limit is not None:
        x, y = x[:args.limit], y[:args.limit]
    n = int(x.shape[0])
    shape = tuple(x.shape[1:])
    log(f"  peers on {name}: {n} correctly classified images, ε={eps:.4g}, α={alpha:.4g}")
    out: dict[str, Any] = {"model": name, "n": n, "eps": eps, "alpha": alpha, "steps": STEPS,
                           "attacks": {}}
    for kind in ("pgd", "mifgsm"):
        counters = {lib: H.CountingModel(model) for lib in libs}
        runs = {lib: P.linf_iterative(lib, kind, counters[lib], eps=eps, alpha=alpha, steps=STEPS,
                                      batch_size=args.batch_size, input_shape=shape,
                                      num_classes=10) for lib in libs}

        # advsmooth and Foolbox return success flags with the adversarial examples; the other
        # peers need one more forward pass to tell them. Their timed job includes that pass (the
        # time to the same output); the pass alone is timed too, so the attack-only time is
        # reported as well.
        check_s: dict[str, list[float]] = {lib: [] for lib in libs}

        def job(lib: str, counters=counters, runs=runs, check_s=check_s):
            def f():
                counters[lib].reset()
                out = runs[lib](x, y)
                if lib not in RETURNS_SUCCESS:
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        H.predict(model, out[0], args.batch_size)
                    check_s[lib].append(time.perf_counter() - t0)
                return out
            return f
        warm = {} if args.quick else {lib: (lambda lib=lib, runs=runs: runs[lib](x[:4], y[:4]))
                                      for lib in libs}
        times, outs = H.interleaved({lib: job(lib) for lib in libs}, args.repeats, warm, log)
        rows = []
        for lib in libs:
            x_adv, _ = outs[lib]
            ev = H.evaluate(model, x, y, x_adv)
            linf = (x_adv - x).flatten(1).abs().amax(1)
            attack_only = [t - c for t, c in zip(times[lib], check_s[lib][-len(times[lib]):])] \
                if check_s[lib] else times[lib]
            rows.append({"library": lib, "seconds": H.median(times[lib]), "times": times[lib],
                         "attack_only_s": H.median(attack_only),
                         "success_rate": ev["success_rate"],
                         "max_linf_over_eps": float(linf.max()) / eps,
                         "box_violation": ev["box_violation"],
                         "forward_per_image": counters[lib].forward_rows / n,
                         "grad_per_image": counters[lib].grad_rows / n, **{
                             k: v for k, v in ev.items() if k.startswith("_")}})
        a = rows[0]
        for r in rows:
            r["time_vs_advsmooth"] = r["seconds"] / a["seconds"]
            r["attack_only_vs_advsmooth"] = r["attack_only_s"] / a["seconds"]
            r["same_pred_as_advsmooth"] = float((r["_ok"] == a["_ok"]).double().mean())
        out["attacks"][kind] = rows
    return out


def targets(payload: dict[str, Any]) -> list[dict[str, Any]]:
    t = []
    for o in payload["overhead"]:
        for r in o["rows"]:
            t.append({"target": f"{r['model']}: {r['measure']} ≤ {r['target']}× bare",
                      "value": r["ratio"], "pass": r["pass"]})
    for p in payload["peers"]:
        for kind, rows in p["attacks"].items():
            a = rows[0]
            for r in rows[1:]:
                t.append({"target": f"{p['model']}: {kind} at least as fast as {r['library']} "
                                    "with the same success rate",
                          "value": r["seconds"] / a["seconds"],
                          "pass": r["seconds"] >= a["seconds"]
                          and a["success_rate"] >= r["success_rate"] - 0.005})
    return t


OVH_COLUMNS = [("model", "model"), ("measure", "measure"), ("images", "batch"),
               ("advsmooth_s", "advsmooth (s)"), ("bare_s", "bare (s)"), ("ratio", "ratio"),
               ("target", "target ≤"), ("pass", "met"), ("handwritten_s", "hand-written PGD (s)"),
               ("ratio_vs_handwritten", "ratio vs hand-written"),
               ("threads1_s", "advsmooth threads=1 (s)"),
               ("ratio_threads1", "threads=1 ÷ bare"),
               ("own_forward_per_image", "fwd / image"), ("own_grad_per_image", "grad / image")]
PEER_COLUMNS = [("library", "library"), ("seconds", "wall time to x_adv + success (s, median)"),
                ("time_vs_advsmooth", "time ÷ advsmooth"),
                ("attack_only_s", "attack alone (s)"),
                ("attack_only_vs_advsmooth", "attack alone ÷ advsmooth"),
                ("success_rate", "success"),
                ("same_pred_as_advsmooth", "same outcome as advsmooth"),
                ("max_linf_over_eps", "max L∞ / ε"), ("box_violation", "max outside [0,1]"),
                ("forward_per_image", "forwards / image"), ("grad_per_image", "gradients / image")]


def markdown(payload: dict[str, Any]) -> str:
    cfg = payload["config"]
    lines = ["# engine suite", "",
             f"{cfg['repeats']} interleaved repeat(s) after a warm-up, median wall times; bare "
             "loops are plain PyTorch on the same model and batch (summed cross-entropy, "
             "`torch.autograd.grad` w.r.t. the input). Peer comparison: 10 steps, no random "
             f"start, batches of {cfg['batch_size']}, success judged by the shared evaluation "
             "function. advsmooth's and Foolbox's calls return success flags with the adversarial "
             "examples; torchattacks' and ART's timed jobs add the one prediction pass they need "
             "to tell them "
             "(the time to the same output, used by the targets); 'attack alone' subtracts that "
             "pass. Foolbox's L∞ MI-FGSM accumulates sign(∇) instead of ∇/‖∇‖₁ (a different "
             "update), so its success may differ. advsmooth runs with its defaults (on a CPU the "
             "plain-gradient engine shares a batch among torch's threads, one intra-op thread "
             "each, for models of torch.nn modules); 'threads=1' shows the engine without that "
             "split.", "", H.machine_md(payload["machine"]), "",
             "## Engine overhead vs bare PyTorch", "", H.md_table(
                 [r for o in payload["overhead"] for r in o["rows"]], OVH_COLUMNS), ""]
    for p in payload["peers"]:
        for kind, rows in p["attacks"].items():
            lines += [f"## {kind.upper()} on {p['model']} ({p['n']} images, ε = {p['eps']:.4g}, "
                      f"α = {p['alpha']:.4g}, {p['steps']} steps)", "",
                      H.md_table(rows, PEER_COLUMNS), ""]
    lines += ["## Targets", "", H.md_table(payload["targets"], [("target", "target"),
                                                               ("value", "measured"),
                                                               ("pass", "met")]), ""]
    return "\n".join(lines)


def _available(name: str) -> bool:
    return all((H.SHARED / p).exists() for p in MODELS[name][7])


def run(args: Any, libs: list[str], log: Any) -> dict[str, Any]:
    default = ["digits-lenet"] if args.quick else ["digits-lenet", "cifar10-resnet20"]
    names = args.models or default
    skipped = [n for n in names if not _available(n)]
    names = [n for n in names if n not in skipped]
    for n in skipped:
        log(f"  skip {n}: ../shared missing")
    payload: dict[str, Any] = {
        "suite": "engine",
        "config": {"models": names, "skipped": skipped, "libraries": libs, "steps": STEPS,
                   "sg": SG, "repeats": args.repeats, "batch_size": args.batch_size},
        "overhead": [overhead(n, args, log) for n in names],
        "peers": [peers(n, libs, args, log) for n in names],
    }
    payload["targets"] = targets(payload)
    return payload
