"""DAC, ADC and the digital scale steps of a simulated crossbar layer.

Plain differentiable functions on tensors, used by the prepared (trainable)
graph. Converters quantise, then clip to their bound, as aihwkit's MVM does;
rounding passes the gradient straight through, a clip stops it beyond its bound.
Each converter is one autograd function, so training pays few tensor passes.
An array with noise or bound management reads through
:class:`~xbar.passes.numerics.managed_training.ManagedReads` instead, whose converters
pass the gradient as aihwkit's torch tile does.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .converter import ZERO_CLIP
from .global_batch import BatchStatistics
from .input_range import where_inside

# normalize, rescale and add_bias work in place: each reads a tensor that only it
# uses (the clip's, the ADC's or the crossbar's fresh output), and a training step
# then pays no allocation for them.

def normalize(x: Tensor, input_range: Tensor) -> Tensor:
    """Scale the clipped input into [-1, 1], in place. No gradient reaches the range here."""
    return x.div_(input_range.detach())


def rescale(y: Tensor, input_range: Tensor) -> Tensor:
    """Undo :func:`normalize` on the layer output, in place. No gradient reaches the range."""
    return y.mul_(input_range.detach())


def add_bias(y: Tensor, bias: Tensor, channel_dim: int) -> Tensor:
    """Add the digital bias along ``channel_dim`` (1 for convolutions, -1 for linear), in place."""
    if channel_dim in (-1, y.dim() - 1):
        return y.add_(bias)
    return y.add_(bias.view(-1, *([1] * (y.dim() - channel_dim - 1))))


class _Dac(torch.autograd.Function):
    """Round to ``steps`` steps over [-1, 1], then clip to [-1, 1].

    Its input is already inside [-1, 1] (clipped by the input range, which every
    DAC needs), so the gradient passes straight through unchanged.
    """

    @staticmethod
    def forward(ctx, x: Tensor, steps: float) -> Tensor:
        half = steps / 2
        if torch.compiler.is_compiling():  # out of place: a compiler fuses these passes anyway
            codes = torch.round(x * half)
            return (codes if half.is_integer() else codes.clamp(-half, half)) / half
        ctx.mark_dirty(x)  # in place: the DAC's input is the normalize node's output, read by nothing else
        codes = x.mul_(half).round_()
        if not half.is_integer():  # an integer bound cannot be rounded past
            codes.clamp_(-half, half)
        return codes.div_(half)

    @staticmethod
    def backward(ctx, d: Tensor):
        return d, None


def dac(x: Tensor, steps: float) -> Tensor:
    """The input DAC: ``steps`` steps over [-1, 1]."""
    return _Dac.apply(x, steps)


class _Adc(torch.autograd.Function):
    """Quantise-then-clip in units of ``W' x = W x / w_max`` (``w_max``: the weight scale alpha).

    Outputs at or beyond the bound count as clipped and get no gradient; with
    ``output_min_percentage`` set, the range gets ``-(1 - f) * r`` whenever the
    unclipped fraction f is below it (aihwkit's ``manage_output_clipping``).
    """

    @staticmethod
    def forward(ctx, current: Tensor, w_max: Tensor, r: Optional[Tensor], steps: float, bound: float,
                output_min_percentage: Optional[float], statistics: Optional[BatchStatistics]) -> Tensor:
        units = steps / (2 * bound) if steps else 1.0  # ADC codes per unit of I / (g_max - g_min)
        codes = current * (units / w_max)
        ctx.limit = bound * units
        ctx.save_for_backward(codes, r)
        ctx.output_min_percentage, ctx.statistics = output_min_percentage, statistics or BatchStatistics()
        if torch.compiler.is_compiling():  # out of place: a compiler fuses these passes anyway
            quantised = torch.round(codes) if steps else codes
            return quantised.clamp(-ctx.limit, ctx.limit) * (w_max / units)
        ctx.mark_dirty(current)  # the result overwrites the crossbar's output, which only the ADC reads
        quantised = torch.round(codes, out=current) if steps else current.copy_(codes)
        return quantised.clamp_(-ctx.limit, ctx.limit).mul_(w_max / units)

    @staticmethod
    def backward(ctx, d: Tensor):
        codes, r = ctx.saved_tensors
        grad_r = None
        if ctx.needs_input_grad[2] and ctx.output_min_percentage is not None:
            unclipped = where_inside(torch.ones(()).expand_as(codes), codes, ctx.limit).sum()
            grad_r = ctx.statistics.fraction_term(r, unclipped, codes.numel(), lambda fraction: (
                -(1.0 - fraction) * r * (fraction < ctx.output_min_percentage)).reshape(r.shape))
        return where_inside(d, codes, ctx.limit), None, grad_r, None, None, None, None


def adc(
    current: Tensor,
    weight: Tensor,
    input_range: Optional[Tensor],
    *,
    bound: float,
    steps: float,
    channel_dim: int,
    columnwise: bool = False,
    omega: float = 1.0,
    scales: Optional[Tensor] = None,
    output_min_percentage: Optional[float] = None,
    statistics: Optional[BatchStatistics] = None,
) -> Tensor:
    """The output ADC, seen from float weights.

    The ADC sees the analog weights' output ``W' x = W x / alpha`` (:func:`weight_scale`:
    ``alpha = max|W| / omega``, per output channel if ``columnwise``; 1 for omega 0;
    the stored ``scales`` when given); it is
    quantised to ``steps`` steps over [-bound, bound] (if any) and clipped to
    ``bound``, then scaled back by ``alpha``. ``output_min_percentage`` turns on the output-clipping
    feedback into ``input_range``'s gradient, its fraction taken by ``statistics`` (the range's;
    this process alone by default). The result overwrites ``current``
    (the crossbar's output, which nothing else reads), so it must not be a leaf.
    """
    w_max = weight_scale(weight, omega=omega, columnwise=columnwise, channel_dim=channel_dim,
                         output_dims=current.dim(), scales=scales)
    return _Adc.apply(current, w_max, input_range, steps, bound, output_min_percentage, statistics)


def weight_scale(weight: Tensor, *, omega: float, columnwise: bool, channel_dim: int, output_dims: int,
                 scales: Optional[Tensor] = None) -> Tensor:
    """The array's weight scale ``alpha`` (``W' = W / alpha``, :mod:`~xbar.passes.numerics.weight_mapping`),
    shaped to broadcast over its output: the stored ``scales`` if given, else 1 for omega 0, else
    ``array_max / omega`` of the current weight (xbar's dynamic scaling)."""
    if scales is not None:
        return scales
    if omega <= 0:
        return torch.ones((), dtype=weight.dtype)
    w_max = array_max(weight, columnwise=columnwise, channel_dim=channel_dim, output_dims=output_dims)
    return w_max if omega == 1.0 else w_max / omega


def array_max(weight: Tensor, *, columnwise: bool, channel_dim: int, output_dims: int) -> Tensor:
    """``max|W|`` of one array's weight block (the ADC's unit, ``g_max - g_min``), per output column if
    ``columnwise``, shaped to broadcast over an output of ``output_dims`` dimensions; at least ``ZERO_CLIP``."""
    w = weight.detach()
    if columnwise:
        w_max = w.abs().flatten(1).amax(dim=1)
        if channel_dim != -1:
            w_max = w_max.view(-1, *([1] * (output_dims - channel_dim - 1)))
    else:
        low, high = torch.aminmax(w)  # max |W| in one pass, without an |W| copy
        w_max = torch.maximum(-low, high)
    return w_max.clamp(min=ZERO_CLIP)
