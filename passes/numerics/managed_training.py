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

The weight scale alpha and the input range pass no gradient here (the range gets its gradient from its
clip alone, as in the unmanaged layer).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .management import Op, managed_reads
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


class ManagedReads(nn.Module):
    """One array's reads under noise and bound management, differentiable as aihwkit's torch tile's.

    ``op`` is the array's op (``op(x, weight, *op_args)``), ``patches`` its patches (a convolution's; None for
    a linear layer), ``nm_mode`` / ``nm_thres`` / ``bm_rounds`` the array's management (codes of
    :mod:`.settings`), ``dac_steps`` / ``adc_steps`` / ``bound`` its converters (0: none), ``channel_dim``,
    ``columnwise`` and ``omega`` its weight scale as :func:`.periphery.adc` takes them, ``noise`` its training
    output noise (a shared layer's call sites share it).
    """

    def __init__(self, op: Callable, patches: Optional[PatchView], nm_mode: int, nm_thres: float, bm_rounds: int,
                 dac_steps: float, adc_steps: float, bound: float, channel_dim: int, columnwise: bool,
                 omega: float, noise: Optional[OutputNoise] = None):
        super().__init__()
        self.op, self.patches = op, patches
        self.nm_mode, self.nm_thres, self.bm_rounds = nm_mode, float(nm_thres), bm_rounds
        self.dac_steps, self.adc_steps, self.bound = float(dac_steps), float(adc_steps), float(bound)
        self.channel_dim, self.columnwise, self.omega = channel_dim, columnwise, omega
        self.noise = noise

    def forward(self, x_n: Tensor, weight: Tensor, *op_args, clean_weight: Optional[Tensor] = None,
                scales: Optional[Tensor] = None) -> Tensor:
        """The array's output in the crossbar's units (``W x_n``, what the rescale multiplies by the range) for
        the normalised input ``x_n``; ``weight`` is what the op reads (with its weight noise), ``clean_weight``
        (default ``weight``) what the weight scale and the read noise see, ``scales`` the stored weight scales."""
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
                             lambda q, w: self.op(q, w, *op_args), read)

    def extra_repr(self) -> str:
        return (f"nm_mode={self.nm_mode}, nm_thres={self.nm_thres:g}, bm_rounds={self.bm_rounds}, "
                f"dac_steps={self.dac_steps:g}, adc_steps={self.adc_steps:g}, bound={self.bound:g}")
