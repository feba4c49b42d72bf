"""aihwkit's weight remapping and clipping (remap, clip) after an optimiser step, against aihwkit 1.1.0's
torch inference tiles (and, where that tile refuses a setting, the rule aihwkit documents for it); the
hwa preset with them, end to end."""

import copy
import json

import onnx
import pytest
import torch
from aihwkit.nn import AnalogLinear
from aihwkit.simulator.parameters.enums import WeightClipType as TheirClip
from aihwkit.simulator.parameters.enums import WeightRemapType as TheirRemap
from aihwkit_tiles import aihwkit_config, layer_and_input, xbar_config
from onnx_parity import Exported, assert_within_one_adc_step
from torch import nn

from xbar import calibrate, constrain_weights, convert, export_onnx, fine_tune, prepare, preset_config
from xbar.compiler.config.presets import PRESETS
from xbar.compiler.pipeline.finetune import FineTuning
from xbar.models import load_pretrained
from xbar.passes.errors import ConfigError
from xbar.passes.numerics.weight_mapping import WeightScales


def constrained_configs(remap: str = "NONE", clip: str = "NONE", **clip_values):
    theirs = aihwkit_config(1.0, True)
    theirs.remap.type, theirs.clip.type = TheirRemap[remap], TheirClip[clip]
    for name, value in clip_values.items():
        setattr(theirs.clip, name, value)
    ours = xbar_config(1.0, True).with_overrides(
        {"remap.type": remap, "clip.type": clip, **{f"clip.{k}": v for k, v in clip_values.items()}})
    return theirs, ours


def step_both(layer, x, theirs, ours):
    """The same optimiser step on both sides (a fixed change of the analog weights), then each side's
    post-step constraints; returns (their logical weight, their scales, our prepared model)."""
    analog = AnalogLinear.from_digital(layer, theirs)
    (tile,) = analog.analog_tiles()
    prepared = prepare(layer, (x,), ours)
    step = 0.8 * torch.randn(layer.weight.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        scales = tile.get_scales().view(-1, 1)
        tile.tile.weight.add_(step)
        prepared.get_parameter("weight").add_(step * scales)  # the same analog step, in logical units
    tile.post_update_step()
    assert constrain_weights(prepared) == 1
    weight, _ = tile.get_weights()
    return weight, tile.get_scales(), prepared


def our_scales(prepared) -> torch.Tensor:
    (module,) = [m for m in prepared.modules() if isinstance(m, WeightScales)]
    return module.scales


@pytest.mark.parametrize("remap", ["LAYERWISE_SYMMETRIC", "CHANNELWISE_SYMMETRIC"])
@pytest.mark.parametrize("clip, values", [("NONE", {}), ("FIXED_VALUE", {"fixed_value": 0.7}),
                                          ("LAYER_GAUSSIAN", {"sigma": 1.5}),
                                          ("LAYER_GAUSSIAN", {"sigma": 1.5, "fixed_value": 0.6})],
                         ids=["no-clip", "fixed", "gaussian", "gaussian-at-most-fixed"])
def test_clip_then_remap_after_a_step_matches_aihwkit(remap, clip, values):
    layer, x = layer_and_input("linear")
    weight, scales, prepared = step_both(layer, x, *constrained_configs(remap, clip, **values))
    assert torch.allclose(prepared.get_parameter("weight").detach(), weight, rtol=1e-5, atol=1e-6)
    assert torch.allclose(our_scales(prepared), scales, rtol=1e-5)
    with torch.no_grad():
        analog = prepared.get_parameter("weight") / our_scales(prepared).view(-1, 1)
    expected_max = analog.abs().max(dim=1).values if remap == "CHANNELWISE_SYMMETRIC" else analog.abs().max()
    assert torch.allclose(expected_max, torch.ones(()), rtol=1e-5)  # remapped to remapped_wmax = 1


def test_average_channel_max_clips_at_the_mean_row_max_of_the_analog_weights():
    """aihwkit's torch tile refuses AVERAGE_CHANNEL_MAX; its rule: clip at the mean over rows of max|W'|."""
    layer, x = layer_and_input("linear")
    prepared = prepare(layer, (x,), constrained_configs()[1].with_overrides({"clip.type": "AVERAGE_CHANNEL_MAX"}))
    weight = prepared.get_parameter("weight")
    scales = our_scales(prepared).clone()
    with torch.no_grad():
        weight.mul_(torch.linspace(0.5, 2.0, 24))  # the row maxima move apart from the stored scales
        analog = weight / scales.view(-1, 1)
        bound = analog.abs().max(dim=1).values.mean()
        expected = analog.clamp(-bound, bound) * scales.view(-1, 1)
    constrain_weights(prepared)
    assert torch.allclose(weight.detach(), expected)
    assert (weight.detach() != expected * 0).any() and (analog.abs() > bound).any()


def test_bounded_channelwise_remap_keeps_scales_within_the_range():
    """aihwkit's C++ rule (its torch tile refuses max_scale_range): new scales at most max_scale_range
    times the smallest old one."""
    layer, x = layer_and_input("linear")
    prepared = prepare(layer, (x,), constrained_configs("CHANNELWISE_SYMMETRIC")[1].with_overrides(
        {"remap.max_scale_range": 2.0}))
    old = our_scales(prepared).clone()
    with torch.no_grad():
        prepared.get_parameter("weight")[1:].mul_(5.0)
    constrain_weights(prepared)
    row_max = prepared.get_parameter("weight").detach().abs().max(dim=1).values
    assert torch.allclose(our_scales(prepared), torch.minimum(row_max, old.min() * 2.0))


def test_remapped_wmax_sets_the_analog_weight_max():
    layer, x = layer_and_input("linear")
    prepared = prepare(layer, (x,), constrained_configs("CHANNELWISE_SYMMETRIC")[1].with_overrides(
        {"remap.remapped_wmax": 0.5}))
    constrain_weights(prepared)
    row_max = prepared.get_parameter("weight").detach().abs().max(dim=1).values
    assert torch.allclose(our_scales(prepared), row_max / 0.5)


def test_conversion_programs_the_clipped_weights_without_changing_the_prepared_model():
    layer, x = layer_and_input("linear")
    prepared = prepare(layer, (x,), constrained_configs(clip="FIXED_VALUE", fixed_value=0.5)[1])
    before = prepared.get_parameter("weight").detach().clone()
    converted = convert(prepared)
    assert torch.equal(prepared.get_parameter("weight"), before)
    (crossbar,) = [m for m in converted.modules() if hasattr(m, "g_plus")]
    assert crossbar.settings.mapped_wmax == pytest.approx(0.5)


@pytest.mark.parametrize("overrides, message", [
    ({"remap.type": "CHANNELWISE_SYMMETRIC"}, "set mapping.weight_scaling_dynamic = false"),
    ({"clip.type": "FIXED_VALUE"}, "clip.fixed_value > 0"),
    ({"remap.remapped_wmax": 0.0}, "remapped_wmax must be > 0"),
    ({"remap.type": "SIDEWAYS"}, "remap.type must be one of"),
])
def test_meaningless_constraints_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        xbar_config(1.0, True, dynamic=True).with_overrides(overrides)


def test_a_transposed_convolution_is_not_remapped_per_channel():
    config = xbar_config(1.0, False).with_overrides({"remap.type": "CHANNELWISE_SYMMETRIC"})
    with pytest.raises(ConfigError, match="LAYERWISE_SYMMETRIC"):
        prepare(nn.ConvTranspose2d(2, 3, 3), (torch.randn(1, 2, 4, 4),), config)


def test_the_hwa_preset_is_aihwkits_and_fine_tunes_converts_and_exports(tmp_path):
    config = preset_config("hwa")
    assert (config.remap.type.name, config.clip.type.name, config.clip.fixed_value) == (
        "CHANNELWISE_SYMMETRIC", "FIXED_VALUE", 1.0)
    mapping = config.mapping
    assert (mapping.weight_scaling_omega, mapping.weight_scaling_columnwise, mapping.weight_scaling_dynamic,
            mapping.learn_out_scaling, mapping.out_scaling_columnwise) == (1.0, True, False, True, True)
    source = PRESETS["hwa"].source
    assert "not simulated" not in source and source.endswith("complete: nothing of the preset is left out")
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8, generator=generator), torch.randint(0, 10, (64,), generator=generator)
    prepared = prepare(load_pretrained("lenet"), (x[:16],), config)
    calibrate(prepared, [x[:32]])
    fine_tune(prepared, x, y, FineTuning(epochs=1, batch_size=32))
    for module in prepared.modules():
        if isinstance(module, WeightScales):
            assert module.scales.numel() > 1
    converted = convert(prepared)
    exported = Exported(converted, export_onnx(converted, (x[:16],), tmp_path / "hwa.onnx"))
    assert_within_one_adc_step(exported.run(x), exported.expected(x), exported.last_adc_step())
    assert (exported.run(x).argmax(1) == exported.expected(x).argmax(1)).mean() > 0.95


def test_layer_rules_and_the_exported_config_carry_mapping_remap_and_clip(tmp_path):
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    config = constrained_configs("CHANNELWISE_SYMMETRIC", "FIXED_VALUE", fixed_value=1.0)[1]
    config = config.with_overrides({"layers": [{"name": "2", "overrides": {
        "mapping.weight_scaling_omega": 0.0, "remap.type": "NONE", "clip.type": "NONE"}}]})
    converted = convert(prepare(model, (x,), config))
    first, second = [m for m in converted.modules() if hasattr(m, "g_plus")]
    assert first.settings.mapped_wmax == pytest.approx(1.0) and len(first.settings.column_scale_ratios) == 6
    assert second.settings.mapped_wmax == pytest.approx(float(model[2].weight.detach().abs().max()))
    model_file = onnx.load(export_onnx(converted, (x,), tmp_path / "m.onnx"))
    exported = json.loads({p.key: p.value for p in model_file.metadata_props}["xbar.hardware_config"])
    assert (exported["remap"]["type"], exported["clip"]["type"], exported["clip"]["fixed_value"]) == (
        "CHANNELWISE_SYMMETRIC", "FIXED_VALUE", 1.0)
    assert exported["mapping"]["weight_scaling_dynamic"] is False
    assert exported["layers"][0]["overrides"]["mapping.weight_scaling_omega"] == 0.0


def test_a_compiled_training_step_reads_the_scales_each_remap_leaves():
    layer, x = layer_and_input("linear")
    eager = prepare(layer, (x,), constrained_configs("CHANNELWISE_SYMMETRIC", "FIXED_VALUE", fixed_value=0.9)[1])
    fast = copy.deepcopy(eager)
    run = torch.compile(fast, fullgraph=True, backend="aot_eager")
    for model, forward in ((eager, eager), (fast, run)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(2):
            forward(x).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
            constrain_weights(model)
    with torch.no_grad():
        assert torch.allclose(run(x), eager(x), rtol=1e-5, atol=1e-5)
    assert not torch.equal(our_scales(eager), our_scales(prepare(layer, (x,), constrained_configs(
        "CHANNELWISE_SYMMETRIC")[1])))


def test_conversion_clips_again_only_weights_no_step_left_clipped():
    """A statistics-relative clip is not idempotent: conversion keeps weights a step clipped (aihwkit
    programs what its tile holds) and clips weights written since."""
    layer, x = layer_and_input("linear")
    prepared = prepare(layer, (x,), constrained_configs(clip="LAYER_GAUSSIAN", sigma=1.0)[1])
    weight = prepared.get_parameter("weight")

    def programmed_max() -> float:
        (crossbar,) = [m for m in convert(prepared).modules() if hasattr(m, "g_plus")]
        return crossbar.settings.mapped_wmax

    constrain_weights(prepared)
    with torch.no_grad():
        kept = float((weight / our_scales(prepared).view(-1, 1)).abs().max())
    assert programmed_max() == pytest.approx(kept)
    with torch.no_grad():
        weight.mul_(1.0)  # written since: clipped again at conversion
    assert programmed_max() < kept * 0.999
