"""LowerToConductancesPass, rule by rule, on small traced graphs."""

import torch
from pass_graphs import WIDE_RANGE, OneLinear, names, run, traced
from torch import nn

from xbar.passes.kinds import LINEAR
from xbar.passes.numerics.crossbar import Crossbar
from xbar.passes.numerics.input_range import InputRange
from xbar.passes.rewrites.insert_converters import InsertConvertersPass
from xbar.passes.rewrites.insert_input_range import InsertInputRangePass
from xbar.passes.rewrites.isolate_layers import IsolateCrossbarLayersPass
from xbar.passes.rewrites.lower_conductances import LowerToConductancesPass
from xbar.passes.rewrites.tiling import TileLayersPass

from conftest import SharedLayer


def prepared(module, overrides):
    graph_module, plans = traced(module.eval(), overrides)
    run(graph_module, IsolateCrossbarLayersPass(plans), TileLayersPass(), InsertInputRangePass(),
        InsertConvertersPass())
    return graph_module.eval()


def lowered(module, overrides, x):
    graph_module = prepared(module, overrides)
    before = graph_module(x).detach()
    assert run(graph_module, LowerToConductancesPass()) == [True]
    assert torch.allclose(graph_module(x), before, atol=1e-5 * float(before.abs().max()))
    return graph_module


def test_an_array_and_its_periphery_become_one_crossbar_call_with_the_bias():
    module = OneLinear()
    graph_module = lowered(module, {"forward.inp_res": 254, "forward.out_res": 254, "forward.out_bound": 10},
                           torch.randn(5, 6))
    assert names(graph_module) == ["fc_crossbar"]
    (call,) = [n for n in graph_module.graph.nodes if n.op == "call_module"]
    assert call.name == "fc_crossbar" and call.args[0].op == "placeholder"
    array = graph_module.fc_crossbar
    assert isinstance(array, Crossbar) and array.kind == LINEAR and array.source_weight == "fc.weight"
    assert torch.equal(array.bias, module.fc.bias.detach()) and array.settings.input_range == 3.0
    assert array.settings.dac_steps == 254 and array.settings.adc_steps == 254 and array.settings.out_bound == 10
    assert not any(isinstance(m, InputRange) for m in graph_module.modules())
    assert "fc.weight" not in dict(graph_module.named_parameters())  # the float weight left the model


def test_a_tiled_layer_keeps_its_digital_sum_concatenation_and_bias():
    graph_module = lowered(OneLinear(6, 4), WIDE_RANGE | {"mapping.max_input_size": 4, "mapping.max_output_size": 3},
                           torch.randn(5, 6))
    assert names(graph_module) == [
        "fc_row0_slice", "fc_tile0_0_crossbar", "fc_tile0_1_crossbar", "fc_row1_slice", "fc_tile1_0_crossbar",
        "fc_tile1_1_crossbar", "fc_col0_sum", "fc_col1_sum", "fc_concat", "fc_add_bias"]
    corner = graph_module.fc_tile1_1_crossbar
    assert corner.g_plus.shape == (2, 3) and corner.bias is None  # outputs 2-4 of inputs 3-6
    assert (corner.settings.tile_row, corner.settings.tile_col) == (1, 1)


def test_the_call_sites_of_a_shared_layer_share_one_crossbar():
    graph_module = lowered(SharedLayer(), WIDE_RANGE, torch.randn(3, 4))
    calls = [n for n in graph_module.graph.nodes if n.op == "call_module"]
    assert [n.name for n in calls] == ["fc_crossbar", "fc_crossbar_1"] and {n.target for n in calls} == {"fc_crossbar"}


def test_a_graph_without_crossbar_layers_is_untouched():
    graph_module, _ = traced(nn.Sequential(nn.ReLU()))
    code = graph_module.code
    assert run(graph_module, LowerToConductancesPass()) == [False]
    assert graph_module.code == code
