"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016): minimal perturbations by iterated linearisation.

Multiclass DeepFool for any ``p`` in ``{2, ∞}`` or real ``p > 1`` (ALGORITHMS.md §3.2), the
binary variant for single-score models (§3.1, handled as the two-class logits ``[0, s]``), and a
targeted mode. Fully batched: samples that are fooled leave the active batch, so every iteration
costs only what the still-active samples need.

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

from .._utils import check_choice, check_int_at_least, check_nonnegative
from .base import (
    Attack,
    AttackContext,
    AttackOutput,
    LayoutHint,
    fold_batchnorm,
    in_threads,
    plain_torch_modules,
)

__all__ = ["DeepFool", "JACOBIAN_METHODS"]

#: how the candidate-face gradients are computed (see docs/deepfool.md for measurements)
JACOBIAN_METHODS = ("auto", "loop", "threads", "loop_logits", "batched", "vmap", "replicate")

_TINY = 1e-12
#: relative slack on the adaptive-face acceptance test (see DeepFool._iterate)
_ADAPTIVE_TOL = 0.1

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

    ``r_tot``: un-overshot accumulated perturbation; ``x_adv``: ``x + (1+η)·r_tot`` (clamped to
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
        stabilizer: δ added to every step's distance (``(d + δ)``; LTS4's 1e-4) so that steps
            never vanish.
        clip: keep every iterate in ``[0, 1]`` (off by default, like the paper).
        linearize_with_overshoot: linearise (and check) at ``x + (1+η)·r_tot``, as the
            authors' Python code (LTS4) and Foolbox do — the default, because it ends ≈ 1 %
            closer to the boundary at the same success rate (docs/deepfool.md, measured on
            digits, MNIST and CIFAR-10); ``False``: linearise at ``x + r_tot`` (the paper's
            pseudo-code and the MATLAB code; ALGORITHMS.md §3.2's default).
        jacobian: how the Kc−1 face gradients are computed from one forward pass: ``"loop"``
            (Kc−1 backward passes of the logit differences through a retained graph),
            ``"loop_logits"`` (Kc backward passes of the logits), ``"batched"`` (one
            ``autograd.grad(..., is_grads_batched=True)``), ``"vmap"`` (``torch.func``
            vmap/jacrev), ``"replicate"`` (the batch repeated Kc−1 times, one backward; costs Kc−1
            forward evaluations), ``"threads"`` (``"loop"``, with the chunks of each iteration
            shared among ``torch.get_num_threads()`` Python threads that run with one intra-op
            thread each — the same results up to float rounding; CPU only), or ``"auto"``
            (default: ``"threads"`` on a CPU with more than one torch thread when the model is
            built only from hook-free ``torch.nn`` / ``torch.fx`` / ``advsmooth.models``
            modules, else ``"loop"``; see ``benchmarks/deepfool_jacobian.py`` and
            docs/deepfool.md).
        adaptive_faces: an opt-in approximation for speed. After the first iteration,
            differentiate only this many faces per sample: the nearest ones under the current
            face values ``|f'_k|`` (exact, from the forward pass) and the normal norms
            ``‖w'_k‖`` last computed for them; when the choice is not clear by a margin (a face
            left out could be nearer if its normal grew like the differentiated ones did, +10 %),
            the remaining faces are differentiated too. The step always uses the exact gradient
            of the chosen face. On standard models it returned the same perturbations as the
            exact algorithm with ~40 % fewer gradients; on an adversarially trained model (many
            iterations, fast-changing normals) it changed results (see docs/deepfool.md).
            ``None`` (default): every candidate face at every iteration, as in the paper.
        chunk_size: active samples per forward/backward pass (default 128: bounds memory, and
            moderate batches are faster per image on CPU — measured in docs/deepfool.md);
            ``None`` = the whole active set at once. Results do not depend on it beyond float
            rounding.
        channels_last: run the model on channels-last copies of the (4-D, multi-channel) inputs
            (see :class:`~advsmooth.attacks.base.LayoutHint`). ``None`` (default): on CPU, try it
            and fall back to the input's layout for the rest of the run if the model rejects it
            (e.g. ``.view`` on a non-contiguous activation); ``True``: require it; ``False``:
            never.
        fold_batchnorm: attack a copy of the model with eval-mode Conv→BatchNorm pairs folded
            into single convolutions (:func:`~advsmooth.attacks.base.fold_batchnorm`; the same
            function up to float rounding; the 9 face gradients of ResNet-20 took 0.68× the
            time in an ad-hoc measurement here). Applies only to eval-mode models without hooks,
            built from ``torch.nn``/``advsmooth.models`` modules that ``torch.fx`` traces (a
            wrapper with Python-side state, e.g. an evaluation counter, is never copied), and
            only when the copy's logits match on a probe batch; the success of the result is
            always verified on the original model. ``False``: attack the model as given.
        seed: unused (DeepFool is deterministic); kept for the common signature.

    Targeted mode (``attack(model, x, y, target=t)``): each iteration uses only the face between
    the target and its strongest competitor (the clean label at first, then the top non-target
    class at the last checked point); success means ``pred == t``.

    Result extras: ``r_tot`` (un-overshot perturbation), ``label_orig`` (clean prediction),
    ``face`` (class of the last face), ``failed`` (all face normals vanished).
    Costs per iteration and active sample: 2 forward evaluations (the linearisation point with
    gradients and the overshot check point) and Kc−1 gradient evaluations in the first iteration
    (one more for ``"loop_logits"``; 1 for binary models and targeted attacks), then
    ``min(adaptive_faces, Kc−1)``.
    """

    supports_targeted = True

    def __init__(self, *, norm: float | int | str = 2, overshoot: float = 0.02, max_iter: int = 50,
                 candidates: int = 10, stabilizer: float = 1e-4, clip: bool = False,
                 linearize_with_overshoot: bool = True, jacobian: str = "auto",
                 adaptive_faces: int | None = None, chunk_size: int | None = 128,
                 channels_last: bool | None = None, fold_batchnorm: bool = True,
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.p = _parse_norm(norm)
        self.overshoot = check_nonnegative("overshoot", overshoot)
        self.max_iter = check_int_at_least("max_iter", max_iter, 1)
        self.candidates = check_int_at_least("candidates", candidates, 2)
        self.stabilizer = check_nonnegative("stabilizer", stabilizer)
        if not isinstance(clip, bool):
            raise ValueError(f"clip must be a bool, got {clip!r}")
        if not isinstance(linearize_with_overshoot, bool):
            raise ValueError(f"linearize_with_overshoot must be a bool, got "
                             f"{linearize_with_overshoot!r}")
        self.clip = clip
        self.linearize_with_overshoot = linearize_with_overshoot
        self.jacobian = check_choice("jacobian", jacobian, JACOBIAN_METHODS)
        self.adaptive_faces = (None if adaptive_faces is None
                               else check_int_at_least("adaptive_faces", adaptive_faces, 1))
        self.chunk_size = (None if chunk_size is None
                           else check_int_at_least("chunk_size", chunk_size, 1))
        self.channels_last = LayoutHint(channels_last).mode  # validates
        if not isinstance(fold_batchnorm, bool):
            raise ValueError(f"fold_batchnorm must be a bool, got {fold_batchnorm!r}")
        self.fold_batchnorm = fold_batchnorm
        norm_repr: float | str = "inf" if math.isinf(self.p) else (
            int(self.p) if self.p.is_integer() else self.p)
        self._set_params(norm=norm_repr, overshoot=self.overshoot, max_iter=self.max_iter,
                         candidates=self.candidates, stabilizer=self.stabilizer, clip=clip,
                         linearize_with_overshoot=linearize_with_overshoot, jacobian=jacobian,
                         adaptive_faces=self.adaptive_faces, chunk_size=self.chunk_size,
                         channels_last=channels_last, fold_batchnorm=fold_batchnorm)

    # ------------------------------------------------------------------------------------------
    @property
    def q(self) -> float:
        """Dual exponent ``q = p/(p−1)`` (1 for p = ∞)."""
        return 1.0 if math.isinf(self.p) else self.p / (self.p - 1.0)

    def _clean_forward(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Any]:
        # the clean prediction in the attack's own memory layout and chunks (the same model;
        # on CPU channels-last ResNet-20 took 0.78× the CPU time of one contiguous call)
        hint = LayoutHint(self.channels_last)
        step = self.chunk_size or max(x.shape[0], 1)
        with torch.no_grad():
            z = [hint(model, x[i:i + step]) for i in range(0, x.shape[0], step)]
        return (z[0] if len(z) == 1 else torch.cat(z)), None

    def gradients_per_iteration(self, num_classes: int, targeted: bool = False,
                                first: bool = True) -> int:
        """Gradient evaluations per active sample in the first (``first=True``) or a later
        iteration, for a ``num_classes`` model."""
        if targeted or num_classes <= 2:
            return 1
        m = min(self.candidates, num_classes) - 1
        if not first and self.adaptive_faces is not None:
            m = min(m, self.adaptive_faces)
        return m + 1 if self._method() == "loop_logits" else m

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
        model = fold_batchnorm(ctx.model, ctx.x[:4]) if self.fold_batchnorm else ctx.model
        # the stopping checks run on the caller's model itself (a no-grad forward, where BN
        # folding gains little), so the last check of each sample is the verification of its
        # x_adv and the base class need not run one more forward pass
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
    def run(self, model: nn.Module, x: Tensor, z0: Tensor, *, target: Tensor | None = None,
            count_forward: Counter | None = None, count_grad: Counter | None = None,
            check_model: nn.Module | None = None) -> DeepFoolRun:
        """DeepFool on every sample of ``x`` (no input checks, no model hygiene: the caller's job).

        ``z0`` are the logits at ``x`` (``N×K``, see :func:`as_logits`); the clean label is
        ``argmax z0``. ``count_forward(idx, k)`` / ``count_grad(idx, k)`` receive indices into
        ``x``. ``check_model`` evaluates the stopping checks (default ``model``; e.g. the
        original of a BN-folded ``model``). Used by :class:`DeepFool` and by SmoothFool's inner
        loop.
        """
        n = x.shape[0]
        dev = x.device
        z0 = as_logits(z0.detach())
        num_classes = z0.shape[1]
        k0 = z0.argmax(dim=1)
        if target is None:
            kc = min(self.candidates, num_classes)
            # stable descending sort: ties keep the lower index first, like argmax
            cand = torch.sort(z0, dim=1, descending=True, stable=True).indices[:, :kc]
        else:
            cand = torch.stack([k0, target.to(dev).long()], dim=1)
        eta = self.overshoot
        r_tot = torch.zeros_like(x)
        iters = torch.zeros(n, dtype=torch.long, device=dev)
        face = cand[:, 1].clone()
        fooled = torch.zeros(n, dtype=torch.bool, device=dev)
        failed = torch.zeros(n, dtype=torch.bool, device=dev)
        # last computed ‖w'_j‖_q per sample and face (adaptive face selection)
        wnorm = torch.full((n, cand.shape[1] - 1), math.inf, dtype=x.dtype, device=dev)
        act = torch.arange(n, device=dev)
        method = self._method(model, x.device)
        chunk = self.chunk_size or max(n, 1)
        hint = LayoutHint(self.channels_last)
        check_hint = hint if check_model is None else LayoutHint(self.channels_last)
        checker = model if check_model is None else check_model
        adv_logits = torch.zeros_like(z0)

        def layout(xs: Tensor) -> Tensor:
            return hint(model, xs)

        def check(xs: Tensor) -> Tensor:
            return check_hint(checker, xs)
        # "threads": the chunks of an iteration are independent (disjoint rows of the state), so
        # torch's threads each take whole chunks with one intra-op thread (balanced: the chunk
        # count is a multiple of the thread count); the face passes inside run as "loop"
        workers = torch.get_num_threads() if method == "threads" else 1
        inner = "loop" if method == "threads" else method
        for it in range(self.max_iter):
            if act.numel() == 0:
                break
            # equal chunks of at most chunk_size (400 active -> 4 × 100, not 3 × 128 + 16)
            parts = -(-act.numel() // chunk)
            if workers > 1:
                parts = min(-(-parts // workers) * workers, act.numel())
            size = -(-act.numel() // parts)
            groups = [act[s:s + size] for s in range(0, act.numel(), size)]

            def one(idx: Tensor, first: bool = it == 0) -> Tensor:
                return self._iterate(model, x, idx, r_tot, cand, k0, wnorm, iters, face, fooled,
                                     failed, adv_logits, target, inner, layout, check,
                                     first=first, count_forward=count_forward,
                                     count_grad=count_grad)
            done = (in_threads(one, groups, workers) if workers > 1 and len(groups) > 1
                    else [one(idx) for idx in groups])
            act = act[~torch.cat(done)]
        x_adv = x + (1.0 + eta) * r_tot
        if self.clip:
            x_adv = x_adv.clamp(0.0, 1.0)
        return DeepFoolRun(r_tot=r_tot, x_adv=x_adv, fooled=fooled,
                           failed=failed, face=face, iterations=iters, adv_logits=adv_logits)

    def _iterate(self, model: nn.Module, x: Tensor, idx: Tensor, r_tot: Tensor, cand: Tensor,
                 k0: Tensor, wnorm: Tensor, iters: Tensor, face: Tensor, fooled: Tensor,
                 failed: Tensor, adv_logits: Tensor, target: Tensor | None,
                 method: str, layout: Callable[[Tensor], Tensor],
                 check: Callable[[Tensor], Tensor], *, first: bool,
                 count_forward: Counter | None, count_grad: Counter | None) -> Tensor:
        """One DeepFool iteration on the samples ``idx`` (updates the state tensors in place);
        returns which of them are finished (fooled or failed)."""
        eta = self.overshoot
        xa, ra, ca = x[idx], r_tot[idx], cand[idx]
        xl = xa + ra * (1.0 + eta) if self.linearize_with_overshoot else xa + ra
        if self.clip:
            xl = xl.clamp(0.0, 1.0)
        m = ca.shape[1] - 1
        adaptive = not first and self.adaptive_faces is not None and self.adaptive_faces < m
        select = None
        if adaptive:
            k = self.adaptive_faces
            wn_old = wnorm[idx]

            def select(fp_all: Tensor) -> Tensor:
                est = fp_all.abs() / wn_old.clamp_min(_TINY)
                return est.topk(k, dim=1, largest=False, sorted=True).indices

        fp_all, wp, sel, ngrad, nfwd = _face_gradients(model, xl, ca, method, select, layout)
        if count_forward is not None:
            count_forward(idx, nfwd)
        if count_grad is not None:
            count_grad(idx, ngrad)
        fp = fp_all.gather(1, sel)
        step, l, bad, norms = self._step(fp, wp)
        wnorm[idx[:, None], sel] = norms.to(wnorm.dtype)
        lf = sel.gather(1, l[:, None])[:, 0]  # chosen face, as an index into the m faces
        if adaptive:
            # Verify the choice: the faces not differentiated keep their last normal norms. Accept
            # only when none of them could be nearer unless its normal grew by more than the
            # largest growth seen on the differentiated faces (+ a tolerance); otherwise
            # differentiate the remaining faces too, so the step is the exact DeepFool step.
            growth = (norms / wn_old.gather(1, sel).clamp_min(_TINY)).amax(dim=1).clamp_min(1.0)
            rest = _complement(sel, m)
            est_rest = (fp_all.gather(1, rest).abs()
                        / wn_old.gather(1, rest).clamp_min(_TINY)).amin(dim=1)
            d_best = fp.abs().gather(1, l[:, None])[:, 0] / norms.gather(1, l[:, None])[:, 0] \
                .clamp_min(_TINY)
            redo = (~bad & (d_best * growth * (1.0 + _ADAPTIVE_TOL) > est_rest)).nonzero()[:, 0]
            if redo.numel():
                fp_r, wp_r, _, ngrad_r, nfwd_r = _face_gradients(
                    model, xl[redo], ca[redo], method, lambda _fp, rr=rest[redo]: rr, layout)
                if count_forward is not None:
                    count_forward(idx[redo], nfwd_r)
                if count_grad is not None:
                    count_grad(idx[redo], ngrad_r)
                sel_r = torch.cat([sel[redo], rest[redo]], dim=1)  # every face
                step_r, l_r, bad_r, norms_r = self._step(fp_all[redo].gather(1, sel_r),
                                                         torch.cat([wp[redo], wp_r], dim=1))
                wnorm[idx[redo][:, None], sel_r] = norms_r.to(wnorm.dtype)
                step, bad = step.clone(), bad.clone()
                step[redo], bad[redo] = step_r, bad_r
                lf[redo] = sel_r.gather(1, l_r[:, None])[:, 0]
        ra = ra + step
        if self.clip:
            ra = (xa + ra).clamp(0.0, 1.0) - xa
        r_tot[idx] = ra
        iters[idx] += 1
        face[idx] = ca.gather(1, (lf + 1)[:, None])[:, 0]
        # stopping check at the overshot point
        xc = xa + (1.0 + eta) * ra
        if self.clip:
            xc = xc.clamp(0.0, 1.0)
        with torch.no_grad():
            zc = as_logits(check(xc))
        if count_forward is not None:
            count_forward(idx, 1)
        pc = zc.argmax(dim=1)
        adv_logits[idx] = zc.to(adv_logits.dtype)
        if target is None:
            hit = pc != k0[idx]
        else:
            ta = cand[idx, 1]
            hit = pc == ta
            # next face: target vs its strongest competitor at the checked point
            comp = zc.scatter(1, ta[:, None], float("-inf")).argmax(dim=1)
            cand[idx, 0] = comp
        fooled[idx] = hit
        failed[idx] = bad & ~hit
        return hit | bad

    def _step(self, fp: Tensor, wp: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Step to the nearest linearised face. ``fp``: (n, m) ``f'``; ``wp``: (n, m, C, H, W).

        Returns ``(step, l, bad, norms)``: the step (n, C, H, W), the index of the chosen face
        among the m given, whether every normal vanished, and ``‖w'‖_q`` (n, m)."""
        n, m = fp.shape
        flat = wp.reshape(n, m, -1)
        q = self.q
        if q == 2.0:
            norms = flat.norm(dim=2)
        elif q == 1.0:
            norms = flat.abs().sum(dim=2)
        else:
            norms = torch.linalg.vector_norm(flat, ord=q, dim=2)
        dist = fp.abs() / norms.clamp_min(_TINY)
        l = dist.argmin(dim=1)
        ar = torch.arange(n, device=fp.device)
        wl = wp[ar, l]
        nl = norms[ar, l]
        bad = nl < _TINY
        scale = (dist[ar, l] + self.stabilizer).masked_fill(bad, 0.0)
        shape = (n,) + (1,) * (wl.ndim - 1)
        if q == 2.0:
            direction = wl / nl.clamp_min(_TINY).view(shape)
        elif q == 1.0:
            direction = wl.sign()
        else:
            direction = (wl.abs() / nl.clamp_min(_TINY).view(shape)).pow(q - 1.0) * wl.sign()
        return scale.view(shape) * direction, l, bad, norms


# ----------------------------------------------------------------------------------------------
# face gradients: f'_j = z[c_j] − z[c_0], w'_j = ∇ f'_j for j = 1..m (m = Kc − 1)
# ----------------------------------------------------------------------------------------------

def _face_gradients(model: nn.Module, xl: Tensor, cand: Tensor, method: str,
                    select: Callable[[Tensor], Tensor] | None = None,
                    forward: Callable[[Tensor], Tensor] | None = None
                    ) -> tuple[Tensor, Tensor, Tensor, int, int]:
    """Face values and normals at ``xl`` for the candidate classes ``cand`` (n, Kc).

    ``select(f' (n, m)) → (n, a)`` picks the faces to differentiate (all m when None);
    ``forward`` replaces ``model(x)`` for the loop strategies (memory layout). Returns
    ``(f' of every face (n, m), w' (n, a, C, H, W) of the selected faces, their indices (n, a),
    grad evals, forward evals)`` per sample.
    """
    n, m = cand.shape[0], cand.shape[1] - 1
    if method in ("vmap", "replicate"):
        # these strategies differentiate every face; a selection only subsets the result
        fp, wp = (_face_gradients_vmap if method == "vmap" else _face_gradients_replicate)(
            model, xl, cand)
        nfwd = 1 if method == "vmap" else m
        sel = _all_faces(n, m, xl.device) if select is None else select(fp)
        ar = torch.arange(n, device=xl.device)[:, None]
        return fp, wp[ar, sel], sel, m, nfwd
    xg = xl.detach().requires_grad_(True)
    z = as_logits(model(xg) if forward is None else forward(xg))
    zc = z.gather(1, cand)
    diffs = zc[:, 1:] - zc[:, :1]
    fp_all = diffs.detach()
    if select is None:
        sel = _all_faces(n, m, xl.device)
    else:
        sel = select(fp_all)
        diffs = diffs.gather(1, sel)
        zc = torch.cat([zc[:, :1], zc[:, 1:].gather(1, sel)], dim=1)
    a = sel.shape[1]
    if method == "loop_logits":
        gl = [torch.autograd.grad(zc[:, j].sum(), xg, retain_graph=j < a)[0] for j in range(a + 1)]
        wp = torch.stack([g - gl[0] for g in gl[1:]], dim=1)
        return fp_all, wp, sel, a + 1, 1
    if method == "batched" and a > 1:
        eye = torch.eye(a, dtype=diffs.dtype, device=diffs.device)
        go = eye[:, None, :].expand(a, n, a)
        (g,) = torch.autograd.grad(diffs, xg, grad_outputs=go, is_grads_batched=True)
        wp = g.transpose(0, 1)
    else:  # "loop" ("threads" runs whole chunks in threads, each with this loop)
        wp = torch.stack([torch.autograd.grad(diffs[:, j].sum(), xg, retain_graph=j < a - 1)[0]
                          for j in range(a)], dim=1)
    return fp_all, wp, sel, a, 1


def _complement(sel: Tensor, m: int) -> Tensor:
    """Face indices (n, m − a) not in ``sel`` (n, a), in increasing order."""
    mask = torch.ones(sel.shape[0], m, dtype=torch.bool, device=sel.device)
    mask.scatter_(1, sel, False)
    return torch.arange(m, device=sel.device).expand_as(mask)[mask].view(sel.shape[0], -1)


def _all_faces(n: int, m: int, device: torch.device) -> Tensor:
    return torch.arange(m, device=device).expand(n, m)


def _face_gradients_replicate(model: nn.Module, xl: Tensor, cand: Tensor
                              ) -> tuple[Tensor, Tensor]:
    n = xl.shape[0]
    m = cand.shape[1] - 1
    xr = xl.detach().unsqueeze(1).expand(n, m, *xl.shape[1:]).reshape(n * m, *xl.shape[1:])
    xr.requires_grad_(True)
    z = as_logits(model(xr)).view(n, m, -1)
    up = z.gather(2, cand[:, 1:, None])[..., 0]
    down = z.gather(2, cand[:, :1, None].expand(n, m, 1))[..., 0]
    diffs = up - down
    (g,) = torch.autograd.grad(diffs.sum(), xr)
    return diffs.detach(), g.view(n, m, *xl.shape[1:])


def _face_gradients_vmap(model: nn.Module, xl: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def f(xs: Tensor, cs: Tensor) -> tuple[Tensor, Tensor]:
        z = as_logits(functional_call(model, (params, buffers), (xs[None],)))[0]
        zc = z[cs]
        d = zc[1:] - zc[0]
        return d, d

    jac, fp = vmap(jacrev(f, argnums=0, has_aux=True))(xl.detach(), cand)
    return fp, jac
