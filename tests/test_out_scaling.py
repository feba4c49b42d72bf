"""aihwkit's learned digital output scales (mapping.learn_out_scaling, out_scaling_columnwise): forward
and gradient against aihwkit 1.1.0's torch tiles, training by fine_tune, and the ONNX contract."""

import numpy as np
import pytest
import torch
from aihwkit.nn import AnalogConv2d, AnalogLinear
from aihwkit_tiles import aihwkit_config, layer_and_input, xbar_config
from onnx_parity import Exported, assert_within_one_adc_step
from torch import nn

from xbar import convert, export_onnx, fine_tune, prepare
from xbar.compiler.pipeline.finetune import FineTuning
from xbar.passes.errors import ConfigError
from xbar.passes.numerics.crossbar import Crossbar
from xbar.passes.numerics.weight_mapping import OutScaling


def with_out_scaling(columnwise: bool):
    config = aihwkit_config(1.0, True)
    config.mapping.learn_out_scaling, config.mapping.out_scaling_columnwise = True, columnwise
    ours = xbar_config(1.0, True).with_overrides({"mapping.learn_out_scaling": True,
                                                  "mapping.out_scaling_columnwise": columnwise})
    return config, ours


def scales_for(columns: int) -> torch.Tensor:
    return torch.linspace(0.5, 1.5, columns)


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("columnwise", [False, True], ids=["one", "per-column"])
def test_forward_and_gradient_match_aihwkit(kind, columnwise):
    layer, x = layer_and_input(kind)
    theirs_config, ours_config = with_out_scaling(columnwise)
    analog = (AnalogLinear if kind == "linear" else AnalogConv2d).from_digital(layer, theirs_config).train()
    (tile,) = analog.analog_tiles()
    prepared = prepare(layer, (x,), ours_config).train()
    (ours,) = [m for m in prepared.modules() if isinstance(m, OutScaling)]
    columns = layer.weight.shape[0] if columnwise else 1
    with torch.no_grad():
        tile.out_scaling_alpha.copy_(scales_for(columns))
        ours.alpha.copy_(scales_for(columns))
    upstream = torch.randn(analog(x).shape, generator=torch.Generator().manual_seed(1))
    (analog(x) * upstream).sum().backward()
    (prepared(x) * upstream).sum().backward()
    with torch.no_grad():
        assert torch.allclose(prepared.eval()(x), analog.eval()(x), atol=1e-4, rtol=1e-5)
    assert ours.alpha.grad.shape == tile.out_scaling_alpha.grad.shape == (columns,)
    assert torch.allclose(ours.alpha.grad, tile.out_scaling_alpha.grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_the_logical_weight_gradient_is_aihwkits_analog_one_times_alpha(kind):
    """aihwkit's tile trains W' = W / alpha with its gradient divided by alpha**2 (SGD on W' is SGD on W),
    so the logical weight's gradient is that times alpha; ideal converters and an ADC bound that clips
    (with 254 steps the two mask the ADC's gradient at slightly different outputs: after rounding and
    inclusive in aihwkit's torch tile, before rounding in xbar)."""
    layer, x = layer_and_input(kind)
    theirs = aihwkit_config(1.0, True, steps=-1)
    analog = (AnalogLinear if kind == "linear" else AnalogConv2d).from_digital(layer, theirs).train()
    (tile,) = analog.analog_tiles()
    prepared = prepare(layer, (x,), xbar_config(1.0, True, steps=-1)).train()
    upstream = torch.randn(analog(x).shape, generator=torch.Generator().manual_seed(1))
    (analog(x) * upstream).sum().backward()
    (prepared(x) * upstream).sum().backward()
    weight = prepared.get_parameter("weight")
    scales = tile.get_mapping_scales().view(-1, *([1] * (weight.dim() - 1)))
    assert torch.allclose(weight.grad, tile.tile.weight.grad.view(weight.shape) * scales, rtol=1e-4, atol=1e-4)


def test_fine_tune_trains_the_scales_and_convert_folds_them_into_the_output_scale(tmp_path):
    layer, x = layer_and_input("linear")
    prepared = prepare(layer, (x,), with_out_scaling(True)[1])
    (ours,) = [m for m in prepared.modules() if isinstance(m, OutScaling)]
    targets = torch.arange(len(x)) % 6
    fine_tune(prepared, x, targets, FineTuning(epochs=2, batch_size=16))
    assert not torch.equal(ours.alpha.detach(), torch.ones(6))
    converted = convert(prepared)
    (crossbar,) = [m for m in converted.modules() if isinstance(m, Crossbar)]
    assert crossbar.settings.out_scales == pytest.approx(ours.alpha.detach().tolist())
    with torch.no_grad():
        assert torch.allclose(converted(x), prepared(x), atol=0.05)
    exported = Exported(converted, export_onnx(converted, (x,), tmp_path / "m.onnx"))
    (node,) = [n for n in exported.model.graph.node if n.domain == "ai.xbar"]
    attributes = {a.name: list(a.floats) for a in node.attribute}
    assert np.array_equal(np.float32(attributes["out_scales"]), np.float32(crossbar.settings.out_scales))
    assert_within_one_adc_step(exported.run(x), exported.expected(x), exported.last_adc_step())


def test_a_layer_without_out_scaling_gets_no_module():
    layer, x = layer_and_input("linear")
    assert not [m for m in prepare(layer, (x,), xbar_config(1.0, True)).modules() if isinstance(m, OutScaling)]


def test_columnwise_out_scaling_needs_learned_out_scaling():
    with pytest.raises(ConfigError, match="out_scaling_columnwise needs mapping.learn_out_scaling"):
        xbar_config(1.0, True).with_overrides({"mapping.out_scaling_columnwise": True})


def test_a_transposed_convolution_cannot_learn_per_column_scales():
    layer = nn.ConvTranspose2d(2, 3, 3)
    with pytest.raises(ConfigError, match="out_scaling_columnwise = false"):
        prepare(layer, (torch.randn(1, 2, 4, 4),), xbar_config(1.0, False).with_overrides(
            {"mapping.learn_out_scaling": True, "mapping.out_scaling_columnwise": True}))
