"""The learned input range: clip to [-r, r] with aihwkit's gradient rule for r.

Plain tensor numerics, no graph. The rule (aihwkit's ``InputRangeForward``):

* forward ``clamp(x, -r, r)``; inputs at or beyond +-r get zero gradient;
* ``g = sum(min(d, 0) over x >= r) - sum(max(d, 0) over x <= -r)``;
* ``gradient_relative``: ``g *= r * gradient_scale``;
* ``decay > 0`` and unclipped fraction > ``input_min_percentage``: ``g += decay * r``.

The output-clipping term (``manage_output_clipping``) needs the ADC's view and
lives in :func:`xbar.passes.numerics.periphery.adc`.

A convolution's range (``patches``, a :class:`~xbar.passes.numerics.patches.PatchView`)
takes its elements as the array does, patch elements (aihwkit's rule): the std
of the init from data and the decay's fraction are over them, and the sum over
clipped elements is added by :mod:`xbar.passes.numerics.patch_range` after the
crossbar op (it needs each patch element's gradient), not here. Without
``patches`` every element of ``x`` counts once.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..parameters import InputRangeParameter
from .compiled_state import CompiledState
from .global_batch import BatchStatistics
from .patches import PatchView


def where_inside(values: Tensor, x: Tensor, bound: float | Tensor, out: Optional[Tensor] = None) -> Tensor:
    """``values`` where ``-bound < x < bound``, else 0, in one fused pass (into ``out`` if given).

    This is hardtanh's backward kernel: on CPU, bool masks and ``torch.where``
    cost three to five float passes each, which a training step pays per layer.
    A tensor ``bound`` (a compiled graph's range, which a compiler fuses into one
    pass anyway) takes the mask form and ignores ``out``.
    """
    if isinstance(bound, Tensor):
        return torch.where((x > -bound) & (x < bound), values, 0.0)
    if out is None:
        return torch.ops.aten.hardtanh_backward(values, x, -bound, bound)
    return torch.ops.aten.hardtanh_backward.grad_input(values, x, -bound, bound, grad_input=out)


class _LearnedClip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, r: Tensor, params: InputRangeParameter, statistics: BatchStatistics,
                patches: Optional[PatchView]) -> Tensor:
        ctx.save_for_backward(x, r)
        ctx.params, ctx.statistics, ctx.patches = params, statistics, patches
        return _clamp(x, r)

    @staticmethod
    def backward(ctx, d: Tensor):
        x, r = ctx.saved_tensors
        params: InputRangeParameter = ctx.params
        bound = r if torch.compiler.is_compiling() else float(r)
        grad_x = grad_r = scratch = None
        if ctx.needs_input_grad[1]:
            clipped = signed_clipped(x, r)
            decay = None
            if params.decay > 0:
                decay = _decay(clipped, r, params, ctx.statistics, ctx.patches)
            if ctx.patches is None:
                # min(d, 0) where x >= r, and -max(d, 0) = min(-d, 0) where x <= -r: min(d sign(x), 0) where clipped
                grad_r = clipped.mul_(d).clamp_(max=0.0).sum()
                if params.gradient_relative:
                    grad_r = grad_r * r * params.gradient_scale
                grad_r = grad_r if decay is None else grad_r + decay
            else:  # the clipped patch elements' term comes from the crossbar op's backward
                grad_r = torch.zeros_like(r) if decay is None else decay
            grad_r = grad_r.reshape(r.shape)
            scratch = clipped  # spent: grad_x can reuse its memory (fresh memory costs page faults)
        if ctx.needs_input_grad[0]:
            grad_x = where_inside(d, x, bound, out=scratch)
        return grad_x, grad_r, None, None, None


def _decay(clipped: Tensor, r: Tensor, params: InputRangeParameter, statistics: BatchStatistics,
           patches: Optional[PatchView]) -> Optional[Tensor]:
    """The decay term ``decay * r`` when the unclipped fraction of the elements exceeds ``input_min_percentage``
    (``clipped`` is the sign of each clipped value, else 0)."""
    if patches is None:
        count, numel = torch.linalg.vector_norm(clipped, ord=1), clipped.numel()  # |clipped| is 0 or 1
    else:
        count, numel = patches.clipped_count(clipped)
    return statistics.fraction_term(r, count, numel, lambda clipped_fraction: (
        params.decay * r * (1.0 - clipped_fraction > params.input_min_percentage)))


def signed_clipped(x: Tensor, r: Tensor) -> Tensor:
    """sign(x) where ``|x| >= r``, else 0: a fresh tensor, in two passes.

    ``hardshrink`` keeps x where ``|x| > nextafter(r, 0)`` (in x's dtype), which
    is exactly ``|x| >= r``.
    """
    r = r.detach().to(x.dtype)
    if torch.compiler.is_compiling():  # no Python float of a traced value: the same test as a mask
        return torch.where(x.detach().abs() >= r, x.detach().sign(), 0.0)
    below_r = float(torch.nextafter(r, torch.zeros_like(r)))
    return torch.nn.functional.hardshrink(x.detach(), below_r).sign_()


def learned_clip(x: Tensor, r: Tensor, params: InputRangeParameter,
                 statistics: Optional[BatchStatistics] = None, patches: Optional[PatchView] = None) -> Tensor:
    """``clamp(x, -r, r)`` whose backward follows aihwkit's input-range rule; the decay term's
    fraction is ``statistics``' (this process alone by default), over ``patches``' elements if given."""
    if torch.is_grad_enabled() and (x.requires_grad or r.requires_grad):
        return _LearnedClip.apply(x, r, params, statistics or BatchStatistics(), patches)
    return _clamp(x, r)


def _clamp(x: Tensor, r: Tensor) -> Tensor:
    """``clamp(x, -r, r)``: with a Python bound eagerly (faster on CPU), with the tensor under a compiler."""
    if torch.compiler.is_compiling():
        r = r.detach()
        return torch.clamp(x, -r, r)
    bound = float(r)
    return torch.clamp(x, -bound, bound)


@torch.no_grad()
def update_range_from_data(r: Tensor, batches_seen: Tensor, x: Tensor, params: InputRangeParameter,
                           statistics: Optional[BatchStatistics] = None, patches: Optional[PatchView] = None) -> None:
    """One step of the init-from-data rule, in place.

    ``r <- (r * k + init_std_alpha * std(x)) / (k + 1)`` while ``k < init_from_data``,
    where k counts only batches whose (unbiased) std is > 0; then ``r <- |r|``.
    The std is ``statistics``' (across ranks, the global batch's; this process alone by default),
    over ``patches``' elements if given.
    """
    statistics = statistics or BatchStatistics()
    if torch.compiler.is_compiling():
        _update_range_from_data_traced(r, batches_seen, x, params, statistics, patches)
        return
    k = int(batches_seen)
    if k >= params.init_from_data:
        return
    std = element_std(x.detach(), statistics, patches)
    if std > 0:
        r.copy_((r * k + params.init_std_alpha * std) / (k + 1))
        batches_seen += 1
    r.abs_()


def element_std(x: Tensor, statistics: BatchStatistics, patches: Optional[PatchView]) -> Tensor:
    """The unbiased std of ``x``'s values, or of its patch elements (``patches``), by ``statistics``."""
    return statistics.std(x) if patches is None else statistics.std_of_moments(*patches.moments(x))


def _update_range_from_data_traced(r: Tensor, batches_seen: Tensor, x: Tensor, params: InputRangeParameter,
                                   statistics: BatchStatistics, patches: Optional[PatchView]) -> None:
    """:func:`update_range_from_data` without Python branches on tensor values, for a compiled graph
    (one graph for every batch); the same arithmetic, selected by ``torch.where``."""
    k = batches_seen
    active = k < params.init_from_data
    std = element_std(x.detach(), statistics, patches)
    take = active & (std > 0)
    updated = torch.where(take, (r * k + params.init_std_alpha * std) / (k + 1), r)
    r.copy_(torch.where(active, updated.abs(), r))
    batches_seen.add_(take.to(batches_seen.dtype))


class InputRange(CompiledState, nn.Module):
    """Holds one layer's range ``value`` and clips its input.

    In training mode, or while ``calibrating`` is set, the first
    ``init_from_data`` batches initialise the range from data before the clip.
    ``learn_input_range=False`` keeps the range as a buffer instead of a parameter.
    ``statistics`` (:class:`~xbar.passes.numerics.global_batch.BatchStatistics`) takes the
    std of the initialisation and the fractions of the range's gradient terms (and of its
    ADCs'): this process alone unless the pipeline gives it a process group's.
    ``patches`` (a convolution's, by default) makes those statistics over patch elements.

    ``initialised`` mirrors ``init_batches >= init_from_data`` as a Python bool,
    for ``torch.compile`` only: a compiled graph made while it is True leaves out
    the initialisation (and its pass over the input for the std). The compiled
    path keeps it current (:meth:`sync_compiled_state`); eager runs read the counter.
    """

    def __init__(self, params: InputRangeParameter, patches: Optional[PatchView] = None):
        super().__init__()
        self.params, self.patches = params, patches
        value = torch.tensor(float(params.init_value))
        if params.learn_input_range:
            self.value = nn.Parameter(value)
        else:
            self.register_buffer("value", value)
        self.register_buffer("init_batches", torch.zeros((), dtype=torch.long))
        self.calibrating = False
        self.statistics = BatchStatistics()
        self.sync_compiled_state()

    def sync_compiled_state(self) -> None:
        """Set ``initialised`` from ``init_batches`` (a read of the counter, outside any graph)."""
        self.initialised = int(self.init_batches) >= self.params.init_from_data

    def forward(self, x: Tensor) -> Tensor:
        if (self.training or self.calibrating) and not (torch.compiler.is_compiling() and self.initialised):
            update_range_from_data(self.value.data, self.init_batches, x, self.params, self.statistics,
                                   self.patches)
        return learned_clip(x, self.value, self.params, self.statistics, self.patches)

    def extra_repr(self) -> str:
        kind = "learned" if self.params.learn_input_range else "fixed"
        over = ", over patches" if self.patches is not None else ""
        return f"{kind}, value={self.value.item():.4g}{over}"
