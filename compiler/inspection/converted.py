"""The per-array summary of a converted model in memory (:mod:`.summary` holds the records, torch-free).

An array called from more than one place is one row, with every graph node that calls it.
"""

from __future__ import annotations

import dataclasses

from torch import fx

from ...passes.numerics.crossbar import Crossbar, MultiDeviceCrossbar, crossbar_modules
from ...passes.plan import tag_of
from ..pipeline.record import Stage, record_of
from .region import weight_region, with_layer_totals
from .summary import LayerSummary, ModelSummary


def summarize(converted: fx.GraphModule) -> ModelSummary:
    """The arrays and digital layers of a converted GraphModule (from :func:`xbar.convert`)."""
    record = record_of(converted, "summarize()", Stage.CONVERTED)
    return ModelSummary(summarize_converted(converted), record.digital)


def summarize_converted(converted: fx.GraphModule) -> list[LayerSummary]:
    """The crossbar arrays of a converted GraphModule, in module order."""
    calls: dict[str, list[fx.Node]] = {}
    for node in converted.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    arrays = [_summary_of_module(name, module, calls.get(name, []))
              for name, module in crossbar_modules(converted).items()]
    return _with_layer_totals(arrays)


def _with_layer_totals(arrays: list[LayerSummary]) -> list[LayerSummary]:
    """The arrays with their regions' ``in_total`` / ``out_total`` taken over their whole layer."""
    by_layer: dict[str, list[int]] = {}
    for index, array in enumerate(arrays):
        by_layer.setdefault(array.settings.layer, []).append(index)
    arrays = list(arrays)
    for indices in by_layer.values():
        regions = with_layer_totals([arrays[i].region for i in indices])
        for i, region in zip(indices, regions):
            arrays[i] = dataclasses.replace(arrays[i], region=region)
    return arrays


def _summary_of_module(name: str, module: Crossbar, calls: list[fx.Node]) -> LayerSummary:
    # float32, as the ONNX file holds them: numpy has no bfloat16
    devices = {device: g.detach().float().numpy() for device, g in zip(module.device_names, module.conductances())}
    shape = tuple(module.shape)
    multi_device = isinstance(module, MultiDeviceCrossbar)
    pair = (None, None) if multi_device else (devices.pop("g_plus"), devices.pop("g_minus"))
    tag = next((tag for node in calls if (tag := tag_of(node)) is not None), None)
    region = weight_region(module.kind, shape, module.geometry, None if tag is None else tag.tile)
    return LayerSummary(name, module.kind.describe(len(shape)), tuple(shape), module.settings, *pair,
                        None if tag is None else tag.plan.rule, module.source_weight, module.bias is not None,
                        tuple(node.name for node in calls), region, devices)
