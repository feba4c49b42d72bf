"""Export only: give torch.onnx in-place aten ops in their functional form where that changes nothing.

Rules of :class:`FunctionalInPlaceOpsPass`, for each ``call_function`` of an aten op:

* an in-place op (``hardtanh_(x)``, ``relu_(x)``: it mutates ``self`` and nothing
  else) becomes its functional overload, with the same arguments and users;
* only where nothing else can see the mutation: ``x`` is the fresh output of an
  aten op and this op is its only reader (graph inputs, views and values read
  again are left alone);
* a graph without such ops is left untouched.
"""

from __future__ import annotations

import torch
from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult


class FunctionalInPlaceOpsPass(PassBase):
    """Replace an in-place aten op (``hardtanh_(x)``, ``relu_(x)``) by its functional form
    where nothing else can see the mutation: ``x`` is the fresh output of an aten op and
    read by this op only.

    torch.onnx's decomposition turns an in-place op into its functional form by tracing
    its Python reference under symbolic shapes, once per call: for mobilenet_v2's 35
    ReLU6 that was half of the export. The functional op is translated directly.
    """

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        modified = False
        for node in graph_module.graph.nodes:
            functional = _functional_form(node)
            if functional is not None:
                node.target, modified = functional, True
        return PassResult(graph_module, modified)


def _functional_form(node: fx.Node):
    """The functional overload of an in-place aten call whose mutation nothing else sees, or None."""
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return None
    schema = node.target._schema
    namespace, _, name = schema.name.partition("::")
    mutated = [a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write]
    if namespace != "aten" or not name.endswith("_") or mutated != ["self"] or not node.args:
        return None
    functional = getattr(getattr(torch.ops.aten, name[:-1], None), node.target._overloadname, None)
    if functional is None or functional._schema.is_mutable or \
            [a.name for a in functional._schema.arguments] != [a.name for a in schema.arguments]:
        return None
    source = node.args[0]
    fresh = (isinstance(source, fx.Node) and source.op == "call_function"
             and isinstance(source.target, torch._ops.OpOverload)
             and all(r.alias_info is None for r in source.target._schema.returns))
    return functional if fresh and list(source.users) == [node] else None
