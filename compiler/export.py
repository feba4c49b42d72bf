"""``export_onnx``: the annotated ONNX file a crossbar backend programs its arrays from.

The contract is DESIGN.md section 4. The route:

1. on a copy of the converted model, :class:`~passes.export_ops.CrossbarToCustomOpsPass`
   turns each ``<layer>_crossbar`` module call into an ``xbar::`` custom op;
2. ``torch.export`` captures it with a dynamic batch dimension, and
   ``torch.onnx.export`` translates each custom op into one ``ai.xbar`` node
   (:mod:`compiler.onnx_ops`) and optimises the rest of the graph;
3. the ONNX IR is finished: layer tensors the optimiser merged are separated
   again, crossbar nodes are named after their layer, the ``ai.xbar`` function
   bodies and the metadata are added, the exporter's per-node debug
   properties (stack traces, which change from run to run) are dropped;
4. every layer is checked in the graph actually produced (its node, its G+ / G-
   / bias initializers, its attributes), then ``onnx.checker`` runs with
   ``full_check`` and the file is written atomically.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import onnx
import onnx_ir as ir
import torch
from torch import fx

from passes.capture import _dynamic_batch
from passes.crossbar import Crossbar
from passes.export_ops import CrossbarToCustomOpsPass

from . import onnx_ops
from .pipeline import META, NoCrossbarLayersWarning, run_passes

MAX_IR_VERSION = 13
"""The newest ONNX IR version ONNX Runtime 1.31 loads."""

TENSOR_INPUTS = {1: "g_plus", 2: "g_minus", 3: "bias"}
"""ai.xbar node input index -> the Crossbar buffer it must be."""


class ExportError(RuntimeError):
    """The model could not be exported, or the exported graph broke the ONNX contract."""


def export_onnx(converted: fx.GraphModule, example_inputs: Sequence, path: Union[str, os.PathLike]) -> Path:
    """Write ``converted`` (from :func:`compiler.convert`) as annotated ONNX to ``path``.

    Each crossbar layer becomes one ``ai.xbar`` node (see :mod:`compiler.onnx_ops`)
    with its G+ / G- as float32 initializers ``<layer>_crossbar.g_plus`` /
    ``.g_minus`` in microsiemens; the batch dimension is dynamic. The same model
    gives byte-identical files; a failed export leaves no file. Returns the path.
    """
    originals = _crossbar_modules(converted)
    if not originals:
        warnings.warn("the model has no crossbar layer: exporting plain ONNX without ai.xbar nodes",
                      NoCrossbarLayersWarning, stacklevel=2)
    graph_module = run_passes(copy.deepcopy(converted), [CrossbarToCustomOpsPass()])
    crossbars = {name: graph_module.get_submodule(name) for name in originals}  # with the pass's zero biases
    model = _to_onnx(graph_module, tuple(example_inputs))
    _separate_merged_tensors(model, crossbars)
    _finish_nodes(model, crossbars)
    _check_layers(model, crossbars)
    _add_functions(model)
    model.metadata_props.update(_metadata(converted, originals))
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    proto = ir.serde.serialize_model(model)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported model fails onnx.checker: {_first_line(exc)}") from exc
    path = Path(path)
    _write_atomically(proto.SerializeToString(), path)
    return path


def _crossbar_modules(converted: fx.GraphModule) -> dict[str, Crossbar]:
    """Module name -> Crossbar of a converted model; refuses anything else."""
    if not isinstance(converted, fx.GraphModule) or META not in converted.meta:
        raise ExportError("export_onnx() expects the GraphModule returned by compiler.convert()")
    tagged = [n.name for n in converted.graph.nodes if (tag := n.meta.get(META)) and tag.role != "crossbar"]
    if tagged:
        raise ExportError(f"the model is prepared but not converted (e.g. node {tagged[0]!r}): "
                          "call compiler.convert() first")
    return {name: m for name, m in converted.named_modules() if isinstance(m, Crossbar)}


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _to_onnx(graph_module: fx.GraphModule, example_inputs: tuple) -> ir.Model:
    """Capture with a dynamic batch and translate; errors name the node that failed."""
    inputs, shapes = _dynamic_batch(example_inputs)
    try:
        program = torch.export.export(graph_module, inputs, dynamic_shapes=shapes)
    except Exception as exc:  # any tracer failure is reported as one export error
        raise ExportError(f"torch.export could not capture the converted model: {_first_line(exc)}") from exc
    try:
        onnx_program = torch.onnx.export(program, inputs, dynamo=True, opset_version=onnx_ops.OPSET,
                                         custom_translation_table=onnx_ops.TRANSLATIONS, verbose=False)
    except torch.onnx.OnnxExporterError as exc:
        raise ExportError(_translation_failure(exc, program)) from exc
    return onnx_program.model


def _translation_failure(exc: BaseException, program: torch.export.ExportedProgram) -> str:
    """One line naming the node (and op) the ONNX translation failed on."""
    for error in _causes(exc):
        if isinstance(error, torch.onnx.OnnxExporterError) and "when translating node" in str(error):
            for node in program.graph.nodes:
                if f"%{node.name} :" in str(error):
                    return (f"cannot translate node {node.name!r} ({node.target}) to ONNX: "
                            f"{_first_line(error.__cause__ or error)}")
    return f"the ONNX exporter failed: {_first_line(exc)}"


def _causes(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def _xbar_nodes(model: ir.Model) -> list[ir.Node]:
    return [n for n in model.graph if n.domain == onnx_ops.DOMAIN]


def _module_of(node: ir.Node, layers: dict[str, str]) -> str:
    """The Crossbar module name of an ai.xbar node, by its ``layer`` attribute."""
    layer = node.attributes["layer"].as_string()
    if layer not in layers:
        raise ExportError(f"ai.xbar node {node.name!r} names layer {layer!r}, which the model does not have")
    return layers[layer]


def _layer_index(crossbars: dict[str, Crossbar]) -> dict[str, str]:
    return {module.settings.layer: name for name, module in crossbars.items()}


def _separate_merged_tensors(model: ir.Model, crossbars: dict[str, Crossbar]) -> None:
    """Give each layer back its own G+ / G- / bias initializer where the exporter's
    optimiser merged equal initializers (e.g. two zero biases) into one."""
    graph = model.graph
    layers = _layer_index(crossbars)
    for node in _xbar_nodes(model):
        module_name = _module_of(node, layers)
        for index, attr in TENSOR_INPUTS.items():
            value, expected = node.inputs[index], f"{module_name}.{attr}"
            if value is None or value.name == expected or value.const_value is None:
                continue
            data = getattr(crossbars[module_name], attr).detach().numpy()
            if not np.array_equal(value.const_value.numpy(), data):
                continue  # not a merge: _check_layers reports it
            if expected not in graph.initializers:
                graph.register_initializer(ir.Value(name=expected, const_value=ir.tensor(data, name=expected)))
            node.replace_input_with(index, graph.initializers[expected])


def _finish_nodes(model: ir.Model, crossbars: dict[str, Crossbar]) -> None:
    """Name each ai.xbar node after its module; drop per-node exporter debug properties."""
    layers = _layer_index(crossbars)
    taken = {n.name for n in model.graph}
    for node in _xbar_nodes(model):
        base = _module_of(node, layers)
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        node.name = name
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        node.metadata_props.clear()


def _add_functions(model: ir.Model) -> None:
    """Add the function body of each ai.xbar op the graph uses, and the domain's opset."""
    for op_type in sorted({n.op_type for n in _xbar_nodes(model)}):
        function = ir.serde.deserialize_function(onnx_ops.FUNCTIONS[op_type].to_function_proto())
        model.functions[function.identifier()] = function
        model.opset_imports[onnx_ops.DOMAIN] = onnx_ops.VERSION


def _check_layers(model: ir.Model, crossbars: dict[str, Crossbar]) -> None:
    """Raise :class:`ExportError` unless every layer has its node, tensors and attributes."""
    layers = _layer_index(crossbars)
    seen = set()
    for node in _xbar_nodes(model):
        module_name = _module_of(node, layers)
        module = crossbars[module_name]
        seen.add(module_name)
        expected_op = "CrossbarLinear" if module.geometry is None else "CrossbarConv"
        if node.op_type != expected_op:
            raise ExportError(f"layer {module_name}: exported as {node.op_type}, expected {expected_op}")
        for index, attr in TENSOR_INPUTS.items():
            _check_tensor(model, node, index, f"{module_name}.{attr}", getattr(module, attr))
        _check_attributes(node, module)
    missing = sorted(set(crossbars) - seen)
    if missing:
        raise ExportError(f"layers without an ai.xbar node in the exported graph: {missing}")


def _check_tensor(model: ir.Model, node: ir.Node, index: int, expected: str, tensor: torch.Tensor) -> None:
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is None or value.name != expected or model.graph.initializers.get(expected) is not value:
        got = "nothing" if value is None else repr(value.name)
        raise ExportError(f"node {node.name}: input {index} should be the initializer {expected!r}, got {got}")
    data = value.const_value.numpy()
    if data.dtype != np.float32 or not np.array_equal(data, tensor.detach().numpy()):
        raise ExportError(f"node {node.name}: initializer {expected!r} does not hold the layer's float32 tensor")


def _check_attributes(node: ir.Node, module: Crossbar) -> None:
    expected = onnx_ops.node_attributes(module.settings)
    if module.geometry is not None:
        g = module.geometry
        expected |= onnx_ops.conv_attributes(g.stride, g.padding, g.dilation, g.groups)
    for key, value in expected.items():
        attr = node.attributes.get(key)
        got = None if attr is None else attr.value
        if isinstance(value, float) and got is not None:
            same = np.float32(got) == np.float32(value)
        else:
            same = got == value or (isinstance(got, Sequence) and list(got) == list(value))
        if not same:
            raise ExportError(f"node {node.name}: attribute {key} should be {value!r}, got {got!r}")


def _metadata(converted: fx.GraphModule, crossbars: dict[str, Crossbar]) -> dict[str, str]:
    from . import __version__  # compiler/__init__ imports this module before defining it

    config = converted.meta[META]["config"]
    return {
        "xbar.version": __version__,
        "xbar.domain": f"{onnx_ops.DOMAIN}:{onnx_ops.VERSION}",
        "xbar.converter": str(config.converter),
        "xbar.hardware_config": json.dumps(config.to_dict(), sort_keys=True, allow_nan=False),
        "xbar.layers": json.dumps([_layer_summary(name, m) for name, m in crossbars.items()],
                                  sort_keys=True, allow_nan=False),
    }


def _layer_summary(name: str, module: Crossbar) -> dict:
    summary = {
        "node": name,
        "op": "CrossbarLinear" if module.geometry is None else "CrossbarConv",
        "source_weight": module.source_weight,
        "shape": list(module.g_plus.shape),
        "has_bias": module.bias is not None,
        "g_plus": f"{name}.g_plus",
        "g_minus": f"{name}.g_minus",
        "bias": f"{name}.bias",
        **module.settings.as_dict(),
    }
    if module.geometry is not None:
        g = module.geometry
        summary |= onnx_ops.conv_attributes(g.stride, g.padding, g.dilation, g.groups)
    return summary


def _write_atomically(data: bytes, path: Path) -> None:
    """Write to a temporary file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
