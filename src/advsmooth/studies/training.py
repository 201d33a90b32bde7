"""Robust-training reproductions on real MNIST (issue 6; ALGORITHMS §3.4, §11, §12, §18).

Three studies, each a function that writes a CSV, a Markdown table and a PNG plot into
``out_dir`` and returns its rows (list of dicts):

* :func:`deepfool_finetuning` — DeepFool paper Fig. 6/7 and Table 3 analogue: ρ_adv (DeepFool-L2
  on a test slice) and test error over 5 extra epochs of fine-tuning ``mnist-lenet`` on
  DeepFool-perturbed (α = 1, 2, 3), FGSM-perturbed (90 %-rule ε) and clean training data, lr
  = 0.5 × the final training lr (Adam 1e-4 for the advertorch checkpoint → 5e-5).
* :func:`pni_smoothing` — smoothed-inference paper analogue: a PNI LeNet (channelwise weight
  noise injected into ``mnist-lenet-pgd`` and trained with PNI/PGD-7 adversarial training, Eq. 6
  w = 0.5) evaluated plain and with :class:`~advsmooth.defenses.SmoothedClassifier` under PGD and
  EPGD (PGD with :class:`~advsmooth.attacks.ExpectationGradient`).
* :func:`smoothfool_defenses` — SmoothFool paper Table 3 analogue: fooling rates of IGSM,
  DeepFool and SmoothFool (σg = 1, 3, 5) against FGSM-AT, PGD-AT (``mnist-lenet-pgd``) and SAT
  models, crafted on the undefended model (zero-knowledge transfer, as the paper) and white-box.

All sizes (training subsets, test slices) are arguments so that the studies run in minutes on
a CPU; the values used are written into every table. Run everything with
``python -m advsmooth.studies.training OUT_DIR`` (needs MNIST and the MNIST checkpoints, e.g.
``../shared``).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import atomic_path, check_choice

__all__ = ["deepfool_finetuning", "pni_smoothing", "smoothfool_defenses", "run_all",
           "write_table"]


# ----------------------------------------------------------------------------------------------
# small I/O helpers
# ----------------------------------------------------------------------------------------------

def write_table(rows: Sequence[dict[str, Any]], out_dir: Path, name: str, title: str,
                notes: Sequence[str] = ()) -> None:
    """Write ``rows`` as ``name.csv`` and ``name.md`` (Markdown table with a title and notes).

    Both files are written atomically (temporary file + rename): an interrupted or failed write
    leaves the previous version intact."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    with atomic_path(out_dir / f"{name}.csv") as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8", newline="")

    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = [f"# {title}", ""]
    lines += [f"* {n}" for n in notes]
    lines += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    with atomic_path(out_dir / f"{name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _savefig(fig: Any, path: Path, **kwargs: Any) -> None:
    """``fig.savefig(path)`` through a temporary file + rename (format from the suffix)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)


def _plt() -> Any:
    from .._utils import optional_import

    mpl = optional_import("matplotlib")
    mpl.use("Agg")
    return optional_import("matplotlib.pyplot")


def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int = 500) -> float:
    with torch.no_grad():
        was = model.training
        model.eval()
        pred = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
        model.train(was)
    return float((pred == y).double().mean())


def _mnist(split: str, n: int | None, seed: int, root: Any,
           dataset: str = "mnist") -> tuple[Tensor, Tensor]:
    """``n`` seeded images of ``dataset``/``split`` (all of them when ``n`` is None or exceeds
    the split)."""
    from .. import data

    if n is None:
        return data.load(dataset, split, root)
    if dataset != "mnist":  # the embedded digits: a few hundred test images
        x, y = data.load(dataset, split, root)
        if n >= len(y):
            return x, y
    return data.load(dataset, split, root, sample=n, seed=seed)


# ----------------------------------------------------------------------------------------------
# 1. DeepFool fine-tuning (DeepFool paper Fig. 6/7, Table 3)
# ----------------------------------------------------------------------------------------------

def deepfool_finetuning(out_dir: str | Path, *, n_train: int = 1000, n_rho: int = 200,
                        n_test: int = 10000, epochs: int = 5, alphas: Sequence[float] = (1, 2, 3),
                        base_lr: float = 1e-4, lr_factor: float = 0.5, batch_size: int = 50,
                        max_iter: int = 50, seed: int = 0, root: Any = None,
                        models_dir: Any = None,
                        include: Sequence[str] = ("deepfool", "fgsm", "clean"),
                        measure_fgsm: bool = False,
                        example_alphas: Sequence[float] = (1, 2, 3, 4),
                        model: str = "mnist-lenet", dataset: str = "mnist"
                        ) -> list[dict[str, Any]]:
    """ρ_adv and test error of ``model`` (default ``mnist-lenet`` on ``dataset`` ``"mnist"``;
    ``"digits-lenet"`` on ``"digits"`` runs on the embedded data) over ``epochs`` extra
    fine-tuning epochs.

    Runs: DeepFool fine-tuning for each α, FGSM fine-tuning (ε from the 90 % rule of
    ``metrics.fgsm_rho`` on the training subset) and clean fine-tuning, all with Adam at
    ``lr_factor × base_lr`` on the same seeded training subset of ``n_train`` images. After every
    epoch (and before the first): ρ_adv = mean ||r̂||₂/||x||₂ of DeepFool-L2 on ``n_rho`` test
    images (successful attacks on correctly classified inputs), test error on ``n_test`` images.

    ``include`` selects the run families (``"deepfool"``, ``"fgsm"``, ``"clean"``) so that they can
    run in separate processes with the same arguments; each run's rows are kept in
    ``out_dir/runs/deepfool_rows/*.json`` and the table/plot are rebuilt from every run present.

    ``measure_fgsm`` (DeepFool paper Fig. 9): after every epoch also measure the robustness the
    way an FGSM user would, ρ_FGSM of :func:`metrics.fgsm_rho` (the 90 %-rule ε on the same
    ``n_rho`` images, ℓ2), giving row fields ``rho_fgsm`` and ``rho_fgsm_rel`` (relative to the
    starting model) next to DeepFool's ``rho_adv`` / ``rho_rel``, and the plot
    ``fig9_rho_deepfool_vs_fgsm.png``.

    ``example_alphas`` (DeepFool paper Fig. 8): ``fig8_magnified_example.png`` shows one test
    image of a "1" (the first of the ``n_rho`` images whose DeepFool class is 7, else the first
    "1") with its DeepFool perturbation (the fine-tuning set's DeepFool, iterates in [0, 1])
    magnified by each α, clamped to [0, 1], and the starting model's prediction of each; ``()``
    skips it.

    The DeepFool fine-tuning sets use DeepFool with ``clip=True`` (see
    :class:`advsmooth.defenses.methods.DeepFoolFineTuning`); ρ_adv is measured with the paper's
    unclipped DeepFool.
    """
    from .. import attacks, defenses, metrics, models

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    check_choice("dataset", dataset, ("mnist", "digits"))
    model_name = model
    x_tr, y_tr = _mnist("train", n_train, seed, root, dataset)
    x_te, y_te = _mnist("test", None if n_test >= 10000 else n_test, seed, root, dataset)
    x_rho, y_rho = _mnist("test", n_rho, seed + 1, root, dataset)

    def load() -> nn.Module:
        return models.load(model_name, models_dir=models_dir, verbose=False)

    df = attacks.DeepFool(norm=2, overshoot=0.02, max_iter=max_iter)
    fgsm_eps = metrics.fgsm_rho(load(), x_tr, y_tr)["eps"]

    def measure(model: nn.Module, epoch: int) -> dict[str, float]:
        res = df(model, x_rho, y_rho)
        mask = res.success & ~res.skipped
        row = {"epoch": epoch,
               "rho_adv": metrics.robustness(res.perturbation, x_rho, 2, mask=mask),
               "test_error": 1.0 - _accuracy(model, x_te, y_te)}
        if measure_fgsm:
            row["rho_fgsm"] = metrics.fgsm_rho(model, x_rho, y_rho)["rho"]
        return row

    runs: list[tuple[str, str, dict[str, Any]]] = []
    if "deepfool" in include:
        runs += [(f"DeepFool α={a:g}", "deepfool_ft", {"alpha": float(a), "max_iter": max_iter})
                 for a in alphas]
    if "fgsm" in include:
        runs.append((f"FGSM ε={fgsm_eps:.3f}", "fgsm_ft", {"eps": float(fgsm_eps)}))
    if "clean" in include:
        runs.append(("clean", "standard", {}))
    # DeepFool-L2 on the training subset ONCE from the starting model; every α run gets its
    # perturbed set clamp(x + α·r̂) through the method's documented cache (prepared_*.pt)
    t0 = time.perf_counter()
    start_model = load()
    # the method's DeepFool (iterates kept in [0, 1]: the α = 1 set stays adversarial after the
    # clamp); the ρ_adv measurement keeps the paper's unclipped DeepFool
    df_set = attacks.DeepFool(norm=2, overshoot=0.02, max_iter=max_iter, clip=True)
    if "deepfool" in include:
        r_hat = torch.cat([df_set(start_model, x_tr[i:i + 500], y_tr[i:i + 500]).perturbation
                           for i in range(0, len(y_tr), 500)])
    fp = defenses.methods.data_fingerprint(x_tr, y_tr)
    for label, method, kw in runs:
        if method == "deepfool_ft":
            run_dir = out / "runs" / method / label.split()[-1].replace("=", "")
            run_dir.mkdir(parents=True, exist_ok=True)
            cfg = defenses.get_method(method, **kw).config()
            with atomic_path(run_dir / f"prepared_{method}.pt") as tmp:
                torch.save({"config": cfg, "data": fp, "y": y_tr,
                            "x": (x_tr + kw["alpha"] * r_hat).clamp(0.0, 1.0)}, tmp)
    prep_s = time.perf_counter() - t0
    print(f"[deepfool_ft] DeepFool on {len(y_tr)} training images: {prep_s:.0f} s", flush=True)
    if example_alphas:
        _magnified_example(start_model, df_set, x_rho, y_rho,
                           tuple(float(a) for a in example_alphas),
                           out / "fig8_magnified_example.png")
    epoch0 = measure(start_model, 0)
    rows: list[dict[str, Any]] = []
    for label, method, kw in runs:
        t0 = time.perf_counter()
        net = load()
        curve = [dict(epoch0)]

        def cb(m: nn.Module, epoch: int, _curve: list = curve) -> dict[str, float]:
            r = measure(m, epoch)
            _curve.append(r)
            return {k: v for k, v in r.items() if k != "epoch"}

        defenses.finetune(net, (x_tr, y_tr), method=method, base_lr=base_lr,
                          lr_factor=lr_factor, epochs=epochs, batch_size=batch_size, seed=seed,
                          out_dir=out / "runs" / method / label.split()[-1].replace("=", ""),
                          callbacks=[cb], show_progress=False, **kw)
        run_rows = [{"run": label, **r, "rho_rel": r["rho_adv"] / curve[0]["rho_adv"],
                     **({"rho_fgsm_rel": r["rho_fgsm"] / curve[0]["rho_fgsm"]}
                        if measure_fgsm else {})}
                    for r in curve]
        rows += run_rows
        with atomic_path(out / "runs" / "deepfool_rows"
                         / f"{method}_{label.split()[-1]}.json") as tmp:
            tmp.write_text(json.dumps({"rows": run_rows, "seconds": time.perf_counter() - t0}))
        print(f"[deepfool_ft] {label}: rho {curve[0]['rho_adv']:.4f} -> {curve[-1]['rho_adv']:.4f}"
              f", err {curve[0]['test_error']:.4f} -> {curve[-1]['test_error']:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    notes = [f"model: {model_name}, fine-tuned {epochs} extra epochs, Adam "
             f"lr = {lr_factor} × {base_lr:g}, batch {batch_size}, seed {seed}",
             f"training subset: {len(y_tr)} seeded random {dataset} training images (the paper "
             f"uses all 60,000 of MNIST); perturbed sets computed ONCE from the starting model, "
             f"clamped to [0,1]",
             f"rho_adv: DeepFool-L2 (η=0.02, max_iter={max_iter}) on {n_rho} seeded test images, "
             f"pixel space [0,1]; test error on {len(y_te)} test images",
             f"FGSM ε = {fgsm_eps:.4f} (smallest ε misclassifying ≥ 90 % of the training subset)",
             f"DeepFool on the training subset (once, shared by every α): {prep_s:.0f} s",
             f"runtime of the last process ({', '.join(include)}): "
             f"{time.perf_counter() - t_start:.0f} s"]
    order = {"deepfool_ft": 0, "fgsm_ft": 1, "standard": 2}
    files = sorted((out / "runs" / "deepfool_rows").glob("*.json"),
                   key=lambda f: (order.get(f.stem.rsplit("_", 1)[0], 9), f.stem))
    rows = [r for f in files for r in json.loads(f.read_text())["rows"]]
    labels = list(dict.fromkeys(r["run"] for r in rows))
    write_table(rows, out, "deepfool_finetuning",
                f"DeepFool fine-tuning on {dataset} (DeepFool paper Fig. 6/7, Table 3 analogue)",
                notes)
    final = [{"run": r["run"], "test_error_after": r["test_error"], "rho_adv_after": r["rho_adv"],
              "rho_rel": r["rho_rel"]} for r in rows if r["epoch"] == epochs]
    write_table(final, out, "deepfool_finetuning_table3",
                f"Test error and ρ_adv after {epochs} fine-tuning epochs (Table 3 analogue)", notes)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label in labels:
        rr = [r for r in rows if r["run"] == label]
        axes[0].plot([r["epoch"] for r in rr], [r["rho_adv"] for r in rr], marker="o", label=label)
        axes[1].plot([r["epoch"] for r in rr], [100 * r["test_error"] for r in rr], marker="o",
                     label=label)
    axes[0].set(xlabel="extra epochs", ylabel="ρ_adv (DeepFool-L2)", title="robustness")
    axes[1].set(xlabel="extra epochs", ylabel="test error (%)", title="test error")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    _savefig(fig, out / "deepfool_finetuning.png", dpi=120)
    plt.close(fig)
    if measure_fgsm and all("rho_fgsm" in r for r in rows):
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for k, label in enumerate(labels):
            rr = [r for r in rows if r["run"] == label]
            ep = [r["epoch"] for r in rr]
            ax.plot(ep, [r["rho_rel"] for r in rr], marker="o", color=f"C{k}",
                    label=f"{label}: DeepFool")
            ax.plot(ep, [r["rho_fgsm_rel"] for r in rr], marker="s", ls="--", color=f"C{k}",
                    label=f"{label}: FGSM")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set(xlabel="extra epochs", ylabel="ρ_adv / ρ_adv(start)",
               title="Robustness measured by DeepFool vs FGSM")
        ax.legend(fontsize=8)
        fig.tight_layout()
        _savefig(fig, out / "fig9_rho_deepfool_vs_fgsm.png", dpi=120)
        plt.close(fig)
    return rows


def _magnified_example(model: nn.Module, df: Any, x: Tensor, y: Tensor,
                       alphas: tuple[float, ...], path: Path) -> dict[str, Any]:
    """DeepFool paper Fig. 8: a "1" with its DeepFool perturbation magnified by each α.

    Picks the first image of class 1 whose DeepFool class is 7 (else the first "1"; else the
    first image), draws the clean image and ``clamp(x + α r̂, 0, 1)`` for every α with the model's
    prediction, and returns ``{"index", "label", "preds"}`` (predictions per α)."""
    ones = (y == 1).nonzero().flatten().tolist() or [0]
    res = df(model, x[ones], y[ones])
    seven = (res.adv_pred == 7).nonzero().flatten().tolist()
    j = seven[0] if seven else 0
    xi, r = x[ones[j]:ones[j] + 1], res.perturbation[j:j + 1]
    imgs = [xi] + [(xi + a * r).clamp(0.0, 1.0) for a in alphas]
    with torch.no_grad():
        preds = [int(model(im).argmax(1)) for im in imgs]
    plt = _plt()
    fig, axes = plt.subplots(1, len(imgs), figsize=(1.8 * len(imgs), 2.2))
    for k, (ax, im, pr) in enumerate(zip(axes, imgs, preds)):
        ax.imshow(im[0].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(("clean" if k == 0 else f"α = {alphas[k - 1]:g}") + f"\npred {pr}",
                     fontsize=9)
        ax.axis("off")
    fig.suptitle(f"DeepFool perturbation of a \"{int(y[ones[j]])}\" magnified by α", fontsize=10)
    fig.tight_layout()
    _savefig(fig, path, dpi=120)
    plt.close(fig)
    return {"index": ones[j], "label": int(y[ones[j]]), "preds": preds}


# ----------------------------------------------------------------------------------------------
# 2. PNI LeNet + smoothed inference under PGD / EPGD
# ----------------------------------------------------------------------------------------------

def pni_smoothing(out_dir: str | Path, *, n_train: int = 3000, epochs: int = 1,
                  n_test: int = 200, eps: float = 0.3, steps: int = 7,
                  sigmas: Sequence[float] = (0.0, 0.1, 0.2), samples: int = 16,
                  epgd_samples: int = 8, lr: float = 1e-4, seed: int = 0, root: Any = None,
                  models_dir: Any = None) -> list[dict[str, Any]]:
    """PNI LeNet (from ``mnist-lenet-pgd``) trained with PNI-PGD, then smoothed and attacked.

    Training: channelwise PNI weight noise (α init 0.25) injected into every conv/linear of
    ``mnist-lenet-pgd`` (a copy), ``epochs`` epochs of method ``"pni"`` (Eq. 6, w = 0.5, ℓ∞ PGD
    ε = ``eps``, α = ε/4, ``steps`` steps, random start) on ``n_train`` training images, Adam
    ``lr``, noise scales without weight decay. Evaluation on ``n_test`` test images for the PNI
    model and the plain ``mnist-lenet-pgd``: accuracy of ``SmoothedClassifier(model, σ,
    samples, vote="prediction")`` on clean inputs, on PGD examples (ε, α = ε/4, ``steps``,
    plain gradient of the base model with its internal noise on) and on EPGD examples (same PGD
    with ``ExpectationGradient(σ, epgd_samples)``, σ > 0 only; σ = 0 rows reuse PGD).
    """
    from .. import attacks, defenses, models

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    x_tr, y_tr = _mnist("train", n_train, seed, root)
    x_te, y_te = _mnist("test", n_test, seed + 2, root)
    base = models.load("mnist-lenet-pgd", models_dir=models_dir, verbose=False)
    pni = defenses.inject_noise(base, where="weights", kind="pni", granularity="channelwise",
                                seed=seed)
    t0 = time.perf_counter()
    defenses.train(pni, (x_tr, y_tr), method="pni", eps=eps, alpha=eps / 4, steps=steps,
                   epochs=epochs, lr=lr, batch_size=100, seed=seed, out_dir=out / "runs" / "pni",
                   show_progress=False, eval_data=(x_te, y_te))
    train_s = time.perf_counter() - t0
    alphas = [float(p.detach().abs().mean()) for p in defenses.noise_parameters(pni)]
    print(f"[pni] trained in {train_s:.0f} s; mean |alpha| per layer {alphas}", flush=True)
    pgd = attacks.PGD(eps=eps, alpha=eps / 4, steps=steps, random_start=True, seed=seed)
    rows: list[dict[str, Any]] = []
    for name, model in (("PNI-W LeNet (PNI-PGD)", pni), ("LeNet PGD-AT (no noise)", base)):
        x_pgd = pgd(model, x_te, y_te).x_adv
        for sigma in sigmas:
            smoothed = defenses.SmoothedClassifier(model, sigma=float(sigma), samples=samples,
                                                   vote="prediction", seed=seed)
            if sigma > 0:
                epgd = attacks.PGD(eps=eps, alpha=eps / 4, steps=steps, random_start=True,
                                   seed=seed, gradient=attacks.ExpectationGradient(
                                       sigma=float(sigma), samples=epgd_samples))
                x_epgd = epgd(model, x_te, y_te).x_adv
            else:
                x_epgd = x_pgd
            row = {"model": name, "sigma": float(sigma), "M": samples,
                   "clean": _accuracy(smoothed, x_te, y_te),
                   "PGD": _accuracy(smoothed, x_pgd, y_te),
                   "EPGD": _accuracy(smoothed, x_epgd, y_te)}
            rows.append(row)
            print(f"[pni] {row}", flush=True)
    notes = [f"training subset: {n_train} seeded MNIST training images, {epochs} epoch(s) of "
             f"method 'pni' (w=0.5, PGD ε={eps}, α=ε/4, k={steps}) from mnist-lenet-pgd, Adam "
             f"lr {lr:g}, batch 100; training took {train_s:.0f} s",
             f"evaluation: {n_test} seeded MNIST test images; PGD ε={eps}, α=ε/4, k={steps}, "
             f"random start; EPGD = same PGD with ExpectationGradient(σ, M={epgd_samples}) "
             f"(prob_average); smoothing: prediction vote, M={samples}, σ in pixel units",
             "PGD/EPGD examples are crafted on the base model (the PNI model keeps its weight "
             "noise on while attacked, a new draw per forward call)",
             f"learned mean |α| per layer: {', '.join(f'{a:.3f}' for a in alphas)}",
             f"runtime {time.perf_counter() - t_start:.0f} s"]
    write_table(rows, out, "pni_smoothing",
                "PNI LeNet + smoothed inference on MNIST under PGD/EPGD (accuracy)", notes)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["model"] for r in rows):
        rr = [r for r in rows if r["model"] == name]
        for key, style in (("clean", "-"), ("PGD", "--"), ("EPGD", ":")):
            ax.plot([r["sigma"] for r in rr], [100 * r[key] for r in rr], style, marker="o",
                    label=f"{name}: {key}")
    ax.set(xlabel="smoothing σ (pixel units)", ylabel="accuracy (%)",
           title=f"smoothed accuracy, M={samples}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _savefig(fig, out / "pni_smoothing.png", dpi=120)
    plt.close(fig)
    return rows


# ----------------------------------------------------------------------------------------------
# 3. SmoothFool Table 3 analogue
# ----------------------------------------------------------------------------------------------

def smoothfool_defenses(out_dir: str | Path, *, n_test: int = 200, n_train_fgsm: int = 3000,
                        n_train_sat: int = 1000, epochs: int = 1, fgsm_eps: float = 0.25,
                        igsm_eps: float = 0.3, igsm_steps: int = 10,
                        sigmas_g: Sequence[float] = (1.0, 3.0, 5.0), clip_step: float = 1.0,
                        lr: float = 1e-4, seed: int = 0, root: Any = None,
                        models_dir: Any = None, white_box: bool = True
                        ) -> list[dict[str, Any]]:
    """Fooling rates of IGSM, DeepFool, SmoothFool σg ∈ ``sigmas_g`` against defended LeNets.

    Defended models: FGSM-AT (``mnist-lenet`` fine-tuned ``epochs`` epoch(s) with method
    ``"fgsm_at"``, ε = ``fgsm_eps``, w = 0.5, on ``n_train_fgsm`` images), PGD-AT (the shared
    ``mnist-lenet-pgd``), SAT (``mnist-lenet`` fine-tuned with method ``"sat"``, SmoothFool
    σg = 1 examples, w = 0.5, on ``n_train_sat`` images), plus the undefended ``mnist-lenet``.
    Attacks on ``n_test`` test images: IGSM (ℓ∞ ε = ``igsm_eps``, α = ε/``igsm_steps``·2.5,
    ``igsm_steps`` steps), DeepFool-L2, SmoothFool (σg, SmoothClip step ``clip_step``).
    ``transfer``: crafted on the undefended model, fooling rate on the defended one (inputs it
    classifies correctly; perturbed images clamped to [0,1]); ``white-box``: crafted on it.
    ``white_box=False`` skips the white-box rows of the defended models (CPU budget).
    Trained defences resume from ``out_dir/runs/{fgsm_at,sat}/last.pt`` when present.
    """
    from .. import attacks, defenses, metrics, models

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    x_te, y_te = _mnist("test", n_test, seed + 3, root)

    def load(name: str) -> nn.Module:
        return models.load(name, models_dir=models_dir, verbose=False)

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    xf, yf = _mnist("train", n_train_fgsm, seed, root)
    fgsm_model = defenses.train(load("mnist-lenet"), (xf, yf), method="fgsm_at", eps=fgsm_eps,
                                epochs=epochs, lr=lr, batch_size=50, seed=seed,
                                out_dir=out / "runs" / "fgsm_at", show_progress=False,
                                resume=True)
    timings["FGSM-AT training"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    xs, ys = _mnist("train", n_train_sat, seed, root)
    sat_model = defenses.train(load("mnist-lenet"), (xs, ys), method="sat", sigma_g=1.0,
                               clip_step=clip_step, epochs=epochs, lr=lr, batch_size=50,
                               seed=seed, out_dir=out / "runs" / "sat", show_progress=False,
                               resume=True)
    timings["SAT training"] = time.perf_counter() - t0
    print(f"[sf] trained {timings}", flush=True)
    targets = {"none": load("mnist-lenet"), "FGSM-AT": fgsm_model,
               "PGD-AT": load("mnist-lenet-pgd"), "SAT": sat_model}
    atk: dict[str, Any] = {
        "IGSM": attacks.IGSM(eps=igsm_eps, alpha=2.5 * igsm_eps / igsm_steps, steps=igsm_steps),
        "DF": attacks.DeepFool(norm=2, overshoot=0.02, max_iter=50),
    }
    for s in sigmas_g:
        atk[f"SF σg={s:g}"] = attacks.SmoothFool(sigma=float(s), clip_step=clip_step)

    def craft(a: Any, model: nn.Module) -> Tensor:
        return a(model, x_te, y_te).x_adv.clamp(0.0, 1.0)

    rows: list[dict[str, Any]] = []
    source = targets["none"]
    transfer = {name: craft(a, source) for name, a in atk.items()}
    for tname, tmodel in targets.items():
        row_t: dict[str, Any] = {"defence": tname, "setting": "transfer from undefended",
                                 "clean_acc": _accuracy(tmodel, x_te, y_te)}
        row_w: dict[str, Any] = {"defence": tname, "setting": "white-box",
                                 "clean_acc": row_t["clean_acc"]}
        for aname, a in atk.items():
            row_t[aname] = metrics.fooling_rate(tmodel, x_te, transfer[aname], y_te).rate
            if white_box or tname == "none":
                xa = transfer[aname] if tname == "none" else craft(a, tmodel)
                row_w[aname] = metrics.fooling_rate(tmodel, x_te, xa, y_te).rate
        if tname == "none":
            rows.append(row_w)
        else:
            rows += [row_t, row_w] if white_box else [row_t]
        print(f"[sf] {row_t}\n[sf] {row_w}", flush=True)
    notes = [f"{n_test} seeded MNIST test images; fooling rate over the inputs each model "
             "classifies correctly; adversarial images clamped to [0,1]",
             f"FGSM-AT: mnist-lenet fine-tuned {epochs} epoch(s) on {n_train_fgsm} training "
             f"images, ε={fgsm_eps}, w=0.5, Adam lr {lr:g} "
             f"({timings['FGSM-AT training']:.0f} s)",
             "PGD-AT: shared mnist-lenet-pgd (advertorch, ε=0.3, 40 steps, 90 epochs)",
             f"SAT: mnist-lenet fine-tuned {epochs} epoch(s) on {n_train_sat} training images "
             f"with SmoothFool σg=1 examples (clip_step={clip_step}), w=0.5 "
             f"({timings['SAT training']:.0f} s)",
             f"IGSM: ε={igsm_eps}, α={2.5 * igsm_eps / igsm_steps:.3f}, {igsm_steps} steps; "
             f"DF: DeepFool-L2 η=0.02; SF: SmoothFool (Gaussian σg, clip_step={clip_step})",
             f"runtime {time.perf_counter() - t_start:.0f} s"]
    write_table(rows, out, "smoothfool_defenses",
                "Fooling rates against defended MNIST LeNets (SmoothFool Table 3 analogue)", notes)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(atk)
    sel = [r for r in rows if r["setting"] != "white-box" or r["defence"] == "none"]
    width = 0.8 / max(len(sel), 1)
    for i, r in enumerate(sel):
        ax.bar([j + i * width for j in range(len(names))], [100 * r[n] for n in names], width,
               label=f"{r['defence']} ({'white-box' if r['defence'] == 'none' else 'transfer'})")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
    ax.set(ylabel="fooling rate (%)", title="attacks crafted on the undefended LeNet")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _savefig(fig, out / "smoothfool_defenses.png", dpi=120)
    plt.close(fig)
    return rows


def run_all(out_dir: str | Path, **kwargs: Any) -> dict[str, list[dict[str, Any]]]:
    """Run the three studies into ``out_dir`` (keyword arguments go to every study)."""
    return {"deepfool_finetuning": deepfool_finetuning(out_dir, **kwargs),
            "pni_smoothing": pni_smoothing(out_dir, **kwargs),
            "smoothfool_defenses": smoothfool_defenses(out_dir, **kwargs)}


if __name__ == "__main__":  # pragma: no cover - CLI convenience
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--study", choices=("deepfool", "pni", "smoothfool", "all"), default="all")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="study argument (JSON value), repeatable")
    a = ap.parse_args()
    kw = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}
    fn = {"deepfool": deepfool_finetuning, "pni": pni_smoothing,
          "smoothfool": smoothfool_defenses}
    if a.study == "all":
        run_all(a.out_dir, **kw)
    else:
        fn[a.study](a.out_dir, **kw)
