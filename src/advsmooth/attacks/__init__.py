"""Attacks: every one is an :class:`Attack` called as ``attack(model, x, y, target=...)``.

Each submodule adds its public names to ``__all__`` below (one import line per module).
"""

from .base import Attack, AttackContext, AttackOutput, AttackResult, CostCounter, run_batched

__all__ = ["Attack", "AttackContext", "AttackOutput", "AttackResult", "CostCounter", "run_batched"]

from .execution import Execution  # noqa: E402

__all__ += ["Execution"]

from .baselines import ColorShift, GreyShift, IterativeSmooth, hsv_to_rgb, rgb_to_hsv  # noqa: E402

__all__ += ["ColorShift", "GreyShift", "IterativeSmooth", "hsv_to_rgb", "rgb_to_hsv"]

from .gradients import (  # noqa: E402
    AttackObjective,
    GradientEstimate,
    GradientEstimator,
    PlainGradient,
    SmoothedGradient,
)

__all__ += ["AttackObjective", "GradientEstimate", "GradientEstimator", "PlainGradient",
            "SmoothedGradient"]

from .deepfool import DeepFool  # noqa: E402

__all__ += ["DeepFool"]

from .iterative import BIM, FGSM, IGSM, MIFGSM, PGD, IterativeAttack  # noqa: E402

__all__ += ["BIM", "FGSM", "IGSM", "MIFGSM", "PGD", "IterativeAttack"]

from .nattack import NAttack  # noqa: E402

__all__ += ["NAttack"]

from .rescale import RescaleLinf  # noqa: E402

__all__ += ["RescaleLinf"]

from .smoothing_gradients import ExpectationGradient, SmoothAdvGradient  # noqa: E402

__all__ += ["ExpectationGradient", "SmoothAdvGradient"]

from .universal import UniversalPerturbation, universal_fooling_rate  # noqa: E402

__all__ += ["UniversalPerturbation", "universal_fooling_rate"]

from .smoothfool import SmoothFool, smooth_clip  # noqa: E402

__all__ += ["SmoothFool", "smooth_clip"]

from .grid import EpsGrid, attack_grid  # noqa: E402

__all__ += ["EpsGrid", "attack_grid"]

from .apgd import APGD  # noqa: E402

__all__ += ["APGD"]

from .square import Square  # noqa: E402

__all__ += ["Square"]

from .fab import FAB  # noqa: E402

__all__ += ["FAB"]
