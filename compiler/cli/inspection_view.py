"""Show crossbar layers to people: rich tables that fit the terminal (the arrays, and the
layers that stay digital with why), a one-line hardware summary, and a matplotlib
figure of conductances and input ranges."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ...passes.digital_layer import DigitalLayer
from ...passes.errors import InspectError
from ..config.hardware import HardwareConfig
from ..config.settings_text import settings_text
from ..inspection.read import Inspection
from ..inspection.summary import LayerSummary
from .console import say
from .figures import image_type, pyplot, save_figure


@dataclass(frozen=True)
class Column:
    """One column of the layer table: a short header and the text of each row's cell."""

    header: str
    cell: Callable[[LayerSummary], str]
    number: bool = True
    """Numbers never wrap or shorten; names fold onto more lines instead."""


def _converter_text(steps: float, bound: Optional[float] = None) -> str:
    text = f"{steps:g}" if steps else "ideal"
    return f"{text} ±{bound:g}" if bound else text


SETTINGS_COLUMNS = (
    Column("kind", lambda layer: layer.kind),
    Column("weight", lambda layer: "x".join(map(str, layer.weight_shape))),
    Column("input\nrange", lambda layer: f"{layer.settings.input_range:.4g}" if layer.settings.input_range else "none"),
    Column("scale\nratio", lambda layer: f"{layer.settings.scale_ratio:.4g}"),
    Column("DAC\nsteps", lambda layer: _converter_text(layer.settings.dac_steps)),
    Column("ADC steps\n±bound", lambda layer: _converter_text(layer.settings.adc_steps, layer.settings.out_bound)),
)
CONDUCTANCE_COLUMNS = (
    Column("G min\n(uS)", lambda layer: f"{layer.conductances.min():.3g}"),
    Column("G mean\n(uS)", lambda layer: f"{layer.conductances.mean():.3g}"),
    Column("G max\n(uS)", lambda layer: f"{layer.conductances.max():.3g}"),
    Column("at\ng_max", lambda layer: f"{layer.fraction_at_g_max:.2%}"),
)

RULE_COLUMN = Column("rule", lambda layer: layer.rule or "unknown", number=False)
CALLS_COLUMN = Column("calls", lambda layer: str(layer.calls))
"""Shown when an array runs at more than one call site (a layer called more than once)."""
MEASURING_WIDTH = 10_000
"""Wide enough that a table measured in it takes its natural width."""


def layer_tables(layers: list[LayerSummary], title: str, width: int) -> list[Table]:
    """The layers as one table, one row per array, when it fits ``width`` columns; else as
    two tables, the hardware settings and the conductances (with the rule), each naming the layers."""
    rule = (RULE_COLUMN,) if any(layer.rule is not None for layer in layers) else ()
    settings = SETTINGS_COLUMNS + ((CALLS_COLUMN,) if any(layer.calls > 1 for layer in layers) else ())
    whole = _table(layers, title, settings + CONDUCTANCE_COLUMNS + rule)
    if Console(width=MEASURING_WIDTH).measure(whole).maximum <= width:
        return [whole]
    return [_table(layers, f"{title}: settings", settings),
            _table(layers, f"{title}: conductances", CONDUCTANCE_COLUMNS + rule)]


def digital_table(digital: Sequence[DigitalLayer]) -> Table:
    """The layers with a weight that stay digital: what runs them, their weights and why."""
    plural = "layer stays" if len(digital) == 1 else "layers stay"
    table = Table(title=f"{len(digital)} {plural} digital", title_justify="left")
    for header in ("layer", "op", "weights", "why"):
        table.add_column(header, overflow="fold")
    for layer in digital:
        table.add_row(escape(layer.name), escape(", ".join(layer.ops)),
                      escape(", ".join("x".join(map(str, shape)) for shape in layer.shapes)), escape(layer.reason))
    return table


def _table(layers: list[LayerSummary], title: str, columns: tuple[Column, ...]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("layer", overflow="fold")
    for column in columns:
        table.add_column(column.header, justify="right" if column.number else "left", no_wrap=column.number,
                         overflow="fold")
    for layer, label in zip(layers, array_labels(layers)):
        table.add_row(escape(label), *(escape(column.cell(layer)) for column in columns))
    return table


def array_labels(layers: list[LayerSummary]) -> list[str]:
    """Layer names, with ``[row,col]`` added for the arrays of a tiled layer."""
    counts = Counter(layer.settings.layer for layer in layers)
    return [f"{s.layer} [{s.tile_row},{s.tile_col}]" if counts[s.layer] > 1 else s.layer
            for s in (layer.settings for layer in layers)]


def count_text(layers: list[LayerSummary]) -> str:
    """``"5 crossbar layers"``, or ``"5 crossbar arrays in 3 layers"`` when layers are tiled, then
    the layers called more than once (``"; fc called 2 times"``)."""
    names = {layer.settings.layer for layer in layers}
    text = (f"{len(layers)} crossbar layers" if len(names) == len(layers)
            else f"{len(layers)} crossbar arrays in {len(names)} layers")
    reused = {layer.settings.layer: layer.calls for layer in layers if layer.calls > 1}
    return text + "".join(f"; {name} called {calls} times" for name, calls in reused.items())


def describe_config(config: dict) -> str:
    """The fields of a ``HardwareConfig.to_dict()`` that differ from the defaults, as ``key=value``."""
    defaults = _flatten(HardwareConfig().to_dict())
    changed = {key: value for key, value in _flatten(config).items() if defaults.get(key) != value}
    if changed.get("layers"):
        changed["layers"] = "[" + "; ".join(map(rule_text, changed["layers"])) + "]"
    return settings_text(changed) or "xbar defaults (ideal periphery, learned input ranges, no tiling)"


def rule_text(rule: dict) -> str:
    """A layer rule as ``pattern=fc*: forward.out_bound=4`` or ``name=fc2: digital``."""
    selector = next((f"{key}={rule[key]}" for key in ("module_type", "pattern", "name") if rule.get(key)), "?")
    return f"{selector}: {'digital' if rule.get('digital') else settings_text(rule.get('overrides', {}))}"


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# -- the figure ----------------------------------------------------------------------------------

def plot_layers(layers: list[LayerSummary], path: os.PathLike, title: str) -> Path:
    """Save per-layer G+ / G- histograms and a bar chart of input ranges as an image
    (its type from the file name: .png, .svg, .pdf, ...)."""
    kind = image_type(Path(path), InspectError)
    if not layers:
        raise InspectError("there are no crossbar layers to plot")

    columns = min(4, max(1, len(layers)))
    rows = -(-len(layers) // columns)
    figure = pyplot().figure(figsize=(4 * columns, 3 + 2.6 * rows), layout="constrained")
    grid = figure.add_gridspec(rows + 1, columns, height_ratios=[1.2] + [1] * rows)
    labels = array_labels(layers)
    _plot_ranges(figure.add_subplot(grid[0, :]), layers, labels)
    for index, (layer, label) in enumerate(zip(layers, labels)):
        _plot_histogram(figure.add_subplot(grid[1 + index // columns, index % columns]), layer, label)
    figure.suptitle(title)
    return save_figure(figure, Path(path), kind)


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


def print_layers(console: Console, layers: list[LayerSummary], title: str,
                 digital: Sequence[DigitalLayer] = ()) -> None:
    """The layer table(s), fitted to the console's width, then the layers that stay digital and why."""
    for table in layer_tables(layers, title, console.width):
        say(console, table)
    print_digital(console, digital)


def print_digital(console: Console, digital: Sequence[DigitalLayer]) -> None:
    """The layers with a weight that stay digital and why, if there are any."""
    if digital:
        say(console, digital_table(digital))


def print_inspection(console: Console, inspection: Inspection, with_graph: bool) -> None:
    meta = inspection.metadata
    say(console, f"{inspection.path} ({inspection.format}, xbar {meta.get('xbar.version', 'unknown')})")
    if "xbar.hardware_config" in meta:
        say(console, f"hardware: {describe_config(meta['xbar.hardware_config'])}")
    if "xbar.converter" in meta:
        say(console, f"converter: {meta['xbar.converter']}")
    if inspection.layers:
        print_layers(console, inspection.layers, count_text(inspection.layers), inspection.digital)
    else:
        say(console, "no crossbar layers (no ai.xbar nodes): was this file written by xbar?")
        print_digital(console, inspection.digital)
    if with_graph:
        say(console, "graph:")
        for line in inspection.graph_lines:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
