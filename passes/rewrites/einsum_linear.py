"""Give an einsum that multiplies an activation by one weight matrix the form ``F.linear``, before matching.

Rules of :class:`EinsumAsLinearPass`, for each ``torch.einsum`` / ``aten.einsum`` call:

* it has two operands: a 2-d tensor attribute ``W`` and an activation ``x`` (in either order);
* its equation (explicit ``->``) contracts ``x``'s last index with one index of
  ``W``, keeps ``x``'s other indices (``...`` included) in order and appends ``W``'s
  other one: ``bi,ij->bj``, ``...i,ji->...j``, ``btd,de->bte``, ``ij,bi->bj``;
* it becomes ``F.linear(x, W)`` when ``W`` is indexed [out, in], else
  ``F.linear(x, torch.t(W))``: a linear crossbar layer named after ``W``, with the
  einsum's module stack (selection by module type) and stack trace;
* any other einsum (a product of two activations, a weight index kept in the
  output elsewhere than last, a repeated index, an implicit output) is left as it is;
* a graph without such an einsum is left untouched (``modified=False``).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..operands import resolve_attribute, tensor_attribute

EINSUM_TARGETS = frozenset({torch.einsum, torch.functional.einsum, torch.ops.aten.einsum.default})
KEPT_META = ("nn_module_stack", "stack_trace")


class EinsumAsLinearPass(PassBase):
    """Rewrite each matmul-shaped einsum with one weight operand as ``F.linear``; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph, modified = graph_module.graph, False
        for node in list(graph.nodes):
            found = _linear_form(graph_module, node)
            if found is None:
                continue
            x, weight, transposed = found
            with graph.inserting_before(node):
                if transposed:
                    weight = graph.call_function(torch.t, (weight,))
                linear = graph.call_function(F.linear, (x, weight))
            linear.meta.update({key: node.meta[key] for key in KEPT_META if key in node.meta})
            node.replace_all_uses_with(linear)
            graph.erase_node(node)
            modified = True
        return PassResult(graph_module, modified)


def _operands(node: fx.Node) -> tuple:
    """An einsum's operands, passed one by one or as one list."""
    rest = node.args[1:]
    return tuple(rest[0]) if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else tuple(rest)


def _linear_form(gm: fx.GraphModule, node: fx.Node) -> Optional[tuple[fx.Node, fx.Node, bool]]:
    """(activation, weight read, weight stored [in, out]) of a matmul-shaped einsum, else None."""
    if node.op != "call_function" or node.target not in EINSUM_TARGETS or node.kwargs:
        return None
    equation, operands = node.args[0], _operands(node)
    if not isinstance(equation, str) or "->" not in equation or len(operands) != 2:
        return None
    inputs, output = equation.replace(" ", "").split("->")
    subscripts = inputs.split(",")
    weights = [tensor_attribute(gm, operand) for operand in operands]
    if len(subscripts) != 2 or weights.count(None) != 1 or not all(isinstance(o, fx.Node) for o in operands):
        return None
    w = 0 if weights[0] is not None else 1
    if resolve_attribute(gm, weights[w]).dim() != 2:
        return None
    transposed = _contraction(subscripts[1 - w], subscripts[w], output)
    return None if transposed is None else (operands[1 - w], operands[w], transposed)


def _contraction(x: str, w: str, output: str) -> Optional[bool]:
    """Whether ``W`` is indexed [in, out] in an equation ``x,w->output`` of a linear layer, else None."""
    if len(w) != 2 or w[0] == w[1] or not w.isalpha() or not x or not x[-1].isalpha():
        return None
    kept, contracted = x[:-1], x[-1]
    if contracted not in w:
        return None
    other = w.replace(contracted, "")
    letters = kept.replace("...", "")
    if other in kept or contracted in kept or len(set(letters)) != len(letters) or (letters and not letters.isalpha()):
        return None
    return w == contracted + other if output == kept + other else None
