"""Linear layers: ``nn.Linear``, ``F.linear``, and matmul / mm / addmm with a constant weight.

The canonical op is ``F.linear(x, W)`` with W [out, in] (a weight the graph stores
[in, out] is read through ``torch.t``); channels are the last dim.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..arrays import Tile, WeightLayout
from ..operands import argument, optional_bias, tensor_attribute, weight_operand
from .base import COMPUTED_BIAS, LayerKind, Match, Operands, Refused, module_operands

aten = torch.ops.aten

LINEAR_TARGETS = frozenset({F.linear, torch._C._nn.linear, aten.linear.default})
MATMUL_TARGETS = frozenset({torch.matmul, operator.matmul, torch.mm, aten.matmul.default, aten.mm.default})
ADDMM_TARGETS = frozenset({torch.addmm, aten.addmm.default})



class Linear(LayerKind):
    """``y = x W^T``; see the module docstring."""

    name = "linear"
    onnx_op = "CrossbarLinear"
    modules = (nn.Linear,)
    targets = LINEAR_TARGETS | MATMUL_TARGETS | ADDMM_TARGETS
    channel_dim = -1

    def match_module(self, node: fx.Node, module: nn.Module) -> Match:
        return module_operands(node, module)

    def match_call(self, gm: fx.GraphModule, node: fx.Node) -> Match:
        if node.target in LINEAR_TARGETS:
            weight, transposed = weight_operand(gm, argument(node, 1, "weight"))
            usable, bias = optional_bias(gm, node, 2)
            if weight is None:
                return None
            if not usable:
                return COMPUTED_BIAS
            return Operands(0, weight, bias, weight_transposed=transposed)
        if node.target in MATMUL_TARGETS:
            weight, transposed = weight_operand(gm, node.args[1])
            return None if weight is None else Operands(0, weight, None, weight_transposed=not transposed)
        if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
            return Refused("addmm with beta or alpha other than 1")  # a scaled sum is not a layer
        weight, transposed = weight_operand(gm, node.args[2])
        bias = tensor_attribute(gm, node.args[0])
        if weight is None:
            return None
        if bias is None:
            return COMPUTED_BIAS
        return Operands(1, weight, bias, weight_transposed=not transposed)

    def layout(self, weight_shape, geometry) -> WeightLayout:
        outputs, inputs = weight_shape
        return WeightLayout(1, inputs, outputs)

    def block_index(self, tile: Tile) -> tuple:
        return (slice(*tile.outputs), slice(*tile.weight_inputs))

    def function(self, weight_rank: int):
        return F.linear

    def output_like(self, x: Tensor, weight: Tensor, geometry) -> Tensor:
        # Not F.linear: on an input whose batch is not dim 0 (a tile's slice of a
        # transposed activation), matmul's fold check guards on the batch size.
        return x.new_empty((*x.shape[:-1], weight.shape[0]))
