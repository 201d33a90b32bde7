"""Robust training methods (defenses.methods) through the trainer: loss goes down, checkpoints and
logs exist, exact resume, in-place semantics, optimiser groups, argument validation."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TinyCNN

import advsmooth.defenses as D
from advsmooth.defenses import methods as M
from advsmooth.defenses import noise as nz


def _toy(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes, each a bright 4×4 quadrant of an 8×8 image, plus noise (in [0,1])."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = 0.2 + 0.08 * torch.randn(n, 1, 8, 8, generator=g)
    for c, (r, s) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        x[y == c, :, r:r + 4, s:s + 4] += 0.5
    return x.clamp(0, 1), y


FAST = {
    "standard": {},
    "gaussian": {"sigma": 0.1},
    "pgd": {"eps": 0.05, "alpha": 0.02, "steps": 3, "w": 0.5},
    "trades": {"eps": 0.05, "alpha": 0.02, "steps": 3, "beta": 1.0},
    "noise_adv": {"sigma": 0.05, "q": 0.5, "eps": 0.05, "alpha": 0.02, "steps": 3},
    "epgd": {"sigma": 0.05, "samples": 2, "eps": 0.05, "alpha": 0.02, "steps": 2},
    "smoothadv": {"sigma": 0.05, "samples": 2, "eps": 0.05, "alpha": 0.02, "steps": 2},
    "fgsm_at": {"eps": 0.05},
    "deepfool_ft": {"alpha": 1.0, "max_iter": 10},
    "fgsm_ft": {"eps": 0.05},
}


@pytest.mark.parametrize("name", list(FAST) + ["pni", "sat"])
def test_method_decreases_loss_and_writes_checkpoints(name, tmp_path):
    if name == "sat":
        pytest.importorskip("advsmooth.attacks.smoothfool")
    x, y = _toy()
    model = TinyCNN()
    kwargs = FAST.get(name, {})
    if name == "pni":
        model = nz.inject_noise(model, where="weights", granularity="channelwise")
        kwargs = {"eps": 0.05, "alpha": 0.02, "steps": 2}
    if name == "sat":
        from advsmooth.attacks import SmoothFool

        x, y = x[:32], y[:32]
        kwargs = {"attack": SmoothFool(sigma=1.0, max_iter=5, clip_max_iter=20)}
    out = tmp_path / name
    trained = D.train(model, (x, y), method=name, epochs=3, lr=0.01, batch_size=16, seed=1,
                      out_dir=out, show_progress=False, **kwargs)
    assert trained is model  # trained in place
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3]
    assert log[-1]["loss"] < log[0]["loss"], log
    for f in ("epoch_001.pt", "epoch_003.pt", "last.pt"):
        assert (out / f).exists()
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["config"]["method"] == name and state["epoch"] == 3
    if name in ("deepfool_ft", "fgsm_ft"):
        assert (out / f"prepared_{name}.pt").exists()


def test_resume_equals_uninterrupted(tmp_path):
    x, y = _toy()
    kw = dict(method="pgd", eps=0.05, alpha=0.02, steps=3, lr=0.01, batch_size=16, seed=3,
              show_progress=False)
    full = D.train(TinyCNN(), (x, y), epochs=3, out_dir=tmp_path / "full", **kw)
    D.train(TinyCNN(), (x, y), epochs=2, out_dir=tmp_path / "part", **kw)
    resumed = D.train(TinyCNN(), (x, y), epochs=3, out_dir=tmp_path / "part", resume=True, **kw)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_resume_equals_uninterrupted_with_noise_layers(tmp_path):
    x, y = _toy(32)
    kw = dict(method="pni", eps=0.05, alpha=0.02, steps=2, lr=0.01, batch_size=16, seed=3,
              show_progress=False)
    base = TinyCNN()
    full = D.train(nz.inject_noise(base), (x, y), epochs=2, out_dir=tmp_path / "full", **kw)
    D.train(nz.inject_noise(base), (x, y), epochs=1, out_dir=tmp_path / "part", **kw)
    resumed = D.train(nz.inject_noise(base), (x, y), epochs=2, out_dir=tmp_path / "part",
                      resume=True, **kw)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), k


def test_pni_learns_noise_scales_without_weight_decay(tmp_path):
    x, y = _toy(32)
    model = nz.inject_noise(TinyCNN(), where="weights", granularity="layerwise")
    alpha0 = [p.detach().clone() for p in nz.noise_parameters(model)]
    D.train(model, (x, y), method="pni", eps=0.05, alpha=0.02, steps=2, epochs=1, lr=0.01,
            optimizer="sgd", weight_decay=0.1, batch_size=16, out_dir=tmp_path,
            show_progress=False)
    assert any(not torch.equal(a, p) for a, p in zip(alpha0, nz.noise_parameters(model)))
    groups = torch.load(tmp_path / "last.pt", weights_only=True)["optimizer"]["param_groups"]
    n_noise = len(nz.noise_parameters(model))
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.1]
    assert [len(g["params"]) for g in groups if g["weight_decay"] == 0.0] == [n_noise]


def test_pni_needs_noise_layers():
    x, y = _toy(16)
    with pytest.raises(ValueError, match="inject_noise"):
        D.train(TinyCNN(), (x, y), method="pni", epochs=1, show_progress=False)


def test_deepfool_finetuning_set_computed_once_from_start_model(tmp_path):
    from advsmooth.attacks import DeepFool

    x, y = _toy(32)
    start = TinyCNN()
    ref_model = TinyCNN()
    r = DeepFool(norm=2, overshoot=0.02, max_iter=10, clip=True)(ref_model, x, y).perturbation
    model = D.finetune(start, (x, y), method="deepfool_ft", alpha=2.0, max_iter=10,
                       base_lr=0.02, epochs=2, batch_size=16, out_dir=tmp_path,
                       show_progress=False)
    prepared = torch.load(tmp_path / "prepared_deepfool_ft.pt", weights_only=True)
    assert torch.allclose(prepared["x"], (x + 2.0 * r).clamp(0, 1), atol=1e-6)
    assert torch.equal(prepared["y"], y)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["config"]["lr"] == pytest.approx(0.01)  # half the base lr
    assert model is start


def test_pgd_linf_hygiene_and_budget():
    x, y = _toy(8)
    model = TinyCNN().train()
    bn = model.net[1]
    stats = bn.running_mean.clone(), bn.running_var.clone()
    x_in = x.clone()
    xa = M.pgd_linf(model, x, y, eps=0.05, alpha=0.02, steps=3,
                    generator=torch.Generator().manual_seed(0))
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert torch.equal(x, x_in)
    assert float((xa - x).abs().max()) <= 0.05 + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    assert all(p.grad is None for p in model.parameters())
    # every sample moves (no skipping of misclassified inputs)
    assert bool(((xa - x).flatten(1).abs().amax(1) > 0).all())


def test_epgd_variants_coincide_for_one_sample_without_noise():
    x, y = _toy(8)
    model = TinyCNN().eval()
    outs = [M.pgd_linf(model, x, y, eps=0.05, alpha=0.02, steps=2, random_start=False,
                       smoothing={"sigma": 0.0, "samples": 1, "variant": v})
            for v in M.EPGD_VARIANTS]
    plain = M.pgd_linf(model, x, y, eps=0.05, alpha=0.02, steps=2, random_start=False)
    for o in outs:
        assert torch.equal(o, plain)


@pytest.mark.parametrize("method,kwargs,match", [
    ("pgd", {"eps": -0.1}, "eps"),
    ("gaussian", {"sigma": -1.0}, "sigma"),
    ("noise_adv", {"q": 1.5}, "q"),
    ("noise_adv", {"q": -0.1}, "q"),
    ("pgd", {"w": 2.0}, "w"),
    ("trades", {"steps": 0}, "steps"),
    ("epgd", {"variant": "median"}, "variant"),
    ("deepfool_ft", {"alpha": -1.0}, "alpha"),
    ("no_such_method", {}, "unknown training method"),
])
def test_bad_arguments(method, kwargs, match):
    x, y = _toy(8)
    with pytest.raises(ValueError, match=match):
        D.train(TinyCNN(), (x, y), method=method, epochs=1, show_progress=False, **kwargs)


def test_registered_and_repr():
    for name in FAST:
        assert name in D.METHODS
    m = D.get_method("noise_adv", q=0.25)
    assert "q=0.25" in repr(m) and m.config()["q"] == 0.25


def test_magnified_example_picks_a_one_and_alpha_one_is_the_deepfool_point():
    # DeepFool paper Fig. 8: x + α·r̂ for α = 1 is DeepFool's adversarial image
    from advsmooth import data, models
    from advsmooth.attacks import DeepFool
    from advsmooth.studies.training import magnified_example

    x, y = data.load("digits", split="test")
    x, y = x[:60], y[:60]
    model = models.load("digits-lenet", verbose=False)
    df = DeepFool(norm=2, overshoot=0.02, max_iter=50, clip=True)
    out = magnified_example(model, df, x, y, (1.0, 2.0))
    i = out["index"]
    assert out["label"] == int(y[i]) == 1
    # DeepFool on the same batch (the 1s) that magnified_example attacks: the same bits
    ones = (y == 1).nonzero().flatten().tolist()
    k = ones.index(i)
    res = df(model, x[ones], y[ones])[k:k + 1]
    assert torch.equal(out["images"][0], x[i])
    assert torch.equal(out["images"][1], res.x_adv[0].clamp(0, 1))
    assert torch.equal(out["images"][2], (x[i] + 2 * res.perturbation[0]).clamp(0, 1))
    assert out["preds"][0] == int(model(x[i:i + 1]).argmax(1))
    assert out["preds"][1] == int(res.adv_pred[0]) != 1
    to_seven = [k for k in ones if int(df(model, x[k:k + 1], y[k:k + 1]).adv_pred[0]) == 7]
    assert i == (to_seven[0] if to_seven else ones[0])


def test_deepfool_ft_alpha_one_set_fools_the_start_model():
    # the α = 1 set clamp(x + r̂) must be adversarial: DeepFool runs with clip=True (unclipped
    # DeepFool leaves [0, 1] on saturated pixels and the clamp undoes the attack)
    from advsmooth import data, models

    x, y = data.load("digits", split="test")
    x, y = x[:80], y[:80]
    model = models.load("digits-lenet", verbose=False)
    method = D.get_method("deepfool_ft", alpha=1.0, max_iter=50)
    assert method.config()["clip"] is True
    xs = torch.cat([method.perturb(model, x[i:i + 40], y[i:i + 40]).clamp(0, 1)
                    for i in (0, 40)])
    with torch.no_grad():
        ok = model(x).argmax(1) == y
        fooled = model(xs).argmax(1) != y
    assert float(fooled[ok].double().mean()) > 0.95
    unclipped = D.get_method("deepfool_ft", alpha=1.0, max_iter=50, clip=False)
    xu = unclipped.perturb(model, x, y).clamp(0, 1)
    with torch.no_grad():
        assert float((model(xu).argmax(1) != y)[ok].double().mean()) < 0.5
    with pytest.raises(ValueError, match="clip"):
        D.get_method("deepfool_ft", clip=1)
