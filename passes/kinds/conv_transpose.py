"""Transposed convolutions: ``nn.ConvTranspose1d/2d/3d``, ``F.conv_transpose1d/2d/3d``,
``aten.conv_transpose1d/2d/3d``.

The canonical op is ``F.conv_transposeNd(x, W, None, stride, padding,
output_padding, groups, dilation)`` with W [in, out/groups, *kernel]: unlike a
convolution, the weight's dim 0 holds the input channels. The array is the
transposed convolution's equivalent convolution (on the stride-dilated input):
its rows are a group's input channels times the kernel taps, its columns the
group's output channels, so the ADC sees each complete output value. Channels are
dim 1. A module called with ``output_size`` stays digital (its output padding is
decided per call).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..arrays import Tile, WeightLayout
from ..numerics.patches import PatchView
from ..operands import argument, ntuple, optional_bias, resolve_attribute, tensor_attribute
from .base import COMPUTED_BIAS, LayerKind, Match, Operands, Refused, module_operands
from .conv import ONNX_CONV_ATTRIBUTES, channel_major_layout

aten = torch.ops.aten

FUNCTIONS = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)


@dataclass(frozen=True)
class ConvTransposeGeometry:
    """Stride, padding, output padding, dilation and groups of a transposed convolution."""

    stride: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int


def _geometry(stride, padding, output_padding, dilation, groups, dims: int) -> ConvTransposeGeometry:
    return ConvTransposeGeometry(ntuple(stride, dims), ntuple(padding, dims), ntuple(output_padding, dims),
                                 ntuple(dilation, dims), int(groups))


class ConvTranspose(LayerKind):
    """A 1-3d transposed convolution; see the module docstring."""

    name = "conv_transpose"
    onnx_op = "CrossbarConvTranspose"
    modules = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    targets = frozenset({F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, aten.conv_transpose1d.default,
                         aten.conv_transpose2d.input, aten.conv_transpose3d.input})
    channel_dim = 1
    geometry_type = ConvTransposeGeometry
    onnx_attributes = {**ONNX_CONV_ATTRIBUTES, "output_padding": (tuple[int, ...], "as ONNX ConvTranspose")}
    columnwise = False

    def match_module(self, node: fx.Node, module: nn.Module) -> Match:
        if module.padding_mode != "zeros":
            return Refused(f"padding mode {module.padding_mode!r} (only zero padding maps)")
        if len(node.args) > 1 or node.kwargs.get("output_size") is not None:
            return Refused("called with output_size")
        geometry = _geometry(module.stride, module.padding, module.output_padding, module.dilation, module.groups,
                             len(module.kernel_size))
        return module_operands(node, module, geometry)

    def match_call(self, gm: fx.GraphModule, node: fx.Node) -> Match:
        weight = tensor_attribute(gm, argument(node, 1, "weight"))
        usable, bias = optional_bias(gm, node, 2)
        if weight is None:
            return None
        if not usable:
            return COMPUTED_BIAS
        dims = resolve_attribute(gm, weight).dim() - 2
        geometry = _geometry(argument(node, 3, "stride", 1), argument(node, 4, "padding", 0),
                             argument(node, 5, "output_padding", 0), argument(node, 7, "dilation", 1),
                             argument(node, 6, "groups", 1), dims)
        return Operands(0, weight, bias, geometry)

    def layout(self, weight_shape, geometry: ConvTransposeGeometry) -> WeightLayout:
        in_channels, group_outputs, *kernel = weight_shape
        return channel_major_layout(in_channels, group_outputs, kernel, geometry.groups, channels_are_outputs=False)

    def block_index(self, tile: Tile) -> tuple:
        return (slice(*tile.inputs), slice(*tile.weight_outputs))

    def function(self, weight_rank: int):
        return FUNCTIONS[weight_rank - 3]

    def arguments(self, geometry: ConvTransposeGeometry) -> tuple:
        g = geometry
        return (None, g.stride, g.padding, g.output_padding, g.groups, g.dilation)

    def patches(self, kernel, geometry: ConvTransposeGeometry) -> PatchView:
        g = geometry
        return PatchView(tuple(kernel), g.stride, g.padding, g.dilation, g.groups, transposed=True,
                         output_padding=g.output_padding)

    def describe(self, weight_rank: int) -> str:
        return f"conv_transpose{weight_rank - 2}d"

    def onnx_values(self, geometry: ConvTransposeGeometry) -> dict:
        g = geometry
        return {"strides": list(g.stride), "pads": list(g.padding) * 2, "output_padding": list(g.output_padding),
                "dilations": list(g.dilation), "group": g.groups}
