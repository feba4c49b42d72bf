"""The attributes that say which part of its layer's weight an ``ai.xbar`` node holds and, under a chip
target, where it sits; and the chip metadata.

Every node: ``in_offset``, ``in_size``, ``out_offset``, ``out_size`` (its block of the layer's
``[out, in x kernel]`` weight, :mod:`xbar.compiler.inspection.region`) and ``in_total``, ``out_total``
(the layer's whole matrix). Under a chip target also ``replicas`` and, one entry per replica (replica k
at index k), ``chip``, ``core``, ``array`` (G+ and G- together, or G+ with G- on ``array + 1``),
``row_offset``, ``col_offset`` (in devices). The file's metadata ``xbar.chip`` is the chip description
and ``xbar.mapping`` the mapping's record (:mod:`xbar.compiler.chip.record`).
"""

from __future__ import annotations

import json
from typing import Optional

import onnx_ir as ir

from ..chip.placement import Mapping
from ..chip.record import mapping_record
from ..inspection.summary import LayerSummary
from .ops import REGION_ATTRIBUTES


def annotate_nodes(matched: list[tuple[ir.Node, str]], arrays: list[LayerSummary],
                   mapping: Optional[Mapping]) -> None:
    """Set the region (and placement) attributes on each matched ``(node, module name)``."""
    regions = {array.node: array.region for array in arrays}
    placed: dict[str, list] = {}
    for region in () if mapping is None else mapping.regions:
        placed.setdefault(region.node, []).append(region)
    for node, module_name in matched:
        for name, value in regions[module_name].as_dict().items():
            if name in REGION_ATTRIBUTES:
                node.attributes[name] = ir.AttrInt64(name, value)
        if mapping is None:
            continue
        copies = sorted(placed[module_name], key=lambda region: region.replica)
        node.attributes["replicas"] = ir.AttrInt64("replicas", len(copies))
        for name in ("chip", "core", "array", "row_offset", "col_offset"):
            node.attributes[name] = ir.AttrInt64s(name, [getattr(copy, name) for copy in copies])


def chip_metadata(mapping: Optional[Mapping]) -> dict[str, str]:
    """``xbar.chip`` and ``xbar.mapping`` for a chip target; nothing otherwise."""
    if mapping is None:
        return {}
    return {"xbar.chip": json.dumps(mapping.chip.to_dict(), sort_keys=True, allow_nan=False),
            "xbar.mapping": json.dumps(mapping_record(mapping), sort_keys=True, allow_nan=False)}
