"""Helpers of ``advsmooth evaluate`` / ``certify``: ε lists with fractions, the model (a zoo
name, a saved path or ``package.module:factory`` with ``--checkpoint``) and the data, with the
model's input shape checked against the data before any work."""

from __future__ import annotations

import argparse
import warnings
from typing import Any

from ._common import add_common, nonnegative_int, parse_number


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
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of every random component")
    add_common(p)


def print_and_write(report: Any, out: str | None, writer: Any, title: str) -> None:
    """Print ``report.summary()``; with ``out``, also write it with ``writer(report, out,
    title=title)`` (JSON, Markdown and HTML, see :mod:`advsmooth.report.evaluation`) and say
    where."""
    print(report.summary())
    if out:
        paths = writer(report, out, title=title)
        print(f"wrote {paths['json']}, {paths['md']}, {paths['html']}")


def load_images(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(x, y)`` of ``--data`` / ``--split``: the first ``--n`` (0: all), or with
    ``--random-subset`` a seeded random subset (``--seed``). On class-sorted data the first
    ``N`` are a few classes: said in one warning in the command's words."""
    import advsmooth as asm

    kw: dict[str, Any] = {}
    if args.n:
        kw = {"sample": args.n, "seed": args.seed} if args.random_subset else {"n": args.n}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", asm.data.ClassSortedWarning)
        x, y = asm.data.load(args.data, split=args.split, root=args.data_root, **kw)
    for w in caught:  # the library's advice in the command's own words
        if issubclass(w.category, asm.data.ClassSortedWarning):
            warnings.warn(f"{args.data} is sorted by class: --n {args.n} takes the first "
                          f"{args.n} samples ({int(y.unique().numel())} of its classes); add "
                          "--random-subset for a seeded random subset (--seed)",
                          asm.data.ClassSortedWarning, stacklevel=1)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return x, y


def load_model_data(args: argparse.Namespace) -> tuple[Any, Any, Any, str]:
    """``(model, x, y, device)`` from the parsed arguments. The device, the output folder and
    the model's declared input shape against the data's are checked before anything is loaded;
    the model is then run on two images of the data."""
    import advsmooth as asm

    from ..models.byo import is_factory_spec, load_factory
    from ._common import check_model_input, check_n, check_out_dir, data_shape, resolve_device

    device = resolve_device(args.device)
    if args.n < 0:
        raise ValueError(f"--n must be >= 0, got {args.n}")
    check_out_dir(getattr(args, "out", None))
    shape = data_shape(args.data, args.split, args.data_root)
    check_n(args.n, args.data, args.split)
    check_model_input(args.model, args.data, shape)
    if is_factory_spec(args.model):
        model = load_factory(args.model, checkpoint=args.checkpoint, device=device)
    else:
        model = asm.models.load(args.model, device=device, models_dir=args.models_dir,
                                checkpoint=args.checkpoint, verbose=False)
    x, y = load_images(args)
    if x.shape[0] == 0:
        raise ValueError(f"no samples in {args.data} ({args.split})")
    x, y = x.to(device), y.to(device)
    model.eval()
    check_model_input(args.model, args.data, shape, model, x[:2])
    return model, x, y, device
