"""Split crossbar layers that do not fit one array into tiles of the array's size.

``plan_tiles`` is the mapping (pure); ``TileLayersPass`` the graph edit. Rules:
* a layer's weight (``mapping`` of its plan), seen as its unfolded matrix (rows: ``in_channels/groups x
  kernel`` inputs, columns: outputs), is cut into arrays of at most
  ``max_input_size`` rows and ``max_output_size`` columns (0: unlimited);
* a convolution is cut between input channels (all kernel rows of a channel stay
  on one array); several groups of a grouped convolution share one array when
  they fit (block diagonal), otherwise each group is cut on its own;
* each tile becomes ``<layer>_tile<r>_<c>_mvm`` on its slice of the input
  (``<layer>_row<r>_slice``) and of the weight; tiles of one output block are
  summed digitally (``<layer>_col<c>_sum``), output blocks concatenated
  (``<layer>_concat``); the bias, if any, is still added once, after;
* a layer that fits one array, and ``max_*_size == 0``, are left untouched.
"""

from __future__ import annotations

import math
import operator

import torch
from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from .errors import UserError
from .matching import resolve_attribute
from .plan import NodeTag, Tile, add_node, check_names, tag_of, tagged


class TilingError(UserError):
    """A layer cannot be cut to the configured array size."""


def _chunks(size: int, limit: int) -> list[tuple[int, int]]:
    step = limit if limit > 0 else size
    return [(start, min(size, start + step)) for start in range(0, size, step)]


def plan_tiles(weight_shape: tuple, groups: int, max_input_size: int, max_output_size: int,
               layer: str = "layer") -> list[Tile]:
    """The arrays that hold a weight of ``weight_shape`` ([out, in/groups, *kernel])."""
    out_channels, group_inputs, *kernel = weight_shape
    rows_per_channel = math.prod(kernel)
    group_outputs = out_channels // groups
    rows_limit = max_input_size or math.inf
    cols_limit = max_output_size or math.inf
    if group_inputs * rows_per_channel <= rows_limit and group_outputs <= cols_limit:
        per_tile = min(groups, rows_limit // (group_inputs * rows_per_channel), cols_limit // group_outputs)
        per_tile = int(per_tile)
        return [
            Tile(t, t if groups > 1 else 0, (first * group_inputs, last * group_inputs),
                 (first * group_outputs, last * group_outputs), (0, group_inputs), last - first)
            for t, (first, last) in enumerate(_chunks(groups, per_tile))
        ]
    channels_per_tile = int(rows_limit // rows_per_channel)
    if channels_per_tile == 0:
        raise TilingError(f"{layer}: one input channel needs {rows_per_channel} rows, more than "
                          f"mapping.max_input_size={max_input_size}; raise it or keep the layer digital")
    in_chunks = _chunks(group_inputs, channels_per_tile)
    out_chunks = _chunks(group_outputs, max_output_size)
    tiles = []
    for group in range(groups):
        base_in, base_out = group * group_inputs, group * group_outputs
        for i, (a, b) in enumerate(in_chunks):
            for j, (c, d) in enumerate(out_chunks):
                tiles.append(Tile(group * len(in_chunks) + i, group * len(out_chunks) + j,
                                  (base_in + a, base_in + b), (base_out + c, base_out + d), (a, b), 1))
    return tiles


def _channel_slice(channel_dim: int, start: int, stop: int) -> tuple:
    """An index that takes [start, stop) along ``channel_dim`` (-1 or 1)."""
    if channel_dim == -1:
        return (Ellipsis, slice(start, stop))
    return (slice(None), slice(start, stop))


class TileLayersPass(PassBase):
    """Cut each layer into arrays of its plan's ``mapping`` size; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        modified = False
        for mvm in tagged(graph, "mvm"):
            tag = tag_of(mvm)
            layer = tag.plan.layer
            shape = tuple(resolve_attribute(graph_module, layer.weight).shape)
            if layer.weight_transposed:
                shape = (shape[1], shape[0])
            groups = layer.geometry.groups if layer.geometry else 1
            mapping = tag.plan.mapping
            tiles = plan_tiles(shape, groups, mapping.max_input_size, mapping.max_output_size, layer.name)
            if len(tiles) > 1:
                self._split(graph, mvm, tiles)
                modified = True
        return PassResult(graph_module, modified)

    def _split(self, graph: fx.Graph, mvm: fx.Node, tiles: list[Tile]) -> None:
        tag = tag_of(mvm)
        plan, channel_dim = tag.plan, tag.plan.layer.channel_dim
        activation, weight, *conv_args = mvm.args
        slices, partials = {}, {}
        with graph.inserting_before(mvm):
            for tile in tiles:
                if tile.inputs not in slices:
                    slices[tile.inputs] = add_node(
                        graph, "call_function", operator.getitem,
                        (activation, _channel_slice(channel_dim, *tile.inputs)),
                        tag=NodeTag("slice", plan, tile, row_only=True))
                weight_block = graph.call_function(
                    operator.getitem, (weight, (slice(*tile.outputs), slice(*tile.weight_inputs))))
                args = (slices[tile.inputs], weight_block)
                if conv_args:
                    args += (*conv_args[:-1], tile.groups)
                node = add_node(graph, "call_function", mvm.target, args, tag=NodeTag("mvm", plan, tile))
                partials.setdefault(tile.outputs, []).append(node)
            blocks = []
            for col, (outputs, nodes) in enumerate(sorted(partials.items())):
                blocks.append(nodes[0] if len(nodes) == 1 else add_node(
                    graph, "call_function", sum, (nodes[1:], nodes[0]), tag=NodeTag(f"col{col}_sum", plan)))
            out = blocks[0] if len(blocks) == 1 else add_node(
                graph, "call_function", torch.cat, (blocks, channel_dim), tag=NodeTag("concat", plan))
        mvm.replace_all_uses_with(out)
        graph.erase_node(mvm)

    def ensures(self, graph_module: fx.GraphModule) -> None:
        check_names(graph_module.graph, type(self).__name__)
