"""Read back what xbar wrote: the crossbar layers of an ONNX export or a saved graph.

Two kinds of file are understood:

* an ONNX file from :func:`xbar.xbar.export_onnx`: the ``ai.xbar`` nodes, their
  attributes and G+ / G- initializers (what a backend would read), and the
  ``xbar.*`` metadata;
* a graph archive from :func:`save_graph` (``xbar compile --save-graph``): a
  ``torch.save`` file of plain tensors, strings and numbers, so it loads with
  ``torch.load(weights_only=True)``. It holds the converted FX graph as text
  (``graph``) and as the Python FX generated for it (``code``), every crossbar
  array's settings, rule and conductances (``layers``), the hardware config and
  the full ``state_dict``. It records the graph; it does not run (run the ONNX file).

Both give an :class:`Inspection`: a list of :class:`LayerSummary` rows, the
graph as text lines, and the metadata.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from rich.markup import escape
from rich.table import Table
from torch import fx

from ..passes.crossbar import Crossbar, CrossbarSettings
from ..passes.errors import UserError
from ..passes.kinds import KINDS
from ..passes.plan import tag_of
from .config import HardwareConfig
from .files import write_atomically
from .onnx_ops import DOMAIN
from .pipeline import META
from .version import __version__

GRAPH_FORMAT = "xbar-graph"
GRAPH_FORMAT_VERSION = 1
AT_G_MAX_TOLERANCE = 0.01
"""A device counts as at g_max when within this fraction of (g_max - g_min) of it."""
KIND_OF_OP = {kind.onnx_op: kind for kind in KINDS}
SETTINGS_FIELDS = tuple(f.name for f in dataclasses.fields(CrossbarSettings))
REQUIRED_SETTINGS = tuple(f.name for f in dataclasses.fields(CrossbarSettings)
                          if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


class InspectError(UserError):
    """A file that cannot be inspected; the message says why and what to do."""


@dataclass(frozen=True)
class LayerSummary:
    """One crossbar layer as a backend sees it; conductances in microsiemens."""

    node: str
    kind: str
    weight_shape: tuple[int, ...]
    settings: CrossbarSettings
    g_plus: np.ndarray = field(repr=False)
    g_minus: np.ndarray = field(repr=False)
    rule: Optional[str] = None
    """The configuration rule that chose the settings, when the file records it."""

    @property
    def conductances(self) -> np.ndarray:
        """Every device of the layer: G+ and G- together."""
        return np.concatenate([self.g_plus.ravel(), self.g_minus.ravel()])

    @property
    def fraction_at_g_max(self) -> float:
        s = self.settings
        tolerance = AT_G_MAX_TOLERANCE * abs(s.g_max - s.g_min)
        return float(np.mean(np.abs(self.conductances - s.g_max) <= tolerance))

    def as_dict(self) -> dict:
        """A JSON-ready dict (no conductance arrays, only their statistics)."""
        g = self.conductances
        return {
            "node": self.node,
            "kind": self.kind,
            "weight_shape": list(self.weight_shape),
            **self.settings.as_dict(),
            "rule": self.rule,
            "conductance_min": float(g.min()),
            "conductance_mean": float(g.mean()),
            "conductance_max": float(g.max()),
            "fraction_at_g_max": self.fraction_at_g_max,
        }


@dataclass(frozen=True)
class Inspection:
    """What one file holds: its crossbar layers, its graph as text, its metadata."""

    path: Path
    format: str
    layers: list[LayerSummary]
    graph_lines: list[str]
    metadata: dict

    def as_dict(self, with_graph: bool = False) -> dict:
        data = {"file": str(self.path), "format": self.format, "metadata": self.metadata,
                "layers": [layer.as_dict() for layer in self.layers]}
        if with_graph:
            data["graph"] = self.graph_lines
        return data


# -- the converted model in memory -------------------------------------------------------------

def summarize_converted(converted: fx.GraphModule) -> list[LayerSummary]:
    """The crossbar arrays of a converted GraphModule, in module order."""
    rules = {node.target: tag.plan.rule for node in converted.graph.nodes
             if node.op == "call_module" and (tag := tag_of(node)) is not None}
    return [_summary_of_module(name, module, rules.get(name)) for name, module in converted.named_modules()
            if isinstance(module, Crossbar)]


def _summary_of_module(name: str, module: Crossbar, rule: Optional[str]) -> LayerSummary:
    g_plus, g_minus = module.g_plus.detach().numpy(), module.g_minus.detach().numpy()
    return LayerSummary(name, module.kind.describe(g_plus.ndim), g_plus.shape, module.settings, g_plus, g_minus,
                        rule)


# -- ONNX files --------------------------------------------------------------------------------

def _load_onnx(path: Path) -> Inspection:
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError) as exc:
        raise InspectError(f"{path} is neither an ONNX model nor an xbar graph archive "
                           "(give a file written by `xbar compile -o` or `--save-graph`)") from exc
    initializers = {t.name: t for t in model.graph.initializer}
    metadata = {p.key: _maybe_json(p.value) for p in model.metadata_props}
    rules = {entry.get("node"): entry.get("rule") for entry in metadata.get("xbar.layers", [])
             if isinstance(entry, dict)}
    layers = [_summary_of_node(node, initializers, rules.get(node.name))
              for node in model.graph.node if node.domain == DOMAIN]
    return Inspection(path, "onnx", layers, [_node_line(n) for n in model.graph.node], metadata)


def _summary_of_node(node: onnx.NodeProto, initializers: dict, rule: Optional[str]) -> LayerSummary:
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    missing = [key for key in REQUIRED_SETTINGS if key not in attributes]
    tensors = [initializers.get(name) for name in node.input[1:3]]
    kind = KIND_OF_OP.get(node.op_type)
    if kind is None:
        raise InspectError(f"node {node.name!r} is {DOMAIN}::{node.op_type}, an op this xbar does not know; "
                           "inspect it with the xbar that wrote it")
    if missing or None in tensors:
        raise InspectError(f"node {node.name!r} ({DOMAIN}::{node.op_type}) lacks "
                           f"{'attributes ' + ', '.join(missing) if missing else 'its G+/G- initializers'}; "
                           "was the file written by an older xbar? Re-export it")
    settings = CrossbarSettings(**{key: _decoded(attributes[key]) for key in SETTINGS_FIELDS if key in attributes})
    g_plus, g_minus = (numpy_helper.to_array(t) for t in tensors)
    return LayerSummary(node.name, kind.describe(g_plus.ndim), g_plus.shape, settings, g_plus, g_minus, rule)


def _decoded(value):
    """An attribute value as CrossbarSettings holds it: str for bytes, tuple for lists."""
    if isinstance(value, bytes):
        return value.decode()
    return tuple(value) if isinstance(value, list) else value


def _maybe_json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _node_line(node: onnx.NodeProto) -> str:
    op = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
    return f"{node.name or '<unnamed>'}: {op}({', '.join(node.input)}) -> {', '.join(node.output)}"


# -- saved graph archives ----------------------------------------------------------------------

def save_graph(converted: fx.GraphModule, path: os.PathLike) -> Path:
    """Write a converted GraphModule (from :func:`xbar.xbar.convert`) as a ``weights_only``-loadable
    archive (see the module docstring); written atomically."""
    if META not in converted.meta:
        raise InspectError("save_graph() expects the GraphModule returned by xbar.convert()")
    layers = [
        {"node": s.node, "kind": s.kind, "settings": s.settings.as_dict(), "rule": s.rule,
         "g_plus": torch.from_numpy(s.g_plus), "g_minus": torch.from_numpy(s.g_minus)}
        for s in summarize_converted(converted)
    ]
    archive = {
        "format": GRAPH_FORMAT,
        "format_version": GRAPH_FORMAT_VERSION,
        "xbar_version": __version__,
        "hardware_config": converted.meta[META]["config"].to_dict(),
        "graph": str(converted.graph),
        "code": converted.code,
        "layers": layers,
        "state_dict": converted.state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(archive, buffer)
    path = Path(path)
    write_atomically(buffer.getvalue(), path)
    return path


def _load_graph_archive(path: Path) -> Inspection:
    try:
        archive = torch.load(path, weights_only=True)
    except Exception as exc:  # any unpickling failure: the file is not one of ours
        raise InspectError(f"{path} is a zip file but not an xbar graph archive "
                           f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    if not isinstance(archive, dict) or archive.get("format") != GRAPH_FORMAT:
        raise InspectError(f"{path} is a torch.save file but not an xbar graph archive; "
                           "write one with `xbar compile --save-graph PATH`")
    if archive.get("format_version") != GRAPH_FORMAT_VERSION:
        raise InspectError(f"{path} is an xbar graph archive of format version {archive.get('format_version')}, "
                           f"this xbar reads version {GRAPH_FORMAT_VERSION}; recompile the model")
    layers = [
        LayerSummary(layer["node"], layer["kind"], tuple(layer["g_plus"].shape),
                     _settings(layer["settings"]), layer["g_plus"].numpy(), layer["g_minus"].numpy(),
                     layer["rule"])
        for layer in archive["layers"]
    ]
    metadata = {"xbar.version": archive["xbar_version"], "xbar.hardware_config": archive["hardware_config"]}
    return Inspection(path, GRAPH_FORMAT, layers, archive["graph"].strip().splitlines(), metadata)


def _settings(data: dict) -> CrossbarSettings:
    return CrossbarSettings(**{key: _decoded(value) for key, value in data.items()})


def describe_config(config: dict) -> str:
    """The fields of a ``HardwareConfig.to_dict()`` that differ from the defaults, as ``key=value``."""
    defaults = _flatten(HardwareConfig().to_dict())
    changed = [f"{key}={value}" for key, value in _flatten(config).items() if defaults.get(key) != value]
    return ", ".join(changed) or "xbar defaults (ideal periphery, learned input ranges, no tiling)"


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# -- entry point, table, plot ------------------------------------------------------------------

def load_inspection(path: os.PathLike) -> Inspection:
    """Inspect an ONNX file or a graph archive (told apart by content, not by name)."""
    path = Path(path)
    if not path.is_file():
        raise InspectError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        return _load_graph_archive(path)
    return _load_onnx(path)


def layer_table(layers: list[LayerSummary], title: str) -> Table:
    """A rich table of crossbar layers, one row per array; tile and rule columns when the file has them."""
    show_tiles = len({layer.settings.layer for layer in layers}) < len(layers)
    show_rules = any(layer.rule is not None for layer in layers)
    table = Table(title=title, title_justify="left")
    table.add_column("layer", no_wrap=True)
    if show_tiles:
        table.add_column("tile", no_wrap=True)
    for header in ("kind", "weight", "input range", "scale ratio"):
        table.add_column(header, no_wrap=header == "weight")
    for header in ("G min (uS)", "G mean (uS)", "G max (uS)", "at g_max", "DAC", "ADC"):
        table.add_column(header, justify="right")
    if show_rules:
        table.add_column("rule")
    for layer in layers:
        s, g = layer.settings, layer.conductances
        row = [escape(s.layer)] + ([f"{s.tile_row},{s.tile_col}"] if show_tiles else [])
        row += [layer.kind, "x".join(map(str, layer.weight_shape)),
                f"{s.input_range:.4g}" if s.input_range else "none", f"{s.scale_ratio:.4g}",
                f"{g.min():.3g}", f"{g.mean():.3g}", f"{g.max():.3g}", f"{layer.fraction_at_g_max:.2%}",
                _converter_text(s.dac_steps, None), _converter_text(s.adc_steps, s.out_bound)]
        table.add_row(*row, *([escape(layer.rule or "unknown")] if show_rules else []))
    return table


def _converter_text(steps: float, bound: Optional[float]) -> str:
    text = f"{steps:g} steps" if steps else "ideal"
    if bound:
        text += f", ±{bound:g}"
    return text


def plot_layers(layers: list[LayerSummary], path: os.PathLike, title: str) -> Path:
    """Save per-layer G+ / G- histograms and a bar chart of input ranges as an image
    (its type from the file name: .png, .svg, .pdf, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    image_type = Path(path).suffix.lstrip(".").lower()
    supported = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    if image_type not in supported:
        raise InspectError(f"cannot draw {path}: unknown image type {image_type!r}; use one of "
                           f"{', '.join('.' + t for t in sorted(supported))}")
    if not layers:
        raise InspectError("there are no crossbar layers to plot")

    columns = min(4, max(1, len(layers)))
    rows = -(-len(layers) // columns)
    figure = plt.figure(figsize=(4 * columns, 3 + 2.6 * rows), layout="constrained")
    grid = figure.add_gridspec(rows + 1, columns, height_ratios=[1.2] + [1] * rows)
    labels = array_labels(layers)
    _plot_ranges(figure.add_subplot(grid[0, :]), layers, labels)
    for index, (layer, label) in enumerate(zip(layers, labels)):
        _plot_histogram(figure.add_subplot(grid[1 + index // columns, index % columns]), layer, label)
    figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_type, dpi=110)
    plt.close(figure)
    path = Path(path)
    write_atomically(buffer.getvalue(), path)
    return path


def count_text(layers: list[LayerSummary]) -> str:
    """``"5 crossbar layers"``, or ``"5 crossbar arrays in 3 layers"`` when layers are tiled."""
    names = {layer.settings.layer for layer in layers}
    if len(names) == len(layers):
        return f"{len(layers)} crossbar layers"
    return f"{len(layers)} crossbar arrays in {len(names)} layers"


def array_labels(layers: list[LayerSummary]) -> list[str]:
    """Layer names, with ``[row,col]`` added for the arrays of a tiled layer."""
    counts = Counter(layer.settings.layer for layer in layers)
    return [f"{s.layer} [{s.tile_row},{s.tile_col}]" if counts[s.layer] > 1 else s.layer
            for s in (layer.settings for layer in layers)]


def _plot_ranges(axes, layers: list[LayerSummary], names: list[str]) -> None:
    bars = axes.bar(range(len(layers)), [layer.settings.input_range for layer in layers], width=0.6,
                    color="tab:green")
    axes.bar_label(bars, fmt="%.3g", fontsize=8)
    axes.set_xticks(range(len(layers)), names, rotation=30 if len(layers) > 6 else 0, ha="right"
                    if len(layers) > 6 else "center", fontsize=8)
    axes.margins(y=0.15)
    axes.set_ylabel("input range r")
    axes.set_title("learned input range per layer (0: no range)", fontsize=10)


def _plot_histogram(axes, layer: LayerSummary, label: str) -> None:
    s = layer.settings
    bins = np.linspace(min(s.g_min, s.g_max), max(s.g_min, s.g_max), 41)
    axes.hist([layer.g_plus.ravel(), layer.g_minus.ravel()], bins=bins, label=["G+", "G-"],
              color=["tab:blue", "tab:orange"], histtype="stepfilled", alpha=0.6)
    axes.set_yscale("log")
    axes.set_title(f"{label} ({layer.kind}, {'x'.join(map(str, layer.weight_shape))})", fontsize=9)
    axes.set_xlabel("conductance (uS)", fontsize=8)
    axes.set_ylabel("devices", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7)
