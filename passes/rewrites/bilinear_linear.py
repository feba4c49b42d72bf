"""Give a bilinear layer the form of a linear layer on the outer product of its inputs, before matching.

``y_k = x1^T A_k x2 + b_k`` is ``A' z + b`` with ``z = (x1 outer x2)`` flattened and
``A' = A.reshape(out, in1 * in2)``: the outer product is digital, the matmul a crossbar.

Rules of :class:`BilinearAsLinearPass`, for each ``nn.Bilinear`` call, ``F.bilinear``
call or ``aten.bilinear`` with a weight (and bias) that are tensor attributes:

* the weight is read by this call only; it is then held as the 2-d ``A'`` under
  its own name (``bil.weight`` becomes [out, in1 * in2]), so it is one linear
  crossbar layer named after it, as any weight;
* the call becomes ``<call>_outer`` (:func:`outer_product`, digital) and
  ``F.linear(z, A', b)``, with the call's module stack and stack trace;
* a weight read elsewhere too, or a computed weight or bias, is left as it is;
* a graph without such a call is left untouched (``modified=False``).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..operands import argument, resolve_attribute, tensor_attribute

TARGETS = frozenset({torch.bilinear, F.bilinear, torch.ops.aten.bilinear.default})
KEPT_META = ("nn_module_stack", "stack_trace")


def outer_product(x1: Tensor, x2: Tensor) -> Tensor:
    """``x1 outer x2`` over the last dims, flattened: [..., in1 * in2], row-major as ``A.reshape`` reads."""
    return (x1.unsqueeze(-1) * x2.unsqueeze(-2)).flatten(-2)


class BilinearAsLinearPass(PassBase):
    """Rewrite each bilinear layer as an outer product and a linear layer; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph, modified = graph_module.graph, False
        for node in list(graph.nodes):
            found = _bilinear(graph_module, node)
            if found is None:
                continue
            x1, x2, weight, bias = found
            _hold_as_matrix(graph_module, weight)
            with graph.inserting_before(node):
                outer = graph.create_node("call_function", outer_product, (x1, x2), name=f"{node.name}_outer")
                reads = [graph.get_attr(name) for name in (weight, bias) if name is not None]
                linear = graph.call_function(F.linear, (outer, *reads))
            for new in (outer, linear):
                new.meta.update({key: node.meta[key] for key in KEPT_META if key in node.meta})
            node.replace_all_uses_with(linear)
            graph.erase_node(node)
            for read in [n for n in graph.nodes if n.op == "get_attr" and n.target in (weight, bias) and not n.users]:
                graph.erase_node(read)
            modified = True
        return PassResult(graph_module, modified)


def _bilinear(gm: fx.GraphModule, node: fx.Node) -> Optional[tuple]:
    """(x1, x2, weight name, bias name) of a bilinear call whose weight only it reads, else None."""
    if node.op == "call_module" and isinstance(module := gm.get_submodule(node.target), nn.Bilinear):
        weight, bias = f"{node.target}.weight", None if module.bias is None else f"{node.target}.bias"
        calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == node.target]
        if len(calls) != 1:
            return None
    elif node.op == "call_function" and node.target in TARGETS:
        weight = tensor_attribute(gm, argument(node, 2, "weight"))
        bias_operand = argument(node, 3, "bias")
        bias = tensor_attribute(gm, bias_operand)
        if weight is None or (bias_operand is not None and bias is None):
            return None
    else:
        return None
    readers = [user for n in gm.graph.nodes if n.op == "get_attr" and n.target == weight for user in n.users]
    if any(reader is not node for reader in readers) or resolve_attribute(gm, weight).dim() != 3:
        return None
    return node.args[0], node.args[1], weight, bias


def _hold_as_matrix(gm: fx.GraphModule, name: str) -> None:
    """Replace the [out, in1, in2] weight ``name`` by its [out, in1 * in2] matrix, under the same name."""
    owner, _, attribute = name.rpartition(".")
    holder = gm.get_submodule(owner) if owner else gm
    weight = getattr(holder, attribute)
    matrix = weight.detach().reshape(weight.shape[0], -1).clone()
    setattr(holder, attribute, nn.Parameter(matrix, weight.requires_grad) if isinstance(weight, nn.Parameter)
            else matrix)
