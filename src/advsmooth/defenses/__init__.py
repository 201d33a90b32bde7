"""Defences: training methods, smoothed inference, noise injection."""

__all__: list[str] = []

from .smoothing import Certificate, SmoothedClassifier  # noqa: E402

__all__ += ["Certificate", "SmoothedClassifier"]

from .noise import (  # noqa: E402
    InputNoise,
    add_input_noise,
    inject_noise,
    noise_disabled,
    noise_parameters,
    seed_noise,
    set_noise,
)

__all__ += ["InputNoise", "add_input_noise", "inject_noise", "noise_disabled",
            "noise_parameters", "seed_noise", "set_noise"]

from .training import (  # noqa: E402
    METHODS,
    StandardTraining,
    TrainingMethod,
    evaluate,
    get_method,
    train,
)

__all__ += ["METHODS", "StandardTraining", "TrainingMethod", "evaluate", "get_method", "train"]
