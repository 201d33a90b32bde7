"""Small shared helpers: lazy optional imports, cache directory, seeding, progress bars, argument
and model-output checks.

Nothing here imports a heavy optional dependency at module import time.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "MissingDependency",
    "atomic_path",
    "remove_stale_temps",
    "optional_import",
    "cache_dir",
    "make_generator",
    "progress",
    "progress_enabled",
    "check_positive",
    "check_nonnegative",
    "check_int_at_least",
    "check_choice",
    "check_bool",
    "NonFiniteModelOutput",
    "check_model_output",
    "check_finite_gradient",
    "eval_mode",
    "input_mismatch",
]

#: optional module -> extra that installs it
_EXTRAS = {
    "torchvision": "vision",
    "timm": "timm",
    "matplotlib": "plot",
    "foolbox": "peers",
    "torchattacks": "peers",
    "art": "peers",
    "hypothesis": "dev",
}


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


#: this package's folder: warnings are attributed to the first frame outside it
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the user's line: the first stack frame outside the
    advsmooth package (however deep the library's own calls are: an attack called directly, via
    ``run_batched`` or from a spec runner)."""
    import warnings

    frame, level = sys._getframe(1), 2  # stacklevel 2: the caller of warn_caller
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def optional_import(name: str) -> ModuleType:
    """Import an optional dependency, or raise :class:`MissingDependency` (an ``ImportError``)
    naming the extra to install.

    >>> np = optional_import("numpy")
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        top = name.split(".")[0]
        extra = _EXTRAS.get(top)
        hint = f"pip install 'advsmooth[{extra}]'" if extra else f"pip install {top}"
        raise MissingDependency(
            f"{name!r} is required for this feature but is not installed: {hint}"
        ) from exc


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # portable fallback: set and restore (not atomic w.r.t. other threads)
        old = os.umask(0o022)
        os.umask(old)
    return old


def _naming(exc: OSError, final: Path) -> OSError:
    """``exc`` as the same ``OSError`` subclass, naming ``final`` (not the temporary file)."""
    if exc.errno is not None:
        # OSError(errno, ...) picks the subclass itself: PermissionError, FileNotFoundError, ...
        return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(final))
    text = str(exc) or type(exc).__name__
    try:
        new = type(exc)(f"{text}: {str(final)!r}")
    except Exception:  # pragma: no cover - a subclass with an unusual constructor
        new = OSError(f"{text}: {str(final)!r}")
    return new


#: temporary files of :func:`atomic_path`: ``.NAME.PID-RANDOM.tmpSUFFIX`` (and the older
#: ``.NAME.RANDOM.tmpSUFFIX``, without the writer's pid)
_TEMP_NAME = re.compile(r"^\..+\.(?:(\d+)-)?[A-Za-z0-9_]+\.tmp(?:\.[^.]*)?$")
#: a temporary file without a pid is stale after this many seconds
_STALE_SECONDS = 3600.0
_CLEANED: set[str] = set()
_CLEANED_LOCK = threading.Lock()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists (another user's), or cannot tell: keep it
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` writers left in ``folder`` when they
    were killed (``SIGKILL``, power loss): those whose writer process no longer exists, and
    those without a pid older than an hour. Returns the removed paths; never raises."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        m = _TEMP_NAME.match(e.name)
        if m is None:
            continue
        try:
            if not e.is_file(follow_symlinks=False):
                continue
            stale = (not _alive(int(m.group(1))) if m.group(1)
                     else now - e.stat().st_mtime > _STALE_SECONDS)
            if stale:
                os.unlink(e.path)
                removed.append(Path(e.path))
        except (OSError, ValueError):
            continue
    return removed


def _clean_once(folder: Path) -> None:
    """:func:`remove_stale_temps` on ``folder``, once per process and folder."""
    key = str(folder.resolve()) if folder.exists() else str(folder)
    with _CLEANED_LOCK:
        if key in _CLEANED:
            return
        _CLEANED.add(key)
    remove_stale_temps(folder)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a file atomically: yield a fresh temporary path beside ``path``, then rename it over
    ``path`` (``os.replace``) when the block succeeds.

    * On any error (a failing serializer, a full disk, an interrupted write, Ctrl-C) the temporary
      file is removed and an existing ``path`` is left intact; a process killed mid-write
      (``SIGKILL``) leaves at most a hidden ``.NAME.PID-RANDOM.tmpSUFFIX`` file, never a
      truncated ``path``, and the first ``atomic_path`` into that folder by a later process
      removes it (:func:`remove_stale_temps`: its writer ``PID`` no longer runs).
    * Every call gets its own temporary name (``tempfile.mkstemp`` in the target's folder), so
      concurrent writers (threads or processes) never collide: the last rename wins and the
      file is always one writer's complete output.
    * The temporary name keeps the suffix, so writers that infer the format from it
      (``np.savez``, ``savefig``, ``torch.save``) work unchanged; the file gets the usual
      permissions (``0o666`` minus the umask), not ``mkstemp``'s ``0o600``.
    * An ``OSError`` about the temporary file (read-only folder, full disk) is raised as the
      same subclass naming ``path``, e.g. ``PermissionError: [Errno 13] Permission denied:
      'out/report.html'``; ``torch.save``'s ``RuntimeError`` for a failed write becomes an
      ``OSError`` naming ``path`` too. The CLI prints either as one line with exit status 2.

    The data is not ``fsync``-ed: the rename is atomic for other processes and survives the
    writer being killed, not a power loss.

    >>> with atomic_path("out/table.csv") as tmp:  # doctest: +SKIP
    ...     tmp.write_text("a,b\\n1,2\\n")
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _clean_once(final.parent)
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}-",
                                    suffix=f".tmp{final.suffix}", dir=final.parent)
    except OSError as exc:
        raise _naming(exc, final) from exc
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())
        except (OSError, AttributeError):  # pragma: no cover - Windows
            pass
        os.close(fd)
        yield tmp
        os.replace(tmp, final)
    except OSError as exc:
        if exc.filename in (None, name, str(tmp)) or exc.filename2 in (name, str(tmp)):
            raise _naming(exc, final) from exc
        raise
    except RuntimeError as exc:
        # torch.save reports a failed write (e.g. a full disk) as a RuntimeError from its zip
        # writer; make it the OSError it is, naming the target (the CLI prints it as one line)
        if "file write failed" in str(exc) or "PytorchStreamWriter" in str(exc):
            raise OSError(errno.EIO, f"writing failed ({str(exc).strip().splitlines()[-1]})",
                          str(final)) from exc
        raise
    finally:
        try:
            tmp.unlink()
        except OSError:  # already renamed (success), or the folder forbids it
            pass


def cache_dir() -> Path:
    """The user cache directory of advsmooth (created on demand).

    ``$ADVSMOOTH_CACHE`` if set, else ``$XDG_CACHE_HOME/advsmooth``, else ``~/.cache/advsmooth``.
    """
    env = os.environ.get("ADVSMOOTH_CACHE")
    if env:
        path = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "advsmooth"
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_generator(
    seed: int | torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Generator:
    """Return a ``torch.Generator`` on ``device``: the one given, or a new one seeded with ``seed``.

    ``None`` means seed 0, so that every random component is reproducible by default.
    """
    if isinstance(seed, torch.Generator):
        return seed
    gen = torch.Generator(device=device)
    gen.manual_seed(0 if seed is None else int(seed))
    return gen


def progress_enabled(enabled: bool = True) -> bool:
    """Whether progress bars are drawn: ``enabled``, stderr is a terminal, and
    ``$ADVSMOOTH_NO_PROGRESS`` is unset, empty or ``0``."""
    if not enabled:
        return False
    if os.environ.get("ADVSMOOTH_NO_PROGRESS", "").strip() not in ("", "0"):
        return False
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress(iterable: Any = None, *, total: int | None = None, desc: str = "",
             enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm progress bar on stderr, or a silent pass-through.

    Off when ``enabled`` is False, when stderr is not a terminal (a log file, a pipe, CI), and
    when ``$ADVSMOOTH_NO_PROGRESS`` is set to anything but ``0`` (see :func:`progress_enabled`).
    """
    from tqdm.auto import tqdm

    disable = not progress_enabled(enabled)
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False, **kwargs)


# --- argument validation (raise ValueError with the parameter name) -------------------------

def check_positive(name: str, value: float) -> float:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0."""
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not (value > 0) or value == float("inf")):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_nonnegative(name: str, value: float) -> float:
    """Raise ``ValueError`` unless ``value`` is a finite number >= 0."""
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not (value >= 0) or value == float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_int_at_least(name: str, value: int, minimum: int) -> int:
    """Raise ``ValueError`` unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def did_you_mean(value: Any, choices: Iterable[Any]) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to the string ``value`` (the same name in
    other letter case first, then :func:`difflib.get_close_matches`), or ``""``."""
    if not isinstance(value, str):
        return ""
    names = [c for c in choices if isinstance(c, str)]
    same = [c for c in names if c.lower() == value.lower()]
    near = same or difflib.get_close_matches(value.lower(), names, n=1, cutoff=0.6)
    return f"; did you mean {near[0]!r}?" if near else ""


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}"
                         f"{did_you_mean(value, choices)}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Raise ``ValueError`` unless ``value`` is a ``bool``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


def search_dirs(given: str | os.PathLike[str] | None, env_var: str,
                defaults: tuple[str, ...]) -> list[Path]:
    """The folders to search for files, in order: ``[given]`` if not None, else
    ``[$env_var]`` if set and non-empty, else ``defaults`` (``~`` expanded in the first two)."""
    if given is not None:
        return [Path(given).expanduser()]
    env = os.environ.get(env_var)
    if env:
        return [Path(env).expanduser()]
    return [Path(d) for d in defaults]


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``model`` in eval mode inside the block; every submodule's ``training`` flag is
    restored on exit (also when the body raises). Parameter flags are untouched, so gradients
    still reach the parameters."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


# --- model outputs (what every attack and the smoothed classifier read) ----------------------

class NonFiniteModelOutput(ValueError):
    """The model returned NaN/Inf logits, or the gradient of its output is NaN/Inf."""


def check_model_output(out: Any, n: int | None = None, *, name: str = "model output") -> Tensor:
    """``out`` if it is a usable classifier output, else a one-line ``TypeError``/``ValueError``.

    Usable: one floating-point tensor (not a tuple/list/dict) whose first dimension has ``n`` rows
    (one per input image, when ``n`` is given), with rank 1 (one score per sample), 2 (``N×K``
    logits) or 3 (``N×E×K`` member logits of an ensemble), and only finite values. Non-finite
    values raise :class:`NonFiniteModelOutput` (a ``ValueError``) naming how many rows are
    affected: no attack, vote or certificate is ever computed from NaN/Inf logits.
    """
    if isinstance(out, (tuple, list, dict)):
        raise TypeError(f"the {name} is a {type(out).__name__}; the model must return one tensor "
                        "of N×K logits (wrap it so that forward returns only the logits)")
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the {name} must be a torch.Tensor of N×K logits, "
                        f"got {type(out).__name__}")
    if out.ndim not in (1, 2, 3):
        raise ValueError(f"the {name} must have shape N×K (or N for a binary score), "
                         f"got shape {tuple(out.shape)}")
    if n is not None and out.shape[0] != n:
        raise ValueError(f"the {name} has {out.shape[0]} rows for a batch of {n} input(s) "
                         f"(shape {tuple(out.shape)}); the model must return one row per input")
    if not out.is_floating_point():
        raise TypeError(f"the {name} has dtype {out.dtype}; logits must be floating-point "
                        "(return float scores, not class indices or rounded values)")
    if out.numel() and not bool(torch.isfinite(out.detach()).all()):
        bad = int((~torch.isfinite(out.detach())).reshape(out.shape[0], -1).any(1).sum())
        raise NonFiniteModelOutput(
            f"the {name} contains NaN or Inf for {bad} of {out.shape[0]} input(s); "
            "no result is computed from non-finite logits")
    return out


#: torch's messages for an input the model's layers cannot take (channel count, image size)
_MISMATCH_MESSAGES = ("channels", "mat1 and mat2", "shapes cannot be multiplied",
                      "Kernel size can't be greater", "Output size is too small",
                      "must match the size of tensor")


@contextmanager
def input_mismatch(x: Tensor, name: str = "x") -> Iterator[None]:
    """Turn the ``RuntimeError`` a model raises on an input of the wrong shape (channel count,
    image size: torch's messages in ``_MISMATCH_MESSAGES``) into one
    ``ValueError`` naming the input's shape; the model's own error stays chained for debugging.
    Any other error passes through unchanged."""
    try:
        yield
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if not any(w in msg for w in _MISMATCH_MESSAGES):
            raise
        raise ValueError(
            f"the model cannot take {name} of shape {tuple(x.shape)} ({msg}); pass N×C×H×W "
            "images with the channel count and size the model expects") from exc


def check_finite_gradient(grad: Tensor, name: str = "model output") -> Tensor:
    """``grad`` if all finite, else :class:`NonFiniteModelOutput` naming the ``name`` whose
    input gradient it is (e.g. a model with ``sqrt`` at 0 or an overflowing layer)."""
    if grad.numel() and not bool(torch.isfinite(grad).all()):
        bad = int((~torch.isfinite(grad)).reshape(grad.shape[0], -1).any(1).sum())
        raise NonFiniteModelOutput(
            f"the input gradient of the {name} contains NaN or Inf for {bad} of "
            f"{grad.shape[0]} input(s); the model is not differentiable there")
    return grad


def resolve_device(value: str | None, option: str = "device") -> str:
    """Map a device name (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``auto`` or ``None``: CUDA when
    available) to a torch device string; ``ValueError`` naming ``option`` for an unusable value
    (``gpu``, ``cuda`` on a machine without CUDA, ``cuda:N`` past the last GPU)."""
    if value in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    v = value.strip().lower()
    if v == "cpu":
        return "cpu"
    if v == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{option} mps: MPS is not available on this machine "
                             "(use cpu or auto)")
        return "mps"
    m = re.fullmatch(r"cuda(?::(\d+))?", v)
    if m:
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {value}: CUDA is not available on this machine "
                             "(use cpu or auto)")
        if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
            raise ValueError(f"{option} {value}: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s), numbered from 0")
        return v
    raise ValueError(f"{option} must be cpu, cuda, cuda:N, mps or auto, got {value!r}")
