"""Rewrite each crossbar layer into one canonical weight-only op plus a digital bias.

Rules:
* the layer node becomes ``<layer>_mvm``: ``F.linear(x, W)`` or
  ``F.convNd(x, W, None, stride, padding, dilation, groups)``; a weight stored
  [in, out] (matmul forms) is read through ``torch.t`` so W is always [out, in, ...];
* a bias becomes a separate ``<layer>_add_bias`` node after it (kept digital);
* every user of the old node reads the new output; the old node is erased;
* no plans: the graph is left untouched (``modified=False``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from . import periphery
from .infra import PostconditionError
from .plan import LayerPlan, NodeTag, add_node, check_names, erase_if_unused, tagged

CONV_FUNCTIONS = {"conv1d": F.conv1d, "conv2d": F.conv2d, "conv3d": F.conv3d}


def _read(graph: fx.Graph, operands: list[fx.Node], qualname: str) -> fx.Node:
    """The layer's existing get_attr node for ``qualname``, or a new one."""
    for operand in operands:
        if operand.op == "get_attr" and operand.target == qualname:
            return operand
    return graph.get_attr(qualname)


class IsolateCrossbarLayersPass(PassBase):
    """Canonicalise the planned layers; see the module docstring for the rules."""

    def __init__(self, plans: list[LayerPlan]):
        super().__init__()
        self.plans = plans

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        for plan in self.plans:
            layer = plan.layer
            node = layer.node
            activation = node.args[layer.activation_index]
            operands = list(dict.fromkeys(a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)))
            with graph.inserting_before(node):
                weight = _read(graph, operands, layer.weight)
                if layer.weight_transposed:
                    weight = graph.call_function(torch.t, (weight,))
                if layer.geometry is None:
                    args = (activation, weight)
                    target = F.linear
                else:
                    g = layer.geometry
                    args = (activation, weight, None, g.stride, g.padding, g.dilation, g.groups)
                    target = CONV_FUNCTIONS[layer.kind]
                out = mvm = add_node(graph, "call_function", target, args, tag=NodeTag("mvm", plan))
                if layer.bias is not None:
                    out = add_node(graph, "call_function", periphery.add_bias,
                                   (mvm, _read(graph, operands, layer.bias), layer.channel_dim),
                                   tag=NodeTag("add_bias", plan))
            node.replace_all_uses_with(out)
            graph.erase_node(node)
            for operand in operands:
                erase_if_unused(graph, operand)
        return PassResult(graph_module, bool(self.plans))

    def ensures(self, graph_module: fx.GraphModule) -> None:
        found = len(tagged(graph_module.graph, "mvm"))
        if found != len(self.plans):
            raise PostconditionError(f"{type(self).__name__}: expected {len(self.plans)} crossbar nodes, found {found}")
        check_names(graph_module.graph, type(self).__name__)
