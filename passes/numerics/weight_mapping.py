"""aihwkit's weight scaling: the analog weights ``W' = W / alpha`` an array stores, and their scales.

An array stores ``W'`` and multiplies its output by ``alpha`` in digital
(aihwkit's mapping scales, ``apply_weight_scaling``): the ADC's bound and steps
count in units of ``W' x``. The prepared graph keeps the logical weight ``W``
as the trained parameter, so ``W' = W / alpha`` wherever the analog weight is
needed. ``alpha`` is, by :class:`~xbar.passes.parameters.MappingParameter`:

* omega 0: 1 (no scaling);
* omega > 0, dynamic (xbar's default): ``max|W| / omega`` of the current weights,
  at every forward (:func:`~xbar.passes.numerics.periphery.weight_scale`);
* omega > 0, stored (aihwkit's): ``max|W| / omega`` when the model is prepared, kept
  in a :class:`WeightScales` buffer and changed only by remapping.

``max|W|`` is per output column with ``weight_scaling_columnwise``; a zero max
gives ``alpha = 1`` (aihwkit).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, fx, nn

from ..arrays import Tile
from ..operands import resolve_attribute
from ..parameters import MappingParameter
from .converter import abs_max_of


def weight_block(graph_module: fx.GraphModule, plan, tile: Optional[Tile]) -> Tensor:
    """The array's block of its layer's weight parameter, a view ([out, ...] rows; not detached)."""
    layer = plan.layer
    weight = resolve_attribute(graph_module, layer.weight)
    if layer.weight_transposed:
        weight = weight.t()
    return weight if tile is None else weight[layer.kind.block_index(tile)]


def initial_scales(weight: Tensor, mapping: MappingParameter, rows: bool = False) -> Tensor:
    """aihwkit's mapping scales for ``weight`` ([out, ...]): ``max|W| / omega`` per output row
    (columnwise) or one for the array, a zero max giving 1; 1 for omega 0. 1-D: one value, or one
    per row when columnwise or when ``rows`` (a remapped array keeps a scale per row, as aihwkit's)."""
    w = weight.detach()
    count = w.shape[0] if rows or mapping.weight_scaling_columnwise else 1
    if mapping.weight_scaling_omega <= 0:
        return torch.ones(count, dtype=w.dtype)
    w_max = abs_max_of(w.flatten(1), dim=1) if mapping.weight_scaling_columnwise else abs_max_of(w).view(1)
    alpha = w_max / mapping.weight_scaling_omega
    return torch.where(alpha == 0, torch.ones_like(alpha), alpha).expand(count).clone()


def broadcast_shape(scales: Tensor, channel_dim: int, output_dims: int) -> tuple[int, ...]:
    """The shape that lays 1-D ``scales`` along an output's channel dim (a scalar for one scale)."""
    if scales.numel() == 1:
        return ()
    if channel_dim == -1:
        return (-1,)
    return (-1, *([1] * (output_dims - channel_dim - 1)))


class WeightScales(nn.Module):
    """One array's stored mapping scales ``alpha`` (aihwkit's ``mapping_scales``), a buffer.

    Its call returns them shaped to broadcast over the array's output (the output
    has as many dims as a convolution's weight; a linear layer's channels are last).
    """

    def __init__(self, scales: Tensor, channel_dim: int, output_dims: int):
        super().__init__()
        self.register_buffer("scales", scales.clone())
        self.shape = broadcast_shape(scales, channel_dim, output_dims)
        self.constrained_key = None

    def forward(self) -> Tensor:
        return self.scales.view(self.shape)

    def mark_constrained(self, weight: Tensor) -> None:
        """Remember that ``weight`` (the array's block) was just clipped and remapped."""
        self.constrained_key = _tensor_key(weight)

    def constrained(self, weight: Tensor) -> bool:
        """Whether ``weight`` is unchanged since it was last clipped and remapped."""
        return self.constrained_key == _tensor_key(weight)

    def extra_repr(self) -> str:
        return f"{self.scales.numel()} scale{'s' * (self.scales.numel() != 1)}"


def _tensor_key(tensor: Tensor) -> tuple[int, int]:
    """Where a tensor's data is and how often it was written in place (views share the count)."""
    return tensor.data_ptr(), tensor._version


def analog_weights(weight: Tensor, scales: Tensor) -> Tensor:
    """``W' = W / alpha``, ``alpha`` 1-D over the rows of ``weight`` (or one value)."""
    return weight / scales.view(-1, *([1] * (weight.dim() - 1)))


class OutScaling(nn.Module):
    """aihwkit's learned digital output scale of one array (``out_scaling_alpha``): a parameter,
    one value or one per output column, initialised to 1; the array's output (after the ADC and
    the scales back) is multiplied by it before the bias. Its gradient is autograd's."""

    def __init__(self, columns: int, channel_dim: int, output_dims: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(columns))
        self.shape = broadcast_shape(self.alpha, channel_dim, output_dims)

    def forward(self, y: Tensor) -> Tensor:
        return y * self.alpha.view(self.shape)

    def extra_repr(self) -> str:
        return f"{self.alpha.numel()} learned scale{'s' * (self.alpha.numel() != 1)}"
