"""Training noise of hardware-aware training, as modules of the prepared graph.

Each module acts only while its GraphModule is in training mode (or with
``modifier.enable_during_test``), never while ``calibrating`` (calibration sees
noise-free activations), and draws fresh noise from torch's default generator
every forward (``torch.manual_seed`` controls it). The noise itself carries no
gradient: the clean weights and the input ranges get the gradient of the noisy
forward, straight through (aihwkit's rule).

* :class:`WeightNoise` sits between one array's weight block and its crossbar
  node (aihwkit's weight modifier; amax per array, or per output channel).
* :class:`OutputNoise` sits between the crossbar node and the ADC, in units of
  ``I / (g_max - g_min) = W x / max|W|`` (per column when the layer maps
  columnwise): ``out_noise`` and the PCM read noise ``w_noise``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor, nn

from ..parameters import IOParameters, WeightModifierParameter, WeightModifierType
from .periphery import weight_scale


class TrainingNoise(nn.Module):
    """On in training mode (or always with ``enable_during_test``), off while ``calibrating``."""

    def __init__(self, enable_during_test: bool):
        super().__init__()
        self.enable_during_test = enable_during_test
        self.calibrating = False

    @property
    def active(self) -> bool:
        return (self.training or self.enable_during_test) and not self.calibrating


class WeightNoise(TrainingNoise):
    """aihwkit's weight modifier on one array's weight block (output channels along dim 0)."""

    def __init__(self, params: WeightModifierParameter):
        super().__init__(params.enable_during_test)
        self.params = params

    def forward(self, weight: Tensor, scales: Optional[Tensor] = None) -> Tensor:
        """``weight`` plus noise; with the array's stored weight ``scales`` the noise is drawn on the
        analog weights ``W' = W / alpha`` (aihwkit's tile modifies the weights it stores) and scaled back."""
        if not self.active:
            return weight
        if scales is None:
            return weight + modifier_noise(weight.detach(), self.params)
        rows = scales.detach().reshape(-1, *([1] * (weight.dim() - 1))) if scales.numel() > 1 else scales.detach()
        return weight + modifier_noise(weight.detach() / rows, self.params).mul_(rows)

    def extra_repr(self) -> str:
        return f"{self.params.type.name}, std_dev={self.params.std_dev:g}"


def modifier_noise(weight: Tensor, params: WeightModifierParameter) -> Tensor:
    """A fresh draw of the modifier's noise for ``weight`` (detached; the noisy weight minus ``weight``)."""
    if not params.rel_to_actual_wmax:
        amax = torch.tensor(params.assumed_wmax, dtype=weight.dtype)
    elif params.per_channel:  # an all-zero channel gets no noise (aihwkit's per-channel types)
        amax = weight.abs().amax(dim=tuple(range(1, weight.dim())), keepdim=True)
    else:  # an all-zero array: noise relative to 1 (aihwkit)
        amax = weight.abs().amax()
        amax = torch.where(amax > 0, amax, torch.ones_like(amax))
    noise = torch.randn_like(weight)
    if params.type in (WeightModifierType.ADD_NORMAL, WeightModifierType.ADD_NORMAL_PER_CHANNEL):
        return noise.mul_(params.std_dev * amax)
    relative = weight.abs() / amax
    sigma = torch.full_like(weight, params.coeffs[-1])
    for coefficient in reversed(params.coeffs[:-1]):  # Horner: P(a) = c0 + a (c1 + a (c2 + ...))
        sigma.mul_(relative).add_(coefficient)
    if params.type == WeightModifierType.POLY:
        return noise.mul_(sigma).mul_(params.std_dev * amax)
    moved = weight + noise.mul_(sigma).mul_(params.std_dev / params.g_max * amax)  # PROG_NOISE
    return torch.where(weight < 0, -moved.abs(), moved.abs()) - weight


class OutputNoise(TrainingNoise):
    """``out_noise`` and PCM read noise on one array's output, before the ADC.

    In ADC units (output over amax, amax = the weight scale alpha of the array or of each column):
    ``y_i += out_noise * N + w_noise * sqrt(sum_j |w_ij| / amax x_j**2) * N'``, both
    drawn as one Gaussian of the summed variance. The sum is the layer's own
    canonical op on ``(x * x, |w|)``, so it holds for every layer kind.
    """

    def __init__(self, io: IOParameters, enable_during_test: bool, mvm: Callable, channel_dim: int,
                 columnwise: bool, omega: float = 1.0):
        super().__init__(enable_during_test)
        self.out_noise, self.w_noise = float(io.out_noise), float(io.read_noise)
        self.mvm, self.channel_dim, self.columnwise, self.omega = mvm, channel_dim, columnwise, omega

    def forward(self, y: Tensor, x: Tensor, weight: Tensor, *mvm_args, scales: Optional[Tensor] = None,
                op: Optional[Callable[[Tensor, Tensor], Tensor]] = None) -> Tensor:
        if not self.active:
            return y
        # in place: the crossbar's output is read only by this node, and no backward needs it
        return y.addcmul_(torch.randn_like(y), self.std(y, x.detach(), weight.detach(), mvm_args, scales, op))

    def std(self, y: Tensor, x: Tensor, weight: Tensor, mvm_args: tuple, scales: Optional[Tensor] = None,
            op: Optional[Callable[[Tensor, Tensor], Tensor]] = None) -> Tensor:
        """The noise std in the crossbar's output units: ``amax * sqrt(out_noise**2 + w_noise**2 * S / amax)``
        (inputs detached: nothing here is recorded for autograd); ``scales`` the stored weight scales;
        ``op(x, weight)`` the array's op when it is not the layer's own on ``mvm_args`` (a managed read's,
        on unfolded patches)."""
        amax = weight_scale(weight, omega=self.omega, columnwise=self.columnwise, channel_dim=self.channel_dim,
                            output_dims=y.dim(), scales=scales)
        if not self.w_noise:
            return amax * self.out_noise
        read = op(x.square(), weight.abs()) if op is not None else self.mvm(x.square(), weight.abs(), *mvm_args)
        return torch.addcmul(amax.square() * self.out_noise ** 2, read, amax * self.w_noise ** 2, out=read).sqrt_()

    def extra_repr(self) -> str:
        return f"out_noise={self.out_noise:g}, w_noise={self.w_noise:g}, columnwise={self.columnwise}"
