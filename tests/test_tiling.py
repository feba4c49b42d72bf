"""Tiling: the mapping of weights onto fixed-size arrays, and its graph."""

import pytest
import torch

from xbar import HardwareConfig, convert, prepare
from xbar.passes.arrays import WeightLayout
from xbar.passes.errors import TilingError
from xbar.passes.numerics.crossbar import Crossbar
from xbar.passes.numerics.input_range import InputRange
from xbar.passes.rewrites.tiling import plan_tiles

from conftest import make_input, make_model

NO_CLIP = {"pre_post.input_range.init_value": 1e6, "pre_post.input_range.init_from_data": 0}


def covered(tiles, shape, groups):
    """Every weight entry lies in exactly one tile."""
    out_channels, group_inputs = shape[:2]
    count = torch.zeros(out_channels, group_inputs, dtype=torch.int)
    for t in tiles:
        count[slice(*t.outputs), slice(*t.weight_inputs)] += 1
    return bool((count == 1).all())


def test_linear_tiles_at_non_multiples_of_the_array_size():
    tiles = plan_tiles(WeightLayout(1, 7, 10), max_input_size=4, max_output_size=3)
    assert [(t.row, t.col) for t in tiles] == [(r, c) for r in range(2) for c in range(4)]
    assert sorted({t.inputs for t in tiles}) == [(0, 4), (4, 7)]  # as even as they go, the longer first
    assert sorted({t.outputs for t in tiles}) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert covered(tiles, (10, 7), 1)


@pytest.mark.parametrize("limit", [1, 3, 7, 64, 256, 512])
def test_a_layers_rows_and_columns_split_as_aihwkits_tiles_split_them(limit):
    from aihwkit.simulator.tiles.array import TileModuleArray

    for size in (1, 5, 63, 64, 65, 300, 784, 1000, 3072):
        rows = plan_tiles(WeightLayout(1, size, 1), max_input_size=limit, max_output_size=limit)
        columns = plan_tiles(WeightLayout(1, 1, size), max_input_size=limit, max_output_size=limit)
        expected = TileModuleArray.get_split_sizes(None, size, limit)
        assert [b - a for a, b in (t.inputs for t in rows)] == expected, (size, limit)
        assert [b - a for a, b in (t.outputs for t in columns)] == expected, (size, limit)


def test_a_layer_smaller_than_one_array_is_one_tile():
    (tile,) = plan_tiles(WeightLayout(1, 7, 10), max_input_size=512, max_output_size=512)
    assert (tile.inputs, tile.outputs) == ((0, 7), (0, 10))
    (tile,) = plan_tiles(WeightLayout(1, 7, 10), 0, 0)
    assert tile.outputs == (0, 10)


def test_conv_is_cut_between_input_channels():
    tiles = plan_tiles(WeightLayout(1, 5, 6, 9), max_input_size=20, max_output_size=4)  # 2 channels = 18 rows
    assert sorted({t.inputs for t in tiles}) == [(0, 2), (2, 4), (4, 5)]
    assert sorted({t.outputs for t in tiles}) == [(0, 3), (3, 6)]
    assert covered(tiles, (6, 5), 1)
    with pytest.raises(TilingError, match="needs 9 rows"):
        plan_tiles(WeightLayout(1, 5, 6, 9), max_input_size=8, max_output_size=0)


def test_groups_share_an_array_when_they_fit():
    tiles = plan_tiles(WeightLayout(4, 2, 2, 9), max_input_size=40, max_output_size=8)  # 18 rows per group
    assert [(t.inputs, t.outputs, t.groups) for t in tiles] == [((0, 4), (0, 4), 2), ((4, 8), (4, 8), 2)]
    depthwise = plan_tiles(WeightLayout(8, 1, 1, 9), max_input_size=0, max_output_size=3)
    assert [t.groups for t in depthwise] == [3, 3, 2] and covered(depthwise, (8, 1), 8)


def test_a_group_larger_than_an_array_is_cut_on_its_own():
    tiles = plan_tiles(WeightLayout(2, 4, 4, 1), max_input_size=3, max_output_size=0)
    assert [(t.inputs, t.outputs, t.groups) for t in tiles] == [
        ((0, 2), (0, 4), 1), ((2, 4), (0, 4), 1), ((4, 6), (4, 8), 1), ((6, 8), (4, 8), 1)]
    assert covered(tiles, (8, 4), 2)


TILED = {"mapping.max_input_size": 12, "mapping.max_output_size": 10}


def test_tiled_and_untiled_agree_without_dac_adc(model_name):
    """Without clipping (ranges wider than the data), each layer is the sum of its arrays."""
    model = make_model(model_name)
    x = make_input(model_name, 5)
    untiled, tiled = (convert(prepare(model, (x[:2],), HardwareConfig().with_overrides({**NO_CLIP, **mapping})))(x)
                      for mapping in ({}, TILED))
    scale = untiled.abs().max().item()
    assert torch.allclose(tiled, untiled, atol=1e-5 * scale)
    assert torch.allclose(tiled, model(x).detach(), atol=1e-5 * scale)


def test_tiles_are_named_after_their_layer_and_position():
    config = HardwareConfig().with_overrides({**TILED, "forward.inp_res": 254, "forward.out_res": 254,
                                              "forward.out_bound": 10})
    prepared = prepare(make_model("mlp"), (make_input("mlp", 2),), config)  # fc1: 32x16 -> 2 x 4 arrays
    names = {n.name for n in prepared.graph.nodes}
    assert {"fc1_row0_slice", "fc1_row1_input_range", "fc1_row1_dac", "fc1_tile1_3_mvm",
            "fc1_tile1_3_adc", "fc1_tile1_3_rescale", "fc1_col3_sum", "fc1_concat", "fc1_add_bias"} <= names
    ranges = [n for n, m in prepared.named_children() if isinstance(m, InputRange) and n.startswith("fc1_")]
    assert ranges == ["fc1_row0_input_range", "fc1_row1_input_range"]
    converted = convert(prepared)
    arrays = {n: m for n, m in converted.named_children() if isinstance(m, Crossbar) and n.startswith("fc1_")}
    assert len(arrays) == 8
    corner = arrays["fc1_tile1_3_crossbar"].settings
    assert (corner.tile_row, corner.tile_col) == (1, 3)
    assert all(m.g_plus.shape[0] <= 10 and m.g_plus.shape[1] <= 12 for m in arrays.values())


def test_each_array_has_its_own_scale_ratio_and_converts_back():
    config = HardwareConfig().with_overrides(TILED)
    model = make_model("mlp")
    converted = convert(prepare(model, (make_input("mlp", 2),), config))
    weight = model.fc1.weight.detach()
    ratios = set()
    for name, array in converted.named_children():
        if isinstance(array, Crossbar) and name.startswith("fc1_tile"):
            r, c = array.settings.tile_row, array.settings.tile_col
            block = weight[c * 8:(c + 1) * 8, r * 8:(r + 1) * 8]  # 32 x 16 on 10 x 12 arrays: 4 x 2 of 8 x 8
            back = config.converter.convert_back_to_weights([array.g_plus, array.g_minus],
                                                            {"scale_ratio": array.settings.scale_ratio})
            assert torch.allclose(back, block, atol=1e-6)
            ratios.add(array.settings.scale_ratio)
    assert len(ratios) == 8


def test_columnwise_scale_ratios_follow_each_output_column():
    config = HardwareConfig().with_overrides({**NO_CLIP, "mapping.weight_scaling_columnwise": True,
                                              "forward.out_bound": 10, "forward.out_res": 254})
    model = make_model("cnn")
    x = make_input("cnn", 16)
    prepared = prepare(model, (x[:2],), config)
    converted = convert(prepared)
    array = converted.conv2_crossbar
    weight = model.conv2.weight.detach()
    ratios = torch.tensor(array.settings.column_scale_ratios)
    assert torch.allclose(ratios, 25.0 / weight.abs().flatten(1).amax(1))
    assert torch.allclose(array.g_plus.flatten(1).amax(1).maximum(array.g_minus.flatten(1).amax(1)),
                          torch.full((8,), 25.0))  # every column reaches g_max
    back = config.converter.convert_back_to_weights([array.g_plus, array.g_minus],
                                                    {"scale_ratio": ratios.view(-1, 1, 1, 1)})
    assert torch.allclose(back, weight, atol=1e-6)
    a, b = prepared(x).detach(), converted(x).detach()
    assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max())


def test_an_output_limit_alone_cuts_only_the_columns():
    """mapping.max_output_size without max_input_size: no row limit, no division by infinity."""
    tiles = plan_tiles(WeightLayout(1, 32, 96), max_input_size=0, max_output_size=8)
    assert [t.col for t in tiles] == list(range(12)) and {(t.row, t.inputs) for t in tiles} == {(0, (0, 32))}
    conv = plan_tiles(WeightLayout(1, 5, 6, 9), max_input_size=0, max_output_size=4)
    assert [(t.inputs, t.outputs) for t in conv] == [((0, 5), (0, 3)), ((0, 5), (3, 6))]
    model, x = make_model("cnn"), make_input("cnn", 4)
    config = HardwareConfig().with_overrides({**NO_CLIP, "mapping.max_output_size": 8})
    converted = convert(prepare(model, (x[:2],), config))
    assert len([m for m in converted.modules() if isinstance(m, Crossbar)]) > 6
    expected = model(x).detach()
    assert torch.allclose(converted(x), expected, atol=1e-5 * float(expected.abs().max()))
