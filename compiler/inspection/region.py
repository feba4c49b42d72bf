"""Which part of its layer's weight one array holds: :class:`WeightRegion`.

The layer's weight is seen as one matrix ``[out, in x kernel]``: rows are output
channels, columns the input channels with each channel's kernel taps next to each
other (a linear layer: ``[out, in]``; a convolution ``[out, in / groups, *k]``
reshaped to ``[out, in / groups * prod(k)]``; a transposed convolution's
``[in, out / groups, *k]`` weight transposed to ``[out / groups, in, *k]`` first).
An array's G+ and G- (shaped like its weight block) are the block
``[out_offset : out_offset + out_size, in_offset : in_offset + in_size]`` of it,
reshaped the same way; ``out_total`` x ``in_total`` is the whole matrix.
``inputs`` / ``outputs`` are the activation channels the array reads and writes
and ``taps`` the rows each input channel drives: what placement and cost read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Optional

from ...passes.arrays import Tile

if TYPE_CHECKING:
    from ...passes.kinds.base import LayerKind


@dataclass(frozen=True)
class WeightRegion:
    """The block of the layer's ``[out, in x kernel]`` weight one array holds (module docstring)."""

    in_offset: int
    in_size: int
    out_offset: int
    out_size: int
    in_total: int
    out_total: int
    inputs: tuple[int, int]
    outputs: tuple[int, int]
    taps: int

    def as_dict(self) -> dict:
        return {"in_offset": self.in_offset, "in_size": self.in_size, "out_offset": self.out_offset,
                "out_size": self.out_size, "in_total": self.in_total, "out_total": self.out_total,
                "inputs": list(self.inputs), "outputs": list(self.outputs), "taps": self.taps}

    @classmethod
    def from_dict(cls, data: dict) -> "WeightRegion":
        return cls(*(int(data[key]) for key in ("in_offset", "in_size", "out_offset", "out_size", "in_total",
                                                "out_total")), tuple(data["inputs"]), tuple(data["outputs"]),
                   int(data["taps"]))


def weight_region(kind: LayerKind, block_shape: tuple[int, ...], geometry: Any, tile: Optional[Tile]) -> WeightRegion:
    """The region of an array with a weight block of ``block_shape`` (``tile`` None: the whole layer);
    the totals are this array's own until :func:`with_layer_totals` sets the layer's."""
    layout = kind.layout(block_shape, geometry)
    taps = layout.rows_per_channel
    if tile is None:
        tile = Tile(0, 0, (0, layout.groups * layout.group_inputs), (0, layout.groups * layout.group_outputs),
                    (0, layout.group_inputs), (0, layout.group_outputs), layout.groups)
    first = outputs_first(kind)
    out_range = tile.outputs if first else tile.weight_outputs
    in_range = tile.weight_inputs if first else tile.inputs
    in_offset, in_size = in_range[0] * taps, (in_range[1] - in_range[0]) * taps
    out_offset, out_size = out_range[0], out_range[1] - out_range[0]
    return WeightRegion(in_offset, in_size, out_offset, out_size, in_offset + in_size, out_offset + out_size,
                        tile.inputs, tile.outputs, taps)


def outputs_first(kind: LayerKind) -> bool:
    """Whether the kind's weight holds output channels on dim 0 (linear, convolution) or input channels
    (transposed convolution), read from the block its ``block_index`` takes for a probe tile."""
    probe = Tile(0, 0, (0, 1), (2, 3), (4, 5), (6, 7))
    return kind.block_index(probe)[0] == slice(2, 3)


def with_layer_totals(regions: list[WeightRegion]) -> list[WeightRegion]:
    """The regions of one layer's arrays with ``in_total`` / ``out_total`` of the whole layer."""
    in_total = max(region.in_offset + region.in_size for region in regions)
    out_total = max(region.out_offset + region.out_size for region in regions)
    return [replace(region, in_total=in_total, out_total=out_total) for region in regions]


def block_view(block, out_size: int, in_size: int, first: bool):
    """An array's weight-shaped numpy block as its ``[out_size, in_size]`` part of the layer's matrix;
    ``first`` is :func:`outputs_first` of its kind."""
    return (block if first else block.swapaxes(0, 1)).reshape(out_size, in_size)
