"""advsmooth.models: architectures, Normalize, safe checkpoints, the zoo and digits models."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import SHARED, SHARED_DATA, SHARED_MODELS, needs_shared
from torch import nn

from advsmooth import data, models


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    """One cache folder per test session: digits models are trained at most once per session
    (test_cli_foundation.py uses the same folder)."""
    return tmp_path_factory.getbasetemp() / "advsmooth-digits-cache"


@pytest.fixture
def digits_env(digits_cache, monkeypatch):
    monkeypatch.setenv("ADVSMOOTH_CACHE", str(digits_cache))
    return digits_cache


# ----------------------------------------------------------------------------------------------
# architectures
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["mlp", "lenet", "lenet5", "resnet8", "resnet20", "vgg-small",
                                  "vgg11", "wrn-10-1", "wrn-16-2"])
@pytest.mark.parametrize("shape,k", [((1, 28, 28), 10), ((3, 32, 32), 7)])
def test_architectures_logit_shape(arch, shape, k):
    torch.manual_seed(0)
    net = models.create(arch, shape, k).eval()
    out = net(torch.rand(3, *shape))
    assert out.shape == (3, k) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_create_validation():
    with pytest.raises(ValueError, match="unknown architecture"):
        models.create("alexnet")
    with pytest.raises(ValueError, match="6n\\+2"):
        models.create("resnet21")
    with pytest.raises(ValueError, match="num_classes"):
        models.create("lenet", (1, 28, 28), 1)
    with pytest.raises(ValueError, match="both mean and std"):
        models.create("lenet", mean=(0.5,))


def test_shared_layout_param_counts():
    # the parameter counts stated in shared/models/README.md
    assert sum(p.numel() for p in models.create("resnet20", (3, 32, 32), 10).parameters()) == 269722
    assert sum(p.numel() for p in models.create("resnet56", (3, 32, 32), 10).parameters()) == 853018
    assert sum(p.numel() for p in models.create("lenet").parameters()) == 648226
    assert sum(p.numel() for p in models.create("mlp").parameters()) == 266610
    keys = models.create("resnet20", (3, 32, 32), 10).state_dict().keys()
    assert len(keys) == 116 and "layer2.0.conv1.weight" in keys and "linear.bias" in keys


def test_option_a_shortcut_pads_channels():
    blk = models.zoo.BasicBlock(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    s = blk.shortcut(x)
    assert s.shape == (2, 32, 4, 4)
    assert torch.equal(s[:, 8:24], x[:, :, ::2, ::2])
    assert s[:, :8].abs().sum() == 0 and s[:, 24:].abs().sum() == 0


def test_normalize_matches_manual():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    norm = models.Normalize(mean, std)
    x = torch.rand(4, 3, 5, 5)
    manual = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(norm(x), manual, atol=1e-7)
    assert "0.485" in repr(norm)
    torch.manual_seed(0)
    net = models.create("resnet8", (3, 8, 8), 4).eval()
    wrapped = models.Normalized(net, mean, std).eval()
    assert torch.allclose(wrapped(x[:, :, :8, :8]), net(manual[:, :, :8, :8]), atol=1e-6)
    with pytest.raises(ValueError, match="std must be > 0"):
        models.Normalize((0.5,), (0.0,))


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------

class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused_without_executing(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Evil(str(marker))}, path)
    assert not marker.exists()
    net = models.create("lenet")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="refused to load") as exc:
        models.load_checkpoint(net, path)
    assert str(path) in str(exc.value)
    assert not marker.exists()
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="refused"):
        models.load("digits-lenet", checkpoint=path)
    assert not marker.exists()


def test_mismatched_checkpoint_names_keys(tmp_path):
    path = tmp_path / "mlp.pt"
    torch.save(models.create("mlp", hidden=(50,)).state_dict(), path)
    with pytest.raises(ValueError) as exc:
        models.load_checkpoint(models.create("mlp"), path)
    msg = str(exc.value)
    assert str(path) in msg and "linear3.weight" in msg and "missing" in msg
    assert "linear1.weight: checkpoint (50, 784) vs model (300, 784)" in msg
    with pytest.raises(ValueError, match="unexpected keys: .*conv1"):
        torch.save(models.create("lenet").state_dict(), tmp_path / "lenet.pt")
        sd = torch.load(tmp_path / "lenet.pt", weights_only=True)
        sd.pop("linear2.bias")
        torch.save(sd, tmp_path / "lenet_partial.pt")
        models.load_checkpoint(models.create("mlp"), tmp_path / "lenet.pt")
    with pytest.raises(ValueError, match="missing keys: linear2.bias"):
        models.load_checkpoint(models.create("lenet"), tmp_path / "lenet_partial.pt")
    # strict=False tolerates the missing key
    models.load_checkpoint(models.create("lenet"), tmp_path / "lenet_partial.pt", strict=False)


def test_corrupt_and_missing_checkpoint(tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match="corrupt.pt"):
        models.load_checkpoint(models.create("lenet"), bad)
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        models.load_checkpoint(models.create("lenet"), tmp_path / "absent.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="state dict"):
        models.load_checkpoint(models.create("lenet"), tmp_path / "list.pt")


def test_checkpoint_prefixes_and_wrappers(tmp_path):
    torch.manual_seed(1)
    src = models.create("lenet5")
    sd = src.state_dict()
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "dp.pt")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.pt")
    x = torch.rand(2, 1, 28, 28)
    for f in ("dp.pt", "wrapped.pt"):
        torch.manual_seed(2)
        dst = models.load_checkpoint(models.create("lenet5"), tmp_path / f)
        assert torch.equal(dst(x), src(x))
    # an inner-network checkpoint loads into a Normalized wrapper
    torch.save(sd, tmp_path / "inner.pt")
    wrapped = models.create("lenet5", mean=0.5, std=0.25)
    models.load_checkpoint(wrapped, tmp_path / "inner.pt")
    assert torch.allclose(wrapped(x), src((x - 0.5) / 0.25), atol=1e-6)


def test_save_model_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = models.create("mlp", (1, 8, 8), 3, hidden=[16], mean=0.1, std=0.5)
    path = models.save_model(net, tmp_path / "m.pt", arch="mlp", in_shape=(1, 8, 8),
                             num_classes=3, mean=[0.1], std=[0.5], kwargs={"hidden": [16]},
                             data="toy")
    back = models.load(str(path))
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(back(x), net(x)) and not back.training
    meta = json.loads((tmp_path / "m.pt.json").read_text())
    assert meta["sha256"] == models.file_sha256(path) and meta["data"] == "toy"


# ----------------------------------------------------------------------------------------------
# zoo
# ----------------------------------------------------------------------------------------------

def test_zoo_listing_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVSMOOTH_CACHE", str(tmp_path / "cache"))
    rows = {r["name"]: r for r in models.available(models_dir=tmp_path)}
    assert {"cifar10-resnet20", "cifar10-resnet56", "mnist-lenet", "mnist-lenet-pgd",
            "mnist-mlp", "digits-fc", "digits-lenet", "digits-resnet20"} <= set(rows)
    assert rows["cifar10-resnet20"]["available"] is False  # nothing in tmp_path
    assert rows["digits-lenet"]["available"] is True and rows["digits-lenet"]["cached"] is False
    assert rows["cifar10-resnet32"]["in_shape"] == (3, 32, 32)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        models.load("nope")
    with pytest.raises(FileNotFoundError, match="cifar10_resnet20.pt"):
        models.load("cifar10-resnet20", models_dir=tmp_path)
    # architecture without weights
    net = models.load("cifar10-resnet20", pretrained=False)
    assert isinstance(net, models.Normalized) and not net.training


@pytest.mark.parametrize("prefix,extra", [("torchvision", "vision"), ("timm", "timm")])
def test_adapters_need_extra(prefix, extra):
    import importlib.util

    if importlib.util.find_spec(prefix) is not None:
        pytest.skip(f"{prefix} is installed")
    with pytest.raises(ImportError, match=rf"advsmooth\[{extra}\]"):
        models.load(f"{prefix}:resnet18")


def test_torchvision_inception_and_googlenet_get_transform_input(monkeypatch):
    # torchvision's pretrained Inception-V3 / GoogLeNet expect transform_input=True (it sets it
    # itself when it loads the weights); the adapter builds with weights=None, so it must pass it
    import types

    from advsmooth.models import registry

    calls = []

    def get_model(name, weights=None, **kw):
        calls.append((name, kw))
        raise ValueError("stop here")  # enough: the adapter reports an unknown model

    fake = types.SimpleNamespace(models=types.SimpleNamespace(get_model=get_model))
    monkeypatch.setattr(registry, "optional_import", lambda name: fake)
    for name in ("inception_v3", "googlenet", "resnet18"):
        with pytest.raises(ValueError, match="stop here"):
            registry._torchvision_model(name, pretrained=True, checkpoint=None,
                                        allow_download=False)
    with pytest.raises(ValueError):
        registry._torchvision_model("inception_v3", pretrained=False, checkpoint=None,
                                    allow_download=False)
    assert calls == [("inception_v3", {"transform_input": True}),
                     ("googlenet", {"transform_input": True}), ("resnet18", {}),
                     ("inception_v3", {})]


_SHARED_CASES = [
    ("mnist-lenet", "mnist", 98.89),
    ("mnist-lenet-pgd", "mnist", 98.64),
    ("mnist-mlp", "mnist", 98.17),
    ("cifar10-resnet20", "cifar10", 81.03),
    pytest.param("cifar10-resnet32", "cifar10", 82.56, marks=pytest.mark.slow),
    pytest.param("cifar10-resnet44", "cifar10", 82.67, marks=pytest.mark.slow),
    pytest.param("cifar10-resnet56", "cifar10", 83.20, marks=pytest.mark.slow),
]


@needs_shared("models/README.md", "data/mnist_test.npz", "data/cifar10_test.npz")
@pytest.mark.parametrize("name,dataset,expected", _SHARED_CASES)
def test_shared_model_reaches_readme_accuracy(name, dataset, expected):
    if not (SHARED_MODELS / models.spec(name).file).exists():
        pytest.skip(f"{SHARED} lacks {models.spec(name).file}")
    model = models.load(name, models_dir=SHARED_MODELS)  # strict=True loading
    assert not model.training
    x, y = data.load(dataset, split="test", root=SHARED_DATA)
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(y), 1000):
            correct += int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
    acc = 100.0 * correct / len(y)
    assert len(y) == 10000
    assert abs(acc - expected) <= 0.1, f"{name}: {acc:.2f} % vs README {expected} %"


# ----------------------------------------------------------------------------------------------
# digits models (trained on first use, cached)
# ----------------------------------------------------------------------------------------------

def test_digits_lenet_accuracy_cached_and_reused(digits_env, capsys):
    model = models.load("digits-lenet")
    path = models.trained_model_path("digits-lenet")
    meta_path = path.with_name(path.name + ".json")
    assert path.parent.parent == digits_env
    meta = json.loads(meta_path.read_text())
    assert meta["data"] == "digits" and meta["seed"] == 0 and meta["recipe"]["epochs"] >= 1
    assert meta["sha256"] == models.file_sha256(path)
    assert meta["test_accuracy"] >= 97.0
    x, y = data.load("digits", split="test")
    with torch.no_grad():
        acc = 100.0 * float((model(x).argmax(1) == y).float().mean())
    assert acc >= 97.0 and abs(acc - meta["test_accuracy"]) < 1e-3  # stored rounded
    # second load: no retraining (file and metadata untouched), same weights
    stamp = (path.stat().st_mtime_ns, meta_path.stat().st_mtime_ns)
    capsys.readouterr()
    again = models.load("digits-lenet")
    assert (path.stat().st_mtime_ns, meta_path.stat().st_mtime_ns) == stamp
    assert "training" not in capsys.readouterr().err
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 again.state_dict().values()))
    row = {r["name"]: r for r in models.available()}["digits-lenet"]
    assert row["cached"] is True and row["accuracy"] == meta["test_accuracy"]


def test_first_use_training_reads_its_own_dataset(tmp_path, monkeypatch):
    """The CIFAR-10 zoo models train on CIFAR-10's train split (here a patched 64-image stand-in,
    so the test needs no data), are cached with their recipe, reused, and listed as available
    only where that split is found."""
    import dataclasses

    from advsmooth.models import registry

    monkeypatch.setenv("ADVSMOOTH_CACHE", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(0)
    fake = {"train": (torch.rand(64, 3, 32, 32, generator=g), torch.arange(64) % 10),
            "test": (torch.rand(32, 3, 32, 32, generator=g), torch.arange(32) % 10)}
    asked = []

    def load(name, split="test", **kw):
        asked.append((name, split))
        return fake[split]

    monkeypatch.setattr(data, "load", load)
    spec = dataclasses.replace(registry.ZOO["cifar10-vgg"], name="cifar10-vgg-test",
                               recipe={**registry.ZOO["cifar10-vgg"].recipe, "epochs": 1})
    monkeypatch.setitem(registry.ZOO, spec.name, spec)
    model = models.load(spec.name, verbose=False)
    assert asked == [("cifar10", "train"), ("cifar10", "test")]
    path = models.trained_model_path(spec.name)
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert meta["data"] == "cifar10" and meta["n_train"] == 64 and meta["n_test"] == 32
    assert meta["recipe"]["optimizer"] == "sgd" and meta["recipe"]["weight_decay"] == 5e-4
    assert isinstance(model, models.Normalized) and not model.training
    again = models.load(spec.name, verbose=False)  # cached: no second training
    assert len(asked) == 2
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 again.state_dict().values()))
    # a changed recipe is a different model: retrained, never the stale cache
    monkeypatch.setitem(registry.ZOO, spec.name, dataclasses.replace(
        spec, recipe={**spec.recipe, "lr": 0.01}))
    models.load(spec.name, verbose=False)
    assert len(asked) == 4
    with pytest.raises(ValueError, match="not trained on first use"):
        models.trained_model_path("cifar10-resnet20")
    # listed as trainable only where the train split is found
    monkeypatch.setattr(registry, "_trainable_here", lambda name: False)
    rows = {r["name"]: r for r in models.available(models_dir=tmp_path)}
    assert rows["cifar10-wrn16-2"]["available"] is False
    assert rows[spec.name]["available"] is True and rows[spec.name]["cached"] is True


def test_digits_cache_corruption_triggers_retrain(digits_env, tmp_path, monkeypatch):
    # a tampered metadata file (sha mismatch) is not trusted
    models.load("digits-lenet")
    path = models.trained_model_path("digits-lenet")
    meta_path = path.with_name(path.name + ".json")
    from advsmooth.models.registry import _read_meta

    assert _read_meta(path) is not None
    fake = tmp_path / "cache"
    (fake / "models").mkdir(parents=True)
    (fake / "models" / path.name).write_bytes(path.read_bytes())
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = "0" * 64
    (fake / "models" / meta_path.name).write_text(json.dumps(meta))
    monkeypatch.setenv("ADVSMOOTH_CACHE", str(fake))
    assert _read_meta(models.trained_model_path("digits-lenet")) is None


@pytest.mark.slow
def test_digits_training_deterministic(digits_env, tmp_path, monkeypatch):
    first = models.load("digits-lenet")
    monkeypatch.setenv("ADVSMOOTH_CACHE", str(tmp_path / "other"))
    second = models.load("digits-lenet", verbose=False)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                 second.state_dict().values()))


def test_load_device_and_eval_mode(digits_env):
    m = models.load("digits-lenet", device="cpu")
    assert not m.training and next(m.parameters()).device.type == "cpu"
    assert isinstance(m, nn.Module)
