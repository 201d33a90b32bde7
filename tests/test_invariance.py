"""Invariance of every attack: the model is left bit-identical (parameters, buffers, train/eval
mode of every module, requires_grad flags), the global RNG state is unchanged and the input is
not modified. Parametrised over every entry of ``advsmooth.attacks.registry`` plus the attacks
that are not registered (NAttack, EPGD); CPU always, CUDA when present (same API)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import TinyCNN

from advsmooth.attacks import PGD, ExpectationGradient, NAttack
from advsmooth.attacks.registry import REGISTRY, build

#: tiny budgets per registered attack (every call stays well under a second on a tiny model)
SMALL: dict[str, dict[str, Any]] = {
    "deepfool": {"max_iter": 5},
    "smoothfool": {"sigma": 1.0, "max_iter": 5},
    "uap": {"max_iter": 3, "max_passes": 1, "progress_bar": False},
    "smooth-uap": {"sigma": 1.0, "max_iter": 3, "max_passes": 1, "progress_bar": False},
    "iterative-smooth": {"max_iter": 3},
    "color-shift": {"trials": 3},
    "grey-shift": {"trials": 3},
    "fgsm": {"eps": 0.1},
    "igsm": {"eps": 0.1, "steps": 2},
    "pgd": {"eps": 0.1, "steps": 2},
    "mifgsm": {"eps": 0.1, "steps": 2},
    "sg-fgsm": {"eps": 0.1, "samples": 2},
    "sg-igsm": {"eps": 0.1, "steps": 2, "samples": 2},
    "sg-mifgsm": {"eps": 0.1, "steps": 2, "samples": 2},
    "apgd": {"eps": 0.1, "steps": 3},
    "square": {"eps": 0.1, "queries": 5},
    "fab": {"steps": 3, "targets": 2},
}

EXTRA = {
    "nattack": lambda: NAttack(eps=0.1, population=4, max_iter=2),
    "epgd": lambda: PGD(eps=0.1, steps=2, gradient=ExpectationGradient(sigma=0.1, samples=2)),
}

ALL_NAMES = sorted(REGISTRY) + sorted(EXTRA)


def make_attack(name: str, seed: int = 0) -> Any:
    """A tiny-budget instance of attack ``name`` (registry name or ``nattack`` / ``epgd``)."""
    if name in EXTRA:
        atk = EXTRA[name]()
        atk.seed = seed
        return atk
    return build(name, **SMALL.get(name, {}), seed=seed)


def is_universal(name: str) -> bool:
    return name in REGISTRY and REGISTRY[name].kind == "universal"


def run_attack(atk: Any, name: str, model: torch.nn.Module, x: torch.Tensor,
               y: torch.Tensor) -> torch.Tensor:
    """Run and return the main output tensor (x_adv, or the universal perturbation)."""
    if is_universal(name):
        return atk.fit(model, x)
    return atk(model, x, y).x_adv


def test_every_registered_attack_has_small_params():
    assert set(REGISTRY) <= set(SMALL), set(REGISTRY) - set(SMALL)


def _snapshot(model: torch.nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
    }


def _devices() -> list[Any]:
    devs: list[Any] = ["cpu"]
    devs.append(pytest.param("cuda", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="CUDA not available")))
    return devs


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("name", ALL_NAMES)
def test_attack_leaves_model_rng_and_input_untouched(name, device):
    model = TinyCNN(3, 4, seed=0).to(device)
    model.train()                      # BatchNorm in train mode: must stay so, stats unchanged
    model.net[0].eval()                # a mixed pattern of modes must be restored exactly
    model.net[-1].weight.requires_grad_(False)
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()
    model.net[0].eval()
    x0 = x.clone()
    before = _snapshot(model)
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    out = run_attack(make_attack(name), name, model, x, y)
    assert out.device.type == torch.device(device).type
    assert torch.isfinite(out).all()
    after = _snapshot(model)
    assert before["modes"] == after["modes"]
    assert before["flags"] == after["flags"]
    assert all(a is None and b is None or torch.equal(a, b)
               for a, b in zip(before["grads"], after["grads"]))
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k
    assert torch.equal(torch.get_rng_state(), rng), "global CPU RNG state changed"
    if cuda_rng is not None:
        assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda_rng))
    assert torch.equal(x, x0), "input modified"
