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

from .roughness import roughness  # noqa: E402

__all__ += ["roughness"]
