"""Attack registry: a name → how to build the attack, shared by the CLI, experiments and demos.

Each entry of :data:`REGISTRY` is an :class:`AttackEntry`: the factory (a class or function, or
its ``"module:attribute"`` path so that the registry never imports an attack it does not build),
the keyword parameters that the named CLI flags may set, and whether the result is a per-sample
:class:`~advsmooth.attacks.Attack` or a :class:`~advsmooth.attacks.UniversalPerturbation`.

Adding an attack is one line in ``REGISTRY`` (or a call to :func:`register`)::

    "fgsm": AttackEntry("advsmooth.attacks.iterative:FGSM", ("eps", "norm")),

Building by name: ``build("deepfool", max_iter=20)`` returns ``DeepFool(max_iter=20)``;
``build("smooth-uap", sigma=5, xi=10/255)`` a :class:`UniversalPerturbation` with a SmoothFool
base.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._utils import check_choice, did_you_mean

__all__ = ["AttackEntry", "REGISTRY", "register", "build", "names", "entry", "KINDS", "GRADIENTS",
           "build_gradient"]

#: what an entry builds
KINDS = ("sample", "universal")


@dataclass(frozen=True)
class AttackEntry:
    """How to build one named attack.

    Attributes:
        factory: a callable returning the attack (class or function taking keyword parameters),
            or its import path ``"package.module:attribute"`` (resolved lazily).
        options: keyword parameters of ``factory`` that the named CLI flags may set
            (``norm``, ``sigma``, ``overshoot``, ``max_iter``, ``candidates``, ``eps``, ...).
            Any other keyword can still be given with ``--param key=value``.
        kind: ``"sample"`` (an :class:`Attack`, called as ``attack(model, x, y)``) or
            ``"universal"`` (an object with ``fit(model, data) -> v``).
        aliases: CLI flag name → parameter name where they differ (e.g. ``{"eps": "xi"}``).
        defaults: keyword parameters passed unless overridden.
        help: one line for ``advsmooth attack --help``.
    """

    factory: str | Callable[..., Any]
    options: tuple[str, ...] = ()
    kind: str = "sample"
    aliases: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    help: str = ""

    def resolve(self) -> Callable[..., Any]:
        """The factory callable (imports the module for a ``"module:attribute"`` path)."""
        if callable(self.factory):
            return self.factory
        module, _, attr = self.factory.partition(":")
        if not module or not attr:
            raise ValueError(f"factory path must look like 'package.module:Name', "
                             f"got {self.factory!r}")
        return getattr(importlib.import_module(module), attr)

    def param_for(self, flag: str) -> str:
        """The keyword parameter that CLI flag ``flag`` (dest name, e.g. ``max_iter``) sets."""
        return self.aliases.get(flag, flag)

    def accepts(self, param: str) -> bool | None:
        """Whether ``factory`` takes keyword ``param`` (``None`` if it cannot be told)."""
        try:
            sig = inspect.signature(self.resolve())
        except (TypeError, ValueError):  # pragma: no cover - builtins without signature
            return None
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
            return None
        return param in sig.parameters


# ----------------------------------------------------------------------------------------------
# factories for composite attacks
# ----------------------------------------------------------------------------------------------

def make_uap(*, xi: float = 10 / 255, norm: float | int | str = "inf", max_iter: int = 10,
             overshoot: float = 0.02, candidates: int = 10, target_fooling_rate: float = 0.8,
             max_passes: int = 10, eval_clamp: bool = True, batch_update: int | None = None,
             l2_projection: str = "ball", progress_bar: bool = True, seed: int = 0) -> Any:
    """Plain UAP (arXiv:1610.08401): :class:`UniversalPerturbation` with an L2 ``DeepFool`` base.

    ``max_iter``, ``overshoot`` and ``candidates`` configure the inner DeepFool; the others the
    universal perturbation (``norm`` and ``xi`` are the ball of ``v``).
    """
    from .deepfool import DeepFool
    from .universal import UniversalPerturbation

    base = DeepFool(max_iter=max_iter, overshoot=overshoot, candidates=candidates)
    return UniversalPerturbation(base=base, xi=xi, norm=norm,
                                 target_fooling_rate=target_fooling_rate, max_passes=max_passes,
                                 eval_clamp=eval_clamp, batch_update=batch_update,
                                 l2_projection=l2_projection, progress_bar=progress_bar, seed=seed)


def make_smooth_uap(*, sigma: float = 5.0, xi: float = 10 / 255,
                    target_fooling_rate: float = 0.9, max_passes: int = 10,
                    clip_step: float = 0.1, eval_clamp: bool = True,
                    batch_update: int | None = None, attack_clean: bool = False,
                    progress_bar: bool = True, seed: int = 0, **smoothfool: Any) -> Any:
    """Smooth UAP (SmoothFool Alg. 3): :class:`UniversalPerturbation` with a
    ``SmoothFool(sigma=sigma, **smoothfool)`` base, ℓ∞ radius ``xi``, SmoothClip step
    ``clip_step`` for the projection. Extra keywords (e.g. ``max_iter``, ``kernel``) go to
    SmoothFool. Seed defaults: ξ = 10/255, τ = 0.9, ε_sc = 0.1."""
    from .smoothfool import SmoothFool
    from .universal import UniversalPerturbation

    base = SmoothFool(sigma=sigma, **smoothfool)
    return UniversalPerturbation(base=base, xi=xi, norm="inf",
                                 target_fooling_rate=target_fooling_rate, max_passes=max_passes,
                                 eval_clamp=eval_clamp, batch_update=batch_update,
                                 attack_clean=attack_clean, clip_step=clip_step,
                                 progress_bar=progress_bar, seed=seed)


# ----------------------------------------------------------------------------------------------
# the registry
# ----------------------------------------------------------------------------------------------

REGISTRY: dict[str, AttackEntry] = {
    "deepfool": AttackEntry("advsmooth.attacks.deepfool:DeepFool",
                            ("norm", "overshoot", "max_iter", "candidates"),
                            help="DeepFool minimal perturbation (L2 / Linf / p)"),
    "smoothfool": AttackEntry("advsmooth.attacks.smoothfool:SmoothFool",
                              ("sigma", "max_iter"),
                              help="SmoothFool smooth minimal perturbation (Gaussian sigma)"),
    "uap": AttackEntry(make_uap, ("norm", "eps", "max_iter", "overshoot", "candidates"),
                       kind="universal", aliases={"eps": "xi"},
                       help="universal perturbation with DeepFool increments (xi = --eps)"),
    "smooth-uap": AttackEntry(make_smooth_uap, ("sigma", "eps", "max_iter"), kind="universal",
                              aliases={"eps": "xi"},
                              help="smooth universal perturbation (SmoothFool + SmoothClip)"),
    "iterative-smooth": AttackEntry("advsmooth.attacks.baselines:IterativeSmooth",
                                    ("max_iter",),
                                    help="IS baseline: -CE (or loss=margin) + lambda_s * "
                                         "roughness, gradient descent"),
    "color-shift": AttackEntry("advsmooth.attacks.baselines:ColorShift", (),
                               help="CS baseline: random HSV hue/saturation shifts (RGB only)"),
    "grey-shift": AttackEntry("advsmooth.attacks.baselines:GreyShift", (),
                              help="GS: random global contrast/brightness shifts (greyscale CS)"),
    "fgsm": AttackEntry("advsmooth.attacks.iterative:FGSM", ("eps", "norm"),
                        defaults={"eps": 8 / 255},
                        help="FGSM: one step of size eps (Linf sign or L2)"),
    "igsm": AttackEntry("advsmooth.attacks.iterative:IGSM", ("eps", "max_iter"),
                        aliases={"max_iter": "steps"}, defaults={"eps": 8 / 255},
                        help="IGSM/BIM: T sign steps in the Linf ball (--max-iter = T)"),
    "pgd": AttackEntry("advsmooth.attacks.iterative:PGD", ("eps", "norm", "max_iter"),
                       aliases={"max_iter": "steps"}, defaults={"eps": 8 / 255},
                       help="PGD with random start, Linf or L2 ball (--max-iter = steps)"),
    "mifgsm": AttackEntry("advsmooth.attacks.iterative:MIFGSM", ("eps", "max_iter"),
                          aliases={"max_iter": "steps"}, defaults={"eps": 8 / 255},
                          help="MI-FGSM momentum attack, decay 1 (--max-iter = steps)"),
    "sg-fgsm": AttackEntry("advsmooth.attacks.iterative:sg_fgsm", ("eps", "sigma"),
                           help="sg-FGSM: FGSM on the smoothed gradient (samples=20)"),
    "sg-igsm": AttackEntry("advsmooth.attacks.iterative:sg_igsm", ("eps", "sigma", "max_iter"),
                           aliases={"max_iter": "steps"},
                           help="sg-IGSM: IGSM on the smoothed gradient (arXiv:1802.09707)"),
    "sg-mifgsm": AttackEntry("advsmooth.attacks.iterative:sg_mifgsm",
                             ("eps", "sigma", "max_iter"), aliases={"max_iter": "steps"},
                             help="sg-mIGSM: momentum on the smoothed gradient"),
    "apgd": AttackEntry("advsmooth.attacks.apgd:APGD", ("eps", "norm", "max_iter"),
                        aliases={"max_iter": "steps"}, defaults={"eps": 8 / 255},
                        help="APGD (Croce & Hein): step-size-free PGD, CE or DLR loss "
                             "(--param loss=dlr --param targets=3 for APGD-T)"),
    "square": AttackEntry("advsmooth.attacks.square:Square", ("eps", "norm"),
                          defaults={"eps": 8 / 255},
                          help="Square attack (Linf or L2): score-based random search, no "
                               "gradients"),
    "fab": AttackEntry("advsmooth.attacks.fab:FAB", ("norm", "eps", "max_iter"),
                       aliases={"max_iter": "steps"},
                       help="FAB-T (Croce & Hein): minimal perturbation near the boundary, "
                            "L2 or Linf (--eps: stop at the first adversarial within eps)"),
}


def register(name: str, entry_: AttackEntry, *, overwrite: bool = False) -> None:
    """Add ``entry_`` under ``name`` (``ValueError`` if taken, unless ``overwrite``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not isinstance(entry_, AttackEntry):
        raise TypeError(f"entry must be an AttackEntry, got {type(entry_).__name__}")
    check_choice("kind", entry_.kind, KINDS)
    if name in REGISTRY and not overwrite:
        raise ValueError(f"attack {name!r} is already registered")
    REGISTRY[name] = entry_


def names() -> list[str]:
    """Registered attack names, sorted."""
    return sorted(REGISTRY)


def entry(name: str) -> AttackEntry:
    """The :class:`AttackEntry` of ``name`` (``ValueError`` naming the choices if unknown)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; choose from {', '.join(names())}"
                         f"{did_you_mean(name, names())}") from None


#: ``gradient = {kind = ...}`` tables of a spec's attack parameters -> gradient estimator
#: classes (import paths, resolved when built)
GRADIENTS: dict[str, str] = {
    "plain": "advsmooth.attacks.gradients:PlainGradient",
    "smoothed": "advsmooth.attacks.gradients:SmoothedGradient",
    "expectation": "advsmooth.attacks.smoothing_gradients:ExpectationGradient",
    "smoothadv": "advsmooth.attacks.smoothing_gradients:SmoothAdvGradient",
}


def build_gradient(kind: Any, **params: Any) -> Any:
    """The gradient estimator ``kind`` (a key of :data:`GRADIENTS`) built with ``params``
    (``ValueError`` for an unknown kind, ``TypeError`` naming the kind for bad parameters)."""
    if kind not in GRADIENTS:
        raise ValueError(f"gradient.kind must be one of {sorted(GRADIENTS)}, got {kind!r}")
    cls = AttackEntry(GRADIENTS[kind]).resolve()
    try:
        return cls(**params)
    except TypeError as exc:
        raise TypeError(f"gradient ({kind}): {exc}") from None


def build(name: str, **params: Any) -> Any:
    """Build the attack ``name`` with keyword ``params`` (over the entry's defaults).

    Raises ``ValueError`` for an unknown name or a parameter the factory does not take.
    """
    e = entry(name)
    for key in params:
        if e.accepts(key) is False:
            raise ValueError(f"attack {name!r} has no parameter {key!r}")
    return e.resolve()(**{**e.defaults, **params})
