"""Defences: training methods, smoothed inference, noise injection."""

__all__: list[str] = []
