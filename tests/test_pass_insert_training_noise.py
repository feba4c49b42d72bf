"""InsertTrainingNoisePass and RemoveTrainingNoisePass, rule by rule, on small traced graphs."""

from pass_graphs import OneLinear, names, run, traced

from xbar.passes.numerics.training_noise import OutputNoise, WeightNoise
from xbar.passes.rewrites.insert_converters import InsertConvertersPass
from xbar.passes.rewrites.insert_input_range import InsertInputRangePass
from xbar.passes.rewrites.insert_training_noise import InsertTrainingNoisePass
from xbar.passes.rewrites.isolate_layers import IsolateCrossbarLayersPass
from xbar.passes.rewrites.remove_training_noise import RemoveTrainingNoisePass
from xbar.passes.rewrites.tiling import TileLayersPass

EIGHT_BIT = {"forward.inp_res": 254, "forward.out_res": 254, "forward.out_bound": 10}
NOISE = {"modifier.type": "ADD_NORMAL", "modifier.std_dev": 0.05, "forward.out_noise": 0.04,
         "forward.w_noise": 0.0175, "forward.w_noise_type": "PCM_READ"}


def with_noise(module, overrides):
    graph_module, plans = traced(module, overrides)
    modified = run(graph_module, IsolateCrossbarLayersPass(plans), TileLayersPass(), InsertInputRangePass(),
                   InsertConvertersPass(), InsertTrainingNoisePass())[-1]
    return graph_module, modified


def test_the_weight_noise_feeds_the_crossbar_and_the_output_noise_sits_before_the_adc():
    graph_module, modified = with_noise(OneLinear(), EIGHT_BIT | NOISE)
    assert modified
    assert names(graph_module) == ["fc_input_range", "fc_input_range_value", "fc_normalize", "fc_dac",
                                   "fc_weight_noise", "fc_mvm", "fc_output_noise", "fc_adc", "fc_rescale",
                                   "fc_add_bias"]
    nodes = {n.name: n for n in graph_module.graph.nodes}
    mvm, weight_noise, output_noise = nodes["fc_mvm"], nodes["fc_weight_noise"], nodes["fc_output_noise"]
    assert mvm.args[1] is weight_noise and weight_noise.args[0].target == "fc.weight"
    assert output_noise.args[:3] == (mvm, nodes["fc_dac"], weight_noise.args[0])  # DAC'd input, clean weight
    assert nodes["fc_adc"].args[0] is output_noise and nodes["fc_adc"].args[1] is weight_noise.args[0]
    assert isinstance(graph_module.fc_weight_noise, WeightNoise)
    assert isinstance(graph_module.fc_output_noise, OutputNoise)


def test_each_array_of_a_tiled_layer_gets_its_own_noise():
    graph_module, _ = with_noise(OneLinear(8, 4), NOISE | {"mapping.max_input_size": 4})
    noise = [name for name in names(graph_module) if name.endswith("noise")]
    assert noise == ["fc_tile0_0_weight_noise", "fc_tile0_0_output_noise",
                     "fc_tile1_0_weight_noise", "fc_tile1_0_output_noise"]


def test_only_the_configured_noise_is_inserted():
    graph_module, _ = with_noise(OneLinear(), {"forward.out_noise": 0.04})
    assert [n for n in names(graph_module) if n.endswith("noise")] == ["fc_output_noise"]
    graph_module, _ = with_noise(OneLinear(), {"modifier.type": "POLY", "modifier.std_dev": 1.0})
    assert [n for n in names(graph_module) if n.endswith("noise")] == ["fc_weight_noise"]


def test_no_noise_configured_is_a_no_op():
    graph_module, modified = with_noise(OneLinear(), EIGHT_BIT | {"modifier.type": "ADD_NORMAL"})  # std_dev 0
    assert not modified and not [n for n in names(graph_module) if n.endswith("noise")]


def test_removing_the_noise_restores_the_noise_free_graph():
    clean, _ = with_noise(OneLinear(), EIGHT_BIT)
    graph_module, _ = with_noise(OneLinear(), EIGHT_BIT | NOISE)
    assert run(graph_module, RemoveTrainingNoisePass()) == [True]
    assert names(graph_module) == names(clean)
    assert not hasattr(graph_module, "fc_weight_noise") and not hasattr(graph_module, "fc_output_noise")
    assert run(graph_module, RemoveTrainingNoisePass()) == [False]
