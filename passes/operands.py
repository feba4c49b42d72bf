"""Read the operands of a graph call: arguments by position or keyword, tensor attributes, weights.

Shared by the layer kinds (:mod:`xbar.passes.kinds`), which say where each kind's
operands sit, and by the passes that read a layer's weight back.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import fx, nn

aten = torch.ops.aten

TRANSPOSE_TARGETS = {torch.t, aten.t.default}


def argument(node: fx.Node, index: int, name: str, default=None):
    """The argument at position ``index`` or keyword ``name`` of a call, else ``default``."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def ntuple(value, n: int) -> tuple:
    """A per-dimension tuple of ``n`` entries from an int or a sequence."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n


def resolve_attribute(gm: nn.Module, qualname: str):
    """The object at dotted path ``qualname`` below ``gm``, or None."""
    obj = gm
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def tensor_attribute(gm: fx.GraphModule, node) -> Optional[str]:
    """The qualified name of a get_attr node that reads a tensor, else None."""
    if isinstance(node, fx.Node) and node.op == "get_attr":
        if isinstance(resolve_attribute(gm, node.target), torch.Tensor):
            return node.target
    return None


def weight_operand(gm: fx.GraphModule, node) -> tuple[Optional[str], bool]:
    """(weight name, transposed by the graph) for a tensor attribute read directly or
    through one transpose, else (None, False)."""
    name = tensor_attribute(gm, node)
    if name is not None:
        return name, False
    if isinstance(node, fx.Node) and (
        (node.op == "call_function" and node.target in TRANSPOSE_TARGETS)
        or (node.op == "call_method" and node.target == "t")
    ):
        name = tensor_attribute(gm, node.args[0])
        return name, name is not None
    return None, False


def optional_bias(gm: fx.GraphModule, node: fx.Node, index: int) -> tuple[bool, Optional[str]]:
    """(usable, name) for the bias operand at ``index``: absent (True, None), a tensor
    attribute (True, name), or an activation, which no crossbar layer takes (False, None)."""
    operand = argument(node, index, "bias")
    if operand is None:
        return True, None
    name = tensor_attribute(gm, operand)
    return name is not None, name
