"""Metrics: fooling rate, robustness ρ_adv, roughness, transfer matrices, destruction rate, ..."""

from .core import (
    FoolingRate,
    fgsm_rho,
    fooling_rate,
    per_class_fooling_rate,
    predict_batched,
    robustness,
    sigma_at,
)

__all__: list[str] = []
__all__ += ["FoolingRate", "fooling_rate", "per_class_fooling_rate", "robustness", "sigma_at",
            "fgsm_rho", "predict_batched"]

from ..filters import roughness  # noqa: E402

__all__ += ["roughness"]

# the one summary of attack results lives beside AttackResult (which calls it); re-exported here
from ..attacks.summary import summarize as attack_summary  # noqa: E402

__all__ += ["attack_summary"]

from .transfer import (  # noqa: E402
    DecisionBoundaryMap,
    GradientSimilarity,
    TransferMatrix,
    correct_by_all,
    decision_boundary_map,
    destruction_curve,
    destruction_rate,
    gradient_similarity,
    random_wrong_targets,
    topk_success,
    transfer_matrix,
)
from .transforms import (  # noqa: E402
    JPEG,
    GaussianBlur,
    GaussianNoise,
    Rotation,
    make_transform,
)

__all__ += ["TransferMatrix", "transfer_matrix", "correct_by_all", "random_wrong_targets",
            "topk_success", "destruction_rate", "destruction_curve", "GradientSimilarity",
            "gradient_similarity", "DecisionBoundaryMap", "decision_boundary_map", "JPEG",
            "GaussianBlur", "GaussianNoise", "Rotation", "make_transform"]

from .evaluation import Flag, RobustnessReport, evaluate  # noqa: E402

__all__ += ["evaluate", "RobustnessReport", "Flag"]
