"""aihwkit's Fusion CSV: a compiled model's weights as the IBM Fusion chip's target conductances, and back.

The file is laid out as aihwkit's ``fusion_export`` writes it, one column per analog layer (in the order
the model's arrays are listed):

* five header rows, each ending ``\\n``: the layer's ``id`` (xbar numbers the layers 1, 2, ...; aihwkit
  numbers every module of the model's tree but its containers, so its ids skip a model's activation
  modules, which a compiled model no longer has), its aihwkit ``class`` (``AnalogLinear``,
  ``AnalogConv2d``, ...), ``num_weights``, ``height`` (outputs) and ``width`` (inputs x kernel);
* a row of layer names, then one row per layer (``csv`` rows, ending ``\\r\\n``): the target conductances
  in uS of each of the layer's arrays in turn (by tile: input slice, then output slice), each its
  ``[out_size, in_size]`` block flattened row by row, as :class:`FusionConductanceConverter` maps the
  block's weights (each output row scaled to ``g_max``; the weight's sign stays off the chip).

An array's weights are its G+ - G- over its converter's scale ratio (the inverse of the converter that
made them). Reading back, each array's block of measured conductances is fitted, row by row, to the
weights it was exported from (aihwkit's ``fusion_import``), and the fitted weights are mapped to G+ and
G- with the array's own scale ratio and g_min (one device at g_min, the other above it; not clipped at
g_max, so what the chip holds is kept).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from ...passes.errors import ConfigError, MeasuredConductancesError
from ...passes.numerics.fusion_converter import FusionConductanceConverter
from ..files import reporting_write_errors
from .arrays import LogicalArray, Source
from .read import checked_conductances
from .write import replace_atomically

HEADER_ROWS = ("id", "class", "num_weights", "height", "width")


@dataclass(frozen=True)
class FusionLayer:
    """One column of the file: a layer, what its header says of it, and its arrays in file order."""

    name: str
    id: int
    aihwkit_class: str
    height: int
    width: int
    arrays: tuple[LogicalArray, ...]

    @property
    def num_weights(self) -> int:
        return self.height * self.width

    def header(self) -> tuple:
        """The layer's value in each of :data:`HEADER_ROWS`."""
        return self.id, self.aihwkit_class, self.num_weights, self.height, self.width


def aihwkit_class(kind: str) -> str:
    """The aihwkit layer class of a layer kind: ``AnalogLinear``, ``AnalogConv2d``, ... (and, where aihwkit has
    no such class, the same spelling: ``AnalogConvTranspose2d``)."""
    return "Analog" + "".join(part.capitalize() for part in kind.split("_"))


def fusion_layers(source: Source) -> list[FusionLayer]:
    """The file's layers: each layer's arrays, ordered by tile, in the order the layers first appear."""
    grouped: dict[str, list[LogicalArray]] = {}
    if any(array.multi_device for array in source.arrays):
        raise ConfigError("aihwkit's Fusion CSV holds one device per weight; a model compiled with a multi-device "
                          "converter has no Fusion form: write --format xbar, or compile with the single-pair one")
    for array in source.arrays:
        grouped.setdefault(array.layer, []).append(array)
    layers = []
    for index, (name, arrays) in enumerate(grouped.items(), start=1):
        layers.append(FusionLayer(name, index, aihwkit_class(arrays[0].kind), arrays[0].region["out_total"],
                                  arrays[0].region["in_total"], tuple(sorted(arrays, key=lambda a: a.tile))))
    return layers


def array_weights(array: LogicalArray) -> np.ndarray:
    """The ``[out_size, in_size]`` weights an array holds: ``(G+ - G-) / s`` with each row's scale ratio."""
    return (array.conductances["g_plus"] - array.conductances["g_minus"]) / array.scale_ratios[:, None]


def header_text(layers: list[FusionLayer]) -> str:
    """The five header rows, each ending ``\\n`` (aihwkit writes them as text before its CSV writer)."""
    columns = [layer.header() for layer in layers]
    return "".join(",".join(str(values[row]) for values in columns) + "\n" for row in range(len(HEADER_ROWS)))


def fusion_text(source: Source, converter: FusionConductanceConverter) -> str:
    """The whole CSV file of ``source``'s targets."""
    layers = fusion_layers(source)
    text = io.StringIO(newline="")
    text.write(header_text(layers))
    rows = csv.writer(text, delimiter=",")
    rows.writerow([layer.name for layer in layers])
    for layer in layers:
        rows.writerow([value for array in layer.arrays
                       for value in converter.convert_to_conductances(array_weights(array))[0][0].ravel().tolist()])
    return text.getvalue()


def write_fusion_csv(source: Source, path: Union[str, os.PathLike],
                     converter: FusionConductanceConverter) -> Path:
    """Write ``source``'s Fusion CSV to ``path`` (through a temporary file: never a half-written one); the
    path is checked by :func:`~.paths.check_output_path`."""
    path = Path(path)
    text = fusion_text(source, converter).encode("utf-8")
    with reporting_write_errors(path, "-o"):
        replace_atomically(path, lambda handle: handle.write(text))
    return path


def read_fusion_measured(source: Source, path: Union[str, os.PathLike],
                         converter: FusionConductanceConverter) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{array name: (G+, G-)}``, each ``[out_size, in_size]`` float32 in uS, from the conductances measured
    into ``source``'s Fusion CSV (checked against the model first)."""
    path = Path(path)
    layers = fusion_layers(source)
    rows = _checked_rows(path, layers)
    measured = {}
    for layer, row in zip(layers, rows):
        offset = 0
        for array in layer.arrays:
            size = array.region["out_size"] * array.region["in_size"]
            block = row[offset:offset + size].reshape(array.region["out_size"], array.region["in_size"])
            offset += size
            measured[array.name] = _pair(array, converter.convert_back_to_weights(
                [block], {"original_weights": array_weights(array)}))
    return measured


def _pair(array: LogicalArray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """G+ and G- holding ``weights`` with the array's scale ratios and g_min."""
    scaled = weights * array.scale_ratios[:, None]
    return tuple(np.ascontiguousarray(array.g_min + np.maximum(sign * scaled, 0.0), dtype=np.float32)
                 for sign in (1.0, -1.0))


def _checked_rows(path: Path, layers: list[FusionLayer]) -> list[np.ndarray]:
    """The file's conductance rows, one per layer, after checking header, names, lengths and values."""
    try:
        lines = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MeasuredConductancesError(f"{path} is not a CSV file ({exc})") from None
    lines = [line for line in lines if line]
    expected = header_text(layers).splitlines() + [",".join(layer.name for layer in layers)]
    if len(lines) < len(expected) or len(lines[0]) != len(layers):
        found = len(lines[0]) if lines else 0
        raise MeasuredConductancesError(f"{path} holds {found} layers, this model has {len(layers)} analog layers; "
                                        "give the Fusion CSV written for this model")
    for number, (line, wanted) in enumerate(zip(lines, expected), start=1):
        if ",".join(line) != wanted:
            what = HEADER_ROWS[number - 1] if number <= len(HEADER_ROWS) else "layer names"
            raise MeasuredConductancesError(f"{path} row {number} ({what}) is {','.join(line)!r}, this model's "
                                            f"is {wanted!r}; give the Fusion CSV written for this model")
    data = lines[len(expected):]
    if len(data) != len(layers):
        raise MeasuredConductancesError(f"{path} has {len(data)} conductance rows after its header, this model "
                                        f"has {len(layers)} layers; write one row per layer")
    return [_values(path, layer, line) for layer, line in zip(layers, data)]


def _values(path: Path, layer: FusionLayer, line: list[str]) -> np.ndarray:
    where = f"{path} layer {layer.name!r}"
    if len(line) != layer.num_weights:
        raise MeasuredConductancesError(f"{where} has {len(line)} conductances, the layer has {layer.num_weights} "
                                        "weights; write one value per weight")
    try:
        values = np.array([float(value) for value in line], dtype=np.float64)
    except ValueError:
        bad = next(value for value in line if not _is_number(value))
        raise MeasuredConductancesError(f"{where} holds {bad!r}, not a number; give conductances in uS") from None
    return checked_conductances(values, values.shape, where, path)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
