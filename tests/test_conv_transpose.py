"""Transposed convolutions as crossbar layers: matching, tiling, conversion, the
simulated math, and the ONNX export run by ONNX Runtime."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx.reference import ReferenceEvaluator
from onnx_parity import Exported, assert_within_one_adc_step
from torch import nn

from xbar import HardwareConfig, calibrate, convert, export_onnx, prepare
from xbar.compiler.inspection.converted import summarize_converted
from xbar.compiler.inspection.read import load_inspection
from xbar.compiler.onnx import ops as onnx_ops
from xbar.passes.arrays import WeightLayout
from xbar.passes.capture import capture
from xbar.passes.errors import ConfigError
from xbar.passes.kinds import CONV_TRANSPOSE
from xbar.passes.kinds.conv_transpose import ConvTransposeGeometry
from xbar.passes.matching import find_crossbar_layers
from xbar.passes.numerics.crossbar import Crossbar
from xbar.passes.plan import tag_of
from xbar.passes.rewrites.tiling import plan_tiles

from conftest import eight_bit

NO_CLIP = {"pre_post.input_range.init_value": 1e6, "pre_post.input_range.init_from_data": 0}
TILED = {"mapping.max_input_size": 20, "mapping.max_output_size": 4}


class Decoder(nn.Module):
    """Strided with output padding, grouped and dilated without bias, 1d, and a functional call."""

    def __init__(self):
        super().__init__()
        self.up1 = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.ConvTranspose2d(6, 6, 3, padding=2, dilation=2, groups=3, bias=False)
        self.up1d = nn.ConvTranspose1d(6, 4, 2, stride=2)
        self.head_weight = nn.Parameter(torch.randn(4, 2, 3) * 0.3)

    def forward(self, x):  # [N, 4, 4, 4]
        x = torch.relu(self.up1(x))  # [N, 6, 8, 8]
        x = torch.relu(self.up2(x))  # [N, 6, 8, 8]
        x = torch.relu(self.up1d(x.flatten(2)))  # [N, 4, 128]
        return F.conv_transpose1d(x, self.head_weight, None, 1, 1)  # [N, 2, 128]


def decoder() -> Decoder:
    torch.manual_seed(0)
    return Decoder().eval()


def inputs(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, 4, 4, generator=torch.Generator().manual_seed(seed))


# --- matching ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_every_transposed_convolution_is_found_with_its_geometry(method):
    layers = {layer.name: layer for layer in find_crossbar_layers(capture(decoder(), (inputs(2),), method))}
    assert list(layers) == ["up1", "up2", "up1d", "head"]
    assert all(layer.kind == CONV_TRANSPOSE for layer in layers.values())
    assert layers["up1"].geometry == ConvTransposeGeometry((2, 2), (1, 1), (1, 1), (1, 1), 1)
    assert layers["up2"].geometry == ConvTransposeGeometry((1, 1), (2, 2), (0, 0), (2, 2), 3)
    assert layers["up1d"].geometry == ConvTransposeGeometry((2,), (0,), (0,), (1,), 1)
    assert layers["head"].geometry == ConvTransposeGeometry((1,), (1,), (0,), (1,), 1)
    assert layers["up1"].bias == "up1.bias" and layers["up2"].bias is None and layers["head"].bias is None


class OutputSize(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 2, 3, stride=2)

    def forward(self, x):
        return self.up(x, output_size=[10, 10])


class ActivationWeight(nn.Module):
    def forward(self, x):
        return F.conv_transpose2d(x, x[:, :, :2, :2].transpose(0, 1))


@pytest.mark.parametrize("model", [OutputSize(), ActivationWeight()])
def test_output_size_and_activation_weights_stay_digital(model):
    assert find_crossbar_layers(torch.fx.symbolic_trace(model)) == []


def test_one_scale_ratio_per_column_is_refused():
    config = HardwareConfig().with_overrides({"mapping.weight_scaling_columnwise": True})
    with pytest.raises(ConfigError, match="up1: a conv_transpose layer cannot have one scale ratio per column"):
        prepare(decoder(), (inputs(2),), config)


# --- tiling -----------------------------------------------------------------------------------

def test_the_array_rows_are_the_input_channels_of_weight_dim_0():
    """A weight [in=6, out=4, 3, 3]: each input channel is 9 rows, each output channel a column."""
    layout = CONV_TRANSPOSE.layout((6, 4, 3, 3), ConvTransposeGeometry((1, 1), (0, 0), (0, 0), (1, 1), 1))
    assert layout == WeightLayout(1, 6, 4, 9)
    tiles = plan_tiles(layout, max_input_size=20, max_output_size=3)
    assert sorted({t.inputs for t in tiles}) == [(0, 2), (2, 4), (4, 6)]
    assert sorted({t.outputs for t in tiles}) == [(0, 2), (2, 4)]
    count = torch.zeros(6, 4, dtype=torch.int)
    for tile in tiles:
        count[CONV_TRANSPOSE.block_index(tile)] += 1
    assert bool((count == 1).all())


def test_grouped_tiles_take_their_groups_input_rows_and_local_columns():
    layout = CONV_TRANSPOSE.layout((6, 2, 3, 3), ConvTransposeGeometry((1, 1), (0, 0), (0, 0), (1, 1), 3))
    assert layout == WeightLayout(3, 2, 2, 9)
    tiles = plan_tiles(layout, max_input_size=20, max_output_size=4)  # 18 rows per group: one group per array
    assert [(t.inputs, t.outputs, t.groups) for t in tiles] == [((0, 2), (0, 2), 1), ((2, 4), (2, 4), 1),
                                                                 ((4, 6), (4, 6), 1)]
    assert [CONV_TRANSPOSE.block_index(t) for t in tiles][1] == (slice(2, 4), slice(0, 2))
    packed = plan_tiles(layout, max_input_size=0, max_output_size=4)
    assert [(t.inputs, t.outputs, t.groups) for t in packed] == [((0, 4), (0, 4), 2), ((4, 6), (4, 6), 1)]


def test_tiled_layers_are_named_after_their_arrays():
    prepared = prepare(decoder(), (inputs(2),), HardwareConfig().with_overrides(TILED))
    names = [n.name for n in prepared.graph.nodes if (tag := tag_of(n)) and tag.plan.layer.name == "up1"]
    assert names[:3] == ["up1_row0_slice", "up1_row0_input_range", "up1_row0_input_range_value"]
    assert {"up1_tile1_1_mvm", "up1_col1_sum", "up1_concat", "up1_add_bias"} <= set(names)
    arrays = {n: m for n, m in convert(prepared).named_children() if isinstance(m, Crossbar)}
    assert sorted(n for n in arrays if n.startswith("up1_")) == [f"up1_tile{r}_{c}_crossbar" for r in (0, 1)
                                                                 for c in (0, 1)]
    assert arrays["up1_tile1_0_crossbar"].g_plus.shape == (2, 3, 3, 3)  # input channels 2-3, outputs 0-2
    assert [arrays[f"up2_tile{g}_{g}_crossbar"].geometry.groups for g in range(3)] == [1, 1, 1]


# --- conversion and the simulated math --------------------------------------------------------

@pytest.mark.parametrize("mapping", [{}, TILED], ids=["one array", "tiled"])
def test_without_dac_and_adc_the_converted_model_is_the_original(mapping):
    model = decoder()
    x = inputs(5)
    converted = convert(prepare(model, (x[:2],), HardwareConfig().with_overrides({**NO_CLIP, **mapping})))
    expected = model(x).detach()
    assert torch.allclose(converted(x), expected, atol=1e-5 * float(expected.abs().max()))


def reference_array(x, array: Crossbar) -> torch.Tensor:
    """The hardware model written out: clip and scale, DAC, conv_transpose on G+ - G-,
    ADC in units of I / (g_max - g_min), scale back, bias."""
    s, g = array.settings, array.geometry
    r, span = s.input_range, s.g_max - s.g_min
    h_in, h_out = s.dac_steps / 2, s.adc_steps / 2
    x_q = torch.round(x.clamp(-r, r) / r * h_in) / h_in
    current = F.conv_transpose2d(x_q.double(), (array.g_plus - array.g_minus).double(), None, g.stride,
                                 g.padding, g.output_padding, g.groups, g.dilation)
    units = h_out / s.out_bound
    y_n = (torch.round(current / span * units) / units).clamp(-s.out_bound, s.out_bound)
    return (y_n * r * span / s.scale_ratio + array.bias.view(-1, 1, 1)).float()


def test_eight_bit_array_is_the_hardware_model_on_its_conductances():
    x = inputs(8)
    prepared = prepare(decoder(), (x[:2],), eight_bit())
    calibrate(prepared, [inputs(32, seed=s) for s in range(3)])
    array = convert(prepared).up1_crossbar
    step = array.settings.constants["out_scale"]
    assert array.settings.input_range > 0 and array.settings.adc_steps == 254
    got, expected = array(x), reference_array(x, array)
    apart = ~torch.isclose(got, expected, rtol=1e-5, atol=1e-6)  # float32 constants vs float64 arithmetic
    assert apart.float().mean() < 0.01  # a value next to a rounding boundary may round the other way
    assert float((got - expected).abs().max()) <= step * (1 + 1e-4)


# --- ONNX -------------------------------------------------------------------------------------

CONFIGS = {"ideal": lambda: HardwareConfig(), "eight bit": eight_bit, "eight bit, tiled":
           lambda: eight_bit().with_overrides(TILED)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(config: str) -> Exported:
        if config not in cache:
            prepared = prepare(decoder(), (inputs(4),), CONFIGS[config]())
            calibrate(prepared, [inputs(32, seed=s) for s in range(3)])
            converted = convert(prepared)
            path = export_onnx(converted, (inputs(4),), tmp_path_factory.mktemp("ct") / "decoder.onnx")
            cache[config] = Exported(converted, path)
        return cache[config]

    return get


def test_each_array_is_one_crossbar_conv_transpose_node(exported):
    result = exported("eight bit, tiled")
    onnx.checker.check_model(result.model, full_check=True)
    assert {o.domain: o.version for o in result.model.opset_import}[onnx_ops.DOMAIN] == onnx_ops.VERSION
    assert "CrossbarConvTranspose" in {f.name for f in result.model.functions}
    nodes = {n.name: n for n in result.model.graph.node if n.domain == onnx_ops.DOMAIN}
    crossbars = result.crossbars()
    assert set(nodes) == set(crossbars) and len(nodes) == 4 + 3 + 1 + 1
    for name, node in nodes.items():
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        geometry = crossbars[name].geometry
        assert node.op_type == "CrossbarConvTranspose"
        assert attributes["output_padding"] == list(geometry.output_padding)
        assert attributes["pads"] == list(geometry.padding) * 2 and attributes["group"] == geometry.groups
    assert not any(n.op_type == "ConvTranspose" for n in result.model.graph.node)  # only inside the function


@pytest.mark.parametrize("batch", [1, 7])
def test_ideal_export_matches_the_converted_model(exported, batch):
    result = exported("ideal")
    x = inputs(batch, seed=11)
    expected = result.expected(x)
    assert np.abs(result.run(x) - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("config", ["eight bit", "eight bit, tiled"])
def test_eight_bit_export_matches_the_converted_model(exported, config):
    result = exported(config)
    x = inputs(16, seed=12)
    assert_within_one_adc_step(result.run(x), result.expected(x), result.last_adc_step())


def test_reference_evaluator_agrees_with_onnx_runtime(tmp_path):
    """On an ungrouped layer: onnx.reference's ConvTranspose does not implement group > 1."""
    torch.manual_seed(0)
    model = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1).eval()
    prepared = prepare(model, (inputs(4),), eight_bit())
    calibrate(prepared, [inputs(32, seed=s) for s in range(3)])
    converted = convert(prepared)
    result = Exported(converted, export_onnx(converted, (inputs(4),), tmp_path / "up.onnx"))
    x = inputs(3, seed=13)
    reference = ReferenceEvaluator(result.model).run(None, {result.input_name: x.numpy()})[0]
    assert_within_one_adc_step(reference, result.run(x), result.last_adc_step())


def test_reexport_is_byte_identical(exported, tmp_path):
    result = exported("eight bit")
    again = export_onnx(result.converted, (inputs(4),), tmp_path / "again.onnx")
    assert again.read_bytes() == result.path.read_bytes()


def test_inspection_names_the_kind_of_each_array(exported):
    result = exported("eight bit")
    expected = ["conv_transpose2d", "conv_transpose2d", "conv_transpose1d", "conv_transpose1d"]
    assert [layer.kind for layer in summarize_converted(result.converted)] == expected
    assert [layer.kind for layer in load_inspection(result.path).layers] == expected


def test_a_3d_transposed_convolution_converts_and_exports(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.ConvTranspose3d(4, 3, 2, stride=2, padding=1)).eval()
    x = torch.randn(2, 4, 3, 3, 3)
    config = HardwareConfig().with_overrides({**NO_CLIP, "mapping.max_input_size": 16})  # 8 rows per channel
    converted = convert(prepare(model, (x,), config))
    assert len([m for m in converted.modules() if isinstance(m, Crossbar)]) == 2
    expected = model(x).detach()
    assert torch.allclose(converted(x), expected, atol=1e-5 * float(expected.abs().max()))
    result = Exported(converted, export_onnx(converted, (x,), tmp_path / "up3d.onnx"))
    x = torch.randn(3, 4, 3, 3, 3)
    assert np.abs(result.run(x) - result.expected(x)).max() <= 1e-5 * np.abs(result.expected(x)).max()
