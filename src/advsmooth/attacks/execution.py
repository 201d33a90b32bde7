"""The execution layer: how an attack runs, never what it computes (up to float rounding).

Attacks describe their algorithm; this module holds the speed tricks they share, configured by
one :class:`Execution` object that attacks accept as ``execution=``:

* **Python threads** (:func:`in_threads`): the samples of a batch are independent, so on a CPU a
  batch is split among Python threads that run with one intra-op thread each (faster than
  torch's intra-op parallelism for the small convolutions of the models here);
* **a fast copy of the model** (:func:`fold_batchnorm`): eval-mode Conv→BatchNorm pairs folded
  into one convolution, ``max_pool(relu(a))`` computed as ``relu(max_pool(a))`` (the same values
  and gradients, on a tensor a pooling window's size smaller) and, on a CPU, convolution tensors
  in channels-last layout;
* **channels-last inputs** (:class:`LayoutHint`);
* **chunking**: at most ``chunk`` samples per forward/backward pass;
* **graph reuse**: an attack whose first step differentiates the model at the clean input may
  keep the clean forward's graph for it (see :class:`~advsmooth.attacks.iterative.IterativeAttack`).

:func:`plain_torch_modules` decides when copying, folding or threading a model is safe: no user
Python code runs inside its forward or backward.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils import check_bool, check_finite_gradient, check_int_at_least
from ..models.zoo import Normalize

if TYPE_CHECKING:  # gradients imports this module
    from .base import AttackContext
    from .gradients import AttackObjective, GradientEstimate, GradientEstimator

__all__ = [
    "Execution",
    "LayoutHint",
    "MIN_IMAGES_PER_THREAD",
    "fold_batchnorm",
    "forward_in_chunks",
    "in_threads",
    "plain_torch_modules",
    "pool_before_relu",
]

#: fewest images per thread for which a batch is split among Python threads
MIN_IMAGES_PER_THREAD = 8

#: module packages whose modules run no user Python code (threads and copies are safe)
PLAIN_PACKAGES = ("torch.nn", "torch.fx", "advsmooth.models")


@dataclass(frozen=True)
class Execution:
    """How an attack runs: threads, the fast model copy, memory layout, chunking.

    None of these settings changes what an attack computes beyond float rounding (and, for the
    fast copy, which of several tied maxima of a max-pooling window receives the gradient).

    Args:
        threads: Python threads that share a call's batch, each with one intra-op thread
            (``1``: never). ``None`` (auto): torch's thread count on a CPU when the attack is
            deterministic and the model is built only from hook-free ``torch.nn`` / ``torch.fx``
            / ``advsmooth.models`` modules, at most one thread per :data:`MIN_IMAGES_PER_THREAD`
            images.
        fast_model: differentiate a fast copy of the model (:func:`fold_batchnorm`) when it
            applies; the clean prediction and the final verification use the model itself.
        channels_last: run the model on channels-last copies of 4-D multi-channel inputs
            (:class:`LayoutHint`): ``None`` auto (CPU, with fallback), ``True`` required,
            ``False`` never.
        chunk: samples per forward/backward pass (``None``: the attack's own default).
    """

    threads: int | None = None
    fast_model: bool = True
    channels_last: bool | None = None
    chunk: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None:
            check_int_at_least("threads", self.threads, 1)
        check_bool("fast_model", self.fast_model)
        LayoutHint(self.channels_last)  # validates
        if self.chunk is not None:
            check_int_at_least("chunk", self.chunk, 1)

    def workers(self, model: nn.Module, x: Tensor, *, auto: bool = True) -> int:
        """Python threads for a call on ``x`` (``N`` images): ``threads`` if given, else (when
        ``auto``, i.e. the attack is deterministic) torch's intra-op thread count on a CPU for a
        plain-module model; never more than one thread per :data:`MIN_IMAGES_PER_THREAD`
        images."""
        if self.threads is not None:
            want = self.threads
        elif (auto and x.device.type == "cpu" and torch.get_num_threads() > 1
              and plain_torch_modules(model, PLAIN_PACKAGES)):
            want = torch.get_num_threads()
        else:
            return 1
        return max(1, min(want, x.shape[0] // MIN_IMAGES_PER_THREAD))

    def gradient_model(self, model: nn.Module, probe: Tensor) -> nn.Module:
        """The model the gradient passes differentiate: the fast copy of ``model``
        (:func:`fold_batchnorm` checked on ``probe``) or, with ``fast_model=False`` or where
        the copy does not apply, ``model`` itself."""
        if not self.fast_model:
            return model
        return fold_batchnorm(model, probe, channels_last=True)

    def layout(self) -> LayoutHint:
        """A fresh layout hint for one attack call (it remembers a fallback)."""
        return LayoutHint(self.channels_last)

    def changed(self) -> dict[str, Any]:
        """The settings that differ from the defaults (for an attack's ``repr``)."""
        default = Execution()
        return {k: getattr(self, k) for k in ("threads", "fast_model", "channels_last", "chunk")
                if getattr(self, k) != getattr(default, k)}


class LayoutHint:
    """Runs a model on channels-last copies of 4-D, multi-channel CPU inputs.

    Convolutions in channels-last layout were ~20–30 % faster on this project's CPU benchmarks
    (ResNet-20, 2 threads); values agree with the plain layout up to float rounding. ``mode``:
    ``None`` (auto) tries it and falls back to the given layout for good if the model raises a
    ``RuntimeError`` (e.g. ``.view`` on a non-contiguous activation); ``True`` requires it;
    ``False`` never uses it. Not used on CUDA in auto mode. Share one hint per attack call so the
    fallback is remembered.
    """

    def __init__(self, mode: bool | None = None) -> None:
        if mode is not None and not isinstance(mode, bool):
            raise ValueError(f"channels_last must be True, False or None, got {mode!r}")
        self.mode = mode

    def __call__(self, fn: Any, x: Tensor) -> Any:
        use = x.ndim == 4 and x.shape[1] > 1 and (
            self.mode is True or (self.mode is None and x.device.type == "cpu"))
        if use:
            try:
                return fn(x.contiguous(memory_format=torch.channels_last))
            except RuntimeError:
                if self.mode is True:
                    raise
                self.mode = False
        return fn(x)


def forward_in_chunks(model: nn.Module, x: Tensor, chunk: int = 128) -> Tensor:
    """``model(x)`` without a graph, ``chunk`` samples per pass: ``(N, K)`` logits for ``x``
    ``(N, C, H, W)``. For query attacks that forward the same few hundred images thousands of
    times: a pass over at most ``chunk`` images keeps the activations in the CPU cache
    (``mnist-lenet-pgd``, 440 MNIST images, one thread: about half the time of one pass over
    all of them in the fast copy's channels-last layout). Values equal one pass's up to float
    rounding."""
    with torch.no_grad():
        if x.shape[0] <= chunk:
            return model(x)
        return torch.cat([model(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])


def plain_torch_modules(model: nn.Module, packages: tuple[str, ...] = ("torch.nn",
                        "advsmooth.models")) -> bool:
    """Whether every module of ``model`` comes from one of ``packages`` and has no hooks, i.e.
    no user Python code runs inside its forward or backward (safe to copy, fold or run in
    concurrent threads)."""
    for mod in model.modules():
        if (mod._forward_hooks or mod._forward_pre_hooks or mod._backward_hooks
                or getattr(mod, "_backward_pre_hooks", None)):
            return False
        if not type(mod).__module__.startswith(packages):
            return False
    return True


def in_threads(fn: Callable[[Any], Any], groups: Sequence[Any], workers: int) -> list[Any]:
    """``[fn(g) for g in groups]``, the groups dealt round-robin to ``workers`` Python threads
    that run with one intra-op thread each (the global thread count is restored after; the first
    error is re-raised in the caller)."""
    workers = min(workers, len(groups))
    out: list[Any] = [None] * len(groups)
    errors: list[BaseException] = []

    def work(w: int) -> None:
        try:
            with torch.enable_grad():
                for i in range(w, len(groups), workers):
                    out[i] = fn(groups[i])
        except BaseException as exc:  # noqa: BLE001 - re-raised by the calling thread
            errors.append(exc)

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        threads = [threading.Thread(target=work, args=(w,), daemon=True)
                   for w in range(1, workers)]
        for t in threads:
            t.start()
        work(0)
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(prev)
    if errors:
        raise errors[0]
    return out


#: folded copies of models, reused while the model's tensors are unchanged (see fold_batchnorm):
#: model -> {channels_last: (tensor signature, copy)}
_FOLDED: weakref.WeakKeyDictionary[nn.Module, dict[bool, tuple[tuple[Any, ...], nn.Module]]] = (
    weakref.WeakKeyDictionary())


def _tensor_signature(model: nn.Module) -> tuple[Any, ...]:
    """Identity + in-place version of every parameter and buffer (changes on any update)."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape))
                 for t in (*model.parameters(), *model.buffers()))


class _KeepNormalize(torch.fx.Tracer):
    """A tracer that keeps :class:`~advsmooth.models.Normalize` layers as modules."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, Normalize) or super().is_leaf_module(m, module_qualified_name)


_RELU_FUNCTIONS = (F.relu, torch.relu)
_MAX_POOL_FUNCTIONS = (F.max_pool1d, F.max_pool2d, F.max_pool3d,
                       torch.max_pool1d, torch.max_pool2d, torch.max_pool3d)


def _is_relu(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS and len(node.args) == 1
    if node.op == "call_method":
        return node.target == "relu" and len(node.args) == 1
    return node.op == "call_module" and type(gm.get_submodule(str(node.target))) is nn.ReLU


def _is_max_pool(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in _MAX_POOL_FUNCTIONS and not node.kwargs.get("return_indices", False)
    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))
        return (type(m) in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
                and not m.return_indices)
    return False


def pool_before_relu(gm: torch.fx.GraphModule) -> int:
    """Rewrite ``gm`` in place so that every ``max_pool(relu(a))`` is computed as
    ``relu(max_pool(a))``; returns the number of rewrites.

    The two are the same function, value for value (ReLU is non-decreasing, so it commutes with
    the maximum of a window), and have the same gradient: where the window's maximum is positive
    both send it to the same (first) maximal element, and where it is ≤ 0 both give zero. The
    ReLU then runs, forward and backward, on a tensor a window's size smaller (4× for 2×2
    pooling; on the digits LeNet ReLU's backward was 17 % of DeepFool's time). Applied only where
    the ReLU's input and output each feed nothing else.
    """
    count = 0
    for pool in list(gm.graph.nodes):
        if not _is_max_pool(gm, pool) or not pool.args:
            continue
        relu = pool.args[0]
        if not (isinstance(relu, torch.fx.Node) and _is_relu(gm, relu) and len(relu.users) == 1):
            continue
        a = relu.args[0]
        if not (isinstance(a, torch.fx.Node) and len(a.users) == 1):
            continue
        pool.replace_input_with(relu, a)
        with gm.graph.inserting_after(pool):
            out = gm.graph.call_function(F.relu, (pool,))
        pool.replace_all_uses_with(out, delete_user_cb=lambda user, out=out: user is not out)
        gm.graph.erase_node(relu)
        count += 1
    if count:
        gm.graph.lint()
        gm.recompile()
    return count


def fold_batchnorm(model: nn.Module, probe: Tensor | None = None, *,
                   channels_last: bool = False) -> nn.Module:
    """A copy of ``model`` with every eval-mode Conv→BatchNorm pair folded into one convolution
    and every ``max_pool(relu(a))`` computed as ``relu(max_pool(a))`` (``torch.fx``; see
    :func:`pool_before_relu`) and, with ``channels_last``, its tensors in channels-last layout;
    or ``model`` itself when that does not apply or fails.

    Folding is exact in real arithmetic (eval-mode BatchNorm is affine); in float32 it changes
    rounding only; moving the pooling before the ReLU changes nothing. ``channels_last``
    applies to models with 2-D convolutions whose tensors are on the CPU: a channels-last
    convolution weight makes the convolution's output channels-last even for one-channel inputs
    (whose layout cannot carry the hint), and CPU max-pooling and convolutions ran faster in that
    layout here (digits LeNet: 0.73× the time of a forward + backward pass); values agree up to
    rounding, and where a max-pooling window holds tied maxima the gradient may go to a
    different (equally valid) one of them.
    It applies to hook-free eval-mode models made of ``torch.nn`` and ``advsmooth.models``
    modules with a BatchNorm to fold or (with ``channels_last``) a convolution to convert;
    folding and the pooling rewrite also need ``torch.fx`` to trace the model (one it cannot
    trace only changes layout), and the pooling rewrite comes only with such a copy (alone it
    would not repay an iterative attack the clean forward's graph it can no longer reuse). With
    ``probe`` (a few inputs) the copy is kept only if its logits match the original's to 1e-4
    relative. The copy is cached per model and reused while none of the model's parameters or
    buffers has changed (identity and in-place version counters), so repeated attack calls
    (e.g. the batches of a universal perturbation)
    copy once. Never modifies ``model``.
    """
    mods = list(model.modules())
    if not plain_torch_modules(model) or any(m.training for m in mods):
        return model
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in mods)
    to_cl = channels_last and any(isinstance(m, nn.Conv2d) for m in mods) and all(
        t.device.type == "cpu" for t in (*model.parameters(), *model.buffers()))
    if not (has_bn or to_cl):
        return model
    sig = _tensor_signature(model)
    hit = _FOLDED.get(model, {}).get(to_cl)
    if hit is not None and hit[0] == sig:
        return hit[1]
    try:
        clone = copy.deepcopy(model)
        fused = _rewritten(clone, has_bn)
        if fused is None:
            fused = clone
        if to_cl:
            fused = fused.to(memory_format=torch.channels_last)
        for p in fused.parameters():
            p.requires_grad_(False)
        fused.eval()
        if probe is not None and probe.numel():
            with torch.no_grad():
                a, b = model(probe), fused(probe)
            if a.shape != b.shape or not bool(
                    (a - b).abs().max() <= 1e-4 * a.abs().max().clamp_min(1.0)):
                return model
    except Exception:  # noqa: BLE001 - untraceable or unusual model: keep the original
        return model
    _FOLDED.setdefault(model, {})[to_cl] = (sig, fused)
    return fused


def _rewritten(model: nn.Module, has_bn: bool) -> nn.Module | None:
    """``model`` (a private copy) traced, with its BatchNorms folded and its poolings moved
    before the ReLUs; ``None`` (``model`` left as it was) when there is nothing to rewrite or it
    cannot be traced (which is an error only when a BatchNorm had to be folded)."""
    try:
        # Normalize layers stay modules of the copy: the noise-space logic of the smoothed
        # gradients reads their std from the model it differentiates
        gm = torch.fx.GraphModule(model, _KeepNormalize().trace(model))
    except Exception:  # noqa: BLE001 - e.g. data-dependent control flow
        if has_bn:
            raise
        return None
    moved = pool_before_relu(gm)
    if has_bn:
        from torch.fx.experimental.optimization import fuse

        return fuse(gm, inplace=True, no_trace=True)
    return gm if moved else None




# ----------------------------------------------------------------------------------------------
# one attack call: the clean forward, threads, graph reuse
# ----------------------------------------------------------------------------------------------

@dataclass
class CleanGraph:
    """The clean forward of (a slice ``[start, start + len)`` of) an attack call's batch, kept
    with its graph: input leaf ``x_var`` and raw outputs ``raw``."""

    x_var: Tensor
    raw: Tensor
    layout: LayoutHint
    start: int = 0


@dataclass
class Plan:
    """How one attack call runs: the Python threads chosen for it, the model the gradient passes
    differentiate (the caller's or its fast copy) and, when the first gradient step can reuse
    it, the clean forward's graph (one per thread's slice of the batch)."""

    workers: int
    grad_model: nn.Module
    graphs: list[CleanGraph] | None = None

    def shares(self, index: Tensor, n: int) -> list[tuple[Tensor | None, CleanGraph | None]]:
        """The samples each thread runs, as ``(positions into the n active samples, graph)``:
        the active samples of each clean-forward slice, or equal shares; ``[(None, graph)]``
        (all samples) for one thread."""
        if self.workers == 1:
            return [(None, self.graphs[0] if self.graphs else None)]
        if self.graphs is not None:
            parts = []
            for g in self.graphs:
                inside = (index >= g.start) & (index < g.start + g.raw.shape[0])
                parts.append((torch.nonzero(inside).flatten(), g))
        else:
            parts = [(sub, None) for sub in
                     torch.arange(n, device=index.device).tensor_split(self.workers)]
        return [(sub, g) for sub, g in parts if sub.numel()]


def clean_forward(execution: Execution, model: nn.Module, x: Tensor, *, workers: int,
                  reuse_graph: bool) -> tuple[Tensor, Plan]:
    """The clean forward of an attack call on ``x`` (logits, detached) and the call's
    :class:`Plan`.

    ``reuse_graph``: the attack's first gradient step differentiates the model at ``x`` itself,
    so the clean forward keeps its graph for it (one forward per image saved) — unless the
    gradient passes differentiate a fast copy, whose graph is no clean prediction of the model
    itself. With threads, each thread's slice of the batch gets its own forward (and graph)."""
    grad_model = execution.gradient_model(model, x[:4])
    reuse = reuse_graph and grad_model is model
    if workers == 1 and not reuse:
        with torch.no_grad():
            return model(x), Plan(1, grad_model)
    layout = execution.layout()
    cuts = [round(i * x.shape[0] / workers) for i in range(workers + 1)]

    def forward(w: int) -> CleanGraph:
        a, b = cuts[w], cuts[w + 1]
        if not reuse:
            with torch.no_grad():
                return CleanGraph(x, model(x[a:b]), layout, a)
        x_var = x[a:b].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            return CleanGraph(x_var, layout(model, x_var), layout, a)

    graphs = in_threads(forward, range(workers), workers) if workers > 1 else [forward(0)]
    raw = torch.cat([g.raw for g in graphs]).detach()
    return raw, Plan(workers, grad_model, graphs if reuse else None)


class Share:
    """The samples ``sub`` of an attack call (positions into ``ctx.x``; ``None``: all of them)
    that one thread runs, with the model its gradient passes differentiate and the clean graph
    its first step may reuse. Counts every forward and gradient evaluation in ``ctx``."""

    def __init__(self, ctx: AttackContext, sub: Tensor | None, model: nn.Module,
                 graph: CleanGraph | None) -> None:
        self.ctx, self.sub, self.model, self.graph = ctx, sub, model, graph

    def take(self, t: Tensor) -> Tensor:
        """The rows of ``t`` (one per active sample of the call) that belong to this share."""
        return t if self.sub is None else t[self.sub]

    def take_objective(self, objective: AttackObjective) -> AttackObjective:
        """``objective`` restricted to this share's samples."""
        return objective if self.sub is None else objective.subset(self.sub)

    def where(self, rows: Tensor | None) -> Tensor | None:
        """Positions into ``ctx.x`` of this share's samples ``rows`` (``None``: all)."""
        if self.sub is None:
            return rows
        return self.sub if rows is None else self.sub[rows]

    def forward(self, x: Tensor, rows: Tensor | None) -> Tensor:
        """Logits of the gradient model at ``x`` (this share's samples ``rows``), no graph."""
        with torch.no_grad():
            z = self.model(x)
        self.ctx.count_forward(self.where(rows), 1)
        return z

    def gradient(self, estimator: GradientEstimator, x: Tensor, objective: AttackObjective,
                 rows: Tensor | None) -> GradientEstimate:
        """``estimator``'s gradient of ``objective`` at ``x`` (this share's samples ``rows``,
        ``None``: all); the first call with all samples reuses the clean forward's graph."""
        graph, self.graph = self.graph, None
        if graph is not None and rows is None:
            return self._from_graph(graph, objective)
        est = estimator.estimate(self.model, x, objective, generator=self.ctx.generator)
        self.ctx.count_forward(self.where(rows), est.forward_evals)
        self.ctx.count_grad(self.where(rows), est.grad_evals)
        return est

    def _from_graph(self, graph: CleanGraph, objective: AttackObjective) -> GradientEstimate:
        """The gradient at the clean input from the clean forward's graph. Its backward runs over
        every image of the graph's slice of the call (also those already misclassified), so each
        is counted."""
        from .gradients import GradientEstimate, check_logits  # gradients imports this module

        ctx = self.ctx
        rows = (ctx.index if self.sub is None else ctx.index[self.sub]) - graph.start
        raw = check_logits(graph.raw)[rows]
        objective.layout = graph.layout
        val = objective.value(raw)
        (g,) = torch.autograd.grad(val.sum(), graph.x_var)
        check_finite_gradient(g)
        n = graph.raw.shape[0]
        ctx.cost.add_grad(None if graph.start == 0 and n == ctx.cost.grad.shape[0]
                          else torch.arange(graph.start, graph.start + n, device=g.device), 1)
        return GradientEstimate(g[rows].detach(), val.detach(), raw.detach(), 0, 0)


def run_shares(ctx: AttackContext, plan: Plan, objective: AttackObjective,
               loop: Callable[[Share], tuple[Tensor, Tensor]]
               ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Run ``loop`` (an attack's algorithm on one :class:`Share`, returning its adversarial
    images and iterations) over the shares of ``plan``; the merged ``(x_adv, iterations,
    logits)`` of the ``ctx.x`` samples.

    One thread: ``loop`` on all samples, ``logits=None`` (the base class verifies). Threads: each
    runs ``loop`` on its share with one intra-op thread and ends with the forward of
    ``ctx.model`` itself at its images, which is the verification (``logits``; ``None`` for a
    loss-averaging ensemble, in every thread alike)."""
    parts = plan.shares(ctx.index, ctx.x.shape[0])
    if plan.workers == 1:
        x_adv, iterations = loop(Share(ctx, None, plan.grad_model, parts[0][1]))
        return x_adv, iterations, None

    def one(part: tuple[Tensor | None, CleanGraph | None]) -> tuple[Tensor, Tensor, Tensor | None]:
        share = Share(ctx, part[0], plan.grad_model, part[1])
        x_adv, iterations = loop(share)
        if objective.loss_ensemble:
            return x_adv, iterations, None
        with torch.no_grad():
            z = objective.forward(ctx.model, x_adv)
        ctx.count_forward(share.where(None), 1)
        return x_adv, iterations, z

    outs = in_threads(one, parts, plan.workers)
    n = ctx.x.shape[0]
    x_new = torch.empty_like(ctx.x)
    iterations = torch.empty(n, dtype=torch.long, device=ctx.x.device)
    z0 = outs[0][2]
    logits = None if z0 is None else z0.new_empty((n, *z0.shape[1:]))
    for (sub, _), (xa, it, z) in zip(parts, outs, strict=True):
        x_new[sub], iterations[sub] = xa, it
        if logits is not None:
            logits[sub] = z
    return x_new, iterations, logits
