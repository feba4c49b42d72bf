"""``xbar inspect --mapping --plot``: the chip as a grid of cores, each array's occupied regions coloured by
layer, beside each layer's latency and energy."""

from __future__ import annotations

import math
import os
from pathlib import Path

from ...passes.errors import InspectError
from .figures import image_type, pyplot, save_figure

MAX_CHIPS_DRAWN = 4
"""Chips drawn side by side; a mapping over more draws its first ones and says so in the title."""


def plot_mapping(record: dict, chip: dict, path: os.PathLike, title: str) -> Path:
    """Save the mapping ``record`` (``xbar.mapping``) of ``chip`` (``xbar.chip``) as an image."""
    kind = image_type(Path(path), InspectError)
    layers = [entry["layer"] for entry in record["layers"]]
    colours = {name: pyplot().get_cmap("tab20")(index % 20) for index, name in enumerate(layers)}
    figure = pyplot().figure(figsize=(14, 6), layout="constrained")
    grid = figure.add_gridspec(2, 2, width_ratios=[1.4, 1])
    drawn = min(record["chips"], MAX_CHIPS_DRAWN)
    _draw_chips(figure.add_subplot(grid[:, 0]), record, chip, colours, drawn)
    _bars(figure.add_subplot(grid[0, 1]), record["layers"], "latency_ns", "latency per inference (ns)", colours)
    _bars(figure.add_subplot(grid[1, 1]), record["layers"], "energy_pj", "energy per inference (pJ)", colours)
    more = f" (first {drawn} of {record['chips']} chips)" if drawn < record["chips"] else ""
    figure.suptitle(f"{title}: {record['chip']}{more}, {record['arrays_used']} arrays, "
                    f"{record['utilisation']:.1%} of the devices hold weights")
    return save_figure(figure, Path(path), kind)


def _draw_chips(axes, record: dict, chip: dict, colours: dict, drawn: int) -> None:
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    side = math.ceil(math.sqrt(chip["cores"]))
    per_side = math.ceil(math.sqrt(chip["arrays_per_core"]))
    outlines, regions, faces = [], [], []
    for entry in record["arrays"]:
        if entry["chip"] >= drawn or entry["holds"] == "G-":
            continue
        x, y = _array_corner(entry, side, per_side)
        for region in entry["regions"]:
            regions.append(Rectangle((x + region["col_offset"] / chip["columns"] / per_side,
                                      y + region["row_offset"] / chip["rows"] / per_side),
                                     region["columns"] / chip["columns"] / per_side,
                                     region["rows"] / chip["rows"] / per_side))
            faces.append(colours[region["layer"]])
    for index in range(drawn * chip["cores"]):
        core_x = (index // chip["cores"]) * (side + 1) + (index % chip["cores"]) % side
        outlines.append(Rectangle((core_x, (index % chip["cores"]) // side), 1, 1))
    axes.add_collection(PatchCollection(outlines, facecolor="whitesmoke", edgecolor="grey", linewidth=0.5))
    axes.add_collection(PatchCollection(regions, facecolor=faces, edgecolor="none"))
    axes.set_xlim(-0.2, drawn * (side + 1) - 0.8)
    axes.set_ylim(side + 0.2, -0.2)
    axes.set_aspect("equal")
    axes.set_axis_off()
    axes.set_title("cores (grey squares), arrays within them, regions coloured by layer")


def _array_corner(entry: dict, side: int, per_side: int) -> tuple[float, float]:
    core_x = entry["chip"] * (side + 1) + entry["core"] % side
    core_y = entry["core"] // side
    return core_x + (entry["array"] % per_side) / per_side, core_y + (entry["array"] // per_side) / per_side


def _bars(axes, layers: list[dict], key: str, label: str, colours: dict) -> None:
    names = [entry["layer"] for entry in layers]
    axes.bar(range(len(names)), [entry[key] for entry in layers], color=[colours[name] for name in names])
    axes.set_ylabel(label)
    axes.set_xticks(range(len(names)), names if len(names) <= 30 else [""] * len(names), rotation=90, fontsize=7)
