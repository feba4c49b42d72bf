"""A mapping as files keep it (``xbar.mapping``, JSON): one entry per physical array, one per layer, the totals.

Per physical array: where it is, what it holds (each region: the array node, its layer, replica, offsets
and size in devices, and which conductances: ``G+ and G-`` in one place, or ``G+`` / ``G-`` when the pair
sits on two arrays) and the fraction of its devices holding weights. Per layer: arrays (physical, all
replicas), cores, replicas, utilisation and the cost model's figures (:meth:`.cost.LayerCost.as_dict`),
with its share of the total latency and energy.
"""

from __future__ import annotations

from .placement import Mapping, Region


def mapping_record(mapping: Mapping) -> dict:
    """The JSON-ready record of ``mapping``."""
    chip = mapping.chip
    cost = mapping.cost.as_dict()
    return {"chip": chip.name, "chips": mapping.chips, "arrays_used": mapping.arrays_used,
            "arrays_available": mapping.chips * chip.arrays, "utilisation": mapping.utilisation,
            "arrays": _array_entries(mapping), "layers": _layer_entries(mapping, cost.pop("layers")),
            "totals": cost}


def _array_entries(mapping: Mapping) -> list[dict]:
    chip = mapping.chip
    by_slot: dict[int, list[Region]] = {}
    for region in mapping.regions:
        by_slot.setdefault(region.slot, []).append(region)
    holds = ("G+", "G-") if chip.arrays_per_tile == 2 else ("G+ and G-",)
    entries = []
    for regions in by_slot.values():
        first = regions[0]
        used = sum(r.rows * r.columns for r in regions) / (chip.rows * chip.columns)
        for offset, conductances in enumerate(holds):
            entries.append({"chip": first.chip, "core": first.core, "array": first.array + offset,
                            "holds": conductances, "utilisation": used,
                            "regions": [_region_entry(r) for r in regions]})
    return entries


def _region_entry(region: Region) -> dict:
    return {"node": region.node, "layer": region.layer, "replica": region.replica, "row_offset": region.row_offset,
            "col_offset": region.col_offset, "rows": region.rows, "columns": region.columns}


def _layer_entries(mapping: Mapping, costs: list[dict]) -> list[dict]:
    chip = mapping.chip
    by_layer: dict[str, list[Region]] = {}
    for region in mapping.regions:
        by_layer.setdefault(region.layer, []).append(region)
    entries = []
    for cost in costs:
        regions = by_layer.get(cost["layer"], [])
        slots = {r.slot for r in regions}
        held = sum(r.rows * r.columns for r in regions)
        entries.append({"layer": cost["layer"], "arrays": len(slots) * chip.arrays_per_tile,
                        "cores": len({(r.chip, r.core) for r in regions}),
                        "utilisation": held / (len(slots) * chip.rows * chip.columns) if slots else 0.0} | cost)
    return entries
