"""Noise and bound management in the prepared (trainable) graph, as aihwkit's torch tile trains with them.

One :class:`ManagedReads` module takes the place of an array's DAC, crossbar op, training output noise and
ADC (:class:`~xbar.passes.rewrites.insert_managed_reads.InsertManagedReadsPass`) and reads the array under
:func:`~.management.managed_reads`, the rule the converted array follows too; only the read differs. Each
read here is plain autograd, as aihwkit 1.1.0's torch MVM is in training:

* the scale ``nm`` is computed from the normalised input with its gradient (not detached): the output
  ``y = ADC(W DAC(x_n / (nm * reduction))) * nm * reduction`` is differentiated through ``nm`` too, so the
  element that sets an ABS_MAX / MAX scale gets the read's rounding and clipping residue besides its own
  share (a capped scale, a scale <= 0 set to 1, CONSTANT and the reduction are constants);
* the DAC rounds with a straight-through gradient, then clips to [-1, 1] (also without a DAC), and the
  clip passes the gradient where the rounded value is inside or on the bound;
* the ADC (in units of ``W x / alpha``, alpha the weight scale) rounds straight through and clips to
  ``out_bound``, passing the gradient where the rounded code is inside or on the bound (the unmanaged
  prepared layer's ADC masks at the bound and before rounding, :func:`.periphery.adc`);
* training output noise (``forward.out_noise``, PCM read noise) is drawn afresh at every read;
* bound management's rounds are not differentiated as a choice: the read kept is differentiated alone,
  its reduction a constant.

The weight scale alpha and the input range pass no gradient here: the range gets its gradient from its
clip's rule, as in the unmanaged layer. A convolution's range over patch elements (aihwkit's rule) needs
each patch element's gradient: with it the reads take the unfolded patches in every mode, and the range's
clipped-element term is summed from the gradient those patches get (the scale's part included), in place
of :class:`~.patch_range.PatchRangeGradient`'s estimate from the gradient at the array's output.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from ..parameters import InputRangeParameter
from .input_range import signed_clipped
from .management import Op, managed_reads
from .patch_range import PatchRangeGradient
from .patches import PatchView
from .periphery import weight_scale
from .training_noise import OutputNoise


class _RoundStraightThrough(torch.autograd.Function):
    """``round(x)`` whose gradient passes unchanged (aihwkit's quantiser's straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx, d: Tensor) -> Tensor:
        return d


def round_straight_through(x: Tensor) -> Tensor:
    return _RoundStraightThrough.apply(x)


class _PatchElementsRange(torch.autograd.Function):
    """The unfolded patches ``u`` (of ``x / r``) passed through; the backward adds to ``r`` the clipped
    elements' term ``sum(min(s d, 0))`` of aihwkit's rule from each element's gradient ``d`` (``s`` its clip
    sign), times ``gradient_scale`` when relative, else over ``r`` (``d`` is at ``x / r``; see
    :mod:`.patch_range`)."""

    @staticmethod
    def forward(ctx, u: Tensor, signs: Tensor, r: Tensor, params: InputRangeParameter) -> Tensor:
        ctx.save_for_backward(signs, r)
        ctx.params = params
        return u.view_as(u)

    @staticmethod
    def backward(ctx, d: Tensor):
        signs, r = ctx.saved_tensors
        total = (signs * d).clamp_(max=0.0).sum()
        grad_r = total * ctx.params.gradient_scale if ctx.params.gradient_relative else total / r.detach()
        return d, None, grad_r.reshape(r.shape), None


class ManagedReads(nn.Module):
    """One array's reads under noise and bound management, differentiable as aihwkit's torch tile's.

    ``op`` is the array's op (``op(x, weight, *op_args)``), ``patches`` its patches (a convolution's; None for
    a linear layer), ``nm_mode`` / ``nm_thres`` / ``bm_rounds`` the array's management (codes of
    :mod:`.settings`), ``dac_steps`` / ``adc_steps`` / ``bound`` its converters (0: none), ``channel_dim``,
    ``columnwise`` and ``omega`` its weight scale as :func:`.periphery.adc` takes them, ``noise`` its training
    output noise and ``range_gradient`` its range's patch-element term (whose parameters it takes; a shared
    layer's call sites share both).
    """

    def __init__(self, op: Callable, patches: Optional[PatchView], nm_mode: int, nm_thres: float, bm_rounds: int,
                 dac_steps: float, adc_steps: float, bound: float, channel_dim: int, columnwise: bool,
                 omega: float, noise: Optional[OutputNoise] = None,
                 range_gradient: Optional[PatchRangeGradient] = None):
        super().__init__()
        self.op, self.patches = op, patches
        self.nm_mode, self.nm_thres, self.bm_rounds = nm_mode, float(nm_thres), bm_rounds
        self.dac_steps, self.adc_steps, self.bound = float(dac_steps), float(adc_steps), float(bound)
        self.channel_dim, self.columnwise, self.omega = channel_dim, columnwise, omega
        self.noise, self.range_gradient = noise, range_gradient

    def forward(self, x_n: Tensor, weight: Tensor, *op_args, clean_weight: Optional[Tensor] = None,
                scales: Optional[Tensor] = None, range_input: Optional[Tensor] = None,
                input_range: Optional[Tensor] = None) -> Tensor:
        """The array's output in the crossbar's units (``W x_n``, what the rescale multiplies by the range) for
        the normalised input ``x_n``; ``weight`` is what the op reads (with its weight noise), ``clean_weight``
        (default ``weight``) what the weight scale and the read noise see, ``scales`` the stored weight scales;
        ``range_input`` and ``input_range`` (with ``range_gradient``) the range's input before its clip and
        the range."""
        clean = weight if clean_weight is None else clean_weight
        w_max = weight_scale(clean, omega=self.omega, columnwise=self.columnwise, channel_dim=self.channel_dim,
                             output_dims=x_n.dim(), scales=scales)
        half = self.dac_steps / 2
        units = self.adc_steps / (2 * self.bound) if self.adc_steps else 1.0  # ADC codes per unit of W x / alpha
        limit = self.bound * units
        noise = self.noise if self.noise is not None and self.noise.active else None

        def read(x_scaled: Tensor, op: Op) -> tuple[Tensor, Tensor]:
            q = round_straight_through(x_scaled * half) / half if half else x_scaled
            q = torch.clamp(q, -1.0, 1.0)
            v = op(q, weight)
            if noise is not None:
                v = noise(v, q, clean, *op_args, scales=scales, op=op)
            if not self.bound:
                return v, torch.ones((), dtype=torch.bool, device=v.device)
            codes = v * (units / w_max)
            if self.adc_steps:
                codes = round_straight_through(codes)
            passed = (codes.abs() <= limit).all()
            return torch.clamp(codes, -limit, limit) * (w_max / units), passed

        return managed_reads(x_n, self.nm_mode, self.nm_thres, self.bm_rounds, self.patches,
                             lambda q, w: self.op(q, w, *op_args), read, self._range_term(range_input, input_range))

    def _range_term(self, x: Optional[Tensor], r: Optional[Tensor]) -> Optional[Callable[[Tensor], Tensor]]:
        """What passes the unfolded patches through and adds the range's patch-element term, if it learns."""
        if self.range_gradient is None or r is None or not (torch.is_grad_enabled() and r.requires_grad):
            return None
        signs = self.patches.unfold(signed_clipped(x, r))
        return lambda u: _PatchElementsRange.apply(u, signs, r, self.range_gradient.params)

    def extra_repr(self) -> str:
        return (f"nm_mode={self.nm_mode}, nm_thres={self.nm_thres:g}, bm_rounds={self.bm_rounds}, "
                f"dac_steps={self.dac_steps:g}, adc_steps={self.adc_steps:g}, bound={self.bound:g}")
