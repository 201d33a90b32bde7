"""Transfer metrics, transforms, ensembles, plots and the transfer study entry point."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import Affine, TinyCNN

from advsmooth.attacks import FGSM, IGSM, SmoothedGradient
from advsmooth.metrics import (
    correct_by_all,
    decision_boundary_map,
    destruction_curve,
    destruction_rate,
    gradient_similarity,
    random_wrong_targets,
    topk_success,
    transfer_matrix,
)
from advsmooth.metrics.transforms import (
    JPEG,
    GaussianBlur,
    GaussianNoise,
    Identity,
    Rotation,
    default_strengths,
    make_transform,
)
from advsmooth.models import Ensemble


def _family(n_models: int = 3, seed: int = 1, scale: float = 0.3) -> list[torch.nn.Module]:
    """Affine models that are noisy copies of one model: they mostly agree on clean inputs."""
    base = Affine((1, 6, 6), 5, seed=seed, dtype=torch.float32)
    out = [base]
    g = torch.Generator().manual_seed(seed + 100)
    for _ in range(n_models - 1):
        m = copy.deepcopy(base)
        with torch.no_grad():
            m.weight.add_(scale * torch.randn(m.weight.shape, generator=g))
        out.append(m)
    return out


@pytest.fixture
def family_data():
    models = _family()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(80, 1, 6, 6, generator=g)
    with torch.no_grad():
        y = models[0](x).argmax(1)
    return models, x, y


# ---------------------------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", ["rotation", "noise", "blur", "jpeg"])
def test_transforms_keep_shape_dtype_and_range(kind, channels):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, channels, 12, 10, generator=g)
    x0 = x.clone()
    for s in default_strengths(kind):
        t = make_transform(kind, s, seed=1)
        out = t(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert torch.equal(x, x0)  # input untouched


def test_zero_strength_is_identity_and_strength_changes_images():
    x = torch.rand(4, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    for kind in ("rotation", "noise", "blur"):
        assert torch.equal(make_transform(kind, 0)(x), x)
        assert not torch.equal(make_transform(kind, default_strengths(kind)[-1])(x), x)
    assert torch.equal(Identity()(x), x)


def test_rotation_is_counter_clockwise_and_matches_rot90():
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(Rotation(90)(x), torch.rot90(x, 1, (2, 3)), rtol=0, atol=1e-6)
    torch.testing.assert_close(Rotation(-90)(x), torch.rot90(x, -1, (2, 3)), rtol=0, atol=1e-6)
    xr = torch.rand(1, 1, 6, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(Rotation(180)(xr), torch.rot90(xr, 2, (2, 3)), rtol=0, atol=1e-6)
    # a small rotation with zero fill darkens the corners of a white image
    white = torch.ones(1, 1, 16, 16)
    r = Rotation(20)(white)
    assert float(r[0, 0, 0, 0]) < 0.5 and float(r[0, 0, 8, 8]) == pytest.approx(1.0)


def test_noise_is_seeded_and_leaves_global_rng():
    x = torch.full((3, 1, 8, 8), 0.5)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a, b = GaussianNoise(0.1, seed=4)(x), GaussianNoise(0.1, seed=4)(x)
    c = GaussianNoise(0.1, seed=5)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)
    assert abs(float((a - x).std()) - 0.1) < 0.02


def test_blur_preserves_constants_and_smooths():
    x = torch.full((1, 1, 10, 10), 0.3)
    torch.testing.assert_close(GaussianBlur(1.5)(x), x)
    spike = torch.zeros(1, 1, 11, 11)
    spike[0, 0, 5, 5] = 1.0
    out = GaussianBlur(1.0)(spike)
    assert float(out.max()) < 0.5 and float(out.sum()) == pytest.approx(1.0, abs=1e-5)


def test_jpeg_is_a_real_lossy_round_trip():
    g = torch.Generator().manual_seed(6)
    smooth = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(2, 3, 16, 16).contiguous()
    q100 = JPEG(100)(smooth)
    assert (q100 - smooth).abs().max() < 6 / 255
    assert torch.equal(q100, torch.round(q100 * 255) / 255)  # 8-bit values
    noisy = torch.rand(2, 1, 16, 16, generator=g)
    e_hi = (JPEG(95)(noisy) - noisy).abs().mean()
    e_lo = (JPEG(10)(noisy) - noisy).abs().mean()
    assert e_lo > e_hi > 0
    with pytest.raises(ValueError, match="quality"):
        JPEG(0)
    with pytest.raises(ValueError, match="channels"):
        JPEG(50)(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="kind"):
        make_transform("shear", 1.0)


# ---------------------------------------------------------------------------------------------
# destruction rate
# ---------------------------------------------------------------------------------------------

def test_destruction_rate_identity_zero_and_nan_without_denominator(family_data):
    models, x, y = family_data
    m = models[1]
    res = IGSM(eps=0.3, alpha=0.05, steps=10)(models[0], x, y)
    assert destruction_rate(m, x, res.x_adv, y, Identity()) == 0.0
    assert destruction_rate(m, x, res.x_adv, y, Rotation(0)) == 0.0
    assert math.isnan(destruction_rate(m, x, x, y, Rotation(10)))  # nothing was fooled


def test_destruction_rate_matches_definition(family_data):
    models, x, y = family_data
    m = models[1]
    x_adv = FGSM(eps=0.2)(models[0], x, y).x_adv
    t = GaussianNoise(0.3, seed=2)
    d = destruction_rate(m, x, x_adv, y, t)
    with torch.no_grad():
        c = lambda z: m(z).argmax(1) == y  # noqa: E731
        den = c(x) & ~c(x_adv)
        num = den & c(t(x_adv))
    assert int(den.sum()) > 0
    assert d == pytest.approx(float(num.sum()) / float(den.sum()))
    curve = destruction_curve(m, x, x_adv, y, "noise", [0, 0.3], seed=2)
    assert curve[0] == 0.0 and curve[1] == pytest.approx(d)


# ---------------------------------------------------------------------------------------------
# transfer matrix
# ---------------------------------------------------------------------------------------------

def test_transfer_matrix_untargeted(family_data):
    models, x, y = family_data
    named = {f"m{i}": m for i, m in enumerate(models)}
    atk = IGSM(eps=0.2, alpha=0.05, steps=5)
    tm = transfer_matrix(named, named, atk, (x, y), keep_adv=True)
    ok = correct_by_all(models, x, y)
    assert tm.n == int(ok.sum()) > 10
    assert tm.white_box.tolist() == np.eye(3, dtype=bool).tolist()
    # one cell recomputed by hand
    xa = atk(models[0], x[ok], y[ok]).x_adv
    with torch.no_grad():
        expected = float((models[2](xa).argmax(1) != y[ok]).double().mean())
    assert tm.top1[0, 2] == pytest.approx(expected)
    assert torch.equal(tm.adv["m0"], xa)
    assert (tm.top5 <= tm.top1 + 1e-12).all()  # label outside top-5 implies outside top-1
    assert tm.top1[0, 0] >= tm.top1[0, 1:].min()  # white-box at least as strong here
    md = tm.to_markdown()
    assert "m0" in md and "*" in md and f"n = {tm.n}" in md
    rows = tm.to_csv().strip().splitlines()
    assert rows[0].startswith("source,target,top1") and len(rows) == 1 + 9
    assert tm.grad_evals.tolist() == [5.0, 5.0, 5.0]
    sub = transfer_matrix(named, named, atk, (x, y), n=7)
    assert sub.n == 7


def test_transfer_matrix_targeted_and_ensemble_source(family_data):
    models, x, y = family_data
    ens = Ensemble(models[:2])
    tm = transfer_matrix({"ens": ens}, {"m0": models[0], "m1": models[1], "m2": models[2]},
                         IGSM(eps=0.5, alpha=0.1, steps=10), (x, y), targeted=True)
    assert tm.targeted and tm.target is not None
    assert bool((tm.target != tm.y).all())
    assert tm.white_box.tolist() == [[True, True, False]]  # members are white-box
    assert 0 <= tm.top1[0, 2] <= tm.top5[0, 2] <= 1
    assert tm.top1[0, 0] > 0.5
    t2 = transfer_matrix({"ens": ens}, {"m2": models[2]}, IGSM(eps=0.5, alpha=0.1, steps=10),
                         (x, y), targeted=True)
    assert torch.equal(t2.target, tm.target) or t2.n != tm.n  # same seed -> same targets


def test_random_wrong_targets_uniform_and_seeded():
    y = torch.zeros(20000, dtype=torch.long)
    t = random_wrong_targets(y, 5, seed=3)
    assert bool((t != y).all())
    counts = torch.bincount(t, minlength=5)[1:].double() / 20000
    assert bool(((counts - 0.25).abs() < 0.02).all())
    assert torch.equal(t, random_wrong_targets(y, 5, seed=3))


def test_topk_success():
    z = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0]])
    y = torch.tensor([0])
    assert not bool(topk_success(z, y)[0])
    assert bool(topk_success(z, torch.tensor([1]))[0])
    assert not bool(topk_success(z, torch.tensor([4]), k=5)[0])
    assert bool(topk_success(z, torch.tensor([5]), k=5)[0])
    assert bool(topk_success(z, y, target=torch.tensor([0]))[0])
    assert bool(topk_success(z, y, target=torch.tensor([4]), k=5)[0])
    for k in (0, 7, 2.0, True):  # top-0 / top-(K+1) success means nothing
        with pytest.raises(ValueError, match="k must be an integer in \\[1, 6\\]"):
            topk_success(z, y, k=k)


# ---------------------------------------------------------------------------------------------
# ensembles
# ---------------------------------------------------------------------------------------------

def test_ensemble_combinations(family_data):
    models, x, _ = family_data
    with torch.no_grad():
        z = torch.stack([m(x) for m in models], 1)
        torch.testing.assert_close(Ensemble(models)(x), z.mean(1))
        torch.testing.assert_close(Ensemble(models, combine="sum_logits")(x), z.sum(1))
        torch.testing.assert_close(Ensemble(models, combine="mean_probs")(x).exp(),
                                   z.softmax(-1).mean(1))
        torch.testing.assert_close(Ensemble(models, weights=[2, 1, 1])(x),
                                   0.5 * z[:, 0] + 0.25 * z[:, 1] + 0.25 * z[:, 2])
        torch.testing.assert_close(Ensemble(models, combine="mean_loss")(x), z.mean(1))
        assert torch.equal(Ensemble(models[:1])(x), models[0](x))
    with pytest.raises(ValueError, match="combine"):
        Ensemble(models, combine="vote")
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])
    with pytest.raises(ValueError, match="weights"):
        Ensemble(models, weights=[1, -1, 1])


def test_ensemble_members_each_with_own_normalisation():
    from advsmooth.models import Normalize

    a = torch.nn.Sequential(Normalize(0.5, 0.25), TinyCNN(seed=1))
    b = torch.nn.Sequential(Normalize(0.1, 0.5), TinyCNN(seed=2))
    ens = Ensemble([a, b])
    ens.train()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    res = FGSM(eps=0.1)(ens, x)
    assert ens.training and a.training and b.training  # restored after the attack
    a.eval()
    b.eval()
    ens.eval()
    with torch.no_grad():
        torch.testing.assert_close(ens(x), (a(x) + b(x)) / 2)
    assert res.x_adv.shape == x.shape


# ---------------------------------------------------------------------------------------------
# gradient similarity, decision boundary
# ---------------------------------------------------------------------------------------------

def test_gradient_similarity_identities_and_nesting():
    m = TinyCNN(seed=0).double().eval()
    other = TinyCNN(seed=1).double().eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.randint(0, 4, (6,), generator=torch.Generator().manual_seed(2))
    same = gradient_similarity(m, m, x, y, sigma=0.0, ms=(1, 3))
    np.testing.assert_allclose(same.mean, 1.0, atol=1e-9)
    assert same.baseline == pytest.approx(1.0)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = gradient_similarity(m, other, x, y, sigma=0.1, ms=(1, 2, 7), chunk_size=3, batch_size=4)
    b = gradient_similarity(m, other, x, y, sigma=0.1, ms=(7,), chunk_size=2, batch_size=4)
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_allclose(a.per_image[:, 2], b.per_image[:, 0], atol=1e-10)  # nested
    assert a.ms == [1, 2, 7] and a.per_image.shape == (6, 3)
    assert np.all(np.abs(a.per_image) <= 1 + 1e-12)
    with pytest.raises(ValueError, match="m must"):
        gradient_similarity(m, other, x, y, ms=(0,))


def test_decision_boundary_map(family_data):
    models, x, y = family_data
    named = {f"m{i}": m for i, m in enumerate(models)}
    dbm = decision_boundary_map(models[0], named, x[0], int(y[0]), samples=30, resolution=21,
                                extent=5.0, sigma=0.05)
    assert set(dbm.labels) == {"m0", "m1", "m2"}
    assert dbm.labels["m0"].shape == (21, 21)
    with torch.no_grad():
        p = int(models[0](x[:1]).argmax(1))
    assert dbm.labels["m0"][10, 10] == p  # the origin is the clean image
    assert abs(float((dbm.d1.double() * dbm.d2.double()).sum())) < 1e-5  # orthogonal
    assert float(dbm.d1.norm()) == pytest.approx(1.0, abs=1e-5)
    sgn = decision_boundary_map(models[0], named, x[0], int(y[0]), samples=10, resolution=5,
                                sign=True)
    assert set(torch.unique(sgn.d1).tolist()) <= {-1.0, 0.0, 1.0}
    # moving along the source gradient eventually leaves the true class for the source model
    assert (dbm.labels["m0"][10, :] != p).any()


# ---------------------------------------------------------------------------------------------
# plots and the study entry point
# ---------------------------------------------------------------------------------------------

def test_plots_write_png(tmp_path, family_data):
    pytest.importorskip("matplotlib")
    from advsmooth.report import transfer_plots as tp

    models, x, y = family_data
    named = {f"m{i}": m for i, m in enumerate(models)}
    tm = transfer_matrix(named, named, FGSM(eps=0.2, gradient=SmoothedGradient(0.05, 2)), (x, y))
    gs = gradient_similarity(models[0], models[1], x[:4], y[:4], ms=(1, 2))
    dbm = decision_boundary_map(models[0], named, x[0], int(y[0]), samples=5, resolution=9)
    tp.plot_transfer_matrix(tm, path=tmp_path / "tm.png")
    tp.plot_destruction_curves({"FGSM": [0, 0.2], "sg-FGSM": [0, 0.4]}, [0, 5], "rotation",
                               path=tmp_path / "dr.png")
    tp.plot_gradient_similarity({"a→b": gs}, path=tmp_path / "gs.png")
    tp.plot_decision_boundary(dbm, num_classes=5, path=tmp_path / "db.png")
    tp.plot_model_factors(["a", "b"], [3.0, 5.0], [1e4, 1e5], [20.0, 40.0],
                          path=tmp_path / "mf.png")
    tp.plot_success_curves([1, 2], {"x": [10, 20]}, xlabel="ε", path=tmp_path / "sc.png")
    for name in ("tm", "dr", "gs", "db", "mf", "sc"):
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_study_argument_errors(tmp_path):
    from advsmooth.cli import main
    from advsmooth.studies.transfer import TransferStudySettings

    with pytest.raises(ValueError, match="preset"):
        TransferStudySettings("imagenet")
    with pytest.raises(ValueError, match="n must"):
        TransferStudySettings("digits", n=0)
    with pytest.raises(ValueError, match="budget source"):
        TransferStudySettings("cifar10", budget_sources=("digits-lenet",))
    with pytest.raises(SystemExit) as exc:  # --n is a positive integer for argparse itself
        main(["transfer", "--preset", "digits", "--out", str(tmp_path), "--n", "0"])
    assert exc.value.code == 2
    assert not (tmp_path / "results.sqlite").exists()


def test_matrix_rows_flatten_a_transfer_matrix():
    from advsmooth.metrics.transfer import TransferMatrix
    from advsmooth.studies.transfer import _matrix_rows

    tm = TransferMatrix(sources=["a", "b"], targets=["a", "b"],
                        top1=np.array([[1.0, 0.25], [0.5, 1.0]]),
                        top5=np.array([[1.0, 0.0], [0.125, 1.0]]),
                        white_box=np.array([[True, False], [False, True]]), n=8,
                        targeted=False, attack="FGSM", grad_evals=np.array([1.0, 3.0]))
    rows = _matrix_rows("table1_fgsm", tm)
    t = {(r["source"], r["target"]): r for r in rows}
    assert len(t) == 4 and {r["part"] for r in rows} == {"table1_fgsm"}
    assert t[("a", "b")]["top1"] == 25.0 and t[("b", "a")]["top5"] == 12.5
    assert t[("a", "a")]["white_box"] and not t[("a", "b")]["white_box"]
    assert t[("b", "a")]["grad_evals"] == 3.0
    assert list(rows[0]) == ["part", "source", "target", "top1", "top5", "white_box",
                             "grad_evals"]


@pytest.mark.parametrize("params, match", [
    ({"out_dir": "x"}, "preset"),
    ({"preset": "imagenet", "out_dir": "x"}, "preset"),
    ({"preset": "digits", "out_dir": "x", "n": 0}, "n must be"),
    ({"preset": "digits", "out_dir": "x", "parts": ["fig8"]}, "parts"),
    ({"preset": "digits", "out_dir": "x", "budget_sources": ["nope-model"]}, "nope-model"),
    ({"preset": "digits", "out_dir": "x", "epochs": 3}, "epochs"),
    ({"preset": "digits", "fig6_ms": "12"}, "fig6_ms"),
])
def test_transfer_study_task_rejects_bad_params(params, match):
    from advsmooth.experiments import SpecError, parse_spec

    with pytest.raises(SpecError, match=match):
        parse_spec({"name": "t", "studies": [{"task": "transfer_study", "params": params}]})


def test_transfer_task_draws_from_a_seeded_sample_of_the_split(tmp_path):
    from advsmooth.experiments import SpecError, Store, parse_spec, run_spec

    def spec(**extra):
        return parse_spec({"name": "tt", "seed": 0, "studies": [{
            "task": "transfer", "label": "t", "params": {
                "dataset": "digits", "sources": ["digits-fc"], "targets": ["digits-fc"],
                "attack": "fgsm", "attack_params": {"eps": 0.1}, **extra}}]})

    rows = {}
    for key, extra in (("a", {"sample": 30, "data_seed": 1}), ("b", {"sample": 30, "data_seed": 1}),
                       ("c", {"sample": 30, "data_seed": 2})):
        run_spec(spec(**extra), tmp_path / key, progress=False)
        with Store(tmp_path / key, readonly=True) as st:
            rows[key] = st.study_rows(st.cells()[0]["cell_id"])
    assert 20 <= rows["a"][0]["n"] <= 30  # the correctly classified part of the 30-image sample
    assert rows["a"] == rows["b"] and rows["a"] != rows["c"]
    with pytest.raises(SpecError, match="sample"):
        spec(sample=0)
