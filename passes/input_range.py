"""The learned input range: clip to [-r, r] with aihwkit's gradient rule for r.

Plain tensor numerics, no graph. The rule (aihwkit's ``InputRangeForward``):

* forward ``clamp(x, -r, r)``; inputs at or beyond +-r get zero gradient;
* ``g = sum(min(d, 0) over x >= r) - sum(max(d, 0) over x <= -r)``;
* ``gradient_relative``: ``g *= r * gradient_scale``;
* ``decay > 0`` and unclipped fraction > ``input_min_percentage``: ``g += decay * r``.

The output-clipping term (``manage_output_clipping``) needs the ADC's view and
lives in :func:`xbar.passes.periphery.adc`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import global_batch
from .parameters import InputRangeParameter


def where_inside(values: Tensor, x: Tensor, bound: float, out: Optional[Tensor] = None) -> Tensor:
    """``values`` where ``-bound < x < bound``, else 0, in one fused pass (into ``out`` if given).

    This is hardtanh's backward kernel: on CPU, bool masks and ``torch.where``
    cost three to five float passes each, which a training step pays per layer.
    """
    if out is None:
        return torch.ops.aten.hardtanh_backward(values, x, -bound, bound)
    return torch.ops.aten.hardtanh_backward.grad_input(values, x, -bound, bound, grad_input=out)


class _LearnedClip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, r: Tensor, params: InputRangeParameter) -> Tensor:
        ctx.save_for_backward(x, r)
        ctx.params = params
        bound = float(r)
        return torch.clamp(x, -bound, bound)

    @staticmethod
    def backward(ctx, d: Tensor):
        x, r = ctx.saved_tensors
        params: InputRangeParameter = ctx.params
        bound = float(r)
        grad_x = grad_r = scratch = None
        if ctx.needs_input_grad[1]:
            clipped = signed_clipped(x, r)
            if params.decay > 0:
                clipped_count = torch.linalg.vector_norm(clipped, ord=1)  # |clipped| is 0 or 1
                unclipped = 1.0 - global_batch.fraction(clipped_count, x.numel())
            # min(d, 0) where x >= r, and -max(d, 0) = min(-d, 0) where x <= -r: min(d sign(x), 0) where clipped
            grad_r = clipped.mul_(d).clamp_(max=0.0).sum()
            if params.gradient_relative:
                grad_r = grad_r * r * params.gradient_scale
            if params.decay > 0:
                grad_r = grad_r + params.decay * r * (unclipped > params.input_min_percentage)
            grad_r = grad_r.reshape(r.shape)
            scratch = clipped  # spent: grad_x can reuse its memory (fresh memory costs page faults)
        if ctx.needs_input_grad[0]:
            grad_x = where_inside(d, x, bound, out=scratch)
        return grad_x, grad_r, None


def signed_clipped(x: Tensor, r: Tensor) -> Tensor:
    """sign(x) where ``|x| >= r``, else 0: a fresh tensor, in two passes.

    ``hardshrink`` keeps x where ``|x| > nextafter(r, 0)`` (in x's dtype), which
    is exactly ``|x| >= r``.
    """
    r = r.detach().to(x.dtype)
    below_r = float(torch.nextafter(r, torch.zeros_like(r)))
    return torch.nn.functional.hardshrink(x.detach(), below_r).sign_()


def learned_clip(x: Tensor, r: Tensor, params: InputRangeParameter) -> Tensor:
    """``clamp(x, -r, r)`` whose backward follows aihwkit's input-range rule."""
    if torch.is_grad_enabled() and (x.requires_grad or r.requires_grad):
        return _LearnedClip.apply(x, r, params)
    bound = float(r)
    return torch.clamp(x, -bound, bound)


@torch.no_grad()
def update_range_from_data(r: Tensor, batches_seen: Tensor, x: Tensor, params: InputRangeParameter) -> None:
    """One step of the init-from-data rule, in place.

    ``r <- (r * k + init_std_alpha * std(x)) / (k + 1)`` while ``k < init_from_data``,
    where k counts only batches whose (unbiased) std is > 0; then ``r <- |r|``.
    Across ranks (:func:`~xbar.passes.global_batch.across_ranks`) the std is the global batch's.
    """
    k = int(batches_seen)
    if k >= params.init_from_data:
        return
    std = global_batch.std(x.detach())
    if std > 0:
        r.copy_((r * k + params.init_std_alpha * std) / (k + 1))
        batches_seen += 1
    r.abs_()


class InputRange(nn.Module):
    """Holds one layer's range ``value`` and clips its input.

    In training mode, or while ``calibrating`` is set, the first
    ``init_from_data`` batches initialise the range from data before the clip.
    ``learn_input_range=False`` keeps the range as a buffer instead of a parameter.
    """

    def __init__(self, params: InputRangeParameter):
        super().__init__()
        self.params = params
        value = torch.tensor(float(params.init_value))
        if params.learn_input_range:
            self.value = nn.Parameter(value)
        else:
            self.register_buffer("value", value)
        self.register_buffer("init_batches", torch.zeros((), dtype=torch.long))
        self.calibrating = False

    def forward(self, x: Tensor) -> Tensor:
        if self.training or self.calibrating:
            update_range_from_data(self.value.data, self.init_batches, x, self.params)
        return learned_clip(x, self.value, self.params)

    def extra_repr(self) -> str:
        kind = "learned" if self.params.learn_input_range else "fixed"
        return f"{kind}, value={self.value.item():.4g}"
