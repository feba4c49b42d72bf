"""aihwkit's weight scaling (mapping.weight_scaling_omega, weight_scaling_columnwise), compared with
aihwkit 1.1.0's TorchInferenceRPUConfig tiles on small layers with matched, noise-free settings; the
ONNX contract carries it and ONNX Runtime reproduces it."""

import numpy as np
import pytest
import torch
from aihwkit.nn import AnalogLinear
from aihwkit.simulator.parameters.enums import WeightModifierType
from aihwkit_tiles import BOUND, RANGE, aihwkit_config, aihwkit_forward, layer_and_input, xbar_config
from onnx_parity import Exported, assert_within_one_adc_step

from xbar import HardwareConfig, convert, export_onnx, prepare
from xbar.passes.errors import ConfigError
from xbar.passes.numerics.crossbar import Crossbar

CASES = [(0.0, False), (1.0, False), (1.0, True), (0.6, True)]


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("omega, columnwise", CASES, ids=[f"omega{o}-{'col' if c else 'array'}" for o, c in CASES])
def test_noise_free_outputs_match_aihwkit(kind, omega, columnwise):
    layer, x = layer_and_input(kind)
    expected = aihwkit_forward(layer, x, aihwkit_config(omega, columnwise))
    prepared = prepare(layer, (x,), xbar_config(omega, columnwise)).eval()
    with torch.no_grad():
        got = prepared(x)
        converted = convert(prepared)(x)
    step = 2 * BOUND / 254 * RANGE * float(layer.weight.detach().abs().max()) / (omega or 1.0)  # one ADC step, at most
    assert torch.allclose(got, expected, atol=1e-4 * step, rtol=1e-5)
    differs = (converted - expected).abs() > 1e-3 * step
    assert differs.float().mean() < 0.02 and (converted - expected).abs().max() <= step


def test_omega_changes_what_the_adc_clips():
    layer, x = layer_and_input("linear")
    with torch.no_grad():
        weight_units = prepare(layer, (x,), xbar_config(0.0, False)).eval()(x)
        scaled = prepare(layer, (x,), xbar_config(1.0, False)).eval()(x)
    assert (weight_units - scaled).abs().max() > 1.0


def test_dynamic_scaling_is_the_stored_one_until_the_weights_move():
    layer, x = layer_and_input("linear")
    stored = prepare(layer, (x,), xbar_config(1.0, True)).eval()
    dynamic = prepare(layer, (x,), xbar_config(1.0, True, dynamic=True)).eval()
    with torch.no_grad():
        before = dynamic(x)
        assert torch.equal(stored(x), before)
        for model in (stored, dynamic):
            model.get_parameter("weight").mul_(2.0)
        # the dynamic scale doubles with the weights (the ADC sees the same codes); the stored one
        # keeps its scale, so the doubled analog weights clip more at the ADC
        assert torch.allclose(dynamic(x) - layer.bias, 2 * (before - layer.bias), atol=1e-5)
        assert not torch.allclose(stored(x) - layer.bias, 2 * (before - layer.bias), atol=0.1)


def test_the_converted_array_records_its_analog_weight_max():
    layer, x = layer_and_input("linear")
    converted = convert(prepare(layer, (x,), xbar_config(0.6, True)))
    (crossbar,) = [m for m in converted.modules() if isinstance(m, Crossbar)]
    assert crossbar.settings.mapped_wmax == pytest.approx(0.6, rel=1e-6)
    assert len(crossbar.settings.column_scale_ratios) == 6
    unscaled = convert(prepare(layer, (x,), xbar_config(0.0, False)))
    (crossbar,) = [m for m in unscaled.modules() if isinstance(m, Crossbar)]
    assert crossbar.settings.mapped_wmax == pytest.approx(float(layer.weight.detach().abs().max()))


@pytest.mark.parametrize("omega, columnwise", [(0.0, False), (0.6, True)])
def test_export_carries_the_weight_scaling_and_onnx_runtime_agrees(omega, columnwise, tmp_path):
    layer, x = layer_and_input("conv")
    converted = convert(prepare(layer, (x,), xbar_config(omega, columnwise)))
    exported = Exported(converted, export_onnx(converted, (x,), tmp_path / "m.onnx"))
    (node,) = [n for n in exported.model.graph.node if n.domain == "ai.xbar"]
    attributes = {a.name: a for a in node.attribute}
    (crossbar,) = exported.crossbars().values()
    assert np.float32(attributes["mapped_wmax"].f) == np.float32(crossbar.settings.mapped_wmax)
    assert_within_one_adc_step(exported.run(x), exported.expected(x), exported.last_adc_step())


def test_refused_mapping_values_say_what_to_do():
    with pytest.raises(ConfigError, match="weight_scaling_omega must be >= 0"):
        HardwareConfig().with_overrides({"mapping.weight_scaling_omega": -1.0})
    with pytest.raises(ConfigError, match="digital_bias = false"):
        HardwareConfig().with_overrides({"mapping.digital_bias": False})


def test_the_weight_modifier_draws_on_the_stored_analog_weights_as_aihwkit():
    """aihwkit's torch tile adds ADD_NORMAL noise of std_dev * max|W'| to its analog weights; with the
    same seed, the same draw, so the training forward passes agree."""
    layer, x = layer_and_input("linear")
    theirs = aihwkit_config(1.0, True)
    theirs.modifier.type, theirs.modifier.std_dev = WeightModifierType.ADD_NORMAL, 0.1
    analog = AnalogLinear.from_digital(layer, theirs).train()
    prepared = prepare(layer, (x,), xbar_config(1.0, True).with_overrides(
        {"modifier.type": "ADD_NORMAL", "modifier.std_dev": 0.1})).train()
    with torch.no_grad():
        torch.manual_seed(5)
        expected = analog(x)
        torch.manual_seed(5)
        got = prepared(x)
        clean = prepared.eval()(x)
    step = 2 * BOUND / 254 * RANGE * float(layer.weight.detach().abs().max())
    assert torch.allclose(got, expected, atol=1e-4 * step, rtol=1e-5)
    assert (got - clean).abs().max() > step  # the noise is there
