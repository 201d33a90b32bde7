"""``advsmooth train MODEL --data NAME``: train an architecture (or fine-tune a zoo model).

Writes ``OUT/epoch_XXX.pt``, ``OUT/last.pt`` (resumable with ``--resume``), ``OUT/metrics.jsonl``
and the final ``OUT/model.pt`` + ``OUT/model.pt.json``; the latter pair can be loaded with
``advsmooth.models.load("OUT/model.pt")``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import (
    add_common,
    check_out_dir,
    nonnegative_int,
    nonnegative_number,
    positive_int,
    positive_number,
    resolve_device,
)


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train an architecture or fine-tune a zoo model on a dataset",
        description="MODEL is an architecture (mlp, lenet, lenet5, resnet20, vgg-small, "
                    "wrn-16-4, ...) trained from scratch, or a zoo model name (fine-tuned from "
                    "its weights). Checkpoints every epoch; --resume continues an interrupted "
                    "run with identical results.")
    p.add_argument("model", help="architecture or zoo model name")
    p.add_argument("--data", required=True, help="dataset name (digits, mnist, ...) or npz:PATH")
    p.add_argument("--train-split", default="train", help="split to train on (default: train)")
    p.add_argument("--eval-split", default=None,
                   help="split for the clean accuracy in the log (default: test/val if "
                        "available; 'none' to skip)")
    p.add_argument("--method", default="standard", help="training method (default: standard)")
    p.add_argument("--method-param", action="append", default=[], metavar="KEY=VALUE",
                   help="hyper-parameter of the method, repeatable (VALUE parsed as JSON when "
                        "possible, e.g. eps=0.3 steps=7 variant=prob_average)")
    p.add_argument("--epochs", type=positive_int, default=10, help="epochs (default: 10)")
    p.add_argument("--lr", type=positive_number, default=1e-3, help="learning rate (1e-3)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--schedule", choices=("none", "cosine"), default="none",
                   help="learning-rate schedule (default: none)")
    p.add_argument("--weight-decay", type=nonnegative_number, default=0.0,
                   help="weight decay (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="batch size (128)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", "-o", default=None,
                   help="output directory (default: runs/train-MODEL-DATA)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_common(p)
    p.set_defaults(func=_main)
    return p


def _main(args: argparse.Namespace) -> int:
    import torch

    from .. import data, models
    from ..defenses import evaluate, get_method, train

    method_kwargs = _method_params(args.method_param)
    get_method(args.method, **method_kwargs)  # name and parameters, checked before loading data
    device = resolve_device(args.device)
    out = Path(args.out) if args.out else Path("runs") / f"train-{args.model}-{args.data}".replace(
        ":", "_").replace("/", "_")
    check_out_dir(out)
    train_xy = data.load(args.data, split=args.train_split, root=args.data_root)
    if len(train_xy[1]) == 0:
        raise ValueError(f"{args.data} (split {args.train_split!r}) holds no images to train on")
    in_shape = tuple(train_xy[0].shape[1:])
    if args.data in data.REGISTRY and data.info(args.data).num_classes:
        num_classes = int(data.info(args.data).num_classes)  # type: ignore[arg-type]
    else:
        num_classes = int(train_xy[1].max()) + 1
        if num_classes < 2:
            raise ValueError(f"{args.data} (split {args.train_split!r}) has labels of one class "
                             "only (all 0): a classifier needs at least two")
    eval_xy = None
    eval_split = args.eval_split
    if eval_split is None and args.data in data.REGISTRY:
        splits = data.info(args.data).splits
        eval_split = next((s for s in ("test", "val") if s in splits and s != args.train_split),
                          None)
    if eval_split not in (None, "none"):
        try:
            eval_xy = data.load(args.data, split=eval_split, root=args.data_root)
        except FileNotFoundError as exc:
            if args.eval_split is not None:
                raise
            print(f"advsmooth train: note: no {eval_split} split here ({exc}); no clean "
                  f"accuracy in the log")

    kwargs: dict[str, Any] = {}
    mean = std = None
    if args.model in models.ZOO:
        spec = models.spec(args.model)
        if spec.in_shape != in_shape or spec.num_classes != num_classes:
            raise ValueError(f"{args.model} takes {spec.in_shape} inputs with "
                             f"{spec.num_classes} classes, but {args.data} has {in_shape} and "
                             f"{num_classes}")
        model = models.load(args.model, models_dir=args.models_dir)
        arch, kwargs = spec.arch, dict(spec.kwargs)
        mean, std = spec.mean, spec.std
    else:
        arch = args.model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            model = models.create(arch, in_shape, num_classes)

    train(model, train_xy, method=args.method, epochs=args.epochs, lr=args.lr,
          optimizer=args.optimizer, weight_decay=args.weight_decay,
          schedule=None if args.schedule == "none" else args.schedule,
          batch_size=args.batch_size, seed=args.seed, out_dir=out, resume=args.resume,
          eval_data=eval_xy, device=device, show_progress=not args.no_progress,
          **method_kwargs)
    acc = evaluate(model, eval_xy) if eval_xy is not None else None
    path = models.save_model(
        model, out / "model.pt", arch=arch, in_shape=in_shape, num_classes=num_classes,
        mean=mean, std=std, kwargs={k: list(v) if isinstance(v, tuple) else v
                                    for k, v in kwargs.items()},
        data=args.data, epochs=args.epochs, seed=args.seed, method=args.method,
        test_accuracy=None if acc is None else round(100 * acc, 3))
    msg = f"trained {args.model} on {args.data} ({len(train_xy[1])} images, {args.epochs} epochs)"
    if acc is not None:
        msg += f": {eval_split} accuracy {100 * acc:.2f} %"
    print(f"{msg}; saved {path} (logs and checkpoints in {out})")
    return 0


def _method_params(items: list[str]) -> dict[str, Any]:
    """``["eps=0.3", "variant=prob_average"]`` → ``{"eps": 0.3, "variant": "prob_average"}``."""
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--method-param must look like KEY=VALUE, got {item!r}")
        try:
            out[key.strip().replace("-", "_")] = json.loads(val)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = val
    return out
