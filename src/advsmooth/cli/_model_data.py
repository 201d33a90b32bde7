"""Helpers of ``advsmooth evaluate`` / ``certify``: ε lists with fractions, the model (a zoo
name, a saved path or ``package.module:factory`` with ``--checkpoint``) and the data, with the
model's input shape checked against the data before any work."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ._common import add_common


def parse_number(text: str) -> float:
    """``"0.3"`` → 0.3, ``"8/255"`` → 8/255; ``ValueError`` naming the text otherwise."""
    t = text.strip()
    try:
        if "/" in t:
            num, den = t.split("/", 1)
            if "/" in den:
                raise ValueError(t)
            v = float(num.strip()) / float(den.strip())
        else:
            v = float(t)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"expected a number or a fraction such as 8/255, got {text!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {text!r}")
    return v


def eps_list(text: str | None, flag: str = "--eps") -> list[float] | None:
    """Comma- (or space-) separated values ≥ 0, fractions allowed (``"2/255,4/255,8/255"``);
    ``None`` stays ``None``. ``ValueError`` naming ``flag`` (one line, exit 2 in the CLI)."""
    if text is None:
        return None
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise ValueError(f"{flag}: expected at least one value, e.g. 8/255 or 0.1,0.3")
    try:
        vals = [parse_number(p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None
    bad = [p for p, v in zip(parts, vals, strict=True) if v < 0]
    if bad:
        raise ValueError(f"{flag}: values must be >= 0, got {bad[0]}")
    return vals


def add_model_data(p: argparse.ArgumentParser, *, default_n: int) -> None:
    """``--model``, ``--checkpoint``, ``--data``, ``--split``, ``--n``, ``--random-subset``,
    ``--seed`` and the common ``--data-root`` / ``--models-dir`` / ``--device``."""
    p.add_argument("--model", "-m", required=True,
                   help="zoo name (e.g. mnist-lenet-pgd), a saved model path, or "
                        "package.module:factory (a function returning an nn.Module)")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="state dict loaded into the model (torch.load weights_only=True)")
    p.add_argument("--data", "-d", required=True, help="dataset name (e.g. mnist) or npz:PATH")
    p.add_argument("--split", default="test", help="data split (default: test)")
    p.add_argument("--n", type=int, default=default_n,
                   help=f"samples: the first N in file order (default {default_n}; 0 = all)")
    p.add_argument("--random-subset", action="store_true",
                   help="take a seeded random subset of N samples instead of the first N")
    p.add_argument("--seed", type=int, default=0, help="seed of every random component")
    add_common(p)


def load_model_data(args: argparse.Namespace) -> tuple[Any, Any, Any, str]:
    """``(model, x, y, device)`` from the parsed arguments; the model is checked on the data."""
    import advsmooth as asm

    from ..models.byo import check_input_shape, is_factory_spec, load_factory
    from ._common import resolve_device

    device = resolve_device(args.device)
    if args.n < 0:
        raise ValueError(f"--n must be >= 0, got {args.n}")
    expected = None
    if is_factory_spec(args.model):
        model = load_factory(args.model, checkpoint=args.checkpoint, device=device)
    else:
        model = asm.models.load(args.model, device=device, models_dir=args.models_dir,
                                checkpoint=args.checkpoint, verbose=False)
        if args.model in asm.models.ZOO:
            expected = asm.models.ZOO[args.model].in_shape
    kw: dict[str, Any] = {}
    if args.n:
        kw = {"sample": args.n, "seed": args.seed} if args.random_subset else {"n": args.n}
    x, y = asm.data.load(args.data, split=args.split, root=args.data_root, **kw)
    if x.shape[0] == 0:
        raise ValueError(f"no samples in {args.data} ({args.split})")
    x, y = x.to(device), y.to(device)
    check_input_shape(model, x, expected=expected, name=f"model {args.model}")
    return model, x, y, device
