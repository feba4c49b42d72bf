"""The devices of a multi-device array in the exported graph.

An ``ai.xbar`` op reads one pair, ``G_plus`` and ``G_minus``. An array of a multi-device converter
(:class:`~xbar.passes.numerics.crossbar.MultiDeviceCrossbar`) keeps each of its devices as its own float32
initializer ``<array>.<device>`` (``fc1_crossbar.g_plus_0``, ``fc1_crossbar.g_minus_0``, ``...g_plus_1``, or
``fc1_crossbar.g_device``), and :func:`wire_devices` computes the pair from them in the graph, with plain
ONNX ops, in the order the simulation sums them::

    G_plus  = ((G_0 * c_0 + G_1 * c_1) + ...) + device_offset      (Mul, Add; no Add for offset 0)
    G_minus = zeros shaped like the weight                        (ConstantOfShape)

so ``G_plus - G_minus`` is the devices' ``W s`` exactly. The node also names its devices and their
significances (``devices``, ``device_significances``, ``device_offset``), so a backend programs the devices
without reading the graph. Built after the exporter's optimiser ran, so nothing folds the sum away.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ...passes.numerics.crossbar import Crossbar, MultiDeviceCrossbar


def wire_devices(model: ir.Model, matched: list[tuple[ir.Node, str]], crossbars: dict[str, Crossbar]) -> None:
    """Replace each multi-device node's G_plus / G_minus initializers by the graph above (once per array)."""
    graph = model.graph
    pairs: dict[str, tuple[ir.Value, ir.Value]] = {}
    outer = _outermost(graph)
    for node, module_name in matched:
        module = crossbars[module_name]
        if not isinstance(module, MultiDeviceCrossbar):
            continue
        if module_name not in pairs:  # in the main graph: a node in a Scan body reads the pair from outside
            pairs[module_name] = _device_pair(graph, outer.get(node, node), module_name, module)
        for index, value in zip((1, 2), pairs[module_name]):
            old = node.inputs[index]
            node.replace_input_with(index, value)
            if not old.uses() and old.name in graph.initializers:
                graph.initializers.pop(old.name)
        node.attributes["devices"] = ir.AttrStrings("devices", [f"{module_name}.{d}" for d in module.device_names])
        node.attributes["device_significances"] = ir.AttrFloat32s("device_significances", list(module.significances))
        node.attributes["device_offset"] = ir.AttrFloat32("device_offset", module.offset)


def _outermost(graph: ir.Graph) -> dict[ir.Node, ir.Node]:
    """Each node of a subgraph (a Scan body) -> the node of ``graph`` that holds it."""
    holders = {}
    for node in graph:
        for attribute in node.attributes.values():
            bodies = {ir.AttributeType.GRAPH: [attribute.value], ir.AttributeType.GRAPHS: attribute.value}
            for body in bodies.get(attribute.type, []):
                holders.update(dict.fromkeys(ir.traversal.RecursiveGraphIterator(body), node))
    return holders


def _constant(graph: ir.Graph, name: str, data: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(data, name=name))
    graph.register_initializer(value)
    return value


def _device_pair(graph: ir.Graph, before: ir.Node, name: str, module: MultiDeviceCrossbar) -> tuple[ir.Value, ir.Value]:
    """The nodes computing one array's G_plus and G_minus from its device initializers, inserted before ``before``."""
    nodes = []

    def emit(op_type: str, inputs: list, output: str, **attributes) -> ir.Value:
        node = ir.node(op_type, inputs, attributes=attributes, name=output, outputs=[ir.Value(name=output)])
        nodes.append(node)
        return node.outputs[0]

    total = None
    for index, (device, significance) in enumerate(zip(module.device_names, module.significances)):
        conductance = _constant(graph, f"{name}.{device}", getattr(module, device).detach().float().numpy())
        factor = _constant(graph, f"{name}.{device}_significance", np.array(significance, dtype=np.float32))
        term = emit("Mul", [conductance, factor], f"{name}_{device}_weighted")
        total = term if total is None else emit("Add", [total, term], f"{name}_sum_{index}")
    if module.offset:
        total = emit("Add", [total, _constant(graph, f"{name}.device_offset", np.array(module.offset, np.float32))],
                     f"{name}_g_plus")
    shape = _constant(graph, f"{name}.weight_shape", np.array(module.shape, dtype=np.int64))
    zeros = emit("ConstantOfShape", [shape], f"{name}_g_minus", value=ir.tensor(np.zeros(1, np.float32)))
    graph.insert_before(before, nodes)
    return total, zeros
