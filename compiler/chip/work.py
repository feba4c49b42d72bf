"""What placement and the cost model read of a compiled model: its layers' arrays and MVMs, torch-free.

A :class:`TileWork` is one crossbar array of a layer (a tile, or the whole
layer when it fits one array) by the channel ranges it reads and writes; a
:class:`LayerWork` is a layer's tiles and how many MVMs one inference runs on
them. :mod:`.model_work` builds them from a converted model; tests and the
benchmark build them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TileWork:
    """One array of a layer: ``inputs`` / ``outputs`` are the [start, stop) channel ranges of the
    activation it reads and the output it writes, ``taps`` the rows each input channel drives
    (a convolution's kernel size), ``weights`` the weight elements it holds."""

    node: str
    inputs: tuple[int, int]
    outputs: tuple[int, int]
    taps: int = 1
    weights: int = 0

    @property
    def rows(self) -> int:
        return (self.inputs[1] - self.inputs[0]) * self.taps

    @property
    def cols(self) -> int:
        """Weight columns (outputs); the devices they take depend on the chip's pair layout."""
        return self.outputs[1] - self.outputs[0]

    @property
    def weight_count(self) -> int:
        """Weights held: ``weights`` when known, else the full block (rows x columns)."""
        return self.weights or self.rows * self.cols


@dataclass(frozen=True)
class LayerWork:
    """One crossbar layer: its arrays, in tile order, and its MVMs per inference (a linear layer: one
    per token; a convolution: one per output position; a layer called twice: both calls')."""

    name: str
    tiles: tuple[TileWork, ...]
    mvms: int

    @property
    def input_rows(self) -> int:
        """Input elements one MVM reads (each distinct input slice once)."""
        return sum(t.rows for t in {t.inputs: t for t in self.tiles}.values())

    @property
    def outputs(self) -> int:
        """Output elements one MVM writes (each distinct output block once)."""
        return sum(t.cols for t in {t.outputs: t for t in self.tiles}.values())

    @property
    def partial_sums(self) -> int:
        """Digital adds per MVM that sum the tiles of one output block."""
        counts: dict[tuple[int, int], int] = {}
        for tile in self.tiles:
            counts[tile.outputs] = counts.get(tile.outputs, 0) + 1
        return sum((count - 1) * (stop - start) for (start, stop), count in counts.items())

    @property
    def weights(self) -> int:
        return sum(t.weight_count for t in self.tiles)
