"""InsertConvertersPass, rule by rule, on small traced graphs."""

import torch
from pass_graphs import OneLinear, names, run, traced
from torch import nn

from xbar.passes.numerics import periphery
from xbar.passes.plan import Role, tagged
from xbar.passes.rewrites.insert_converters import InsertConvertersPass
from xbar.passes.rewrites.insert_input_range import InsertInputRangePass
from xbar.passes.rewrites.isolate_layers import IsolateCrossbarLayersPass
from xbar.passes.rewrites.tiling import TileLayersPass

EIGHT_BIT = {"forward.inp_res": 254, "forward.out_res": 254, "forward.out_bound": 10}


def with_converters(module, overrides):
    graph_module, plans = traced(module.eval(), overrides)
    modified = run(graph_module, IsolateCrossbarLayersPass(plans), TileLayersPass(), InsertInputRangePass(),
                   InsertConvertersPass())[-1]
    return graph_module.eval(), modified  # eval: the ranges keep their value


def test_the_dac_feeds_the_layer_and_the_adc_follows_it_before_the_rescale():
    graph_module, modified = with_converters(OneLinear(), EIGHT_BIT)
    assert modified
    assert names(graph_module) == ["fc_input_range", "fc_input_range_value", "fc_normalize", "fc_dac", "fc_mvm",
                                   "fc_adc", "fc_rescale", "fc_add_bias"]
    nodes = {n.name: n for n in graph_module.graph.nodes}
    assert nodes["fc_dac"].target is periphery.dac and nodes["fc_dac"].args == (nodes["fc_normalize"], 254.0)
    adc = nodes["fc_adc"]
    assert adc.target is periphery.adc and adc.args[0] is nodes["fc_mvm"] and adc.args[1] is nodes["fc_mvm"].args[1]
    assert adc.args[2] is nodes["fc_input_range_value"]
    assert adc.kwargs["bound"] == 10 and adc.kwargs["steps"] == 254 and adc.kwargs["channel_dim"] == -1
    assert nodes["fc_rescale"].args[0] is adc


def test_the_adc_feeds_output_clipping_back_only_when_the_range_manages_it():
    graph_module, _ = with_converters(OneLinear(), EIGHT_BIT | {"pre_post.input_range.manage_output_clipping": True,
                                                                "pre_post.input_range.output_min_percentage": 0.9})
    adc = tagged(graph_module.graph, Role.ADC)[0]
    assert adc.kwargs["output_min_percentage"] == 0.9
    statistics = adc.kwargs["statistics"]  # the range's own: its fraction is taken as the range's are
    assert statistics.op == "get_attr" and statistics.target == "fc_input_range.statistics"
    assert tagged(graph_module.graph, Role.RANGE_STATISTICS) == [statistics]
    graph_module, _ = with_converters(OneLinear(), EIGHT_BIT)
    adc = tagged(graph_module.graph, Role.ADC)[0]
    assert "output_min_percentage" not in adc.kwargs and not tagged(graph_module.graph, Role.RANGE_STATISTICS)


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        return self.conv(x)


def test_one_dac_per_input_slice_and_one_adc_per_array():
    graph_module, _ = with_converters(Conv(), EIGHT_BIT | {"mapping.max_output_size": 4})
    (dac,) = tagged(graph_module.graph, Role.DAC)
    assert dac.name == "conv_row0_dac" and len(dac.users) == 2
    adcs = tagged(graph_module.graph, Role.ADC)
    assert [n.name for n in adcs] == ["conv_tile0_0_adc", "conv_tile0_1_adc"]
    assert all(n.kwargs["channel_dim"] == 1 for n in adcs)


def test_an_ideal_periphery_inserts_nothing():
    graph_module, plans = traced(OneLinear())
    run(graph_module, IsolateCrossbarLayersPass(plans), InsertInputRangePass())
    code = graph_module.code
    assert run(graph_module, InsertConvertersPass()) == [False]
    assert graph_module.code == code


def test_the_converters_quantise_like_the_periphery_functions():
    module = OneLinear()
    graph_module, _ = with_converters(module, EIGHT_BIT | {"pre_post.input_range.init_value": 1.0})
    x = torch.randn(5, 6)
    weight = module.fc.weight.detach()
    codes = periphery.dac(x.clamp(-1, 1), 254.0)
    current = codes @ weight.t()
    expected = torch.relu(periphery.adc(current, weight, None, bound=10, steps=254, channel_dim=-1)
                          + module.fc.bias.detach())
    assert torch.allclose(graph_module(x), expected, atol=1e-6)
