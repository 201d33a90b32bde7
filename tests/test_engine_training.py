"""The training attacks go through the iterative engine and give what the hand-written loops gave.

The reference loops below are the ones the defences used before they were routed through
:meth:`advsmooth.attacks.IterativeAttack.perturb` (PGD / EPGD / SmoothAdv for adversarial
training, the TRADES inner maximisation, FGSM / R+FGSM of ensemble adversarial training, the
FGSM direction of ρ_FGSM, the HGD training set). In float64 the engine must reproduce them to
rounding (the engine's projection is exact to the last bit and its cross-entropy is computed in a
cancellation-free form, so single ulps may differ; a sign flip would move a pixel by 2α).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TinyCNN
from torch import Tensor, nn

from advsmooth._tensors import frozen_model
from advsmooth.attacks import FGSM, IGSM, PGD, AttackObjective, PlainGradient
from advsmooth.defenses.ensemble_at import sign_attack
from advsmooth.defenses.hgd import craft_training_set
from advsmooth.defenses.methods import pgd_linf, trades_perturb
from advsmooth.metrics import fgsm_rho

TOL = 1e-12


# ---------------------------------------------------------------------------------------------
# the former hand-written loops (oracles)
# ---------------------------------------------------------------------------------------------

def _project(x0: Tensor, xa: Tensor, eps: float) -> Tensor:
    return torch.minimum(torch.maximum(xa, x0 - eps), x0 + eps).clamp_(0.0, 1.0)


def _smoothed_loss(model: nn.Module, xa: Tensor, y: Tensor, *, sigma: float, samples: int,
                   variant: str, generator: torch.Generator) -> Tensor:
    nu = torch.randn((samples, *xa.shape), generator=generator, dtype=xa.dtype)
    z = model((xa.unsqueeze(0) + sigma * nu).reshape(samples * xa.shape[0], *xa.shape[1:]))
    z = z.reshape(samples, xa.shape[0], -1)
    if variant == "expected_loss":
        ce = F.cross_entropy(z.reshape(-1, z.shape[-1]), y.repeat(samples), reduction="none")
        return ce.reshape(samples, -1).mean(0).sum()
    if variant == "logit_average":
        return F.cross_entropy(z.mean(0), y, reduction="sum")
    logp = F.log_softmax(z, dim=-1).gather(2, y.view(1, -1, 1).expand(samples, -1, 1))[..., 0]
    return -(torch.logsumexp(logp, dim=0) - math.log(samples)).sum()


def old_pgd(model, x, y, *, eps, alpha, steps, random_start, generator, smoothing=None):
    x0 = x.detach()
    with frozen_model(model):
        if random_start:
            u = torch.rand(x0.shape, generator=generator, dtype=x0.dtype)
            xa = (x0 + (2.0 * u - 1.0) * eps).clamp_(0.0, 1.0)
        else:
            xa = x0.clone()
        for _ in range(steps):
            xa.requires_grad_(True)
            if smoothing is None:
                loss = F.cross_entropy(model(xa), y, reduction="sum")
            else:
                loss = _smoothed_loss(model, xa, y, generator=generator, **smoothing)
            (g,) = torch.autograd.grad(loss, xa)
            xa = _project(x0, xa.detach() + alpha * g.sign(), eps)
    return xa.detach()


def old_trades(model, x, *, eps, alpha, steps, generator):
    x0 = x.detach()
    with frozen_model(model):
        with torch.no_grad():
            p_clean = F.softmax(model(x0), dim=1)
        start = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        xa = _project(x0, x0 + 0.001 * start, eps)
        for _ in range(steps):
            xa.requires_grad_(True)
            kl = F.kl_div(F.log_softmax(model(xa), dim=1), p_clean, reduction="sum")
            (g,) = torch.autograd.grad(kl, xa)
            xa = _project(x0, xa.detach() + alpha * g.sign(), eps)
    return xa.detach()


def old_sign_attack(model, x, y, *, eps, attack, alpha, generator):
    x0 = x.detach()
    start, step = x0, eps
    if attack == "rfgsm":
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        start = (x0 + alpha * noise.sign()).clamp(0.0, 1.0)
        step = eps - alpha
    with frozen_model(model):
        xa = start.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
    return (start + step * g.sign()).clamp(0.0, 1.0).detach()


def old_hgd_set(model, x, y, *, attack, eps, steps, seed):
    g = torch.Generator().manual_seed(seed)
    lo, hi = eps
    eps_i = (lo + (hi - lo) * torch.rand(x.shape[0], generator=g, dtype=torch.float64)).to(x)
    with frozen_model(model):
        x0 = x.detach()
        e = eps_i.view(-1, 1, 1, 1)
        a = e if attack == "fgsm" else 2.5 * e / steps
        xa = x0.clone()
        for _ in range(1 if attack == "fgsm" else steps):
            xa.requires_grad_(True)
            (gr,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
            xa = torch.minimum(torch.maximum(xa.detach() + a * gr.sign(), x0 - e), x0 + e)
            xa = xa.clamp(0.0, 1.0)
    return xa.detach()


# ---------------------------------------------------------------------------------------------

@pytest.fixture
def setup():
    """A float64 CNN with BatchNorm (eval mode restored after), images, labels and clean
    predictions that are partly wrong (so already-misclassified samples are attacked too)."""
    model = TinyCNN(channels=1, num_classes=4, seed=3).double()
    model.train()  # training mode on entry, as inside a training loop
    g = torch.Generator().manual_seed(7)
    x = torch.rand(24, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (24,), generator=g)
    return model, x, y


def _gen(seed: int = 11) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _close(a: Tensor, b: Tensor) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert float((a - b).abs().max()) <= TOL


@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_training_attack_matches_the_former_loop(setup, random_start):
    model, x, y = setup
    kw = dict(eps=0.1, alpha=0.02, steps=5, random_start=random_start)
    new = pgd_linf(model, x, y, generator=_gen(), **kw)
    old = old_pgd(model, x, y, generator=_gen(), **kw)
    _close(new, old)
    assert model.training  # the caller's mode is restored
    with torch.no_grad():
        wrong = model.eval()(x).argmax(1) != y
    model.train()
    assert bool(wrong.any()) and bool((new[wrong] != x[wrong]).any())  # attacked too


@pytest.mark.parametrize("variant", ["prob_average", "logit_average", "expected_loss"])
def test_epgd_training_attack_matches_the_former_loop(setup, variant):
    model, x, y = setup
    smoothing = {"sigma": 0.1, "samples": 3, "variant": variant}
    kw = dict(eps=0.1, alpha=0.03, steps=3, random_start=True, smoothing=smoothing)
    new = pgd_linf(model, x, y, generator=_gen(), **kw)
    old = old_pgd(model, x, y, generator=_gen(), **kw)
    _close(new, old)


def test_trades_matches_the_former_loop(setup):
    model, x, _ = setup
    kw = dict(eps=0.1, alpha=0.02, steps=4)
    new = trades_perturb(model, x, generator=_gen(), **kw)
    old = old_trades(model, x, generator=_gen(), **kw)
    _close(new, old)
    assert float((new - x).abs().max()) > 0.05


@pytest.mark.parametrize("attack, alpha", [("fgsm", 0.0), ("rfgsm", 0.04)])
def test_ensemble_sign_attack_matches_the_former_loop(setup, attack, alpha):
    model, x, y = setup
    new = sign_attack(model, x, y, eps=0.1, attack=attack, alpha=alpha, generator=_gen())
    old = old_sign_attack(model, x, y, eps=0.1, attack=attack, alpha=alpha, generator=_gen())
    _close(new, old)


@pytest.mark.parametrize("attack", ["fgsm", "igsm"])
def test_hgd_training_set_matches_the_former_loop(setup, attack):
    model, x, y = setup
    new = craft_training_set(model, x, y, attack=attack, eps=(0.0, 0.2), steps=4, seed=5)
    old = old_hgd_set(model, x, y, attack=attack, eps=(0.0, 0.2), steps=4, seed=5)
    _close(new, old)


def test_fgsm_rho_direction_is_the_engine_gradient_sign(setup):
    model, x, y = setup
    model.eval()
    res = fgsm_rho(model, x, y, target_rate=0.5, eps_max=0.5, grid=50)
    with frozen_model(model):
        xv = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xv), y, reduction="sum"), xv)
    assert torch.equal(g.sign(), PlainGradient().estimate(
        model, x, AttackObjective("ce", y)).grad.sign())
    r = (x + res["eps"] * g.sign()).clamp(0, 1) - x
    ratio = (r.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).mean()
    assert res["rho"] == pytest.approx(float(ratio), rel=1e-12)


def test_perturb_attacks_every_sample_and_equals_the_call_on_the_attacked_ones(setup):
    """``perturb`` is the attack without its per-sample early exit: on the samples the call
    attacks (the correctly classified ones) both give the same images."""
    model, x, y = setup
    model.eval()
    atk = IGSM(eps=0.1, alpha=0.02, steps=4, fast_model=False, threads=1)
    res = atk(model, x, y)
    every = atk.perturb(model, x, y)
    att = ~res.skipped
    assert bool(att.any()) and bool((~att).any())
    assert torch.equal(every[att], res.x_adv[att])
    assert bool((every[~att] != x[~att]).any())  # misclassified samples perturbed as well
    assert torch.equal(res.x_adv[~att], x[~att])


def test_perturb_with_threads_equals_one_thread(setup):
    model, x, y = setup
    one = PGD(eps=0.1, alpha=0.02, steps=3, threads=1).perturb(model, x, y, generator=_gen())
    two = PGD(eps=0.1, alpha=0.02, steps=3, threads=2).perturb(model, x, y, generator=_gen())
    _close(one, two)


def test_perturb_defaults_and_errors(setup):
    model, x, y = setup
    a = FGSM(eps=0.1).perturb(model, x, None)  # attacks the clean predictions
    with frozen_model(model), torch.no_grad():
        pred = model(x).argmax(1)
    _close(a, FGSM(eps=0.1).perturb(model, x, pred))
    with pytest.raises(ValueError, match="kl"):
        AttackObjective("kl", y)
    with pytest.raises(ValueError, match="untargeted"):
        AttackObjective("kl", y, target=y, reference=torch.full((24, 4), 0.25))
