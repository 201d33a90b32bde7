"""How should DeepFool compute the Kc−1 candidate-face gradients? Measure the alternatives.

For one DeepFool iteration we need, at the linearisation point, the gradients of the Kc−1 logit
differences ``z[c_j] − z[c_0]`` for every sample in the batch. Strategies (all from ONE forward
pass unless stated):

* ``loop_logits`` (a): Kc backward passes of the gathered logits through a retained graph, then
  differences (Kc gradient evaluations per image).
* ``loop`` (a+d): Kc−1 backward passes of the logit differences directly (Kc−1 evaluations).
* ``batched`` (b): one ``torch.autograd.grad(..., is_grads_batched=True)`` call (vmapped backward).
* ``vmap`` (c): ``torch.func.vmap(jacrev(f))`` over samples with ``functional_call``.
* ``replicate`` (e): the batch repeated Kc−1 times, one forward and one backward of the summed
  differences (costs Kc−1 forward evaluations per image).

Only ``loop`` is in the library (``advsmooth.attacks.deepfool``; ``jacobian="threads"`` runs it
with the chunks of an iteration in parallel threads); the others live here, for this measurement.

Models: a LeNet (advertorch MNIST CNN: conv32-conv64-fc200, 1×28×28, batch 300) and a CIFAR
ResNet-20 (3×32×32, batch 200), random weights (timing does not depend on training). Every method
is timed on the same inputs, ``--threads`` CPU threads (default 2), median of ``--repeats``.
Also reported: a full DeepFool L2 run (overshoot 0.02, 50 iterations, 10 candidates, every face
at every iteration) for each of the library's strategies (``loop``, ``threads``).

Run:  .venv/bin/python benchmarks/deepfool_jacobian.py [--quick]
Writes benchmarks/results/deepfool_jacobian.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from advsmooth.attacks.deepfool import DeepFool, as_logits

METHODS = ("loop", "loop_logits", "batched", "vmap", "replicate")
#: the library's strategies, timed in whole DeepFool runs
RUN_METHODS = ("loop", "threads")


def face_gradients(model: nn.Module, xl: torch.Tensor, cand: torch.Tensor, method: str
                   ) -> tuple[torch.Tensor, int, int]:
    """Normals ``w'`` (n, Kc−1, C, H, W) of the faces ``z[c_j] − z[c_0]`` at ``xl`` by
    ``method``, with the gradient and forward evaluations per image."""
    n, m = cand.shape[0], cand.shape[1] - 1
    if method == "vmap":
        from torch.func import functional_call, jacrev, vmap
        params = {k: v.detach() for k, v in model.named_parameters()}
        buffers = dict(model.named_buffers())

        def f(xs: torch.Tensor, cs: torch.Tensor) -> torch.Tensor:
            zc = as_logits(functional_call(model, (params, buffers), (xs[None],)))[0][cs]
            return zc[1:] - zc[0]
        return vmap(jacrev(f, argnums=0))(xl.detach(), cand), m, 1
    if method == "replicate":
        xr = xl.detach().unsqueeze(1).expand(n, m, *xl.shape[1:]).reshape(n * m, *xl.shape[1:])
        xr.requires_grad_(True)
        z = as_logits(model(xr)).view(n, m, -1)
        diffs = (z.gather(2, cand[:, 1:, None])[..., 0]
                 - z.gather(2, cand[:, :1, None].expand(n, m, 1))[..., 0])
        (g,) = torch.autograd.grad(diffs.sum(), xr)
        return g.view(n, m, *xl.shape[1:]), m, m
    xg = xl.detach().requires_grad_(True)
    zc = as_logits(model(xg)).gather(1, cand)
    diffs = zc[:, 1:] - zc[:, :1]
    if method == "loop_logits":
        gl = [torch.autograd.grad(zc[:, j].sum(), xg, retain_graph=j < m)[0]
              for j in range(m + 1)]
        return torch.stack([g - gl[0] for g in gl[1:]], dim=1), m + 1, 1
    if method == "batched":
        eye = torch.eye(m, dtype=diffs.dtype, device=diffs.device)
        (g,) = torch.autograd.grad(diffs, xg, grad_outputs=eye[:, None, :].expand(m, n, m),
                                   is_grads_batched=True)
        return g.transpose(0, 1), m, 1
    assert method == "loop", method
    return torch.stack([torch.autograd.grad(diffs[:, j].sum(), xg, retain_graph=j < m - 1)[0]
                        for j in range(m)], dim=1), m, 1
OUT = Path(__file__).resolve().parent / "results"


class LeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.linear1 = nn.Linear(64 * 7 * 7, 200)
        self.linear2 = nn.Linear(200, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.linear2(F.relu(self.linear1(x.flatten(1))))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + sc)


class ResNet20(nn.Module):
    """CIFAR ResNet-20 with option-A shortcuts (He et al. 2016)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                layers.append(Block(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(out.mean(dim=(2, 3)))


def timeit(fns: dict, repeats: int, warmup: bool = True) -> dict[str, dict[str, list[float]]]:
    """Time every callable ``repeats`` times, interleaved (round robin), so that background load
    hits all methods alike. Returns wall-clock and process CPU seconds per call."""
    if warmup:
        for fn in fns.values():
            fn()
    out = {k: {"wall": [], "cpu": []} for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            out[k]["wall"].append(time.perf_counter() - t0)
            out[k]["cpu"].append(time.process_time() - c0)
    return out


def bench_model(name: str, model: nn.Module, shape: tuple[int, ...], batch: int, repeats: int,
                run_repeats: int) -> dict:
    torch.manual_seed(0)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(batch, *shape)
    with torch.no_grad():
        z = model(x)
    cand = torch.sort(z, dim=1, descending=True, stable=True).indices[:, :10]
    ref = None
    rows: dict[str, dict] = {}
    for method in METHODS:
        wp, ngrad, nfwd = face_gradients(model, x, cand, method)
        if ref is None:
            ref = wp
        rows[method] = {"grad_evals_per_image": ngrad, "forward_evals_per_image": nfwd,
                        "max_rel_diff_vs_loop": float((wp - ref).abs().max() / ref.abs().max())}
    jt = timeit({m: (lambda m=m: face_gradients(model, x, cand, m)) for m in METHODS}, repeats)
    for m in METHODS:
        rows[m].update({"jacobian_s_median": statistics.median(jt[m]["wall"]),
                        "jacobian_cpu_s_median": statistics.median(jt[m]["cpu"]),
                        "jacobian_s_all": jt[m]["wall"]})
        print(f"{name:9s} {m:12s} jacobian {rows[m]['jacobian_s_median'] * 1e3:8.1f} ms wall "
              f"{rows[m]['jacobian_cpu_s_median'] * 1e3:8.1f} ms cpu "
              f"(rel diff {rows[m]['max_rel_diff_vs_loop']:.1e})", flush=True)
    holder: dict[str, object] = {}

    def make(m: str):
        atk = DeepFool(norm=2, overshoot=0.02, max_iter=50, candidates=10, faces="all",
                       jacobian=m)

        def go() -> None:
            holder[m] = atk(model, x)
        return go

    rt = timeit({m: make(m) for m in RUN_METHODS}, run_repeats, warmup=False)
    for m in RUN_METHODS:
        rows.setdefault(m, {})
        s = holder[m].summary()  # type: ignore[attr-defined]
        rows[m].update({"deepfool_s_median": statistics.median(rt[m]["wall"]),
                        "deepfool_cpu_s_median": statistics.median(rt[m]["cpu"]),
                        "deepfool_s_all": rt[m]["wall"], "deepfool_median_l2": s["median_l2"],
                        "deepfool_success_rate": s["success_rate"],
                        "deepfool_mean_iterations": s["mean_iterations"]})
        print(f"{name:9s} {m:12s} deepfool {rows[m]['deepfool_s_median']:8.3f} s wall "
              f"{rows[m]['deepfool_cpu_s_median']:8.3f} s cpu median L2 {s['median_l2']:.4f} "
              f"iters {s['mean_iterations']:.2f}", flush=True)
    fastest = min(METHODS, key=lambda m: rows[m]["jacobian_cpu_s_median"])
    return {"model": name, "input_shape": list(shape), "batch": batch, "repeats": repeats,
            "run_repeats": run_repeats, "methods": rows, "fastest_jacobian_cpu": fastest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="Jacobian timings per method")
    ap.add_argument("--run-repeats", type=int, default=2, help="full DeepFool runs per method")
    ap.add_argument("--quick", action="store_true", help="small batches, 2 repeats")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reps = 2 if args.quick else args.repeats
    configs = [("lenet", LeNet(), (1, 28, 28), 60 if args.quick else 300),
               ("resnet20", ResNet20(), (3, 32, 32), 20 if args.quick else 200)]
    results = [bench_model(n, m, s, b, reps, args.run_repeats) for n, m, s, b in configs]
    meta = {"torch": torch.__version__, "threads": args.threads,
            "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor(),
            "quick": args.quick}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "deepfool_jacobian.json").write_text(json.dumps({"meta": meta, "results": results},
                                                           indent=2))
    lines = ["# DeepFool face-Jacobian strategies", "",
             f"torch {meta['torch']}, {args.threads} CPU threads, medians of {reps} interleaved "
             f"repeats (Jacobian) and {args.run_repeats} (DeepFool runs); random-weight models; "
             "one Jacobian = the Kc−1 = 9 face gradients of the whole batch. `cpu` = process CPU "
             "time (robust to other load on a shared machine), `wall` = elapsed time.", ""]
    for r in results:
        base = r["methods"]["loop"]["jacobian_cpu_s_median"]
        lines += [f"## {r['model']} {tuple(r['input_shape'])}, batch {r['batch']}", "",
                  "| method | Jacobian cpu (ms) | Jacobian wall (ms) | cpu vs loop | grad/img "
                  "| fwd/img | DeepFool cpu (s) | DeepFool wall (s) | median L2 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m, row in r["methods"].items():
            if "jacobian_cpu_s_median" not in row:  # a whole-run strategy only
                lines.append(f"| {m} (whole runs) | | | | | | {row['deepfool_cpu_s_median']:.2f} | "
                             f"{row['deepfool_s_median']:.2f} | {row['deepfool_median_l2']:.4f} |")
                continue
            run = (f"{row['deepfool_cpu_s_median']:.2f} | {row['deepfool_s_median']:.2f} | "
                   f"{row['deepfool_median_l2']:.4f}" if "deepfool_s_median" in row else " | | ")
            lines.append(f"| {m} | {row['jacobian_cpu_s_median'] * 1e3:.1f} | "
                         f"{row['jacobian_s_median'] * 1e3:.1f} | "
                         f"{row['jacobian_cpu_s_median'] / base:.2f}× | "
                         f"{row['grad_evals_per_image']} | {row['forward_evals_per_image']} | "
                         f"{run} |")
        lines += ["", f"Fastest Jacobian (CPU time): **{r['fastest_jacobian_cpu']}**.", ""]
    (OUT / "deepfool_jacobian.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
