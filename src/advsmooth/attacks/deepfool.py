"""DeepFool: minimal adversarial perturbations by iterated linearisation.

Moosavi-Dezfooli, Fawzi, Frossard, "DeepFool: a simple and accurate method to fool deep neural
networks", CVPR 2016, arXiv:1511.04599. This module follows the paper's Algorithm 2 (multiclass
DeepFool) for any ``p`` in ``{2, ∞}`` or real ``p > 1`` (the paper's Section 3.3), with the binary
case of Algorithm 1 as the two-class logits ``[0, s]``, and a targeted mode. Read
:meth:`DeepFool.run` (the ``while`` loop) and :meth:`DeepFool._iterate` (one pass of its body)
next to Algorithm 2. Departures from the paper, all documented in docs/deepfool.md: the
overshoot multiplies the total perturbation, the default linearisation point is the overshot
point (as the authors' Python code), ``clip=True`` keeps iterates in ``[0, 1]`` with
box-constrained steps (whose result then gives back the part of the overshoot it did not need),
and after the first iteration only the nearest faces are differentiated unless the choice of
face needs them all.

Fully batched: samples that are fooled leave the active batch, so every iteration costs only what
the still-active samples need.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
>>> x = torch.rand(4, 1, 4, 4)
>>> res = DeepFool()(model, x)
>>> bool(res.success.all())
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import (
    check_bool,
    check_choice,
    check_finite_gradient,
    check_int_at_least,
    check_model_output,
    check_nonnegative,
    warn_caller,
)
from .base import Attack, AttackContext, AttackOutput
from .execution import Execution, LayoutHint, in_threads, plain_torch_modules
from .hyperplane import box_solve as _box_solve
from .hyperplane import holder_direction as _direction
from .hyperplane import lp_norm as _lp

__all__ = ["DeepFool", "FaceMemory", "JACOBIAN_METHODS", "BOX_METHODS", "FACE_METHODS"]

#: how the candidate-face gradients are computed: ``"loop"`` (one backward pass per face through
#: one retained graph), ``"threads"`` (the same, the chunks of an iteration in parallel threads),
#: ``"auto"`` (``"threads"`` where it is safe, else ``"loop"``)
JACOBIAN_METHODS = ("auto", "loop", "threads")
#: how ``clip=True`` keeps the iterates in ``[0, 1]``
BOX_METHODS = ("project", "clamp")
#: which faces are differentiated after the first iteration
FACE_METHODS = ("nearest", "all")

_TINY = 1e-12
#: faces differentiated per later iteration with ``faces="nearest"`` (before any fallback)
_NEAREST = 2
#: the settle step keeps a point only where it is fooled by more than this fraction of the
#: largest |logit| (at least 1): float32 logits of the same image differ by ~1e-6 of that scale
#: between batch sizes, so a point nearer the boundary could be fooled in one batch and not in
#: another
_SETTLE_MARGIN = 1e-5
#: safety factor of the ``faces="nearest"`` acceptance test (see DeepFool._faces)
_MARGIN = 2.0
#: ``faces="nearest"`` falls back to every face when a differentiated normal's norm changed by
#: more than this factor per iteration (up or down)
_STEADY = 1.5
#: with ``box="project"``, the first steps are clamped ones; the box-constrained steps follow
#: (docs/deepfool.md: two clamped steps let the linearisation see the raised background first;
#: they end within 0.07 % of the plain clamp's ℓ2 on the MNIST LeNet, one ended within 0.4 %)
_CLAMPED_STEPS = 2

Counter = Callable[[Tensor, int], None]


def as_logits(z: Tensor) -> Tensor:
    """Model output → ``N×K`` logits; a single score ``s`` (``(N,)`` or ``N×1``) → ``[0, s]``.

    With this mapping ``argmax`` agrees with the binary rule ``class = 1 iff s > 0``.
    """
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2:
        raise ValueError(f"model output must have shape N×K (or N for a binary score), "
                         f"got {tuple(z.shape)}")
    if z.shape[1] == 1:
        z = torch.cat([torch.zeros_like(z), z], dim=1)
    return z


#: the dual exponent beyond which the box-constrained ℓp step underflows (p below ≈ 1.02)
_Q_BOX_LIMIT = 50.0


def _parse_norm(norm: float | int | str) -> float:
    if isinstance(norm, str):
        if norm.lower() in ("inf", "linf", "infinity"):
            return math.inf
        try:
            norm = float(norm)
        except ValueError:
            raise ValueError(f"norm must be 2, 'inf' or a real number > 1, got {norm!r}") from None
    if isinstance(norm, bool) or not isinstance(norm, (int, float)) or math.isnan(norm) \
            or not norm > 1:
        raise ValueError(f"norm must be 2, 'inf' or a real number > 1, got {norm!r}")
    return float(norm)


@dataclass
class DeepFoolRun:
    """Per-sample outcome of :meth:`DeepFool.run` (first dimension = batch size).

    ``r_tot``: un-overshot accumulated perturbation (with ``box="project"`` scaled by the
    settle step's ``t ≤ 1``); ``x_adv``: ``x + (1+η)·r_tot`` (clamped to
    ``[0, 1]`` when ``clip``); ``label_adv``: prediction at ``x_adv``; ``fooled``: the stopping
    criterion was met; ``failed``: stopped because every face normal vanished; ``face``: class
    index of the face used in the last iteration; ``iterations``; ``adv_logits``: ``N×K``
    logits (:func:`as_logits`) of the checking model at exactly ``x_adv`` (the last stopping
    check of every sample was made there).
    """

    r_tot: Tensor
    x_adv: Tensor
    fooled: Tensor
    failed: Tensor
    face: Tensor
    iterations: Tensor
    adv_logits: Tensor

    @property
    def label_adv(self) -> Tensor:
        """``(N,)`` prediction at ``x_adv`` (argmax of ``adv_logits``)."""
        return self.adv_logits.argmax(dim=1)


@dataclass
class _State:
    """The state of one :meth:`DeepFool.run` (first dimension = batch size N); the iterations
    update disjoint rows of it in place.

    ``cand`` (N, Kc): the candidate classes, column 0 the class whose region is left (the clean
    label; for targeted attacks the strongest competitor of the target, column 1); ``wnorm``
    (N, Kc−1): the normal norm ``‖w'_k‖_q`` last computed for each face (the effective one
    ``|f'_k| / distance`` under the box-constrained step) and ``wnorm_at`` (N, Kc−1) the
    iteration it was computed in, used to pick the faces to differentiate. ``slope`` (N,): the
    chosen face's normal times the overshot total, ``w'_l·(1+η)·r_tot`` (the face's rate of
    change along the returned perturbation, used by :meth:`DeepFool._settle`).
    """

    x: Tensor
    cand: Tensor
    k0: Tensor
    target: Tensor | None
    r_tot: Tensor
    iters: Tensor
    face: Tensor
    fooled: Tensor
    failed: Tensor
    wnorm: Tensor
    wnorm_at: Tensor
    adv_logits: Tensor
    slope: Tensor


@dataclass
class FaceMemory:
    """What runs of :meth:`DeepFool.run` learnt about each sample's faces, carried from one run
    to the next from a nearby point (SmoothFool's outer iterations restart DeepFool from the last
    iterate). ``norm`` (N, K): the face normal norm ``‖w'_k‖_q`` last computed for class ``k``
    (∞: never); ``at`` (N, K): the value of ``clock`` then; ``clock`` (N,): the DeepFool
    iterations run so far. Rows follow the batch given to ``run``; :meth:`rows` / :meth:`put`
    move a subset in and out.

    With ``faces="nearest"``, a run whose memory knows every candidate face of its samples
    chooses the faces to differentiate from its first iteration on, with the acceptance test
    and fallback of a later iteration (DeepFool._faces), instead of differentiating all of them.
    """

    norm: Tensor
    at: Tensor
    clock: Tensor

    @classmethod
    def empty(cls, n: int, num_classes: int, *, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> FaceMemory:
        """A memory of ``n`` samples that knows no face yet."""
        return cls(norm=torch.full((n, num_classes), math.inf, dtype=dtype, device=device),
                   at=torch.zeros(n, num_classes, dtype=torch.long, device=device),
                   clock=torch.zeros(n, dtype=torch.long, device=device))

    def rows(self, idx: Tensor) -> FaceMemory:
        """A copy of the rows ``idx``."""
        return FaceMemory(self.norm[idx], self.at[idx], self.clock[idx])

    def put(self, idx: Tensor, other: FaceMemory) -> None:
        """Write ``other`` (from :meth:`rows`, updated by a run) back into the rows ``idx``."""
        self.norm[idx], self.at[idx], self.clock[idx] = other.norm, other.at, other.clock


@dataclass
class _Exec:
    """How one run evaluates the model: ``forward`` (the model to differentiate, in the attack's
    memory layout), ``check`` (the stopping-check model) and the cost counters (indices into the
    run's batch)."""

    forward: Callable[[Tensor], Tensor]
    check: Callable[[Tensor], Tensor]
    count_forward: Counter | None
    count_grad: Counter | None

    def counted(self, idx: Tensor, forwards: int, grads: int) -> None:
        if self.count_forward is not None and forwards:
            self.count_forward(idx, forwards)
        if self.count_grad is not None and grads:
            self.count_grad(idx, grads)


@dataclass
class _Nearest:
    """The nearest face among ``a`` given ones, per sample: ``dist`` (n, a) distance of every
    face (∞: unreachable inside the box), ``norm`` (n, a) its (effective) normal norm, ``l`` (n,)
    the chosen face, ``step`` the step to it (n, C, H, W), ``bad`` (n,) every normal vanished,
    ``normal`` (n, D) the chosen face's normal, flattened."""

    dist: Tensor
    norm: Tensor
    l: Tensor
    step: Tensor
    bad: Tensor
    normal: Tensor

    def chosen_dist(self) -> Tensor:
        return self.dist.gather(1, self.l[:, None])[:, 0]


class DeepFool(Attack):
    """DeepFool: the smallest perturbation (in ℓp) that crosses the nearest linearised boundary.

    **Default ``clip=False``, as in the paper**: iterates are not clipped, so ``x_adv`` may leave
    the valid image range [0, 1] (a success may then rest on invalid pixel values). Pass
    ``clip=True`` for valid images; the command line (``advsmooth attack deepfool``) clips by
    default and offers the unclipped mode as ``--no-clip``.

    Args:
        norm: ``2`` (default), ``"inf"`` or any real ``p > 1``.
        overshoot: η; the returned perturbation is ``(1+η)·r_tot`` (applied to the total).
        max_iter: iteration cap per sample (a sample not fooled by then ends with success=False).
        candidates: number Kc of candidate classes (top-Kc clean logits, fixed for the run; all
            classes when K <= Kc). Must be >= 2.
        stabilizer: δ added to every step's distance (``(d + δ)``; the authors' code uses 1e-4)
            so that steps never vanish.
        clip: keep every iterate in ``[0, 1]`` (off by default, like the paper).
        box: how ``clip=True`` does it. ``"clamp"``: the paper's unconstrained step, then a
            pixel-wise clamp (which undoes part of the step on saturated pixels, so the iterate
            falls short of the linearised boundary and more iterations follow). ``"project"``
            (default): the first two steps are clamped ones; every later step goes to the
            nearest face of the linearised classifier *inside the box*: a pixel on a bound
            that the step would push outward stays there, and the step is recomputed on the
            pixels that can move (repeated while more pixels reach a bound), so the iterate
            lands on the linearised boundary with its overshot point in ``[0, 1]``; every
            fooled sample then gives back the part of the overshoot it did not need (1–2
            forwards, :meth:`_settle`). Projecting sooner took fewer iterations but
            gave larger perturbations (docs/deepfool.md). Ignored when ``clip=False``.
        faces: ``"nearest"`` (default): the first iteration differentiates every candidate face;
            later ones differentiate the two faces nearest under the current face values and
            the normal norms last computed, and all the others too whenever a face left out
            could be nearer than the chosen one if its normal had grown, per iteration since
            its norm was computed, 2× more than the differentiated ones did, or whenever a
            differentiated normal's norm changed by more than 1.5× per iteration. The step is
            always computed from exact gradients. On the standard shared models the results
            equal ``"all"``'s up to float rounding; on an adversarially trained model, whose
            normals jump between iterations, individual results differed (docs/deepfool.md).
            ``"all"``: every candidate face at every iteration, as in the paper.
        linearize_with_overshoot: linearise (and check) at ``x + (1+η)·r_tot``, as the
            authors' Python code and Foolbox do — the default, because it ends ≈ 1 % closer to
            the boundary at the same success rate (docs/deepfool.md); ``False``: linearise at
            ``x + r_tot`` (the paper's pseudo-code).
        jacobian: how the face gradients are computed from one forward pass: ``"loop"``
            (one backward pass per face through a retained graph), ``"threads"`` (``"loop"``,
            with the chunks of each iteration shared among ``torch.get_num_threads()`` Python
            threads that run with one intra-op thread each; CPU only; the same results up to
            float rounding) or ``"auto"`` (default: ``"threads"`` on a CPU with more than one
            torch thread when the model is built only from hook-free ``torch.nn`` / ``torch.fx``
            / ``advsmooth.models`` modules, else ``"loop"``).
        chunk_size: active samples per forward/backward pass (default 128: bounds memory, and
            moderate batches are faster per image on CPU); ``None`` = the whole active set at
            once. Results do not depend on it beyond float rounding (a rounding-level
            difference at a stopping check could move a sample's last iteration; on the digits
            LeNet chunks of 32, 128 and the whole set gave bit-identical ``x_adv``).
        channels_last: run the model on channels-last copies of the (4-D, multi-channel) inputs
            (see :class:`~advsmooth.attacks.execution.LayoutHint`). ``None`` (default): on CPU,
            try it and fall back to the input's layout for the rest of the run if the model
            rejects it; ``True``: require it; ``False``: never.
        fold_batchnorm: differentiate a fast copy of the model, when it qualifies: eval-mode
            Conv→BatchNorm pairs folded into single convolutions and, on CPU, convolution
            tensors in channels-last layout (:func:`~advsmooth.attacks.execution.fold_batchnorm`;
            the same function up to float rounding); the stopping checks, and so the success of
            the result, run on the original model. ``False``: attack the model as given.
        seed: unused (DeepFool is deterministic); kept for the common signature.

    Targeted mode (``attack(model, x, y, target=t)``): each iteration uses only the face between
    the target and its strongest competitor (the clean label at first, then the top non-target
    class at the last checked point); success means ``pred == t``.

    Result extras: ``r_tot`` (un-overshot perturbation), ``label_orig`` (clean prediction),
    ``face`` (class of the last face), ``failed`` (all face normals vanished).
    Costs per iteration and active sample: 2 forward evaluations (the linearisation point with
    gradients and the overshot check point) and Kc−1 gradient evaluations in the first iteration
    (1 for binary models and targeted attacks), then 2 with ``faces="nearest"`` (Kc−1, and one
    forward more, when the acceptance test falls back to every face).
    """

    supports_targeted = True

    # 14 parameters: the paper's five (norm, overshoot, max_iter, candidates, stabilizer), four
    # box/face/linearisation policies, the execution options (jacobian, chunk_size,
    # channels_last, fold_batchnorm) that change the result at most by float rounding, and the
    # common seed; grouping them would hide the paper's names
    def __init__(self, *, norm: float | int | str = 2, overshoot: float = 0.02, max_iter: int = 50,
                 candidates: int = 10, stabilizer: float = 1e-4, clip: bool = False,
                 box: str = "project", faces: str = "nearest",
                 linearize_with_overshoot: bool = True, jacobian: str = "auto",
                 chunk_size: int | None = 128, channels_last: bool | None = None,
                 fold_batchnorm: bool = True, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.p = _parse_norm(norm)
        self.overshoot = check_nonnegative("overshoot", overshoot)
        self.max_iter = check_int_at_least("max_iter", max_iter, 1)
        self.candidates = check_int_at_least("candidates", candidates, 2)
        self.stabilizer = check_nonnegative("stabilizer", stabilizer)
        for name, flag in (("clip", clip), ("linearize_with_overshoot", linearize_with_overshoot),
                           ("fold_batchnorm", fold_batchnorm)):
            check_bool(name, flag)
        self.clip = clip
        if clip and self.q > _Q_BOX_LIMIT:
            warn_caller(f"DeepFool norm={norm}: with p this close to 1 a step moves almost only "
                        "the largest-gradient pixels (their weights |w|^(q-1), q = "
                        f"{self.q:.0f}, underflow elsewhere), so inside [0, 1] (clip=True) most "
                        "images cannot be fooled; use p >= 1.05 or clip=False", RuntimeWarning)
        self.box = check_choice("box", box, BOX_METHODS)
        self.faces = check_choice("faces", faces, FACE_METHODS)
        self.linearize_with_overshoot = linearize_with_overshoot
        self.jacobian = check_choice("jacobian", jacobian, JACOBIAN_METHODS)
        self.chunk_size = (None if chunk_size is None
                           else check_int_at_least("chunk_size", chunk_size, 1))
        self.channels_last = LayoutHint(channels_last).mode  # validates
        self.fold_batchnorm = fold_batchnorm
        norm_repr: float | str = "inf" if math.isinf(self.p) else (
            int(self.p) if self.p.is_integer() else self.p)
        self._set_params(norm=norm_repr, overshoot=self.overshoot, max_iter=self.max_iter,
                         candidates=self.candidates, stabilizer=self.stabilizer, clip=clip,
                         box=self.box, faces=self.faces,
                         linearize_with_overshoot=linearize_with_overshoot, jacobian=jacobian,
                         chunk_size=self.chunk_size, channels_last=channels_last,
                         fold_batchnorm=fold_batchnorm)

    # ------------------------------------------------------------------------------------------
    @property
    def q(self) -> float:
        """Dual exponent ``q = p/(p−1)`` (1 for p = ∞)."""
        return 1.0 if math.isinf(self.p) else self.p / (self.p - 1.0)

    @property
    def _projects(self) -> bool:
        return self.clip and self.box == "project"

    def _clean_forward(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Any]:
        # the clean prediction in the attack's own memory layout and chunks (the same model)
        hint = LayoutHint(self.channels_last)
        step = self.chunk_size or max(x.shape[0], 1)
        with torch.no_grad():
            z = [hint(model, x[i:i + step]) for i in range(0, x.shape[0], step)]
        return (z[0] if len(z) == 1 else torch.cat(z)), None

    @property
    def execution(self) -> Execution:
        """This attack's ``fold_batchnorm`` / ``channels_last`` as the execution layer's settings
        (the fast copy it differentiates and the memory layout it runs in)."""
        return Execution(fast_model=self.fold_batchnorm, channels_last=self.channels_last)

    def gradients_per_iteration(self, num_classes: int, targeted: bool = False,
                                first: bool = True) -> int:
        """Gradient evaluations per active sample in the first (``first=True``) or a later
        iteration, for a ``num_classes`` model (a later iteration of ``faces="nearest"`` may
        fall back to every face: this is the least it costs)."""
        if targeted or num_classes <= 2:
            return 1
        m = min(self.candidates, num_classes) - 1
        return m if first or self.faces == "all" else min(m, _NEAREST)

    def _method(self, model: nn.Module | None = None, device: torch.device | None = None) -> str:
        """The Jacobian strategy: ``jacobian``, or what ``"auto"`` picks for ``model`` on
        ``device`` (``"loop"`` when either is not given)."""
        if self.jacobian != "auto":
            return self.jacobian
        if (model is not None and device is not None and device.type == "cpu"
                and torch.get_num_threads() > 1
                and plain_torch_modules(model, ("torch.nn", "torch.fx", "advsmooth.models"))):
            return "threads"
        return "loop"

    def _attack(self, ctx: AttackContext) -> AttackOutput:
        z0 = as_logits(ctx.clean_logits)
        k0 = z0.argmax(dim=1)
        model = self.execution.gradient_model(ctx.model, ctx.x[:4])
        # the stopping checks run on the caller's model itself, so the last check of each sample
        # is the verification of its x_adv and the base class need not run one more forward
        run = self.run(
            model, ctx.x, z0, target=ctx.target,
            count_forward=lambda sub, k: ctx.count_forward(sub, k),
            count_grad=lambda sub, k: ctx.count_grad(sub, k), check_model=ctx.model,
        )
        extras = {"r_tot": run.r_tot, "label_orig": k0, "face": run.face, "failed": run.failed}
        return AttackOutput(x_adv=run.x_adv, iterations=run.iterations, extras=extras,
                            info={"jacobian": self._method(model, ctx.x.device)},
                            adv_logits=run.adv_logits)

    # ------------------------------------------------------------------------------------------
    # Algorithm 2
    # ------------------------------------------------------------------------------------------
    def run(self, model: nn.Module, x: Tensor, z0: Tensor, *, target: Tensor | None = None,
            count_forward: Counter | None = None, count_grad: Counter | None = None,
            check_model: nn.Module | None = None,
            memory: FaceMemory | None = None) -> DeepFoolRun:
        """DeepFool on every sample of ``x`` (no input checks, no model hygiene: the caller's job).

        ``z0`` are the logits at ``x`` (``N×K``, see :func:`as_logits`); the clean label is
        ``argmax z0``. ``count_forward(idx, k)`` / ``count_grad(idx, k)`` receive indices into
        ``x``. ``check_model`` evaluates the stopping checks (default ``model``; e.g. the
        original of a BN-folded ``model``). ``memory`` (untargeted runs): the face norms of
        earlier runs from nearby points, read at the start and updated at the end (see
        :class:`FaceMemory`). Used by :class:`DeepFool` and by SmoothFool's inner loop.
        """
        n, dev = x.shape[0], x.device
        z0 = as_logits(z0.detach())
        k0 = z0.argmax(dim=1)
        if target is None:
            kc = min(self.candidates, z0.shape[1])
            # stable descending sort: ties keep the lower index first, like argmax
            cand = torch.sort(z0, dim=1, descending=True, stable=True).indices[:, :kc]
        else:
            cand = torch.stack([k0, target.to(dev).long()], dim=1)
        # line 1: r_tot = 0
        st = _State(x=x, cand=cand, k0=k0, target=target, r_tot=torch.zeros_like(x),
                    iters=torch.zeros(n, dtype=torch.long, device=dev), face=cand[:, 1].clone(),
                    fooled=torch.zeros(n, dtype=torch.bool, device=dev),
                    failed=torch.zeros(n, dtype=torch.bool, device=dev),
                    wnorm=torch.full((n, cand.shape[1] - 1), math.inf, dtype=x.dtype, device=dev),
                    wnorm_at=torch.zeros(n, cand.shape[1] - 1, dtype=torch.long, device=dev),
                    adv_logits=torch.zeros_like(z0), slope=torch.zeros(n, dtype=x.dtype,
                                                                         device=dev))
        faces = cand[:, 1:]  # the classes of the faces, in the order of st.wnorm's columns
        if memory is not None and target is None:
            st.wnorm = memory.norm.gather(1, faces).to(x.dtype)
            st.wnorm_at = memory.at.gather(1, faces) - memory.clock[:, None]  # ≤ 0: earlier runs
        hint, check_hint = LayoutHint(self.channels_last), LayoutHint(self.channels_last)
        checker = model if check_model is None else check_model
        ex = _Exec(forward=lambda xs: check_model_output(hint(model, xs), xs.shape[0]),
                   check=lambda xs: check_model_output(check_hint(checker, xs), xs.shape[0]),
                   count_forward=count_forward, count_grad=count_grad)
        # "threads": the chunks of an iteration are independent (disjoint rows of the state), so
        # torch's threads each take whole chunks with one intra-op thread
        workers = torch.get_num_threads() if self._method(model, dev) == "threads" else 1
        act = torch.arange(n, device=dev)
        # line 3: while the label has not changed (the active set) and max_iter is not reached
        for it in range(self.max_iter):
            if act.numel() == 0:
                break
            groups = self._chunks(act, workers)

            def one(idx: Tensor, it: int = it) -> Tensor:
                return self._iterate(st, idx, ex, it=it)
            done = (in_threads(one, groups, workers) if workers > 1 and len(groups) > 1
                    else [one(idx) for idx in groups])
            act = act[~torch.cat(done)]
        fooled = st.fooled.nonzero()[:, 0]
        if self._projects and self.overshoot > 0 and fooled.numel():
            self._settle(st, ex, fooled)
        if memory is not None and target is None:
            memory.norm.scatter_(1, faces, st.wnorm.to(memory.norm.dtype))
            memory.at.scatter_(1, faces, st.wnorm_at + memory.clock[:, None])
            memory.clock += st.iters
        # line 12: the overshoot multiplies the total perturbation
        x_adv = x + (1.0 + self.overshoot) * st.r_tot
        if self.clip:
            x_adv = x_adv.clamp(0.0, 1.0)
        return DeepFoolRun(r_tot=st.r_tot, x_adv=x_adv, fooled=st.fooled, failed=st.failed,
                           face=st.face, iterations=st.iters, adv_logits=st.adv_logits)

    def _settle(self, st: _State, ex: _Exec, rows: Tensor) -> None:
        """``box="project"`` only: take back the part of the overshoot that the fooled samples
        ``rows`` did not need to stay fooled.

        A box-constrained step lands on the linearised face and the overshoot then carries the
        point ≈ 10⁻³ of its norm beyond the boundary, while the clamp's short steps creep up to it
        (docs/deepfool.md). Along ``clip(x + t·(1+η)·r_tot)``, ``t ∈ [1/(1+η), 1]`` (every
        pixel moves back towards ``x`` as ``t`` falls), the margin ``g(t)`` (the clean class's
        logit minus the best other's; targeted: the best non-target's minus the target's) is
        ≤ 0 at ``t = 1``. A point is kept only where it fools by more than ``s`` =
        :data:`_SETTLE_MARGIN` × the largest |logit| (float noise between batch sizes would
        otherwise decide whether it is adversarial), and the guesses aim at ``g = −2s``: first
        the root of ``g(1) + (1 − t)·slope = −2s``, with the slope ``w'_l·(1+η)·r_tot`` of the
        last linearisation's face; then, where that point is not fooled by more than ``s``, the
        secant root between it and ``t = 1``. Each is tried a tenth of the way back towards
        ``t = 1``, on the checking model (one forward), and the first one that qualifies is kept
        with its logits, so ``adv_logits`` stay the logits at exactly ``x_adv``; where neither
        does, or ``g(1) ≥ −2s`` already, ``t = 1`` stays.
        """
        floor = 1.0 / (1.0 + self.overshoot)
        for idx in rows.split(self.chunk_size or max(rows.numel(), 1)):
            r, slope, z_best = st.r_tot[idx], st.slope[idx], st.adv_logits[idx].clone()
            g_hi = _margin(st, idx, z_best).to(r.dtype)  # ≤ 0: fooled at t = 1
            safe = (_SETTLE_MARGIN * z_best.abs().amax(dim=1).clamp_min(1.0)).to(r.dtype)
            aim = -2.0 * safe  # the margin the guesses aim at
            best = torch.ones_like(slope)
            root = torch.where(slope > _TINY, 1.0 + (g_hi - aim) / slope.clamp_min(_TINY),
                               torch.full_like(slope, floor))
            t = (root + 0.1 * (1.0 - root)).clamp(floor, 1.0)
            live = (g_hi < aim).nonzero()[:, 0]  # nearer the boundary: nothing to take back
            for trial in range(2):
                if live.numel() == 0:
                    break
                z = self._check_at(ex, idx[live], st.x[idx[live]], _rowwise(t[live], r) * r[live])
                g_lo = _margin(st, idx[live], z).to(r.dtype)
                hit = g_lo < -safe[live]  # a margin below −s: fooled, beyond float noise
                best[live[hit]], z_best[live[hit]] = t[live[hit]], z[hit].to(z_best.dtype)
                g_lo, live = g_lo[~hit], live[~hit]
                if trial == 1:
                    break
                # the secant root of g = aim between (t, g_lo ≥ -safe > aim) and (1, g_hi < aim)
                lo = t[live]
                gap = (g_lo - g_hi[live]).clamp_min(torch.finfo(r.dtype).tiny)
                root = lo + (g_lo - aim[live]).clamp_min(0) * (1.0 - lo) / gap
                t[live] = (root + 0.1 * (1.0 - root)).clamp(max=1.0)
            st.r_tot[idx] = _rowwise(best, r) * r
            st.adv_logits[idx] = z_best

    def _check_at(self, ex: _Exec, idx: Tensor, x: Tensor, r: Tensor) -> Tensor:
        """Logits (:func:`as_logits`) of the checking model at the overshot point
        ``x + (1+η)·r`` (clamped when ``clip``), computed exactly as :meth:`run` computes
        ``x_adv``; one forward counted."""
        xc = x + (1.0 + self.overshoot) * r
        if self.clip:
            xc = xc.clamp(0.0, 1.0)
        with torch.no_grad():
            z = as_logits(ex.check(xc))
        ex.counted(idx, 1, 0)
        return z

    def _chunks(self, act: Tensor, workers: int) -> list[Tensor]:
        """The active set in equal chunks of at most ``chunk_size`` (400 → 4 × 100), their count
        a multiple of ``workers`` when there are enough samples."""
        parts = -(-act.numel() // (self.chunk_size or max(act.numel(), 1)))
        if workers > 1:
            parts = min(-(-parts // workers) * workers, act.numel())
        size = -(-act.numel() // parts)
        return [act[s:s + size] for s in range(0, act.numel(), size)]

    def _iterate(self, st: _State, idx: Tensor, ex: _Exec, *, it: int) -> Tensor:
        """Iteration ``it`` (0-based) of Algorithm 2's loop body on the samples ``idx`` (updates
        ``st`` in place); returns which of them are finished (fooled, or every face normal
        vanished)."""
        # the first iteration differentiates every face, unless a FaceMemory knows them all
        first = it == 0 and not bool(torch.isfinite(st.wnorm[idx]).all())
        eta = self.overshoot
        xa, ra = st.x[idx], st.r_tot[idx]
        xo = xa + (1.0 + eta) * ra  # the overshot point (checked by the previous iteration)
        if self.clip:
            xo = xo.clamp(0.0, 1.0)
        xl = xo if self.linearize_with_overshoot else xa + ra
        if self.clip:
            xl = xl.clamp(0.0, 1.0)
        # box="project": after _CLAMPED_STEPS clamped steps, the step has the room that keeps
        # x + (1+η)(r_tot + r) in [0, 1]
        project = self._projects and it >= _CLAMPED_STEPS
        box = (-xo / (1.0 + eta), (1.0 - xo) / (1.0 + eta)) if project else None
        # lines 4-10: face values f'_k and normals w'_k at x_i, the nearest face and the step
        near, sel = self._faces(st, idx, ex, xl, box, first=first)
        ra = ra + near.step
        if self.clip and not project:
            ra = (xa + ra).clamp(0.0, 1.0) - xa  # the plain clamp
        st.r_tot[idx] = ra
        if self._projects:  # for the settle step (run's end)
            st.slope[idx] = (1.0 + eta) * (near.normal * ra.flatten(1)).sum(dim=1).to(
                st.slope.dtype)
        st.iters[idx] += 1
        lf = sel.gather(1, near.l[:, None])[:, 0]  # the chosen face, among the Kc − 1
        st.face[idx] = st.cand[idx].gather(1, (lf + 1)[:, None])[:, 0]
        # line 3 again: the stopping check, at the overshot point
        zc = self._check_at(ex, idx, xa, ra)
        st.adv_logits[idx] = zc.to(st.adv_logits.dtype)
        hit = _fooled(st, idx, zc)
        if st.target is not None:
            # next face: target vs its strongest competitor at the checked point
            st.cand[idx, 0] = zc.scatter(1, st.cand[idx, 1:2], float("-inf")).argmax(dim=1)
        st.fooled[idx] = hit
        st.failed[idx] = near.bad & ~hit
        return hit | near.bad

    def _faces(self, st: _State, idx: Tensor, ex: _Exec, xl: Tensor,
               box: tuple[Tensor, Tensor] | None, *, first: bool) -> tuple[_Nearest, Tensor]:
        """Lines 4-10 for the samples ``idx`` linearised at ``xl``: the nearest face and the step
        to it, and the faces differentiated (``sel`` (n, a), indices into the Kc − 1 faces, the
        chosen one is ``sel[l]``).

        With ``faces="nearest"`` after the first iteration, only the ``_NEAREST`` faces nearest
        under the estimate ``|f'_k| / ‖w'_k‖`` (exact face values, normal norms last computed)
        are differentiated. The choice is accepted when every face left out stays farther than
        the chosen one even if its normal had grown, in every iteration since its norm was
        computed, ``_MARGIN`` times more than the largest growth per iteration seen on the
        differentiated faces; otherwise the sample's other faces are differentiated too (one
        more forward) and the step is chosen among all of them.
        """
        ca = st.cand[idx]
        m = ca.shape[1] - 1
        xg, diffs = _forward_faces(ex.forward, xl, ca)
        fp = diffs.detach()
        selective = not first and self.faces == "nearest" and m > _NEAREST
        if selective:
            old = st.wnorm[idx]
            est = fp.abs() / old.clamp_min(_TINY)
            sel = est.topk(_NEAREST, dim=1, largest=False, sorted=True).indices
        else:
            sel = torch.arange(m, device=xl.device).expand(xl.shape[0], m)
        wp = _backward_faces(xg, diffs, sel)
        ex.counted(idx, 1, sel.shape[1])
        near = self._nearest(fp.gather(1, sel), wp, box)
        if selective:
            # growth per iteration on the differentiated faces, compounded over the iterations
            # since each left-out face's norm was computed
            age = st.iters[idx, None] - st.wnorm_at[idx]
            change = (near.norm / old.gather(1, sel)).pow(1.0 / age.gather(1, sel))
            per_it = torch.maximum(change, 1.0 / change.clamp_min(_TINY)).amax(dim=1)
            rest = _complement(sel, m)
            bound = (change.amax(dim=1).clamp_min(1.0)[:, None] * _MARGIN).pow(age.gather(1, rest))
            reach = fp.gather(1, rest).abs() / (old.gather(1, rest) * bound)
            # and never when the normals change fast (an estimate from old norms means little)
            doubt = (reach.amin(dim=1) <= near.chosen_dist()) | (per_it > _STEADY)
            redo = (~near.bad & doubt).nonzero()[:, 0]
            if redo.numel():
                near, sel = self._all_faces(st, idx, ex, xl, box, redo, near, sel, wp, fp)
        st.wnorm[idx[:, None], sel] = near.norm.to(st.wnorm.dtype)
        st.wnorm_at[idx[:, None], sel] = st.iters[idx, None].expand_as(sel)
        return near, sel

    def _all_faces(self, st: _State, idx: Tensor, ex: _Exec, xl: Tensor,
                   box: tuple[Tensor, Tensor] | None, redo: Tensor, near: _Nearest, sel: Tensor,
                   wp: Tensor, fp: Tensor) -> tuple[_Nearest, Tensor]:
        """The fallback of :meth:`_faces`: differentiate the faces left out for the samples
        ``redo`` (rows of ``idx``) and choose among every face."""
        rest = _complement(sel[redo], fp.shape[1])
        xg, diffs = _forward_faces(ex.forward, xl[redo], st.cand[idx[redo]])
        wp_r = torch.cat([wp[redo], _backward_faces(xg, diffs, rest)], dim=1)
        ex.counted(idx[redo], 1, rest.shape[1])
        sel_r = torch.cat([sel[redo], rest], dim=1)
        box_r = None if box is None else (box[0][redo], box[1][redo])
        near_r = self._nearest(fp[redo].gather(1, sel_r), wp_r, box_r)
        # rows of the accepted samples keep their faces, padded with what they last knew
        wide = torch.cat([sel, _complement(sel, fp.shape[1])], dim=1)
        old = st.wnorm[idx].gather(1, wide)
        norm = torch.cat([near.norm.to(old.dtype), old[:, sel.shape[1]:]], dim=1)
        dist = torch.cat([near.dist, torch.full_like(old[:, sel.shape[1]:], math.inf)], dim=1)
        norm[redo], dist[redo] = near_r.norm.to(norm.dtype), near_r.dist.to(dist.dtype)
        wide[redo] = sel_r
        l, step, bad = near.l.clone(), near.step.clone(), near.bad.clone()
        normal = near.normal.clone()
        l[redo], step[redo], bad[redo] = near_r.l, near_r.step, near_r.bad
        normal[redo] = near_r.normal
        return _Nearest(dist=dist, norm=norm, l=l, step=step, bad=bad, normal=normal), wide

    def _nearest(self, fp: Tensor, wp: Tensor, box: tuple[Tensor, Tensor] | None) -> _Nearest:
        """Lines 7-10: the nearest of the ``a`` linearised faces ``f'_k + w'_k·r = 0`` and the
        step to it. ``fp``: (n, a) face values; ``wp``: (n, a, C, H, W) normals; ``box``: the
        bounds ``(lo, hi)`` (n, C, H, W) of the step, or ``None`` (unconstrained).

        Unconstrained: ``d_k = |f'_k| / ‖w'_k‖_q``, ``l = argmin d_k``, step ``(d_l + δ)·u(w'_l)``
        with ``u`` the unit-ℓp direction of Hölder's equality. In a box the step to face ``k`` is
        ``clip(t·u(w'_k), lo, hi)`` with the smallest ``t`` that reaches the face (the
        minimal-ℓp point of the face inside the box, see :func:`_box_solve`), ``d_k`` its ℓp
        norm (∞ when the face cannot be reached inside the box).
        """
        n, a = fp.shape
        flat = wp.reshape(n, a, -1)
        q = self.q
        norms = _lp(flat, q)
        free = fp.abs() / norms.clamp_min(_TINY)
        ar = torch.arange(n, device=fp.device)
        if box is None:
            l = free.argmin(dim=1)
            nl = norms[ar, l]
            bad = nl < _TINY
            t = (free[ar, l] + self.stabilizer).masked_fill(bad, 0.0)
            step = t[:, None] * _direction(flat[ar, l], nl, q)
            return _Nearest(dist=free, norm=norms, l=l, step=step.view_as(wp[:, 0]), bad=bad,
                            normal=flat[ar, l])
        u = _direction(flat, norms, q)  # (n, a, D): ‖u‖_p = 1, w'·u = ‖w'‖_q
        lo, hi = box[0].reshape(n, 1, -1), box[1].reshape(n, 1, -1)
        t, reach = _box_solve(flat, u, fp.abs(), lo, hi)
        dist = _lp(torch.minimum(torch.maximum(t[..., None] * u, lo), hi), self.p)
        dist = dist.masked_fill(~reach, math.inf)
        # no face reachable inside the box: the nearest unconstrained face (a clamped step)
        l = torch.where(reach.any(dim=1), dist.argmin(dim=1), free.argmin(dim=1))
        nl = norms[ar, l]
        bad = nl < _TINY
        ul, wl = u[ar, l][:, None], flat[ar, l][:, None]
        # the step to the chosen face with the stabilizer: w'·r = |f'| + δ·‖w'‖_q, which is
        # (d + δ)·u when no pixel meets a bound
        tl, reach_l = _box_solve(wl, ul, (fp.abs()[ar, l] + self.stabilizer * nl)[:, None], lo, hi)
        tl = torch.where(reach_l, tl, (free[ar, l] + self.stabilizer)[:, None])
        tl = tl.masked_fill(bad[:, None], 0.0)
        step = torch.minimum(torch.maximum(tl[..., None] * ul, lo), hi)[:, 0].view_as(wp[:, 0])
        effective = torch.where(torch.isfinite(dist) & (dist > 0),
                                fp.abs() / dist.clamp_min(_TINY), norms)
        return _Nearest(dist=dist, norm=effective, l=l, step=step, bad=bad, normal=wl[:, 0])


# ----------------------------------------------------------------------------------------------
# face gradients: f'_k = z[c_k] − z[c_0], w'_k = ∇ f'_k for k = 1..Kc−1, one forward shared
# ----------------------------------------------------------------------------------------------

def _forward_faces(forward: Callable[[Tensor], Tensor], xl: Tensor, cand: Tensor
                   ) -> tuple[Tensor, Tensor]:
    """One forward pass at ``xl`` (n, C, H, W) with gradients: ``(x with requires_grad, f' (n, m))``
    for the candidate classes ``cand`` (n, Kc), ``m = Kc − 1``."""
    xg = xl.detach().requires_grad_(True)
    zc = as_logits(forward(xg)).gather(1, cand)
    return xg, zc[:, 1:] - zc[:, :1]


def _backward_faces(xg: Tensor, diffs: Tensor, sel: Tensor) -> Tensor:
    """Normals ``w'`` (n, a, C, H, W) of the faces ``sel`` (n, a) of ``diffs`` (n, m), one
    backward pass per face through the graph of :func:`_forward_faces` (a sample's gradient
    depends only on its own row: the model is in eval mode). A NaN/Inf normal raises
    :class:`~advsmooth._utils.NonFiniteModelOutput` (no step is taken from it)."""
    d = diffs.gather(1, sel)
    a = d.shape[1]
    return torch.stack([
        check_finite_gradient(torch.autograd.grad(d[:, j].sum(), xg, retain_graph=j < a - 1)[0])
        for j in range(a)], dim=1)


def _complement(sel: Tensor, m: int) -> Tensor:
    """Face indices (n, m − a) not in ``sel`` (n, a), in increasing order."""
    mask = torch.ones(sel.shape[0], m, dtype=torch.bool, device=sel.device)
    mask.scatter_(1, sel, False)
    return torch.arange(m, device=sel.device).expand_as(mask)[mask].view(sel.shape[0], -1)


def _rowwise(t: Tensor, like: Tensor) -> Tensor:
    """``t`` (n,) shaped to broadcast over the rows of ``like`` (n, ...)."""
    return t.view(-1, *([1] * (like.ndim - 1)))


def _margin(st: _State, idx: Tensor, z: Tensor) -> Tensor:
    """(n,) how far the logits ``z`` of the samples ``idx`` are from fooling: the clean class's
    logit minus the best other's (targeted: the best non-target's minus the target's); < 0 where
    fooled (up to ties, which :func:`_fooled` decides as the stopping check does)."""
    keep = st.k0[idx] if st.target is None else st.cand[idx, 1]
    mine = z.gather(1, keep[:, None])[:, 0]
    other = z.scatter(1, keep[:, None], float("-inf")).amax(dim=1)
    return mine - other if st.target is None else other - mine


def _fooled(st: _State, idx: Tensor, z: Tensor) -> Tensor:
    """(n,) the stopping criterion of :meth:`DeepFool._iterate` on the logits ``z``."""
    pred = z.argmax(dim=1)
    return pred != st.k0[idx] if st.target is None else pred == st.cand[idx, 1]
