"""Split crossbar layers that do not fit one array into tiles of the array's size.

``plan_tiles`` is the mapping (pure); ``TileLayersPass`` the graph edit. Rules:
* a layer's weight, seen as crossbar matrices (its kind's layout: rows are a
  group's input channels times the kernel taps, columns its output channels), is
  cut into as few arrays of at most ``max_input_size`` rows and ``max_output_size``
  columns (``mapping`` of its plan; 0: unlimited) as it takes, the rows and the
  columns each split as evenly as they go, as aihwkit splits a layer over its tiles;
* a convolution is cut between input channels (all kernel rows of a channel stay
  on one array; aihwkit cuts its unfolded rows, which splits alike wherever its
  cuts fall between channels); several groups of a grouped convolution share one
  array when they fit (block diagonal), otherwise each group is cut on its own;
* each tile becomes ``<layer>_tile<r>_<c>_mvm`` on its slice of the input
  (``<layer>_row<r>_slice``) and its block of the weight; tiles of one output
  block are summed digitally (``<layer>_col<c>_sum``), output blocks concatenated
  (``<layer>_concat``); the bias, if any, is still added once, after;
* a layer that fits one array, and ``max_*_size == 0``, are left untouched.
"""

from __future__ import annotations

import operator

import torch
from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..arrays import Tile, WeightLayout
from ..errors import TilingError
from ..operands import resolve_attribute
from ..plan import NodeTag, Role, Scope, add_node, check_names, tag_of, tagged


def _chunks(size: int, limit: int) -> list[tuple[int, int]]:
    """``size`` cut into as few chunks of at most ``limit`` (0: unlimited) as it takes, as even as they can be,
    the longer ones first: aihwkit's split of a layer over its tiles (300 rows on 256: 150 + 150, not 256 + 44)."""
    count = max(1, -(-size // limit)) if limit > 0 else 1
    base, longer = divmod(size, count)
    bounds = [0]
    for index in range(count):
        bounds.append(bounds[-1] + base + (index < longer))
    return list(zip(bounds, bounds[1:]))


def plan_tiles(layout: WeightLayout, max_input_size: int, max_output_size: int, layer: str = "layer") -> list[Tile]:
    """The arrays that hold a weight of ``layout``, at most ``max_input_size`` rows and
    ``max_output_size`` columns each (0: unlimited)."""
    groups, group_inputs, group_outputs = layout.groups, layout.group_inputs, layout.group_outputs
    group_rows = group_inputs * layout.rows_per_channel
    rows_fit = not max_input_size or group_rows <= max_input_size
    if rows_fit and (not max_output_size or group_outputs <= max_output_size):
        per_tile = groups
        if max_input_size:
            per_tile = min(per_tile, max_input_size // group_rows)
        if max_output_size:
            per_tile = min(per_tile, max_output_size // group_outputs)
        return [
            Tile(t, t if groups > 1 else 0, (first * group_inputs, last * group_inputs),
                 (first * group_outputs, last * group_outputs), (0, group_inputs), (0, group_outputs), last - first)
            for t, (first, last) in enumerate(_chunks(groups, per_tile))
        ]
    channels_per_tile = max_input_size // layout.rows_per_channel if max_input_size else group_inputs
    if channels_per_tile == 0:
        raise TilingError(f"{layer}: one input channel needs {layout.rows_per_channel} rows, more than "
                          f"mapping.max_input_size={max_input_size}; raise it or keep the layer digital")
    in_chunks = _chunks(group_inputs, channels_per_tile)
    out_chunks = _chunks(group_outputs, max_output_size)
    tiles = []
    for group in range(groups):
        base_in, base_out = group * group_inputs, group * group_outputs
        for i, (a, b) in enumerate(in_chunks):
            for j, (c, d) in enumerate(out_chunks):
                tiles.append(Tile(group * len(in_chunks) + i, group * len(out_chunks) + j,
                                  (base_in + a, base_in + b), (base_out + c, base_out + d), (a, b), (c, d)))
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
        for mvm in tagged(graph, Role.MVM):
            plan = tag_of(mvm).plan
            layer = plan.layer
            shape = tuple(resolve_attribute(graph_module, layer.weight).shape)
            if layer.weight_transposed:
                shape = shape[::-1]
            mapping = plan.mapping
            tiles = plan_tiles(layer.kind.layout(shape, layer.geometry), mapping.max_input_size,
                               mapping.max_output_size, layer.name)
            if len(tiles) > 1:
                self._split(graph, mvm, tiles)
                modified = True
        return PassResult(graph_module, modified)

    def _split(self, graph: fx.Graph, mvm: fx.Node, tiles: list[Tile]) -> None:
        plan = tag_of(mvm).plan
        layer, kind = plan.layer, plan.layer.kind
        activation, weight = mvm.args[:2]
        slices, partials = {}, {}
        with graph.inserting_before(mvm):
            for tile in tiles:
                if tile.inputs not in slices:
                    slices[tile.inputs] = add_node(
                        graph, "call_function", operator.getitem,
                        (activation, _channel_slice(kind.channel_dim, *tile.inputs)),
                        tag=NodeTag(Role.SLICE, plan, tile, Scope.ROW))
                block = graph.call_function(operator.getitem, (weight, kind.block_index(tile)))
                args = (slices[tile.inputs], block, *kind.arguments(kind.with_groups(layer.geometry, tile.groups)))
                node = add_node(graph, "call_function", mvm.target, args, tag=NodeTag(Role.MVM, plan, tile))
                partials.setdefault(tile.outputs, []).append(node)
            blocks = []
            for outputs, nodes in sorted(partials.items()):
                blocks.append(nodes[0] if len(nodes) == 1 else add_node(
                    graph, "call_function", sum, (nodes[1:], nodes[0]),
                    tag=NodeTag(Role.COLUMN_SUM, plan, tag_of(nodes[0]).tile, Scope.COLUMN)))
            out = blocks[0] if len(blocks) == 1 else add_node(
                graph, "call_function", torch.cat, (blocks, kind.channel_dim), tag=NodeTag(Role.CONCAT, plan))
        mvm.replace_all_uses_with(out)
        graph.erase_node(mvm)

    def ensures(self, graph_module: fx.GraphModule) -> None:
        check_names(graph_module.graph, type(self).__name__)
