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

from ..models.training import (  # noqa: E402
    METHODS,
    StandardTraining,
    TrainingMethod,
    evaluate,
    get_method,
    train,
)

__all__ += ["METHODS", "StandardTraining", "TrainingMethod", "evaluate", "get_method", "train"]

from . import methods  # noqa: E402  (registers the robust training methods in METHODS)
from .methods import finetune, pgd_linf  # noqa: E402

__all__ += ["methods", "finetune", "pgd_linf"]

from . import ensemble_at, hgd, magnet  # noqa: E402  (ensemble_at registers "ensemble_at")
from .ensemble_at import EnsembleAdversarialTraining  # noqa: E402
from .hgd import Denoiser, HGDDefended, train_hgd  # noqa: E402
from .magnet import (  # noqa: E402
    Autoencoder,
    DivergenceDetector,
    MagNet,
    ReconstructionDetector,
    magnet_fooling_rate,
    train_autoencoder,
)

__all__ += ["ensemble_at", "hgd", "magnet", "EnsembleAdversarialTraining", "Denoiser",
            "HGDDefended", "train_hgd", "Autoencoder", "DivergenceDetector", "MagNet",
            "ReconstructionDetector", "magnet_fooling_rate", "train_autoencoder"]
