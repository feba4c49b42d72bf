"""A converted model's layers as :class:`~.work.LayerWork`: its arrays (from the shared summary) and the
MVMs one inference runs on them (counted on the example inputs)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.utils._pytree as pytree
from torch import fx

from ...passes.errors import UserError
from ...passes.numerics.crossbar import Crossbar, crossbar_modules
from ..inspection.summary import LayerSummary
from .work import LayerWork, TileWork


def layer_work(converted: fx.GraphModule, arrays: list[LayerSummary],
               example_inputs: Optional[Sequence]) -> list[LayerWork]:
    """One :class:`LayerWork` per crossbar layer, in the order the graph first calls them; without
    ``example_inputs`` the MVMs are not counted (0: enough to check what fits)."""
    mvms = {} if example_inputs is None else count_mvms(converted, example_inputs)
    order = {node.target: index for index, node in reversed(list(enumerate(converted.graph.nodes)))
             if node.op == "call_module"}
    tiles: dict[str, list[tuple[tuple, TileWork]]] = {}
    per_layer: dict[str, int] = {}  # every array of a layer runs each of its MVMs
    for array in sorted(arrays, key=lambda a: order.get(a.node, math.inf)):
        region, settings = array.region, array.settings
        tile = TileWork(array.node, region.inputs, region.outputs, region.taps, math.prod(array.weight_shape))
        tiles.setdefault(settings.layer, []).append(((settings.tile_row, settings.tile_col), tile))
        per_layer[settings.layer] = max(per_layer.get(settings.layer, 0), mvms.get(array.node, 0))
    return [LayerWork(layer, tuple(tile for _, tile in sorted(entries, key=lambda e: e[0])), per_layer[layer])
            for layer, entries in tiles.items()]


def count_mvms(converted: fx.GraphModule, example_inputs: Sequence) -> dict[str, int]:
    """Array module name -> MVMs it runs per sample on ``example_inputs`` (batch first): a linear array one
    per token, a convolution one per output position, summed over the array's calls."""
    batch = _batch_size(example_inputs)
    counts: dict[str, int] = {}
    hooks = [module.register_forward_hook(lambda m, args, out, name=name: _count(counts, name, m, out))
             for name, module in crossbar_modules(converted).items()]
    try:
        with torch.no_grad():
            converted(*example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: count // batch for name, count in counts.items()}


def _count(counts: dict[str, int], name: str, module: Crossbar, output: torch.Tensor) -> None:
    channel_dim = module.kind.channel_dim
    vectors = output.numel() // output.shape[channel_dim]
    counts[name] = counts.get(name, 0) + vectors


def _batch_size(example_inputs: Sequence) -> int:
    tensors = [x for x in pytree.tree_leaves(tuple(example_inputs)) if isinstance(x, torch.Tensor) and x.dim()]
    if not tensors:
        raise UserError("a chip target counts MVMs on the example inputs: give at least one tensor input, "
                        "batch first")
    return tensors[0].shape[0]
