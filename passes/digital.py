"""The layers with a weight that stay digital, and why, so nothing is left out silently.

:func:`digital_layers` reads a captured GraphModule (before any rewrite) and
lists every call that reads a weight matrix (a tensor attribute of 2 or more
dims, directly or through a transpose or slice) which no crossbar layer
consumes. Vectors (biases, norm scales) are not layers and are not listed.

Rules:
* a module call is named after the module; any other call as matching names a
  layer (``fc.weight`` -> ``fc``), else after the module that owns the weight
  (``lstm.weight_ih_l0`` -> ``lstm``); the calls of one layer are one entry;
* its reason is, in this order: why the selection or a rule left a found layer
  digital (the plan's), why a layer kind refused the call (matching's), else
  that no layer kind matches the op.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import fx

from .digital_layer import DigitalLayer
from .matching import layer_name
from .operands import TRANSPOSE_TARGETS, resolve_attribute
from .plan import WEIGHT_VIEWS

NO_KIND = "no crossbar layer kind matches this op"


def digital_layers(gm: fx.GraphModule, consumed: set[str], reasons: Mapping[str, str]) -> tuple[DigitalLayer, ...]:
    """The layers of ``gm`` whose weight matrices no crossbar layer consumes, in graph order.

    ``consumed`` holds the weights of the planned crossbar layers; ``reasons`` maps
    a node name to why it stays digital (the plan's and matching's reasons).
    """
    found: dict[str, dict] = {}
    for node in gm.graph.nodes:
        weights = [w for w in _weights_read(gm, node) if w not in consumed]
        if not weights:
            continue
        name = node.target if node.op == "call_module" else _layer_of(weights[0])
        entry = found.setdefault(name, {"ops": [], "weights": [], "reason": None})
        entry["ops"] += [op for op in [_op_text(gm, node)] if op not in entry["ops"]]
        entry["weights"] += [w for w in weights if w not in entry["weights"]]
        entry["reason"] = entry["reason"] or reasons.get(node.name)
    return tuple(DigitalLayer(name, tuple(e["ops"]), tuple(e["weights"]),
                              tuple(tuple(resolve_attribute(gm, w).shape) for w in e["weights"]),
                              e["reason"] or NO_KIND) for name, e in found.items())


def _weights_read(gm: fx.GraphModule, node: fx.Node) -> list[str]:
    """The weight matrices a call reads: a module's own parameters, or its tensor-attribute operands."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return [f"{node.target}.{name}" for name, p in module.named_parameters() if p.dim() >= 2]
    if node.op not in ("call_function", "call_method") or _is_view_of_weight(gm, node):
        return []
    operands = []
    fx.node.map_arg((node.args, node.kwargs), operands.append)
    return [w for w in (_weight_behind(gm, operand) for operand in operands) if w is not None]


def _weight_behind(gm: fx.GraphModule, node: fx.Node):
    """The name of the weight matrix ``node`` reads, through transposes and slices, else None."""
    while _is_view(node):
        node = node.args[0]
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value = resolve_attribute(gm, node.target)
    return node.target if isinstance(value, torch.Tensor) and value.dim() >= 2 else None


def _is_view(node) -> bool:
    if not isinstance(node, fx.Node) or not node.args:
        return False
    return (node.op == "call_function" and node.target in WEIGHT_VIEWS | TRANSPOSE_TARGETS) or (
        node.op == "call_method" and node.target == "t")


def _is_view_of_weight(gm: fx.GraphModule, node: fx.Node) -> bool:
    return _is_view(node) and _weight_behind(gm, node) is not None


def _layer_of(weight: str) -> str:
    """``fc.weight`` -> ``fc``; ``lstm.weight_ih_l0`` -> ``lstm``; ``W`` -> ``W``."""
    name = layer_name(weight)
    if name != weight:
        return name
    return weight.rpartition(".")[0] or weight


def _op_text(gm: fx.GraphModule, node: fx.Node) -> str:
    """``nn.LSTM``, ``aten.einsum``, ``einsum``: what the call runs, briefly."""
    if node.op == "call_module":
        return f"nn.{type(gm.get_submodule(node.target)).__name__}"
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return f"aten.{target._schema.name.split('::')[-1]}"
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))
