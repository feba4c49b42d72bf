"""How a layer's weight maps onto crossbar arrays.

A weight is seen as one crossbar matrix per group (:class:`WeightLayout`): each input
channel drives ``rows_per_channel`` rows (a convolution's kernel taps), each output
channel is one column. Tiling cuts those matrices into :class:`Tile` s, one per array.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WeightLayout:
    """A weight as crossbar matrices: per group, ``group_inputs`` input channels of
    ``rows_per_channel`` rows each and ``group_outputs`` columns."""

    groups: int
    group_inputs: int
    group_outputs: int
    rows_per_channel: int = 1


@dataclass(frozen=True)
class Tile:
    """One array of a tiled layer.

    ``row`` / ``col`` are its position in the layer's grid of arrays;
    ``inputs`` / ``outputs`` the [start, stop) channel ranges of the activation it
    reads and of the layer output it writes; ``weight_inputs`` / ``weight_outputs``
    the same ranges counted within a group (what the weight's group-local dim
    holds); ``groups`` the convolution groups packed into it.
    """

    row: int
    col: int
    inputs: tuple[int, int]
    outputs: tuple[int, int]
    weight_inputs: tuple[int, int]
    weight_outputs: tuple[int, int]
    groups: int = 1

    @property
    def suffix(self) -> str:
        return f"_tile{self.row}_{self.col}"
