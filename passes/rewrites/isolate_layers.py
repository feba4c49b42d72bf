"""Rewrite each crossbar layer into one canonical weight-only op plus a digital bias.

Rules:
* the layer node becomes ``<layer>_mvm``, its kind's canonical op on the activation
  and the weight alone (``F.linear(x, W)``, ``F.conv2d(x, W, None, stride, ...)``,
  ...); a weight stored [in, out] (matmul forms) is read through ``torch.t``;
* a bias becomes a separate ``<layer>_add_bias`` node after it (kept digital);
* every user of the old node reads the new output; the old node is erased;
* no plans: the graph is left untouched (``modified=False``).
"""

from __future__ import annotations

import torch
from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..errors import PostconditionError
from ..numerics import periphery
from ..operands import resolve_attribute
from ..plan import LayerPlan, NodeTag, Role, add_node, check_names, erase_if_unused, tagged


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
                kind = layer.kind
                target = kind.function(resolve_attribute(graph_module, layer.weight).dim())
                out = mvm = add_node(graph, "call_function", target,
                                     (activation, weight, *kind.arguments(layer.geometry)), tag=NodeTag(Role.MVM, plan))
                if layer.bias is not None:
                    out = add_node(graph, "call_function", periphery.add_bias,
                                   (mvm, _read(graph, operands, layer.bias), layer.channel_dim),
                                   tag=NodeTag(Role.ADD_BIAS, plan))
            node.replace_all_uses_with(out)
            graph.erase_node(node)
            for operand in operands:
                erase_if_unused(graph, operand)
        return PassResult(graph_module, bool(self.plans))

    def ensures(self, graph_module: fx.GraphModule) -> None:
        found = len(tagged(graph_module.graph, Role.MVM))
        if found != len(self.plans):
            raise PostconditionError(f"{type(self).__name__}: expected {len(self.plans)} crossbar nodes, found {found}")
        check_names(graph_module.graph, type(self).__name__)
