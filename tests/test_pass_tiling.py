"""TileLayersPass, rule by rule, on small traced graphs."""

import operator

import pytest
import torch
import torch.nn.functional as F
from pass_graphs import OneLinear, names, run, traced
from torch import nn

from xbar.passes.errors import TilingError
from xbar.passes.plan import Role, Scope, tag_of, tagged
from xbar.passes.rewrites.isolate_layers import IsolateCrossbarLayersPass
from xbar.passes.rewrites.tiling import TileLayersPass


def tiled(module, x, mapping):
    module = module.eval()
    graph_module, plans = traced(module, mapping)
    modified = run(graph_module, IsolateCrossbarLayersPass(plans), TileLayersPass())[1]
    assert torch.allclose(graph_module(x), module(x), atol=1e-5)
    return graph_module, modified


def test_a_layer_is_cut_into_row_slices_summed_per_column_and_concatenated():
    graph_module, modified = tiled(OneLinear(6, 4), torch.randn(3, 6),
                                   {"mapping.max_input_size": 4, "mapping.max_output_size": 3})
    assert modified
    assert names(graph_module) == [
        "fc_row0_slice", "fc_tile0_0_mvm", "fc_tile0_1_mvm", "fc_row1_slice", "fc_tile1_0_mvm", "fc_tile1_1_mvm",
        "fc_col0_sum", "fc_col1_sum", "fc_concat", "fc_add_bias"]
    nodes = {n.name: n for n in graph_module.graph.nodes}
    assert nodes["fc_row1_slice"].args[1] == (Ellipsis, slice(3, 6))  # 6 inputs on arrays of 4 rows: 3 + 3
    corner = nodes["fc_tile1_1_mvm"]
    assert corner.args[0] is nodes["fc_row1_slice"] and corner.args[1].target is operator.getitem
    assert corner.args[1].args[1] == (slice(2, 4), slice(3, 6))  # outputs 2-4 of inputs 3-6
    assert tag_of(corner).tile.row == 1 and tag_of(corner).tile.col == 1
    column = tag_of(nodes["fc_col1_sum"])
    assert column.role is Role.COLUMN_SUM and column.scope is Scope.COLUMN and column.tile.col == 1
    assert nodes["fc_concat"].args == ([nodes["fc_col0_sum"], nodes["fc_col1_sum"]], -1)
    assert nodes["fc_add_bias"].args[0] is nodes["fc_concat"]  # the bias is added once, after


def test_a_single_row_needs_no_sum_and_a_single_column_no_concat():
    graph_module, _ = tiled(OneLinear(6, 4), torch.randn(3, 6), {"mapping.max_output_size": 2})
    assert names(graph_module) == ["fc_row0_slice", "fc_tile0_0_mvm", "fc_tile0_1_mvm", "fc_concat", "fc_add_bias"]
    graph_module, _ = tiled(OneLinear(6, 4), torch.randn(3, 6), {"mapping.max_input_size": 3})
    assert names(graph_module) == ["fc_row0_slice", "fc_tile0_0_mvm", "fc_row1_slice", "fc_tile1_0_mvm",
                                   "fc_col0_sum", "fc_add_bias"]


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)  # 2 channels = 18 rows per group

    def forward(self, x):
        return self.conv(x)


def test_groups_that_fit_share_an_array_and_keep_the_convolution():
    graph_module, _ = tiled(Grouped(), torch.randn(2, 8, 5, 5), {"mapping.max_input_size": 40})
    arrays = tagged(graph_module.graph, Role.MVM)
    assert [n.name for n in arrays] == ["conv_tile0_0_mvm", "conv_tile1_1_mvm"]
    assert all(n.target is F.conv2d and n.args[2:] == (None, (1, 1), (1, 1), (1, 1), 2) for n in arrays)
    assert graph_module.graph.find_nodes(op="call_function", target=torch.cat)[0].args[1] == 1  # channels


@pytest.mark.parametrize("mapping", [{}, {"mapping.max_input_size": 6, "mapping.max_output_size": 4}])
def test_a_layer_that_fits_one_array_is_untouched(mapping):
    module = OneLinear(6, 4).eval()
    graph_module, plans = traced(module, mapping)
    run(graph_module, IsolateCrossbarLayersPass(plans))
    code = graph_module.code
    assert run(graph_module, TileLayersPass()) == [False]
    assert graph_module.code == code


def test_a_channel_larger_than_an_array_is_refused():
    graph_module, plans = traced(Grouped(), {"mapping.max_input_size": 8})
    run(graph_module, IsolateCrossbarLayersPass(plans))
    with pytest.raises(TilingError, match="conv: one input channel needs 9 rows"):
        TileLayersPass()(graph_module)
