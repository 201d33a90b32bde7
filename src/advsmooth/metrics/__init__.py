"""Metrics: fooling rate, robustness ρ_adv, roughness, transfer matrices, destruction rate, ..."""

__all__: list[str] = []
