"""Placement: every tile of every layer gets a (chip, core, array, row offset, column offset).

The heuristic, deterministic (the same layers and chip give the same mapping):

1. *Slots.* A slot is where one tile goes: one array, or two adjacent arrays
   (``array``, ``array + 1``) when G+ and G- sit on two arrays. Slots are
   numbered core by core, chip by chip, in the order of the cores' numbers.
2. *Order.* Layers are placed in execution order, each layer's replicas one
   after another, each replica's tiles in tile order, filling slots in number
   order. This keeps a layer's arrays on consecutive cores and consecutive
   layers next to each other: it minimises the distance (in core numbers)
   activations travel from one layer to the next, the only locality the cost
   model sees.
3. *Sharing* (``share_arrays``). Tiles smaller than an array share it along its
   diagonal (next fit): a tile goes where the previous one on that array ended,
   at (last row end, last column end), when it fits there, else a new slot opens.
   Regions on one array so never share a row or a column: each is driven and
   read on its own, and the array's time is shared out (the cost model's busy time).
   Each replica after a layer's first starts a new slot, so no two copies of a
   layer share an array's time.
4. *Capacity.* When the tiles need more slots than the chips have,
   :class:`~xbar.passes.errors.CapacityError` gives the numbers and the chips
   that would do.
5. *Replication.* With spare slots, the slowest pipeline stage (largest layer
   latency, the first such layer on a tie) gets one more replica while a whole
   copy of it fits into what is spare; replicas share the layer's MVMs
   (weight duplication, as PIMCOMP and NeuroSim's speed-up degree do). It stops
   at the first slowest stage that does not fit (replicating another cannot
   shorten the interval) or has as many replicas as MVMs.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import NamedTuple

from ...passes.errors import CapacityError
from .cost import ModelCost, device_columns, model_cost, mvm_ns, stage_ns
from .description import Chip
from .work import LayerWork


class Region(NamedTuple):
    """One replica of one tile on its physical array: ``rows`` x ``columns`` devices from
    (``row_offset``, ``col_offset``); with G+ and G- on two arrays, the same region of ``array + 1``
    holds G-."""

    node: str
    layer: str
    replica: int
    chip: int
    core: int
    array: int
    row_offset: int
    col_offset: int
    rows: int
    columns: int
    slot: int
    """Where the region is in placement order (one tile's arrays: rule 1 of the module docstring)."""


@dataclass(frozen=True)
class Mapping:
    """Where every tile sits, each layer's replicas, and what it costs."""

    chip: Chip
    chips: int
    regions: tuple[Region, ...]
    replicas: dict[str, int]
    cost: ModelCost

    @property
    def slots_used(self) -> int:
        return 1 + max((region.slot for region in self.regions), default=-1)

    @property
    def arrays_used(self) -> int:
        return self.slots_used * self.chip.arrays_per_tile

    @property
    def utilisation(self) -> float:
        """Devices holding weights / devices of every array of the chips."""
        chip = self.chip
        held = sum(r.rows * r.columns for r in self.regions) * chip.arrays_per_tile
        return held / (self.chips * chip.arrays * chip.rows * chip.columns)


def slots_per_core(chip: Chip) -> int:
    return chip.arrays_per_core // chip.arrays_per_tile


class _DiagonalPacker:
    """Next-fit placement of regions into numbered slots (rule 3 of the module docstring)."""

    def __init__(self, chip: Chip):
        self.rows, self.columns, self.share = chip.rows, chip.columns, chip.share_arrays
        self.slot, self.row, self.col = -1, chip.rows, chip.columns

    def put(self, rows: int, columns: int, fresh: bool = False) -> tuple[int, int, int]:
        """Where a region of ``rows`` x ``columns`` goes; ``fresh`` starts a new slot for it."""
        if fresh or not self.share or self.row + rows > self.rows or self.col + columns > self.columns:
            self.slot, self.row, self.col = self.slot + 1, 0, 0
        at = (self.slot, self.row, self.col)
        self.row, self.col = self.row + rows, self.col + columns
        return at


def _footprints(chip: Chip, layer: LayerWork) -> list[tuple[int, int]]:
    """(device rows, device columns) of each tile; a tile larger than the chip's array is refused."""
    width = device_columns(chip)
    footprints = [(tile.rows, tile.cols * width) for tile in layer.tiles]
    for tile, (rows, columns) in zip(layer.tiles, footprints):
        if rows > chip.rows or columns > chip.columns:
            raise CapacityError(f"{tile.node} needs {rows}x{columns} devices, more than {chip.name}'s "
                                f"{chip.rows}x{chip.columns} arrays: a layer rule sets mapping sizes larger than "
                                "the chip's; remove them")
    return footprints


def _slots_needed(chip: Chip, sequence: list[tuple[int, int]]) -> int:
    packer = _DiagonalPacker(chip)
    for rows, columns in sequence:
        packer.put(rows, columns)
    return packer.slot + 1


def place(chip: Chip, layers: list[LayerWork], chips: int = 1, replicate: bool = True) -> Mapping:
    """Place ``layers`` (in execution order) on ``chips`` copies of ``chip``; see the module docstring."""
    footprints = {layer.name: _footprints(chip, layer) for layer in layers}
    capacity = chips * chip.cores * slots_per_core(chip)
    needed = _slots_needed(chip, [f for layer in layers for f in footprints[layer.name]])
    if needed > capacity:
        raise CapacityError(_capacity_message(chip, needed, chips))
    replicas = _replicate(chip, layers, footprints, capacity - needed) if replicate else {}
    replicas = {layer.name: replicas.get(layer.name, 1) for layer in layers}
    regions = _lay_out(chip, layers, footprints, replicas)
    while regions and regions[-1].slot >= capacity:  # a layer after replicas packed one slot worse
        most = max(replicas.values())
        last = [name for name, count in replicas.items() if count == most][-1]
        replicas[last] -= 1
        regions = _lay_out(chip, layers, footprints, replicas)
    cost = model_cost(chip, layers, replicas, _busiest_slot_ns(chip, layers, regions, replicas))
    return Mapping(chip, chips, tuple(regions), replicas, cost)


def chips_needed(chip: Chip, layers: list[LayerWork]) -> int:
    """The fewest copies of ``chip`` that hold every tile of ``layers`` once (no replicas)."""
    needed = _slots_needed(chip, [f for layer in layers for f in _footprints(chip, layer)])
    return max(1, math.ceil(needed / (chip.cores * slots_per_core(chip))))


def _capacity_message(chip: Chip, needed: int, chips: int) -> str:
    arrays, have = needed * chip.arrays_per_tile, chips * chip.arrays
    fits = math.ceil(needed / (chip.cores * slots_per_core(chip)))
    on = f"{chips} {chip.name} chips have" if chips > 1 else f"{chip.name} has"
    return (f"the model needs {arrays} arrays of {chip.rows}x{chip.columns}; {on} {have}: use --chips {fits}, "
            "a smaller model, or keep layers digital with --exclude")


def _replicate(chip: Chip, layers: list[LayerWork], footprints: dict, spare: int) -> dict[str, int]:
    """Replica counts by rule 5 of the module docstring."""
    replicas = {layer.name: 1 for layer in layers}
    copy_slots = {layer.name: _slots_needed(chip, footprints[layer.name]) for layer in layers}
    array_ns = mvm_ns(chip)
    fixed = {layer.name: stage_ns(chip, layer, 1) - layer.mvms * array_ns for layer in layers}
    heap = [(-stage_ns(chip, layer, 1), index, layer) for index, layer in enumerate(layers)]
    heapq.heapify(heap)
    while heap:
        _, index, layer = heapq.heappop(heap)
        name = layer.name
        if copy_slots[name] > spare or replicas[name] >= layer.mvms:
            break
        replicas[name] += 1
        spare -= copy_slots[name]
        heapq.heappush(heap, (-(fixed[name] + layer.mvms * array_ns / replicas[name]), index, layer))
    return replicas


def _lay_out(chip: Chip, layers: list[LayerWork], footprints: dict, replicas: dict[str, int]) -> list[Region]:
    """Regions by rules 1-3 of the module docstring."""
    packer, per_core, regions = _DiagonalPacker(chip), slots_per_core(chip), []
    per_chip = chip.cores * per_core
    for layer in layers:
        for replica in range(replicas[layer.name]):
            for index, (tile, (rows, columns)) in enumerate(zip(layer.tiles, footprints[layer.name])):
                slot, row, col = packer.put(rows, columns, fresh=replica > 0 and index == 0)
                local = slot % per_chip
                regions.append(Region(tile.node, layer.name, replica, slot // per_chip, local // per_core,
                                      (local % per_core) * chip.arrays_per_tile, row, col, rows, columns, slot))
    return regions


def _busiest_slot_ns(chip: Chip, layers: list[LayerWork], regions: list[Region], replicas: dict[str, int]) -> float:
    """The longest time one slot computes per inference: each region runs its layer's MVMs / replicas."""
    mvms = {layer.name: layer.mvms for layer in layers}
    busy: dict[int, float] = {}
    for region in regions:
        busy[region.slot] = busy.get(region.slot, 0.0) + mvms[region.layer] / replicas[region.layer]
    return max(busy.values(), default=0.0) * mvm_ns(chip)
