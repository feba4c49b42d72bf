"""DAC, ADC and the digital scale steps of a simulated crossbar layer.

Plain differentiable functions on tensors, used by the prepared (trainable)
graph. Rounding passes the gradient straight through; a clip zeroes it beyond
its bound. Converters quantise, then clip to their bound, as aihwkit's MVM does.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .converter import ZERO_CLIP


class _RoundStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx, d: Tensor) -> Tensor:
        return d


def quantize(x: Tensor, steps: float, bound: float) -> Tensor:
    """Round to ``steps`` equal steps over [-bound, bound], then clip to the bound."""
    step = 2.0 * bound / steps
    return torch.clamp(_RoundStraightThrough.apply(x / step) * step, -bound, bound)


def normalize(x: Tensor, input_range: Tensor) -> Tensor:
    """Scale the clipped input into [-1, 1]. No gradient reaches the range here."""
    return x / input_range.detach()


def rescale(y: Tensor, input_range: Tensor) -> Tensor:
    """Undo :func:`normalize` on the layer output. No gradient reaches the range."""
    return y * input_range.detach()


def dac(x: Tensor, steps: float) -> Tensor:
    """The input DAC: ``steps`` steps over [-1, 1]."""
    return quantize(x, steps, 1.0)


class _AdcClip(torch.autograd.Function):
    """Quantise-then-clip of the ADC, optionally feeding output clipping back to the range."""

    @staticmethod
    def forward(ctx, x: Tensor, r: Optional[Tensor], steps: float, bound: float,
                output_min_percentage: Optional[float]) -> Tensor:
        ctx.save_for_backward(x, r)
        ctx.bound, ctx.output_min_percentage = bound, output_min_percentage
        if steps:
            step = 2.0 * bound / steps
            x = torch.round(x / step) * step
        return torch.clamp(x, -bound, bound)

    @staticmethod
    def backward(ctx, d: Tensor):
        x, r = ctx.saved_tensors
        inside = x.abs() < ctx.bound
        grad_r = None
        if ctx.needs_input_grad[1] and ctx.output_min_percentage is not None:
            fraction = inside.sum() / inside.numel()
            grad_r = -((1.0 - fraction) * r * (fraction < ctx.output_min_percentage)).reshape(r.shape)
        return d * inside, grad_r, None, None, None


def adc(
    current: Tensor,
    weight: Tensor,
    input_range: Optional[Tensor],
    *,
    bound: float,
    steps: float,
    channel_dim: int,
    columnwise: bool = False,
    output_min_percentage: Optional[float] = None,
) -> Tensor:
    """The output ADC, seen from float weights.

    The array's current over ``g_max - g_min`` equals ``W x / max|W|``, so the
    output is divided by the weight's abs max (per output channel if
    ``columnwise``), quantised to ``steps`` steps over [-bound, bound] (if any),
    clipped to ``bound`` and multiplied back. Rounding is straight-through;
    outputs at or beyond the bound count as clipped and get no gradient. With
    ``output_min_percentage`` set (aihwkit's ``manage_output_clipping``), the
    range gets the gradient ``-(1 - f) * r`` whenever the unclipped fraction f of
    outputs is below it.
    """
    w = weight.detach().abs()
    if columnwise:
        shape = [1] * current.dim()
        shape[channel_dim] = -1
        w_max = w.flatten(1).amax(dim=1).view(shape)
    else:
        w_max = w.max()
    w_max = w_max.clamp(min=ZERO_CLIP)
    return _AdcClip.apply(current / w_max, input_range, steps, bound, output_min_percentage) * w_max


def add_bias(y: Tensor, bias: Tensor, channel_dim: int) -> Tensor:
    """Add the digital bias along ``channel_dim`` (1 for convolutions, -1 for linear)."""
    if channel_dim in (-1, y.dim() - 1):
        return y + bias
    shape = [1] * y.dim()
    shape[channel_dim] = -1
    return y + bias.view(shape)
