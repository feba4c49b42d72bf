"""The ``ai.xbar`` nodes of an exported ONNX graph, matched to the arrays they came from.

Check the graph you get, not the one you asked for: torch.onnx's optimiser folds
constants and merges equal initializers. After it ran:

* :func:`match_nodes` pairs each ``ai.xbar`` node (in a ``Scan`` body too, reading the
  graph's initializers from the outer scope) with its Crossbar module by
  its ``layer`` / ``tile_row`` / ``tile_col`` attributes;
* :func:`restore_layer_tensors` gives a node back its own G+ / G- / bias
  initializer where the optimiser merged equal ones (two zero biases, two equal
  small weights), so every array keeps tensors named after it;
* :func:`name_nodes` names each node after its module (``fc1_crossbar``);
* :func:`check_layers` raises :class:`ExportError` unless every module has a
  node of its op, reading its own float32 initializers and carrying every
  attribute a backend needs.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ...passes.errors import ExportError
from ...passes.numerics.crossbar import Crossbar
from ...passes.rewrites.export_ops import TENSORS
from . import ops as onnx_ops

TENSOR_INPUT = {name: index for index, name in enumerate(TENSORS, start=1)}
"""Crossbar buffer -> its input index on the ai.xbar node (after the activation)."""


def op_type(module: Crossbar) -> str:
    return module.kind.onnx_op


def expected_attributes(module: Crossbar) -> dict:
    """The attributes the module's node must carry."""
    return onnx_ops.node_attributes(module.kind, module.settings, module.geometry)


def xbar_nodes(model: ir.Model) -> list[ir.Node]:
    """The graph's ai.xbar nodes, those in the body of a ``Scan`` (a recurrent layer's step) too."""
    return [n for n in ir.traversal.RecursiveGraphIterator(model.graph) if n.domain == onnx_ops.DOMAIN]


def match_nodes(model: ir.Model, crossbars: dict[str, Crossbar]) -> list[tuple[ir.Node, str]]:
    """(node, module name) for each ai.xbar node; a shared module may have several nodes."""
    by_array = {(m.settings.layer, m.settings.tile_row, m.settings.tile_col): name for name, m in crossbars.items()}
    matched = []
    for node in xbar_nodes(model):
        attributes = node.attributes
        key = tuple(attributes[k].value if k in attributes else None for k in ("layer", "tile_row", "tile_col"))
        if key not in by_array:
            raise ExportError(f"ai.xbar node {node.name!r} is layer {key[0]!r}, tile {key[1:]}, which the "
                              "model does not have")
        matched.append((node, by_array[key]))
    return matched


def restore_layer_tensors(model: ir.Model, matched: list, crossbars: dict[str, Crossbar]) -> None:
    """Point each node back at its own initializers where the optimiser merged equal ones."""
    graph = model.graph
    for node, module_name in matched:
        for attr, index in TENSOR_INPUT.items():
            value, own_name = node.inputs[index], f"{module_name}.{attr}"
            if value is None or value.name == own_name or value.const_value is None:
                continue
            data = getattr(crossbars[module_name], attr).detach().numpy()
            if not np.array_equal(value.const_value.numpy(), data):
                continue  # not a merge: check_layers reports it
            if own_name not in graph.initializers:
                graph.register_initializer(ir.Value(name=own_name, const_value=ir.tensor(data, name=own_name)))
            node.replace_input_with(index, graph.initializers[own_name])


def name_nodes(model: ir.Model, matched: list) -> None:
    """``<module>`` for the first node of a module, ``<module>_1``, ... for more call sites."""
    taken = {n.name for n in ir.traversal.RecursiveGraphIterator(model.graph)}
    for node, module_name in matched:
        name, count = module_name, 0
        while name in taken:
            count += 1
            name = f"{module_name}_{count}"
        taken.add(name)
        node.name = name


def check_layers(model: ir.Model, matched: list, crossbars: dict[str, Crossbar]) -> None:
    """Raise :class:`ExportError` unless every module has its node, tensors and attributes."""
    for node, module_name in matched:
        module = crossbars[module_name]
        if node.op_type != op_type(module):
            raise ExportError(f"{module_name} was exported as {node.op_type}, expected {op_type(module)}")
        for attr, index in TENSOR_INPUT.items():
            _check_tensor(model, node, index, f"{module_name}.{attr}", getattr(module, attr).detach().numpy())
        _check_attributes(node, expected_attributes(module))
    missing = sorted(set(crossbars) - {name for _, name in matched})
    if missing:
        raise ExportError(f"no ai.xbar node in the exported graph for {missing}")


def _check_tensor(model: ir.Model, node: ir.Node, index: int, name: str, data: np.ndarray) -> None:
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is None or value.name != name or model.graph.initializers.get(name) is not value:
        got = "nothing" if value is None else repr(value.name)
        raise ExportError(f"node {node.name}: input {index} should be the initializer {name!r}, got {got}")
    stored = value.const_value.numpy()
    if stored.dtype != np.float32 or not np.array_equal(stored, data):
        raise ExportError(f"node {node.name}: initializer {name!r} does not hold the array's float32 tensor")


def _check_attributes(node: ir.Node, expected: dict) -> None:
    for key, value in expected.items():
        attr = node.attributes.get(key)
        got = None if attr is None else attr.value
        if isinstance(got, (list, tuple)):
            same = list(got) == list(value)
        elif isinstance(value, float) and got is not None:
            same = np.float32(got) == np.float32(value)  # ONNX float attributes are float32
        else:
            same = got == value
        if not same:
            raise ExportError(f"node {node.name}: attribute {key} should be {value!r}, got {got!r}")
