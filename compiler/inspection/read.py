"""Read back what xbar wrote: the crossbar layers of an ONNX export or a graph archive.

Two kinds of file are understood, told apart by content, not by name:

* an ONNX file from :func:`xbar.export_onnx`: the ``ai.xbar`` nodes, their
  attributes and G+ / G- initializers (what a backend would read), and the
  ``xbar.*`` metadata;
* a graph archive from :func:`xbar.compiler.inspection.archive.save_graph`
  (``xbar compile --save-graph``).

Both give an :class:`Inspection`: a list of :class:`LayerSummary` rows (one per
array: the ONNX nodes of one array, its ``layer`` / ``tile_row`` / ``tile_col``,
are its call sites), the layers that stay digital, the graph as text lines, and
the metadata. ONNX files of older xbar versions, without call sites or
``xbar.digital_layers``, still read: their call sites come from the graph, and
they list no digital layers.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper, numpy_helper

from ...passes.digital_layer import DigitalLayer
from ...passes.errors import InspectError
from ..onnx.names import DOMAIN, VERSION, graph_nodes
from .summary import REQUIRED_SETTINGS, SETTINGS_FIELDS, LayerSummary, settings_from


@dataclass(frozen=True)
class Inspection:
    """What one file holds: its crossbar layers, its graph as text, its metadata."""

    path: Path
    format: str
    layers: list[LayerSummary]
    graph_lines: list[str]
    metadata: dict
    digital: tuple[DigitalLayer, ...] = ()

    def as_dict(self, with_graph: bool = False) -> dict:
        data = {"file": str(self.path), "format": self.format, "metadata": self.metadata,
                "layers": [layer.as_dict() for layer in self.layers],
                "digital_layers": [layer.as_dict() for layer in self.digital]}
        if with_graph:
            data["graph"] = self.graph_lines
        return data


def load_inspection(path: os.PathLike) -> Inspection:
    """Inspect an ONNX file or a graph archive."""
    path = Path(path)
    if not path.is_file():
        raise InspectError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        return _load_graph_archive(path)
    return _load_onnx(path)


# -- ONNX files --------------------------------------------------------------------------------

def _load_onnx(path: Path) -> Inspection:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError) as exc:
        raise InspectError(f"{path} is neither an ONNX model nor an xbar graph archive "
                           "(give a file written by `xbar compile -o` or `--save-graph`)") from exc
    _check_domain_version(model, path)
    _load_external_data(model, path)
    initializers = {t.name: t for t in model.graph.initializer}
    metadata = {p.key: _maybe_json(p.value) for p in model.metadata_props}
    recorded = {entry.get("node"): entry for entry in metadata.get("xbar.layers", []) if isinstance(entry, dict)}
    layers = [_summary_of_array(nodes, initializers, recorded.get(nodes[0].name, {}))
              for nodes in _nodes_by_array(model.graph).values()]
    digital = _digital_layers(metadata.get("xbar.digital_layers", []), path)
    return Inspection(path, "onnx", layers, [_node_line(n) for n in model.graph.node], metadata, digital)


def _nodes_by_array(graph: onnx.GraphProto) -> dict[tuple, list[onnx.NodeProto]]:
    """The ai.xbar nodes grouped by the array they run (``layer``, ``tile_row``, ``tile_col``), in graph order."""
    arrays: dict[tuple, list[onnx.NodeProto]] = {}
    for node in graph_nodes(graph):
        if node.domain == DOMAIN:
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            key = tuple(attributes.get(name) for name in ("layer", "tile_row", "tile_col"))
            arrays.setdefault(key if key[0] is not None else (node.name,), []).append(node)
    return arrays


def _digital_layers(entries, path: Path) -> tuple[DigitalLayer, ...]:
    """The recorded digital layers; :class:`InspectError` for entries this xbar cannot read."""
    try:
        return tuple(DigitalLayer.from_dict(entry) for entry in entries)
    except (KeyError, TypeError) as exc:
        raise InspectError(f"{path} records its digital layers in a form this xbar does not read ({exc!r}); "
                           "re-export it") from exc


def _check_domain_version(model: onnx.ModelProto, path: Path) -> None:
    """Refuse a file of a newer ai.xbar contract than this xbar reads (its ops may mean something else)."""
    version = next((o.version for o in model.opset_import if o.domain == DOMAIN), None)
    if version is not None and version > VERSION:
        raise InspectError(f"{path} uses the {DOMAIN} ops of version {version}; this xbar reads up to version "
                           f"{VERSION}: inspect it with the xbar that wrote it")


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Read the tensors kept in data files next to ``path`` (``xbar compile --external-data``), if any."""
    locations = {entry.value for tensor in model.graph.initializer
                 if external_data_helper.uses_external_data(tensor)
                 for entry in tensor.external_data if entry.key == "location"}
    missing = sorted(name for name in locations if not (path.parent / name).is_file())
    if missing:
        raise InspectError(f"{path} keeps its tensors in {', '.join(missing)}, which is not next to it; "
                           "copy the data file to the same folder")
    external_data_helper.load_external_data_for_model(model, str(path.parent))


def _summary_of_array(nodes: list[onnx.NodeProto], initializers: dict, recorded: dict) -> LayerSummary:
    """One array from its first node (its attributes and G+ / G-), its call sites and what the metadata recorded.

    The kind is the one the metadata recorded (``conv2d``); files without it show the node's op type."""
    node = nodes[0]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    missing = [key for key in REQUIRED_SETTINGS if key not in attributes]
    tensors = [initializers.get(name) for name in node.input[1:3]]
    if missing or None in tensors:
        raise InspectError(f"node {node.name!r} ({DOMAIN}::{node.op_type}) lacks "
                           f"{'attributes ' + ', '.join(missing) if missing else 'its G+/G- initializers'}; "
                           "was the file written by an older xbar? Re-export it")
    settings = settings_from({key: attributes[key] for key in SETTINGS_FIELDS if key in attributes})
    g_plus, g_minus = (numpy_helper.to_array(t) for t in tensors)
    return LayerSummary(node.name, recorded.get("kind", node.op_type), g_plus.shape, settings, g_plus, g_minus,
                        recorded.get("rule"), recorded.get("source_weight"), recorded.get("has_bias"),
                        tuple(n.name for n in nodes))


def _maybe_json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _node_line(node: onnx.NodeProto) -> str:
    op = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
    return f"{node.name or '<unnamed>'}: {op}({', '.join(node.input)}) -> {', '.join(node.output)}"


# -- graph archives ----------------------------------------------------------------------------

def _load_graph_archive(path: Path) -> Inspection:
    from .archive import GRAPH_FORMAT, read_graph_archive  # a torch file: torch only for it

    archive = read_graph_archive(path)
    layers = [LayerSummary.from_description(layer, layer["g_plus"].numpy(), layer["g_minus"].numpy())
              for layer in archive["layers"]]
    digital = _digital_layers(archive["digital_layers"], path)
    metadata = {"xbar.version": archive["xbar_version"], "xbar.hardware_config": archive["hardware_config"]}
    return Inspection(path, GRAPH_FORMAT, layers, archive["graph"].strip().splitlines(), metadata, digital)
