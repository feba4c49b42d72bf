"""``export_onnx``: the annotated ONNX file a crossbar backend programs its arrays from.

The contract is the README's "The ONNX contract". The route:

1. on a copy of the converted model, :class:`~xbar.passes.rewrites.export_ops.CrossbarToCustomOpsPass`
   turns each ``<layer>_crossbar`` module call into an ``xbar::`` custom op, and
   :class:`FunctionalInPlaceOpsPass` in-place activations into their functional form;
2. ``torch.export`` captures it with the dynamic shapes :func:`xbar.prepare` settled on (the
   record's; by default the batch, and a sequence dimension where there is one), and
   ``torch.onnx.export`` translates each custom op into one ``ai.xbar`` node
   (:mod:`xbar.compiler.onnx.ops`) and optimises the rest of the graph;
3. the graph actually produced is repaired where the optimiser merged layer
   tensors, its ``ai.xbar`` nodes named and checked (:mod:`xbar.compiler.onnx.layers`), its dynamic
   dimensions named after their ``Dim`` (``batch``, ``seq``; not the tracer's ``s77``);
   the function bodies and the metadata are added and the exporter's per-node
   debug properties dropped (their stack traces change from run to run);
4. the file is written, checked by ``onnx.checker`` with ``full_check`` from disk and
   moved into place; past protobuf's 2 GB limit, or on request, the initializers go
   to a data file next to it (:mod:`xbar.compiler.onnx.files`).

The exporter's notice that torchvision is not installed (four lines on every
export, about ops the model does not use) is dropped while it runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import onnx
import onnx_ir as ir
import torch
from torch import fx

from ...passes.capture import copy_graph_module, export_program, first_line, torch_internal_warnings_ignored
from ...passes.errors import DynamicShapeError, ExportError, NoCrossbarLayersWarning, UserError
from ...passes.infra import run_passes
from ...passes.inputs import positional_inputs
from ...passes.numerics.crossbar import Crossbar, MultiDeviceCrossbar, crossbar_modules
from ...passes.rewrites.export_ops import CrossbarToCustomOpsPass
from ...passes.rewrites.functional_ops import FunctionalInPlaceOpsPass
from ...passes.rewrites.scan_recurrent import ScanRecurrentPass, unrolled_lengths
from ...passes.shapes import constraint_violation, dimension_names, requested_shapes, widened, with_sequence_dim
from ..chip.target import mapping_of
from ..devices.programming import programming_of
from ..inspection.converted import summarize
from ..inspection.summary import LayerSummary, ModelSummary
from ..pipeline.record import CompileRecord, Stage, record_of
from ..version import __version__
from . import annotations as onnx_annotations
from . import bodies as onnx_bodies
from . import boundary as onnx_boundary
from . import devices as onnx_devices
from . import files as onnx_files
from . import layers as onnx_layers
from . import ops as onnx_ops

MAX_IR_VERSION = 13
"""The newest ONNX IR version ONNX Runtime 1.31 loads."""

TRANSLATION_FAILURE = re.compile(r"when translating node %(\w+) ")
"""How torch.onnx names the FX node it failed on."""

TORCHVISION_NOTICE = "torchvision is not installed. Skipping %s"
"""What torch.onnx logs once per torchvision op on every export when torchvision is absent."""


def export_onnx(converted: fx.GraphModule, example_inputs: Sequence, path: Union[str, os.PathLike],
                external_data: Optional[bool] = None, scan_recurrent: bool = False) -> Path:
    """Write ``converted`` (from :func:`xbar.convert`) as annotated ONNX to ``path``.

    Each crossbar layer becomes one ``ai.xbar`` node (see :mod:`xbar.compiler.onnx.ops`)
    with its G+ / G- as float32 initializers ``<layer>_crossbar.g_plus`` /
    ``.g_minus`` in microsiemens (a multi-device converter's devices as :mod:`.devices` says); the
    dimensions the model was prepared with as dynamic (``dynamic_shapes``) stay symbolic, named as their
    ``Dim``. ``example_inputs`` are as :func:`xbar.prepare` takes them. The same model
    gives byte-identical files; a failed export leaves no file. Returns the path.

    The graph computes in float32: a float64, bfloat16 or float16 model is exported
    with a cast to float32 at each floating input and back to its dtype at each
    floating output (:mod:`xbar.compiler.onnx.boundary`), so the file keeps the
    model's input and output types and runs the float32 simulation.

    ``external_data=True`` puts the initializers in ``<path>.data`` next to the
    file (ONNX's external data); ``None`` does so when they exceed what one
    protobuf can hold (2 GB).

    ``scan_recurrent=True`` writes each recurrent layer's steps as one ONNX ``Scan`` per layer and
    direction whose body is one step (:mod:`xbar.passes.rewrites.scan_recurrent`), and makes dimension 1
    (``seq``) of each input whose dimension 1 is the unrolled length dynamic: ONNX Runtime runs the file
    at any sequence length, with the arrays, ranges and periphery the model was converted with.
    """
    return export_onnx_files(converted, example_inputs, path, external_data, scan_recurrent)[0]


def export_onnx_files(converted: fx.GraphModule, example_inputs: Sequence, path: Union[str, os.PathLike],
                      external_data: Optional[bool] = None, scan_recurrent: bool = False) -> list[Path]:
    """:func:`export_onnx`, returning every file written: the ONNX file, then its data file if it has one."""
    record = record_of(converted, "export_onnx()", Stage.CONVERTED)
    originals = crossbar_modules(converted)
    if not originals:
        warnings.warn("the model has no crossbar layer: exporting plain ONNX without ai.xbar nodes",
                      NoCrossbarLayersWarning, stacklevel=2)
    lengths = scanned_lengths(converted) if scan_recurrent else set()
    tensors = [*converted.parameters(), *converted.buffers()]
    graph_module = run_passes(copy_graph_module(converted, share=tensors),  # read only: not copied
                              [CrossbarToCustomOpsPass(), FunctionalInPlaceOpsPass(),
                               *([ScanRecurrentPass()] if scan_recurrent else [])])
    onnx_boundary.cast_at_boundary(graph_module)
    crossbars = {name: graph_module.get_submodule(name) for name in originals}  # with the pass's zero biases
    inputs = positional_inputs(graph_module, example_inputs, "export_onnx() example_inputs")
    spec = record.dynamic_shapes if record.dynamic_shapes is not None else requested_shapes(None, inputs).spec
    if scan_recurrent:
        spec = with_sequence_dim(inputs, spec, lengths)
    with _torchvision_notices_dropped():
        model, names = _to_onnx(graph_module, inputs, spec)
    _name_dimensions(model, names)
    matched = onnx_layers.match_nodes(model, crossbars)
    onnx_layers.restore_layer_tensors(model, matched, crossbars)
    onnx_layers.name_nodes(model, matched)
    onnx_layers.check_layers(model, matched, crossbars)
    onnx_devices.wire_devices(model, matched, crossbars)
    mapping = mapping_of(converted)
    summary = summarize(converted)
    onnx_annotations.annotate_nodes(matched, summary.arrays, mapping)
    _add_functions(model)
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        node.metadata_props.clear()
    model.metadata_props.update(_metadata(record, converted, summary, originals, matched)
                                | onnx_annotations.chip_metadata(mapping))
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    path = Path(path)
    if external_data is None:
        external_data = onnx_files.initializer_bytes(model) > onnx_files.LARGE_MODEL_BYTES
    return onnx_files.save_checked(model, path, _check, external_data)


def scanned_lengths(graph_module: fx.GraphModule, option: str = "export_onnx(scan_recurrent=True)") -> set[int]:
    """The lengths a prepared or converted model's recurrent layers were unrolled for, which a Scan export
    rolls back; :class:`UserError` naming ``option`` for a model without any."""
    lengths = unrolled_lengths(graph_module)
    if not lengths:
        raise UserError(f"{option} needs a model with a recurrent layer (nn.LSTM, nn.GRU, nn.RNN); this one has "
                        f"none: export it without {option.partition('=')[0].removeprefix('export_onnx(')}")
    return lengths


def _check(path: Path) -> None:
    """``onnx.checker`` with ``full_check`` on a written file (its external data stays on disk)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported model fails onnx.checker: {first_line(exc)}") from exc


@contextlib.contextmanager
def _torchvision_notices_dropped() -> Iterator[None]:
    """Drop :data:`TORCHVISION_NOTICE` (and only it) while the exporter runs."""
    def keep(record: logging.LogRecord) -> bool:
        return record.msg != TORCHVISION_NOTICE

    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    registration.addFilter(keep)
    try:
        yield
    finally:
        registration.removeFilter(keep)


def _to_onnx(graph_module: fx.GraphModule, inputs: tuple, spec: tuple) -> tuple[ir.Model, dict[str, str]]:
    """Capture with the dynamic shapes ``spec`` and translate; returns the model and its dimensions' names
    by symbol. Errors name the node that failed."""
    try:
        program = export_program(graph_module, inputs, spec)
    except Exception as exc:  # any tracer failure is reported as one export error
        refusal = constraint_violation(exc)
        if refusal is not None:
            raise DynamicShapeError(refusal) from exc
        raise ExportError(f"torch.export could not capture the converted model: {first_line(exc)}") from exc
    try:
        with torch_internal_warnings_ignored():
            onnx_program = torch.onnx.export(program, widened(inputs, spec), dynamo=True,
                                             opset_version=onnx_bodies.OPSET,
                                             custom_translation_table=onnx_ops.TRANSLATIONS, verbose=False)
    except torch.onnx.OnnxExporterError as exc:
        raise ExportError(_translation_failure(exc, program)) from exc
    return onnx_program.model, dimension_names(program, inputs, spec)


def _name_dimensions(model: ir.Model, names: dict[str, str]) -> None:
    """Give each dynamic dimension its name everywhere (the exporter names it after its symbol, ``s77``),
    in expressions of it too (``2*s77`` -> ``2*batch``)."""
    if not names:
        return
    symbol = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b")
    values = [*model.graph.inputs, *(output for node in model.graph for output in node.outputs)]
    for value in values:
        if value.shape is not None:
            value.shape = ir.Shape([ir.SymbolicDim(symbol.sub(lambda m: names[m.group(1)], d.value))
                                    if isinstance(d, ir.SymbolicDim) and d.value is not None else d
                                    for d in value.shape])


def _translation_failure(exc: BaseException, program: torch.export.ExportedProgram) -> str:
    """One line naming the node (and its op) the ONNX translation failed on, and why."""
    chain = list(_causes(exc))
    reason = first_line(chain[-1])
    for error in chain:
        match = TRANSLATION_FAILURE.search(str(error))
        if match:
            targets = {node.name: node.target for node in program.graph.nodes}
            name = match.group(1)
            return f"cannot export node {name!r} ({targets.get(name, 'unknown op')}) to ONNX: {reason}"
    return f"the ONNX exporter failed: {reason}"


def _causes(exc: BaseException):
    """``exc`` and the exceptions it was raised from, outermost first."""
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def _add_functions(model: ir.Model) -> None:
    """Add the function body of each ai.xbar op the graph uses, after the periphery steps they
    call, and both domains' opsets."""
    used = sorted({n.op_type for n in onnx_layers.xbar_nodes(model)})
    if not used:
        return
    for function in (*onnx_bodies.PERIPHERY_FUNCTIONS, *(onnx_bodies.FUNCTIONS[op_type] for op_type in used)):
        function = ir.serde.deserialize_function(function.to_function_proto())
        model.functions[function.identifier()] = function
    model.opset_imports[onnx_bodies.DOMAIN] = onnx_bodies.VERSION
    model.opset_imports[onnx_bodies.PERIPHERY_DOMAIN] = onnx_bodies.PERIPHERY_VERSION


def _metadata(record: CompileRecord, converted: fx.GraphModule, summary: ModelSummary,
              crossbars: dict[str, Crossbar], matched: list[tuple[ir.Node, str]]) -> dict[str, str]:
    """The file's ``xbar.*`` metadata: the shared summary of each array (with this file's call-site
    nodes and tensor names) in ``xbar.layers``, and the layers that stay digital in ``xbar.digital_layers``."""
    config = record.config
    call_sites = {name: [node.name for node, module in matched if module == name] for name in crossbars}
    layers = [_layer_entry(array, crossbars[array.node], call_sites[array.node]) for array in summary.arrays]
    programming = programming_of(converted)
    return {
        "xbar.version": __version__,
        "xbar.domain": f"{onnx_ops.DOMAIN}:{onnx_ops.VERSION}",
        "xbar.converter": str(config.converter),
        "xbar.hardware_config": json.dumps(config.to_dict(), sort_keys=True, allow_nan=False),
        "xbar.layers": json.dumps(layers, sort_keys=True, allow_nan=False),
        "xbar.digital_layers": json.dumps([layer.as_dict() for layer in summary.digital], sort_keys=True,
                                          allow_nan=False),
    } | ({} if programming is None else {"xbar.programming": programming.to_json()})


def _layer_entry(array: LayerSummary, module: Crossbar, call_sites: list[str]) -> dict:
    """An array's summary as this file keeps it: its call-site nodes, op, tensor names, geometry attributes and
    ``forward.out_noise`` (metadata: no body reads it; ONNX Runtime evaluation adds it at every read)."""
    name = array.node
    entry = array.description() | {
        "call_sites": call_sites,
        "calls": len(call_sites),
        "op": onnx_layers.op_type(module),
        **({"devices": [f"{name}.{device}" for device in module.device_names]}
           if isinstance(module, MultiDeviceCrossbar) else {"g_plus": f"{name}.g_plus", "g_minus": f"{name}.g_minus"}),
        "bias": f"{name}.bias",
        "out_noise": module.out_noise,
    }
    return entry | {k: v for k, v in onnx_layers.expected_attributes(module).items()
                    if k not in module.settings.constants and k not in entry}
