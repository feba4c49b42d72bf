"""forward.ir_drop against aihwkit 1.1.0's time-stepped IR-drop tile (TorchInferenceRPUConfigIRDropT).

aihwkit's pure-torch IR-drop tile, in evaluation, noise-free and with xbar's periphery (254-step DAC and ADC,
a fixed input range, weight_scaling_omega 1), is the oracle of the converted linear layer, for several wire
scales, array shapes (one padded array, full arrays of a tiled layer) and the model's options.
"""

import pytest
import torch
import torch.nn.functional as F
from aihwkit.nn import AnalogLinear
from aihwkit.simulator.configs import TorchInferenceRPUConfigIRDropT
from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType
from onnx_parity import Exported, assert_within_one_adc_step
from torch import nn

import xbar
from xbar import ConfigError, HardwareConfig, LayerRule
from xbar.compiler.cli.arguments import parse_overrides
from xbar.passes.numerics.crossbar import crossbar_modules
from xbar.passes.numerics.ir_drop import array_operands

RANGE, BOUND = 2.0, 10.0
CASES = {  # name -> (inputs, outputs, array rows, forward settings beyond the periphery)
    "padded_array": (24, 6, 32, dict(ir_drop=1.0)),
    "full_array": (64, 10, 64, dict(ir_drop=1.0)),
    "two_arrays": (64, 6, 32, dict(ir_drop=2.0)),
    "strong_wires": (40, 8, 64, dict(ir_drop=5.0, ir_drop_rs=0.3)),
    "plain_sum": (48, 8, 64, dict(ir_drop=3.0, ir_drop_integration_sum=True)),
    "no_oscillator": (48, 8, 64, dict(ir_drop=3.0, adc_quantization=False)),
    "options": (30, 4, 32, dict(ir_drop=4.0, ir_drop_segments=4, ir_drop_v_read=0.4, adc_frequency=3.0,
                                ir_drop_time_step_resolution_scale=0.5)),
}
PERIPHERY = dict(inp_res=254, out_res=254, out_bound=BOUND)


def layer_and_input(inputs: int, outputs: int):
    generator = torch.Generator().manual_seed(inputs * outputs)
    layer = nn.Linear(inputs, outputs)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) / inputs ** 0.5)
        layer.bias.copy_(torch.randn(outputs, generator=generator))
    return layer.eval(), 1.5 * torch.randn(32, inputs, generator=generator)


def theirs(layer: nn.Linear, x: torch.Tensor, rows: int, forward: dict) -> torch.Tensor:
    config = TorchInferenceRPUConfigIRDropT()
    for name, value in (PERIPHERY | dict(out_noise=0.0, w_noise=0.0) | forward).items():
        setattr(config.forward, name, value)
    config.forward.noise_management, config.forward.bound_management = NoiseManagementType.NONE, \
        BoundManagementType.NONE
    config.mapping.weight_scaling_omega = 1.0
    config.mapping.max_input_size, config.mapping.max_output_size = rows, 0
    ranges = config.pre_post.input_range
    ranges.enable, ranges.learn_input_range, ranges.init_value, ranges.init_from_data = True, False, RANGE, 0
    analog = AnalogLinear.from_digital(layer, config).eval()
    with torch.no_grad():
        return analog(x)


def xbar_config(rows: int, forward: dict) -> HardwareConfig:
    return HardwareConfig().with_overrides(
        {f"forward.{k}": v for k, v in (PERIPHERY | forward).items()}
        | {"pre_post.input_range.init_value": RANGE, "pre_post.input_range.init_from_data": 0,
           "mapping.max_input_size": rows, "mapping.weight_scaling_omega": 1.0,
           "mapping.weight_scaling_dynamic": False})


def converted(layer: nn.Linear, x: torch.Tensor, rows: int, forward: dict):
    return xbar.convert(xbar.prepare(layer, (x[:2],), xbar_config(rows, forward)))


def ours(layer: nn.Linear, x: torch.Tensor, rows: int, forward: dict) -> torch.Tensor:
    with torch.no_grad():
        return converted(layer, x, rows, forward)(x)


def assert_same_outputs(a: torch.Tensor, b: torch.Tensor, layer: nn.Linear) -> None:
    """Equal to float tolerance but for a few values one oscillator tick (so one ADC step) apart: aihwkit sums
    the column current of 128 samples in float32, close to the read voltage, which moves a truncation's edge."""
    adc_step = BOUND / 127 * RANGE * layer.weight.abs().max().item()  # in output units (omega 1: alpha = max|W|)
    difference = (a - b).abs()
    off = difference > 1e-5 * b.abs().max().item()
    assert off.float().mean().item() <= 0.03, f"{off.sum().item()} of {off.numel()} outputs differ"
    assert difference.max().item() <= 1.01 * adc_step


@pytest.mark.parametrize("case", CASES)
def test_the_converted_layer_computes_what_aihwkits_ir_drop_tile_computes(case):
    inputs, outputs, rows, forward = CASES[case]
    layer, x = layer_and_input(inputs, outputs)
    mine = ours(layer, x, rows, forward)
    assert_same_outputs(mine, theirs(layer, x, rows, forward), layer)
    ideal = ours(layer, x, rows, {})  # the drop moves far more outputs than the few aihwkit's float32 moves
    assert ((mine - ideal).abs() > 1e-5 * ideal.abs().max()).float().mean().item() > 0.2


CONV_CASES = {  # name -> (layer, array rows, forward settings beyond the periphery)
    "padded_patches": (dict(in_channels=2, out_channels=6, kernel_size=3, padding=1), 32, dict(ir_drop=2.0)),
    "strided_dilated": (dict(in_channels=3, out_channels=4, kernel_size=2, stride=2, dilation=2), 16,
                        dict(ir_drop=4.0, ir_drop_segments=4)),
}


def theirs_on_patches(conv: nn.Conv2d, x: torch.Tensor, rows: int, forward: dict) -> torch.Tensor:
    """What aihwkit's convolution layer computes on this tile: its linear tile on the unfolded patches (the
    layer itself fails with this tile in aihwkit 1.1.0, which allocates a 2-d result for its 3-d patch batch)."""
    patches = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # [N, in x kernel, L]
    matrix = nn.Linear(patches.shape[1], conv.out_channels)
    with torch.no_grad():
        matrix.weight.copy_(conv.weight.flatten(1))
        matrix.bias.copy_(conv.bias)
    y = theirs(matrix.eval(), patches.transpose(1, 2).reshape(-1, patches.shape[1]), rows, forward)
    with torch.no_grad():
        out_shape = conv(x).shape
    return y.view(x.shape[0], -1, conv.out_channels).transpose(1, 2).reshape(out_shape)


@pytest.mark.parametrize("case", CONV_CASES)
def test_a_convolution_drops_on_its_unfolded_patches_as_aihwkits_tile(case):
    """aihwkit's convolution tiles read the unfolded patches: each patch element is one row of the array."""
    shape, rows, forward = CONV_CASES[case]
    generator = torch.Generator().manual_seed(rows)
    layer = nn.Conv2d(**shape)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) / layer.weight[0].numel() ** 0.5)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))
    x = 1.5 * torch.randn(4, shape["in_channels"], 7, 7, generator=generator)
    mine = ours(layer.eval(), x, rows, forward)
    assert_same_outputs(mine, theirs_on_patches(layer, x, rows, forward), layer)
    ideal = ours(layer, x, rows, {})  # fewer rows than a linear case's: a smaller drop, still far past float32's
    assert ((mine - ideal).abs() > 1e-5 * ideal.abs().max()).float().mean().item() > 0.1


def test_the_drop_grows_with_the_wire_resistance():
    """Against the model without wires (its read-voltage offset and pulse sampling alone)."""
    layer, x = layer_and_input(64, 8)
    no_wires = ours(layer, x, 64, dict(ir_drop=1.0, ir_drop_rs=0.0))
    errors = [(ours(layer, x, 64, dict(ir_drop=scale)) - no_wires).abs().mean().item() for scale in (1.0, 4.0, 16.0)]
    assert errors == sorted(errors) and errors[-1] > 8 * errors[0] > 0


def test_ir_drop_zero_is_the_plain_array():
    layer, x = layer_and_input(24, 6)
    plain = ours(layer, x, 32, {})
    assert torch.equal(ours(layer, x, 32, dict(ir_drop=0.0, ir_drop_rs=0.5)), plain)
    (array,) = crossbar_modules(converted(layer, x, 32, {})).values()
    assert not array.settings.ir_drop_active and array.ir_drop_offset is None


IR_DROP_MODEL = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 2, stride=2, dilation=2),
                              nn.Flatten(), nn.Linear(36, 5))
"""Convolutions padded, strided and dilated, and a linear layer of 36 inputs: two arrays of 32 rows."""


@pytest.mark.parametrize("forward", [dict(ir_drop=2.0), dict(ir_drop=4.0, ir_drop_segments=4, adc_frequency=3.0,
                                                                 ir_drop_time_step_resolution_scale=0.5,
                                                                 ir_drop_integration_sum=True)])
def test_the_exported_file_computes_the_drop_as_the_converted_model(tmp_path, forward):
    """ONNX Runtime runs the ai.xbar bodies' IR drop (from the nodes' attributes and G+ / G-) under the parity
    rules; the drop is there (the file differs from the model without it)."""
    generator = torch.Generator().manual_seed(5)
    x = 1.5 * torch.randn(8, 2, 7, 7, generator=generator)
    model = converted(IR_DROP_MODEL.eval(), x, 32, forward)
    exported = Exported(model, xbar.export_onnx(model, (x[:2],), tmp_path / "ir_drop.onnx"))
    got = exported.run(x)
    assert_within_one_adc_step(got, exported.expected(x), exported.last_adc_step())
    plain = converted(IR_DROP_MODEL, x, 32, {})
    with torch.no_grad():
        assert (abs(got - plain(x).numpy()) > 0.5 * exported.last_adc_step()).mean() > 0.1
    nodes = [n for n in exported.model.graph.node if n.domain == "ai.xbar"]
    assert len(nodes) == 4 and all(a.f == forward["ir_drop"] for n in nodes for a in n.attribute if a.name == "ir_drop")


@pytest.mark.parametrize("overrides, message", [
    ({"forward.inp_res": -1}, "forward.ir_drop needs a DAC"),
    ({"mapping.max_input_size": 30}, "ir_drop_segments=8 must divide the array's 30 rows"),
    ({"forward.noise_management": "ABS_MAX"}, "not simulated with ABS_MAX / MAX noise management"),
])
def test_what_xbar_does_not_simulate_is_refused_in_one_line(overrides, message):
    layer, x = layer_and_input(24, 6)
    config = xbar_config(32, dict(ir_drop=1.0)).with_overrides(overrides)
    with pytest.raises(ConfigError, match=message) as raised:
        xbar.convert(xbar.prepare(layer, (x[:2],), config))
    assert "\n" not in str(raised.value)


def test_a_transposed_convolution_with_ir_drop_is_refused_and_a_layer_rule_switches_it_off():
    """aihwkit's tiles have no transposed convolution."""
    model = nn.Sequential(nn.ConvTranspose2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 4)).eval()
    x = torch.randn(2, 1, 4, 4)
    config = xbar_config(16, dict(ir_drop=1.0))
    with pytest.raises(ConfigError, match="not on conv_transpose layers: set forward.ir_drop 0"):
        xbar.convert(xbar.prepare(model, (x,), config))
    config.layers.append(LayerRule(module_type="ConvTranspose2d", overrides={"forward.ir_drop": 0.0}))
    arrays = crossbar_modules(xbar.convert(xbar.prepare(model, (x,), config)))
    assert {(a.kind.name, a.settings.ir_drop) for a in arrays.values()} == {("conv_transpose", 0.0), ("linear", 1.0)}


def test_a_grouped_convolution_drops_as_one_array_per_group():
    """Each column reads its own group's patch elements: the grouped layer computes what each group's
    convolution computes alone (the read direction alternating with the column index in both)."""
    generator = torch.Generator().manual_seed(2)
    grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2).eval()
    with torch.no_grad():  # each group's max|W| 1: the layer's scale ratio is each group's alone
        grouped.weight.copy_(torch.randn(grouped.weight.shape, generator=generator))
        for group in grouped.weight.split(2):
            group /= group.abs().max()
    x = 1.5 * torch.randn(4, 4, 6, 6, generator=generator)
    halves = []
    for group in range(2):
        alone = nn.Conv2d(2, 2, 3, padding=1).eval()
        with torch.no_grad():
            alone.weight.copy_(grouped.weight[2 * group:2 * group + 2])
            alone.bias.copy_(grouped.bias[2 * group:2 * group + 2])
        halves.append(ours(alone, x[:, 2 * group:2 * group + 2], 32, dict(ir_drop=4.0)))
    mine = ours(grouped, x, 32, dict(ir_drop=4.0))
    assert_same_outputs(mine, torch.cat(halves, dim=1), grouped)


def test_ir_drop_settings_round_trip_through_set_and_the_config_file():
    overrides = parse_overrides(["forward.ir_drop=1.5", "forward.ir_drop_rs=0.2", "forward.ir_drop_segments=4",
                                 "forward.ir_drop_integration_sum=true", "forward.adc_quantization=false",
                                 "forward.adc_frequency=5", "forward.ir_drop_v_read=0.41",
                                 "forward.ir_drop_time_step_resolution_scale=0.5"])
    config = HardwareConfig().with_overrides(overrides)
    forward = config.forward
    assert (forward.ir_drop, forward.ir_drop_rs, forward.ir_drop_segments, forward.ir_drop_integration_sum,
            forward.adc_quantization, forward.adc_frequency) == (1.5, 0.2, 4, True, False, 5.0)
    again = HardwareConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict() and again.forward == forward
    assert HardwareConfig().forward.ir_drop == 0.0 and HardwareConfig().forward.adc_quantization is True


@pytest.mark.parametrize("overrides, message", [
    ({"forward.ir_drop": -1.0}, "forward.ir_drop must be >= 0"),
    ({"forward.ir_drop_segments": 0}, "forward.ir_drop_segments must be an integer >= 1"),
    ({"forward.adc_frequency": 0.0}, "forward.adc_frequency must be > 0"),
])
def test_meaningless_ir_drop_values_are_refused_when_built(overrides, message):
    with pytest.raises(ConfigError, match=message):
        HardwareConfig().with_overrides(overrides)


def test_the_drop_follows_the_programmed_and_drifted_conductances():
    """Each programmed or drifted copy reads the IR-drop operands of its own G+ / G-, not the converted ones'."""
    layer, x = layer_and_input(64, 8)
    model = converted(layer, x, 64, dict(ir_drop=2.0))
    drifted = xbar.drift(xbar.program(model, xbar.PCMLikeNoiseModel(), seed=0), 3600.0, seed=1)
    with torch.no_grad():
        assert (model(x) - drifted(x)).abs().max() > 0.01
    for original, copy in zip(crossbar_modules(model).values(), crossbar_modules(drifted).values()):
        weight, offset = array_operands(copy.g_plus, copy.g_minus, copy.settings)
        assert not torch.equal(original.g_plus, copy.g_plus)
        assert torch.equal(copy.adc_weight(), weight) and torch.equal(copy.ir_drop_offset, offset)


def test_the_hwa_preset_drops_in_the_converted_model_only_as_aihwkit_does():
    """StandardHWATrainingPreset sets forward.ir_drop 1.0 and aihwkit switches it off in training: the hwa
    preset's prepared model computes what the same model without IR drop computes, in training and in eval."""
    config = xbar.preset_config("hwa")
    assert config.forward.ir_drop == 1.0 and xbar.compiler.config.presets.HWA_NOT_SIMULATED == ()
    layer, x = layer_and_input(64, 8)
    quiet = {"forward.out_noise": 0.0, "forward.w_noise": 0.0}
    dropping = xbar.prepare(layer, (x[:2],), config.with_overrides(quiet))
    plain = xbar.prepare(layer, (x[:2],), config.with_overrides(quiet | {"forward.ir_drop": 0.0}))
    for mode in (True, False):
        with torch.no_grad():
            assert torch.equal(dropping.train(mode)(x), plain.train(mode)(x))
    with torch.no_grad():
        assert not torch.equal(xbar.convert(dropping.eval())(x), xbar.convert(plain.eval())(x))
