"""InsertInputRangePass, rule by rule, on small traced graphs."""

import torch
from pass_graphs import OneLinear, names, run, traced

from xbar.passes.numerics import periphery
from xbar.passes.numerics.input_range import InputRange
from xbar.passes.plan import Role, tagged
from xbar.passes.rewrites.insert_input_range import InsertInputRangePass
from xbar.passes.rewrites.isolate_layers import IsolateCrossbarLayersPass
from xbar.passes.rewrites.tiling import TileLayersPass

from conftest import SharedLayer


def with_ranges(module, overrides):
    graph_module, plans = traced(module.eval(), overrides)
    modified = run(graph_module, IsolateCrossbarLayersPass(plans), TileLayersPass(), InsertInputRangePass())[-1]
    return graph_module.eval(), modified  # eval: the ranges keep their value


def ranges_of(graph_module) -> dict[str, InputRange]:
    return {name: m for name, m in graph_module.named_children() if isinstance(m, InputRange)}


def test_the_range_clips_normalises_and_rescales_around_the_layer():
    module = OneLinear()
    graph_module, modified = with_ranges(module, {"pre_post.input_range.init_value": 0.5})
    assert modified
    assert names(graph_module) == ["fc_input_range", "fc_input_range_value", "fc_normalize", "fc_mvm",
                                   "fc_rescale", "fc_add_bias"]
    nodes = {n.name: n for n in graph_module.graph.nodes}
    assert nodes["fc_input_range"].op == "call_module" and set(ranges_of(graph_module)) == {"fc_input_range"}
    assert nodes["fc_normalize"].target is periphery.normalize and nodes["fc_rescale"].target is periphery.rescale
    assert nodes["fc_normalize"].args[1] is nodes["fc_input_range_value"] is nodes["fc_rescale"].args[1]
    x = torch.randn(5, 6)
    assert torch.allclose(graph_module(x), module(x.clamp(-0.5, 0.5)), atol=1e-6)


def test_the_arrays_of_one_input_slice_share_one_range():
    graph_module, _ = with_ranges(OneLinear(6, 4), {"mapping.max_input_size": 4, "mapping.max_output_size": 3})
    assert list(ranges_of(graph_module)) == ["fc_row0_input_range", "fc_row1_input_range"]
    normalized = tagged(graph_module.graph, Role.NORMALIZE)
    assert [n.name for n in normalized] == ["fc_row0_normalize", "fc_row1_normalize"]
    for mvm in tagged(graph_module.graph, Role.MVM):
        row = int(mvm.name.split("_tile")[1][0])
        assert mvm.args[0] is normalized[row]
    assert [n.name for n in tagged(graph_module.graph, Role.RESCALE)] == [
        "fc_tile0_0_rescale", "fc_tile0_1_rescale", "fc_tile1_0_rescale", "fc_tile1_1_rescale"]


def test_the_call_sites_of_a_shared_layer_share_one_range():
    graph_module, _ = with_ranges(SharedLayer(), {})
    assert list(ranges_of(graph_module)) == ["fc_input_range"]
    clips = tagged(graph_module.graph, Role.INPUT_RANGE)
    assert [n.name for n in clips] == ["fc_input_range", "fc_input_range_1"]
    assert {n.target for n in clips} == {"fc_input_range"}


def test_a_disabled_range_leaves_the_graph_untouched():
    graph_module, plans = traced(OneLinear(), {"pre_post.input_range.enable": False})
    run(graph_module, IsolateCrossbarLayersPass(plans))
    code = graph_module.code
    assert run(graph_module, InsertInputRangePass()) == [False]
    assert graph_module.code == code and not ranges_of(graph_module)
