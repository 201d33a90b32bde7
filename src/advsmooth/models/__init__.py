"""Models: the zoo (:func:`load`, :func:`available`), architectures (:func:`create`),
:class:`Normalize` (preprocessing inside the model) and safe checkpoint loading.

>>> import advsmooth as asm
>>> net = asm.models.create("lenet", (1, 28, 28), 10)
>>> net(asm.data.load("digits", n=2)[0]).shape
torch.Size([2, 10])

See docs/models.md.
"""

from .checkpoints import CheckpointError, file_sha256, load_checkpoint, read_state_dict
from .registry import (
    ZOO,
    ModelSpec,
    available,
    load,
    models_dirs,
    read_description,
    save_model,
    spec,
    trained_model_path,
)
from .zoo import (
    ARCHITECTURES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MLP,
    VGG,
    CifarResNet,
    LeNet,
    LeNet5,
    Normalize,
    Normalized,
    WideResNet,
    create,
)

__all__ = [
    "ARCHITECTURES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MLP",
    "VGG",
    "ZOO",
    "CheckpointError",
    "CifarResNet",
    "LeNet",
    "LeNet5",
    "ModelSpec",
    "Normalize",
    "Normalized",
    "WideResNet",
    "available",
    "create",
    "trained_model_path",
    "file_sha256",
    "load",
    "load_checkpoint",
    "models_dirs",
    "read_state_dict",
    "read_description",
    "save_model",
    "spec",
]

from .ensemble import Ensemble  # noqa: E402

__all__ += ["Ensemble"]
