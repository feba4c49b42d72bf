"""The logical arrays a programming file holds, read from a converted model or, torch-free, an ONNX file.

Both give the same :class:`LogicalArray` rows, so a file and the model it was exported from write the same
programming files; the targets are the ``[out, in x kernel]`` G+ / G- block of the layer each array holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

REGION_KEYS = ("in_offset", "in_size", "out_offset", "out_size", "in_total", "out_total")
PLACEMENT_KEYS = ("chip", "core", "array", "row_offset", "col_offset")


@dataclass(frozen=True)
class LogicalArray:
    """One array: its name (the crossbar's, also its G+ / G- tensors' prefix), the layer and tile it belongs to,
    its region of the layer's weight, its target conductances in uS as ``[out_size, in_size]`` float32 by device
    (``g_plus``, ``g_minus``; a multi-device converter's devices, with their ``significances`` and ``offset``),
    under a chip target one placement per replica (``chip``, ``core``, ``array``, ``row_offset``,
    ``col_offset``), and what maps its conductances to weights and back: its layer kind (``linear``, ``conv2d``, ...),
    the converter's scale ratio of each of its ``out_size`` rows, and its g_min."""

    name: str
    layer: str
    tile: tuple[int, int]
    region: dict
    conductances: dict[str, np.ndarray]
    placements: tuple[dict, ...] = ()
    significances: tuple[float, ...] = ()
    offset: float = 0.0
    kind: str = "linear"
    scale_ratios: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))
    g_min: float = 0.0

    @property
    def multi_device(self) -> bool:
        return bool(self.significances)


@dataclass(frozen=True)
class Source:
    """What the programming files of one model are written from."""

    arrays: tuple[LogicalArray, ...]
    chip: Optional[dict]
    converter: str
    device_model: Optional[str]
    converter_settings: Optional[dict] = None
    """A multi-device converter's ``type`` and arguments (None for the single pair)."""


def matrix(conductance: np.ndarray, region: dict) -> np.ndarray:
    """A G+ or G- tensor as its ``[out_size, in_size]`` block, float32."""
    return np.ascontiguousarray(conductance, dtype=np.float32).reshape(region["out_size"], region["in_size"])


def row_scale_ratios(scale_ratio: float, column_scale_ratios, out_size: int) -> np.ndarray:
    """The scale ratio of each output row of an array: its per-column ratios, else its one ratio for all."""
    if len(column_scale_ratios):
        return np.asarray(column_scale_ratios, np.float32)
    return np.full(out_size, scale_ratio, np.float32)


def device_model_name(programming: Optional[dict], chip: Optional[dict]) -> Optional[str]:
    """The device model a programmed model records, else the chip's, else None."""
    if programming is not None:
        return programming["noise_model"]["model"]
    return None if chip is None else chip.get("device_model")


def source_of_onnx(model) -> Source:
    """The arrays of an ``onnx.ModelProto`` exported by xbar (its external data loaded), read with onnx only."""
    import onnx
    from onnx import numpy_helper

    from ..onnx.names import DOMAIN, graph_nodes

    initializers = {t.name: t for t in model.graph.initializer}
    metadata = {p.key: p.value for p in model.metadata_props}
    kinds = {entry["node"]: entry["kind"] for entry in json.loads(metadata["xbar.layers"])}
    arrays, seen = [], set()
    for node in graph_nodes(model.graph):
        if node.domain != DOMAIN or node.input[1] in seen:
            continue
        seen.add(node.input[1])
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        region = {key: int(attributes[key]) for key in REGION_KEYS}
        tensors = [_text(name) for name in attributes["devices"]] if "devices" in attributes else node.input[1:3]
        name = tensors[0].rpartition(".")[0]
        conductances = {tensor.rpartition(".")[2]: matrix(numpy_helper.to_array(initializers[tensor]), region)
                        for tensor in tensors}
        placements = tuple({key: int(attributes[key][k]) for key in PLACEMENT_KEYS}
                           for k in range(int(attributes.get("replicas", 0))))
        arrays.append(LogicalArray(name, _text(attributes["layer"]),
                                   (int(attributes["tile_row"]), int(attributes["tile_col"])), region,
                                   conductances, placements, tuple(attributes.get("device_significances", ())),
                                   float(attributes.get("device_offset", 0.0)), kinds[name],
                                   row_scale_ratios(attributes["scale_ratio"],
                                                    attributes.get("column_scale_ratios", ()), region["out_size"]),
                                   float(attributes["g_min"])))
    chip = json.loads(metadata["xbar.chip"]) if "xbar.chip" in metadata else None
    programming = json.loads(metadata["xbar.programming"]) if "xbar.programming" in metadata else None
    converter = json.loads(metadata.get("xbar.hardware_config", "{}")).get("converter", {})
    return Source(tuple(arrays), chip, metadata.get("xbar.converter", ""), device_model_name(programming, chip),
                  converter if "type" in converter else None)


def _float32s(values) -> tuple[float, ...]:
    """The values as the ONNX file holds them (float32 attributes), so a model and its file write one manifest."""
    return tuple(float(np.float32(v)) for v in values)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def source_of_converted(converted) -> Source:
    """The arrays of a converted (or programmed) GraphModule, in the order its export lists them."""
    from ...passes.numerics.crossbar import crossbar_modules
    from ..chip.target import mapping_of
    from ..devices.programming import programming_of
    from ..inspection.converted import summarize
    from ..pipeline.record import Stage, record_of

    record = record_of(converted, "write_programming_files()", Stage.CONVERTED)
    modules = crossbar_modules(converted)
    mapping = mapping_of(converted)
    placed: dict[str, list] = {}
    for region in () if mapping is None else mapping.regions:
        placed.setdefault(region.node, []).append(region)
    arrays = []
    for summary in summarize(converted).arrays:
        region = {key: value for key, value in summary.region.as_dict().items() if key in REGION_KEYS}
        module = modules[summary.node]
        settings = module.settings
        copies = sorted(placed.get(summary.node, ()), key=lambda r: r.replica)
        arrays.append(LogicalArray(summary.node, settings.layer, (settings.tile_row, settings.tile_col), region,
                                   {device: matrix(g, region) for device, g in summary.device_conductances.items()},
                                   tuple({key: getattr(r, key) for key in PLACEMENT_KEYS} for r in copies),
                                   _float32s(getattr(module, "significances", ())),
                                   _float32s((getattr(module, "offset", 0.0),))[0], summary.kind,
                                   row_scale_ratios(settings.scale_ratio, settings.column_scale_ratios,
                                                    region["out_size"]), float(settings.g_min)))
    chip = None if mapping is None else mapping.chip.to_dict()
    programming = programming_of(converted)
    converter = record.config.to_dict()["converter"]
    return Source(tuple(arrays), chip, str(record.config.converter),
                  device_model_name(None if programming is None else programming.as_dict(), chip),
                  converter if "type" in converter else None)
