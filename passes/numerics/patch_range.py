"""The clipped-element term of a convolution's range gradient, over its patches (aihwkit's rule).

aihwkit's array clips its unfolded input, so the range gradient sums
``min(d, 0)`` over patch elements at ``+r`` and ``-max(d, 0)`` over those at
``-r``, each ``d`` the gradient of one patch element. That gradient exists only at
the array: the clip sees the per-pixel gradient (the sum over a pixel's
patches), so this term is taken after the crossbar op, from the gradient at its
output: :class:`PatchRangeGradient` passes the op's output through unchanged and,
in the backward, adds the term to the range. The clip's own backward then keeps
only the decay (see :class:`~xbar.passes.numerics.input_range.InputRange`).
An array with noise or bound management takes its term from each patch element's own
gradient instead (:mod:`~xbar.passes.numerics.managed_training`, which takes this module's
parameters over).

The op's input is the clipped input over r (the DAC passes gradients straight
through), so with ``d'`` the gradient there ``d = d' / r`` and the term is
``sum(min(s d', 0)) * gradient_scale`` (relative) or ``sum(min(s d', 0)) / r``.
Arrays of one row of a tiled layer share their range: each adds its own term,
as a range parameter tied across aihwkit's tiles would get.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..parameters import InputRangeParameter
from .input_range import signed_clipped
from .patches import PatchView


class _PatchRangeGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: Tensor, x: Tensor, r: Tensor, weight: Tensor, patches: PatchView,
                params: InputRangeParameter) -> Tensor:
        ctx.save_for_backward(x, r, weight)
        ctx.patches, ctx.params = patches, params
        if torch.compiler.is_compiling():  # out of place: a compiler fuses the copy away
            return y.clone()
        ctx.mark_dirty(y)  # passed through unchanged; later in-place periphery steps may write it
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, r, weight = ctx.saved_tensors
        params: InputRangeParameter = ctx.params
        grad_r = None
        if ctx.needs_input_grad[2]:
            total = ctx.patches.clipped_gradient_sum(dy, signed_clipped(x, r), weight.detach())
            grad_r = total * params.gradient_scale if params.gradient_relative else total / r.detach()
            grad_r = grad_r.reshape(r.shape)
        return dy, None, grad_r, None, None, None


def patch_range_gradient(y: Tensor, x: Tensor, r: Tensor, weight: Tensor, patches: PatchView,
                         params: InputRangeParameter) -> Tensor:
    """``y`` (an array's output), whose backward adds the clipped patch elements' term to ``r``'s gradient;
    ``x`` is the range's input (before its clip), ``weight`` the array's block as its op reads it."""
    if torch.is_grad_enabled() and r.requires_grad:
        return _PatchRangeGradient.apply(y, x, r, weight, patches, params)
    return y


class PatchRangeGradient(nn.Module):
    """One array's :func:`patch_range_gradient`: holds its patches and its range's parameters."""

    def __init__(self, patches: PatchView, params: InputRangeParameter):
        super().__init__()
        self.patches, self.params = patches, params

    def forward(self, y: Tensor, x: Tensor, r: Tensor, weight: Tensor) -> Tensor:
        return patch_range_gradient(y, x, r, weight, self.patches, self.params)

    def extra_repr(self) -> str:
        return f"kernel={self.patches.kernel}, transposed={self.patches.transposed}"
