"""Convolutions: ``nn.Conv1d/2d/3d``, ``F.conv1d/2d/3d``, ``aten.conv1d/2d/3d`` (``.padding``:
a ``'same'`` / ``'valid'`` padding string).

The canonical op is ``F.convNd(x, W, None, stride, padding, dilation, groups)`` with
W [out, in/groups, *kernel]; channels are dim 1. The array's rows are a group's
input channels times the kernel taps (the unfolded input), its columns the group's
output channels. Non-zero padding modes and asymmetric ``'same'`` padding stay digital.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..arrays import Tile, WeightLayout
from ..numerics.patches import PatchView
from ..operands import argument, ntuple, optional_bias, resolve_attribute, tensor_attribute
from .base import COMPUTED_BIAS, LayerKind, Match, Operands, Refused, module_operands

aten = torch.ops.aten

FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d)
ONNX_CONV_ATTRIBUTES = {
    "strides": (tuple[int, ...], "as ONNX Conv"),
    "pads": (tuple[int, ...], "as ONNX Conv: begin values, then end values"),
    "dilations": (tuple[int, ...], "as ONNX Conv"),
    "group": (int, "as ONNX Conv"),
}
UNEVEN_SAME = Refused("'same' padding that is uneven (an even kernel)")


@dataclass(frozen=True)
class ConvGeometry:
    """Stride, padding, dilation and groups of a convolution layer."""

    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int


def conv_geometry(stride, padding, dilation, groups, kernel: Sequence[int]) -> Optional[ConvGeometry]:
    """The geometry of a convolution call, or None for asymmetric ``'same'`` padding."""
    n = len(kernel)
    stride, dilation = ntuple(stride, n), ntuple(dilation, n)
    if padding == "valid":
        padding = 0
    elif padding == "same":
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        if any(t % 2 for t in total):
            return None
        padding = tuple(t // 2 for t in total)
    return ConvGeometry(stride, ntuple(padding, n), dilation, int(groups))


def channel_major_layout(channels: int, group_channels: int, kernel: Sequence[int], groups: int,
                         channels_are_outputs: bool) -> WeightLayout:
    """The layout of a [channels, group_channels, *kernel] weight."""
    per_group = channels // groups
    inputs, outputs = (group_channels, per_group) if channels_are_outputs else (per_group, group_channels)
    return WeightLayout(groups, inputs, outputs, math.prod(kernel))


class Conv(LayerKind):
    """A 1-3d convolution; see the module docstring."""

    name = "conv"
    onnx_op = "CrossbarConv"
    modules = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    targets = frozenset({F.conv1d, F.conv2d, F.conv3d, aten.conv1d.default, aten.conv2d.default, aten.conv3d.default,
                         aten.conv1d.padding, aten.conv2d.padding, aten.conv3d.padding})
    channel_dim = 1
    geometry_type = ConvGeometry
    onnx_attributes = ONNX_CONV_ATTRIBUTES

    def match_module(self, node: fx.Node, module: nn.Module) -> Match:
        if module.padding_mode != "zeros":
            return Refused(f"padding mode {module.padding_mode!r} (only zero padding maps)")
        geometry = conv_geometry(module.stride, module.padding, module.dilation, module.groups, module.kernel_size)
        return UNEVEN_SAME if geometry is None else module_operands(node, module, geometry)

    def match_call(self, gm: fx.GraphModule, node: fx.Node) -> Match:
        weight = tensor_attribute(gm, argument(node, 1, "weight"))
        usable, bias = optional_bias(gm, node, 2)
        if weight is None:
            return None
        if not usable:
            return COMPUTED_BIAS
        kernel = resolve_attribute(gm, weight).shape[2:]
        geometry = conv_geometry(argument(node, 3, "stride", 1), argument(node, 4, "padding", 0),
                                 argument(node, 5, "dilation", 1), argument(node, 6, "groups", 1), kernel)
        return UNEVEN_SAME if geometry is None else Operands(0, weight, bias, geometry)

    def layout(self, weight_shape, geometry: ConvGeometry) -> WeightLayout:
        out_channels, group_inputs, *kernel = weight_shape
        return channel_major_layout(out_channels, group_inputs, kernel, geometry.groups, channels_are_outputs=True)

    def block_index(self, tile: Tile) -> tuple:
        return (slice(*tile.outputs), slice(*tile.weight_inputs))

    def function(self, weight_rank: int):
        return FUNCTIONS[weight_rank - 3]

    def arguments(self, geometry: ConvGeometry) -> tuple:
        g = geometry
        return (None, g.stride, g.padding, g.dilation, g.groups)

    def patches(self, kernel, geometry: ConvGeometry) -> PatchView:
        g = geometry
        return PatchView(tuple(kernel), g.stride, g.padding, g.dilation, g.groups)

    def describe(self, weight_rank: int) -> str:
        return f"conv{weight_rank - 2}d"

    def onnx_values(self, geometry: ConvGeometry) -> dict:
        g = geometry
        return {"strides": list(g.stride), "pads": list(g.padding) * 2, "dilations": list(g.dilation),
                "group": g.groups}
