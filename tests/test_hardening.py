"""Hostile models, malformed inputs and absurd parameters: one clear error each, never a NaN
result, a silent misreading or an unbounded run."""

from __future__ import annotations

import math
import os
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import advsmooth as asm
from advsmooth._utils import NonFiniteModelOutput
from advsmooth.attacks import registry as attack_registry
from advsmooth.defenses import SmoothedClassifier
from advsmooth.filters import MAX_SIGMA, LowPassFilter, roughness
from advsmooth.metrics import fooling_rate, robustness


class Hostile(nn.Module):
    """A linear classifier on 1×4×4 images whose output is made hostile by ``kind``."""

    def __init__(self, kind: str = "ok", k: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.lin = nn.Linear(16, k)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(k, 16, generator=g))
        self.kind = kind

    def forward(self, x):
        z = self.lin(x.flatten(1))
        if self.kind == "nan":
            return z * math.nan
        if self.kind == "inf":
            return z + math.inf
        if self.kind == "nan_away":  # finite at the clean images, NaN once a pixel drops below .3
            return z + torch.log(x.flatten(1).amin(1, keepdim=True) - 0.3)
        if self.kind == "nan_grad":  # finite logits, NaN input gradient (sqrt at 0)
            return z + torch.sqrt(x.flatten(1)[:, :1] * 0)
        if self.kind == "short":
            return z[:-1]
        if self.kind == "int":
            return z.round().long()
        if self.kind == "tuple":
            return z, z
        return z


X = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 0.3 + 0.35


def attacks():
    a = asm.attacks
    return {
        "FGSM": a.FGSM(eps=0.1), "PGD": a.PGD(eps=0.1, steps=3), "DeepFool": a.DeepFool(),
        "SmoothFool": a.SmoothFool(sigma=1.0, max_iter=5),
        "NAttack": a.NAttack(eps=0.1, population=4, max_iter=2),
        "sg-IGSM": a.IGSM(eps=0.1, steps=2, gradient=a.SmoothedGradient(0.05, 2)),
    }


@pytest.mark.parametrize("name", list(attacks()))
@pytest.mark.parametrize("kind", ["nan", "inf", "nan_away", "nan_grad"])
def test_non_finite_model_outputs_raise_naming_the_output(name, kind):
    if name == "NAttack" and kind == "nan_grad":
        pytest.skip("NAttack reads no gradient")
    atk = attacks()[name]
    try:
        res = atk(Hostile(kind), X)
    except NonFiniteModelOutput as exc:
        assert "NaN or Inf" in str(exc) and ("model output" in str(exc)
                                             or "adversarial images" in str(exc))
        return
    # accepted only when the attack never left the finite region (e.g. NAttack's ball)
    assert kind == "nan_away" and torch.isfinite(res.x_adv).all()
    with torch.no_grad():
        assert torch.isfinite(Hostile(kind)(res.x_adv)).all()


def test_universal_perturbation_rejects_nan_model():
    uap = asm.attacks.UniversalPerturbation(max_passes=1, progress_bar=False)
    with pytest.raises(NonFiniteModelOutput, match="model output"):
        uap.fit(Hostile("nan"), X)


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_smoothed_classifier_never_predicts_or_certifies_from_non_finite_votes(kind):
    sc = SmoothedClassifier(Hostile(kind), sigma=0.25, samples=8)
    for call in (lambda: sc(X), lambda: sc.predict(X), lambda: sc.predict(X, alpha=0.01, n=20),
                 lambda: sc.certify(X, n0=5, n=20)):
        with pytest.raises(NonFiniteModelOutput, match="base model output"):
            call()


def test_logit_mean_votes_that_overflow_are_refused():
    class Huge(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 2), 3e38) * torch.tensor([1.0, 0.5])

    sc = SmoothedClassifier(Huge(), sigma=0.1, samples=4, vote="logit_mean")
    with pytest.raises(NonFiniteModelOutput, match="overflow"):
        sc(X)


@pytest.mark.parametrize("kind,err,match", [
    ("short", ValueError, "rows for a batch of"),
    ("int", TypeError, "floating-point"),
    ("tuple", TypeError, "tuple"),
])
def test_malformed_model_outputs_one_clear_error(kind, err, match):
    for atk in attacks().values():
        with pytest.raises(err, match=match):
            atk(Hostile(kind), X)
    sc = SmoothedClassifier(Hostile(kind), sigma=0.1, samples=2)
    with pytest.raises(err, match=match):
        sc(X)
    with pytest.raises(err, match=match):
        fooling_rate(Hostile(kind), X, X, torch.zeros(4, dtype=torch.long))


def test_channels_last_and_mismatched_inputs_are_named():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(72, 2))
    x = torch.rand(2, 8, 8, 3)
    with pytest.raises(ValueError, match="channels-last.*permute"):
        asm.attacks.FGSM(eps=0.1)(model, x)
    with pytest.raises(ValueError, match="channels-last"):
        SmoothedClassifier(model, sigma=0.1)(x)
    # a layout the heuristic cannot tell: the model's own shape error, as one ValueError
    x = torch.rand(2, 1, 8, 8)
    for call in (lambda: asm.attacks.FGSM(eps=0.1)(model, x),
                 lambda: SmoothedClassifier(model, sigma=0.1)(x),
                 lambda: fooling_rate(model, x, x, torch.zeros(2, dtype=torch.long))):
        with pytest.raises(ValueError, match=r"cannot take x of shape \(2, 1, 8, 8\)"):
            call()
    with pytest.raises(ValueError, match="C, H, W >= 1"):
        asm.attacks.FGSM(eps=0.1)(model, torch.zeros(2, 3, 0, 8))
    # a binary score is no N×K logits for the smoothed classifier (votes would all go to 0)
    with pytest.raises(ValueError, match="K >= 2"):
        SmoothedClassifier(Hostile(k=1), sigma=0.1)(X)


def test_robustness_and_roughness_input_errors():
    r = torch.rand(2, 1, 4, 4)
    with pytest.raises(TypeError, match="torch.Tensor.*as_tensor"):
        robustness(r, r.numpy())
    with pytest.raises(TypeError, match="torch.Tensor"):
        robustness(r.numpy(), r)
    with pytest.raises(ValueError, match="NaN"):
        robustness(r * math.nan, r)
    with pytest.raises(ValueError, match="C, H, W >= 1"):
        roughness(torch.zeros(2, 1, 0, 4))
    with pytest.raises(ValueError, match="C, H, W >= 1"):
        roughness(torch.zeros(2, 0, 4, 4))
    assert roughness(torch.zeros(0, 1, 4, 4)).shape == (0,)
    for method in ("fft", "direct"):  # an empty batch used to reach MKL's FFT and fail there
        assert LowPassFilter("gaussian", 40.0, method=method)(torch.zeros(0, 1, 4, 4)).shape \
            == (0, 1, 4, 4)
    with pytest.raises(ValueError, match="NaN"):
        roughness(torch.full((1, 1, 4, 4), math.nan))
    # half precision works (direct convolutions; no half-precision FFT on the CPU), also for a
    # kernel long enough to take the FFT path in float32
    rb = torch.rand(2, 3, 80, 80)
    for sigma in (1.0, 20.0):
        out = roughness(rb.bfloat16(), sigma_h=sigma)
        ref = roughness(rb, sigma_h=sigma)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=1e-3)


def test_fooling_rate_labels_outside_classes_raise():
    m = Hostile()
    for y in ([0, 1, 3, 0], [0, -1, 1, 0]):
        with pytest.raises(ValueError, match=r"\[0, 2\]"):
            fooling_rate(m, X, X, torch.tensor(y))


# -- unbounded parameters --------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [1e6, 1e8, 1e12, math.inf])
def test_absurd_filter_widths_are_refused(sigma):
    with pytest.raises(ValueError, match="sigma"):
        LowPassFilter("gaussian", sigma)
    with pytest.raises(ValueError, match="sigma"):
        asm.attacks.SmoothFool(sigma=sigma)
    with pytest.raises(ValueError):
        LowPassFilter("uniform", int(min(sigma, 1e12)))


@pytest.mark.parametrize("padding", ["zeros", "replicate", "reflect"])
def test_kernel_is_bounded_by_the_image_and_the_output_is_unchanged(padding):
    """Taps beyond max(H, W) − 1 read only padding: dropping (zeros) or folding them into the
    outermost tap (replicate) gives the full kernel's output."""
    x = torch.rand(2, 2, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for sigma in (3.0, 40.0, MAX_SIGMA):
        f = LowPassFilter("gaussian", sigma, padding=padding, method="direct")
        k = f.kernel1d()
        taps = f._taps(7, 9, "zeros" if padding == "zeros" else "replicate")[0]
        assert taps.numel() <= 2 * 9 - 1
        if sigma > 40:
            continue  # the reference below would need the 50,001-tap kernel on every pixel
        lo = (k.numel() - 1) // 2
        mode = "constant" if padding == "zeros" else "replicate"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xp = torch.nn.functional.pad(x, (lo, lo, lo, lo), mode=mode)
        ref = torch.nn.functional.conv2d(
            torch.nn.functional.conv2d(xp, k.view(1, 1, -1, 1).expand(2, 1, -1, 1), groups=2),
            k.view(1, 1, 1, -1).expand(2, 1, 1, -1), groups=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.testing.assert_close(f(x), ref, rtol=1e-12, atol=1e-12)


def test_widest_filter_on_a_small_image_is_cheap():
    f = LowPassFilter("gaussian", MAX_SIGMA)
    x = torch.rand(2, 3, 8, 8)
    t = time.perf_counter()
    for _ in range(20):
        f(x)
    # bounded by the image (15 taps), not by the 50,001-tap kernel
    assert f._taps(8, 8, "zeros")[0].numel() == 15 and time.perf_counter() - t < 30


def test_smoothfool_reports_against_its_gradient_budget():
    """On a model it cannot fool inside [0, 1] SmoothFool stops at the budget, warns, and says
    so in the result (instead of running max_iter outer iterations)."""

    class Retreating(nn.Module):
        # class 1 would need a pixel sum below -1: unreachable in [0, 1]
        def forward(self, x):
            s = x.flatten(1).sum(1, keepdim=True)
            return torch.cat([1e3 * (1 + s), s], dim=1)

    atk = asm.attacks.SmoothFool(sigma=1.0, max_iter=500, grad_budget=30)
    with pytest.warns(RuntimeWarning, match="grad_budget=30") as rec:
        res = atk(Retreating(), X)
    # the warning points at the caller's line, not into the library
    assert rec[0].filename == __file__
    with pytest.warns(RuntimeWarning, match="grad_budget=30") as rec:
        asm.attacks.run_batched(atk, Retreating(), X, batch_size=2, progress_bar=False)
    assert {w.filename for w in rec} == {__file__}
    assert res.info["grad_budget"] == 30
    ex = res.extras["budget_exhausted"]
    assert bool(ex.all()) and not bool(res.success.any())
    # it stopped at the first outer iteration past the budget, far below max_iter
    assert bool((res.grad_evals >= 30).all()) and bool((res.iterations < 500).all())
    # a foolable model never touches the budget
    res2 = asm.attacks.SmoothFool(sigma=1.0, grad_budget=10_000)(Hostile(), X)
    assert not bool(res2.extras["budget_exhausted"].any())
    with pytest.raises(ValueError, match="grad_budget"):
        asm.attacks.SmoothFool(grad_budget=0)


# -- SmoothedClassifier model hygiene ----------------------------------------------------------

class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.bn(x).flatten(1))


def test_smoothed_inference_runs_the_base_in_eval_mode_and_restores_it():
    net = BNNet().train()
    sc = SmoothedClassifier(net, sigma=0.25, samples=8, vote="soft")
    before = net.bn.running_mean.clone()
    sc(X)
    sc.scores(X)
    sc.predict(X)
    sc.predict(X, alpha=0.1, n=10)
    sc.certify(X, n0=4, n=10)
    sc.copy_logits(X, samples=2)
    assert torch.equal(net.bn.running_mean, before)  # no BatchNorm update from a prediction
    assert net.training and net.bn.training  # mode restored
    net.eval()
    sc(X)
    assert not net.training
    # the same answer in eval mode whatever the base's mode was
    net.train()
    a = sc.scores(X, noise_seed=3)
    net.eval()
    torch.testing.assert_close(sc.scores(X, noise_seed=3), a)


def test_training_through_the_smoothed_model_stays_possible():
    net = BNNet().train()
    sc = SmoothedClassifier(net, sigma=0.25, samples=4, vote="soft")
    loss = -sc(X)[:, 0].log().mean()
    loss.backward()
    assert net.fc.weight.grad is not None and float(net.fc.weight.grad.abs().sum()) > 0
    # base_mode="as_is": batch statistics, BatchNorm running stats updated
    sc2 = SmoothedClassifier(net, sigma=0.25, samples=4, vote="soft", base_mode="as_is")
    before = net.bn.running_mean.clone()
    sc2(X)
    assert not torch.equal(net.bn.running_mean, before)
    assert "base_mode='as_is'" in repr(sc2)
    with pytest.raises(ValueError, match="base_mode"):
        SmoothedClassifier(net, sigma=0.1, base_mode="train")


# -- data files --------------------------------------------------------------------------------

@pytest.fixture()
def npz_dir(tmp_path):
    def save(name, **arrays):
        p = tmp_path / name
        np.savez(p, **arrays)
        return str(p)
    return save


def test_npz_labels_are_validated(npz_dir):
    x = np.zeros((3, 8, 8), np.uint8)
    for y in ([0, -5, 1], [0, 2**40, 1]):
        with pytest.raises(ValueError, match=r"neg|labels must be class indices"):
            asm.data.load("npz:" + npz_dir("a.npz", x=x, y=np.array(y)))
    with pytest.raises(ValueError, match=r"\[0, 2\] \(3 classes\)"):
        asm.data.load("npz:" + npz_dir("b.npz", x=x, y=np.array([0, 5, 1]),
                                      num_classes=np.array(3)))
    xs, ys = asm.data.load("npz:" + npz_dir("c.npz", x=x, y=np.array([0, 2, 1]),
                                           num_classes=np.array(3)))
    assert xs.shape == (3, 1, 8, 8) and ys.tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="integer class labels"):
        asm.data.load("npz:" + npz_dir("d.npz", x=x, y=np.array([0.0, 1, 1])))


def test_npz_ambiguous_layouts_are_refused_with_the_accepted_list(npz_dir):
    y = np.array([0, 1, 1])
    for x in (np.zeros((3, 4, 4, 5), np.uint8), np.zeros((3, 32, 32, 3), np.float32),
              np.zeros((3,), np.uint8)):
        with pytest.raises(ValueError, match="accepted layouts: uint8 N×H×W"):
            asm.data.load("npz:" + npz_dir("e.npz", x=x, y=y))
    # the unambiguous ones load
    for x, shape in ((np.zeros((3, 8, 8, 3), np.uint8), (3, 3, 8, 8)),
                     (np.zeros((3, 3, 32, 32), np.uint8), (3, 3, 32, 32)),
                     (np.zeros((3, 2, 5, 6), np.float32), (3, 2, 5, 6))):
        assert asm.data.load("npz:" + npz_dir("f.npz", x=x, y=y))[0].shape == shape


def test_broken_npz_files_give_one_line_naming_the_file(npz_dir, tmp_path):
    good = npz_dir("g.npz", x=np.zeros((3, 8, 8), np.uint8), y=np.array([0, 1, 1]))
    data = open(good, "rb").read()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    os.replace(tmp_path / "plain.npy", tmp_path / "plain.npz")
    obj = npz_dir("obj.npz", x=np.array([{"a": 1}] * 3, dtype=object), y=np.array([0, 1, 1]))
    for path in (tmp_path / "trunc.npz", tmp_path / "text.npz", tmp_path / "plain.npz", obj):
        with pytest.raises(ValueError) as info:
            asm.data.load(f"npz:{path}")
        msg = str(info.value)
        assert str(path) in msg and "\n" not in msg and "allow_pickle" not in msg
        exc = info.value  # no chained numpy/zipfile traceback under the line
        assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    with pytest.raises(ValueError, match="Python objects"):
        asm.data.load(f"npz:{obj}")


@pytest.mark.parametrize("name", ["FGSM", "DeepFool"])
def test_nan_gradients_are_caught_where_they_are_read(name):
    # FGSM's step reuses the clean forward's graph (execution layer); DeepFool reads one normal
    # per face: both name the gradient, not only the after-the-fact x_adv safety net
    with pytest.raises(NonFiniteModelOutput, match="input gradient"):
        attacks()[name](Hostile("nan_grad"), X)


@pytest.mark.parametrize("loss", ["ce", "kl"])
def test_training_perturb_refuses_non_finite_clean_logits(loss):
    # adversarial training's path (labels from the clean forward for y=None, TRADES' clean
    # reference for loss="kl") never steps from NaN logits
    atk = asm.attacks.PGD(eps=0.1, steps=2, loss=loss)
    y = None if loss == "ce" else torch.zeros(X.shape[0], dtype=torch.long)
    with pytest.raises(NonFiniteModelOutput, match="^the model output contains NaN"):
        atk.perturb(Hostile("nan"), X, y)


def test_learnable_input_noise_repr_does_not_warn():
    """repr of a learnable σ (a Parameter) converts it without autograd's scalar warning."""
    noise = asm.defenses.InputNoise(0.25, learnable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "sigma=0.25" in repr(noise)


# -- a user's audit, 2026-12-07: the API side ------------------------------------------------

def _digits8():
    m = asm.models.load("digits-lenet", verbose=False)
    x, y = asm.data.load("digits", n=8)
    return m, x, y


def test_hard_vote_smoothed_classifier_refuses_gradient_attacks_clearly():
    m, x, y = _digits8()
    for vote in ("prediction", "weighted"):
        s = SmoothedClassifier(m, sigma=0.25, samples=4, vote=vote)
        for atk in (asm.attacks.PGD(eps=0.1, steps=2), asm.attacks.DeepFool(max_iter=2)):
            with pytest.raises(ValueError, match="has no input gradient.*ExpectationGradient"):
                atk(s, x, y)
    soft = SmoothedClassifier(m, sigma=0.25, samples=4, vote="soft")
    assert asm.attacks.PGD(eps=0.1, steps=2)(soft, x, y).x_adv.shape == x.shape
    with torch.no_grad():  # predictions still work with every vote
        assert SmoothedClassifier(m, sigma=0.25, samples=4)(x).shape == (8, 10)


def test_training_method_parameters_are_checked_by_name():
    with pytest.raises(ValueError, match=r"'pgd' has no parameter\(s\) \['epss'\]"):
        asm.defenses.get_method("pgd", epss=0.3)
    with pytest.raises(ValueError, match="takes no parameters"):
        asm.defenses.get_method("standard", eps=0.3)
    assert asm.defenses.get_method("pgd", eps=0.2).eps == 0.2


def test_data_indices_take_masks_and_refuse_fractions():
    mask = torch.zeros(359, dtype=torch.bool)
    mask[[3, 5]] = True
    x, y = asm.data.load("digits", indices=mask)
    x_ref, y_ref = asm.data.load("digits", indices=[3, 5])
    assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    with pytest.raises(ValueError, match="must be integers"):
        asm.data.load("digits", indices=[0.7, 1.9])
    with pytest.raises(ValueError, match="one entry per sample of digits \\(359\\)"):
        asm.data.load("digits", indices=torch.ones(10, dtype=torch.bool))


def test_evaluate_checks_its_inputs_before_attacking():
    m, x, y = _digits8()
    with pytest.raises(ValueError, match="dtype torch.float64 but the model's parameters"):
        asm.evaluate(m, x.double(), y, eps=[0.1])
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        asm.evaluate(m, x, y, eps=[0.1], batch_size=0)
    with pytest.raises(ValueError, match="needs the true labels y"):
        asm.evaluate(m, x, None, eps=[0.1])


def test_model_loading_names_bad_devices_and_folders():
    with pytest.raises(ValueError, match="device must be cpu, cuda"):
        asm.models.load("digits-lenet", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            asm.models.load("digits-lenet", device="cuda")
    with pytest.raises(FileNotFoundError, match="models_dir /no/such/dir: no such folder"):
        asm.models.load("cifar10-resnet20", models_dir="/no/such/dir")
    with pytest.raises(FileNotFoundError, match="no model file"):
        asm.models.load("/no/such/model.pt")


def _two_classes():
    """A linear two-class model on six 1×4×4 images and its own predictions as labels."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    x = torch.rand(6, 1, 4, 4)
    return m, x, m(x).argmax(1).detach()


def test_dlr_loss_refuses_two_classes_and_evaluate_leaves_apgd_t_out():
    m, x, y = _two_classes()
    with pytest.raises(ValueError, match="at least 3 classes"):
        asm.attacks.APGD(eps=0.1, loss="dlr")(m, x, y)
    assert asm.attacks.APGD(eps=0.1, loss="ce", steps=5)(m, x, y).x_adv.shape == x.shape
    rep = asm.evaluate(m, x, y, eps=[0.05], deepfool=False)
    assert "apgd-t" not in rep.stage_list and "apgd-ce" in rep.stage_list


def test_accuracy_of_no_samples_is_an_error():
    m, x, y = _digits8()
    with pytest.raises(ValueError, match="no samples"):
        asm.defenses.evaluate(m, (x[:0], y[:0]))


def test_smoothing_label_check_leaves_the_noise_stream_alone():
    """The class-count probe runs on a copy: a noise layer's own generator must not advance, or a
    noise-trained study's results would depend on the check."""
    import copy

    from advsmooth.defenses import inject_noise
    from advsmooth.studies.smoothing import _check_classes

    m, x, y = _digits8()
    noisy = inject_noise(m, seed=0)
    twin = copy.deepcopy(noisy)
    _check_classes(noisy, x, y)
    with torch.no_grad():
        assert torch.equal(noisy(x), twin(x))


def test_evaluate_refuses_a_stage_list_with_nothing_left_and_a_profile_of_a_noisy_model():
    m, x, y = _two_classes()
    with pytest.raises(ValueError, match="no stage of \\['apgd-t'\\] applies"):
        asm.evaluate(m, x, y, eps=[0.05], stages=["apgd-t"], deepfool=False)
    base, xd, yd = _digits8()
    smoothed = SmoothedClassifier(base, sigma=0.25, samples=4)
    with pytest.raises(ValueError, match="needs a deterministic model"):
        asm.evaluate(smoothed, xd, yd, eps=[0.05], stages=["pgd-ce"], smoothness=[1.0])


def test_empty_indices_select_nothing_and_torch_device_names_pass():
    x, y = asm.data.load("digits", indices=[])
    assert x.shape[0] == 0 and y.shape == (0,)
    m = asm.models.load("digits-lenet", verbose=False, device="cpu:0")
    assert next(m.parameters()).device.type == "cpu"


def test_weight_log_keeps_two_saved_models_with_the_same_file_name(tmp_path):
    from advsmooth.models import registry
    from advsmooth.models.registry import save_model

    paths = []
    for i, sub in enumerate(("a", "b")):
        net = asm.models.load("digits-fc", verbose=False)
        with torch.no_grad():
            next(net.parameters()).add_(float(i))
        (tmp_path / sub).mkdir()
        paths.append(save_model(net, tmp_path / sub / "model.pt", arch="fc",
                                in_shape=(1, 28, 28), num_classes=10))
    with registry.recording_weights() as used:
        for p in paths:
            asm.models.load(str(p), verbose=False)
    assert len(used) == 2 and len(set(used.values())) == 2


# ----------------------------------------------------------------------------------------------
# a misspelt name gets the nearest known one
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,hint", [
    (lambda: asm.data.info("MNIST"), "did you mean 'mnist'?"),
    (lambda: asm.data.info("cifar-10"), "did you mean 'cifar10'?"),
    (lambda: asm.data.load("Digits", "test"), "did you mean 'digits'?"),
    (lambda: asm.models.registry.spec("mnist-lenet-pdg"), "did you mean 'mnist-lenet-pgd'?"),
    (lambda: attack_registry.build("deepfol"), "did you mean 'deepfool'?"),
    (lambda: asm.attacks.DeepFool(box="projct"), "did you mean 'project'?"),
    (lambda: asm.evaluate(nn.Flatten(), torch.rand(2, 1, 2, 2), torch.zeros(2).long(), eps=[0.1],
                          stages=["apgd-cee"]), "did you mean 'apgd-ce'?"),
])
def test_unknown_names_suggest_the_nearest_known_one(call, hint):
    with pytest.raises(ValueError, match=r"; did you mean '[^']+'\?$") as info:
        call()
    assert hint in str(info.value)


def test_no_suggestion_when_nothing_is_close():
    with pytest.raises(ValueError) as info:
        asm.data.info("zzzzzz")
    assert "did you mean" not in str(info.value) and "known: digits" in str(info.value)
