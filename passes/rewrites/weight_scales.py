"""The stored weight scales of an array as a node of the prepared graph.

Rules, for a crossbar node (``mvm``) whose plan stores its mapping scales
(``LayerPlan.stores_scales``: omega > 0 or a remap, without ``weight_scaling_dynamic``):
* the array gets one :class:`~xbar.passes.numerics.weight_mapping.WeightScales`
  submodule ``<layer>[_tile<r>_<c>]_weight_scales``, set from the weight block as
  the model is prepared (aihwkit's ``set_weights``); a shared layer's call sites share it;
* each call site reads it through one ``call_module`` node of that name, made by the
  first pass that needs it (the ADC, the output noise) right before the crossbar node;
* other plans get no node: their scale is derived from the weight (or is 1).
"""

from __future__ import annotations

from typing import Optional

from torch import fx

from ..numerics.weight_mapping import WeightScales, initial_scales, weight_block
from ..plan import Role, add_node, retag, tag_of

READ_BY = "xbar_weight_scales"
"""``mvm.meta`` key of the node that reads the crossbar node's stored weight scales."""


def weight_scales_node(graph_module: fx.GraphModule, mvm: fx.Node) -> Optional[fx.Node]:
    """The node reading ``mvm``'s stored weight scales (made on first use), or None if its plan has none."""
    tag = tag_of(mvm)
    plan = tag.plan
    if not plan.stores_scales:
        return None
    if READ_BY in mvm.meta:
        return mvm.meta[READ_BY]
    scales_tag = retag(tag, Role.WEIGHT_SCALES)
    if not hasattr(graph_module, scales_tag.name):
        weight = weight_block(graph_module, plan, tag.tile)
        scales = initial_scales(weight, plan.mapping, plan.scale_rows)
        graph_module.add_submodule(scales_tag.name, WeightScales(scales, plan.layer.channel_dim, weight.dim()))
    with graph_module.graph.inserting_before(mvm):
        node = add_node(graph_module.graph, "call_module", scales_tag.name, (), tag=scales_tag)
    mvm.meta[READ_BY] = node
    return node
