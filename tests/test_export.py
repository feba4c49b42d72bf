"""export_onnx: the ai.xbar file, checked with the real exporter, ONNX Runtime and onnx.reference."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from onnx_parity import Exported, assert_within_one_adc_step
from torch import nn

import xbar
from xbar import (
    ExportError,
    HardwareConfig,
    NoCrossbarLayersWarning,
    SinglePairConductanceConverter,
    UserError,
    calibrate,
    convert,
    export_onnx,
    prepare,
)
from xbar.compiler.onnx import bodies as onnx_bodies
from xbar.compiler.onnx import layers as onnx_layers
from xbar.compiler.onnx import ops as onnx_ops
from xbar.compiler.pipeline.record import Stage, record_of
from xbar.passes.capture import copy_graph_module
from xbar.passes.digital import NO_KIND
from xbar.passes.infra import run_passes
from xbar.passes.numerics.crossbar import Crossbar
from xbar.passes.rewrites.export_ops import CUSTOM_OPS, CrossbarToCustomOpsPass
from xbar.passes.rewrites.functional_ops import FunctionalInPlaceOpsPass

from conftest import eight_bit, make_input, make_model

CONFIGS = {
    "ideal, g_min 2": lambda: HardwareConfig().with_overrides({"converter.g_min": 2.0}),
    "eight bit": eight_bit,
}


def converted_model(model: nn.Module, example: torch.Tensor, config: HardwareConfig, batches) -> torch.fx.GraphModule:
    prepared = prepare(model, (example,), config)
    calibrate(prepared, batches)
    return convert(prepared)


def converted_test_model(name: str, config: HardwareConfig) -> torch.fx.GraphModule:
    return converted_model(make_model(name), make_input(name, 4), config,
                           [make_input(name, 32, seed=s) for s in range(3)])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model name, config name) -> Exported, each exported once per test module."""
    cache = {}

    def get(name: str, config: str) -> Exported:
        if (name, config) not in cache:
            converted = converted_test_model(name, CONFIGS[config]())
            path = tmp_path_factory.mktemp("export") / f"{name}.onnx"
            export_onnx(converted, (make_input(name, 4),), path)
            cache[name, config] = Exported(converted, path)
        return cache[name, config]

    return get


# --- the pass ---------------------------------------------------------------------------------

def test_pass_turns_each_crossbar_call_into_a_custom_op_in_place(exported, model_name):
    converted = exported(model_name, "eight bit").converted
    calls = [(n.name, n.target) for n in converted.graph.nodes if n.op == "call_module"
             and isinstance(converted.get_submodule(n.target), Crossbar)]
    rewritten = CrossbarToCustomOpsPass()(copy_graph_module(converted)).graph_module
    rewritten.recompile()
    nodes = {n.name: n for n in rewritten.graph.nodes}
    for name, module_name in calls:
        node = nodes[name]
        module = converted.get_submodule(module_name)
        assert node.op == "call_function"
        assert node.target == CUSTOM_OPS[module.kind]
        assert [a.target for a in node.args[1:4]] == [f"{module_name}.{t}" for t in ("g_plus", "g_minus", "bias")]
        assert node.args[4] == module.settings.layer
    x = make_input(model_name, 5, seed=3)
    assert torch.equal(rewritten(x), converted(x))  # the custom ops run the same numerics


def test_pass_gives_a_bias_free_array_a_zero_bias(exported):
    converted = exported("mlp", "eight bit").converted
    assert converted.fc2_crossbar.bias is None
    rewritten = CrossbarToCustomOpsPass()(copy_graph_module(converted)).graph_module
    assert torch.equal(rewritten.fc2_crossbar.bias, torch.zeros(32))


def test_pass_leaves_a_graph_without_crossbars_alone():
    graph_module = torch.fx.symbolic_trace(nn.Sequential(nn.ReLU()))
    code = graph_module.code
    assert not CrossbarToCustomOpsPass()(graph_module).modified
    assert graph_module.code == code


# --- numerics ---------------------------------------------------------------------------------

def test_ideal_export_matches_the_converted_model(exported, model_name):
    result = exported(model_name, "ideal, g_min 2")
    for batch in (1, 7):  # one export, dynamic batch
        x = make_input(model_name, batch, seed=11)
        expected = result.expected(x)
        assert np.abs(result.run(x) - expected).max() <= 1e-5 * np.abs(expected).max()


def test_eight_bit_export_matches_the_converted_model(exported, model_name):
    result = exported(model_name, "eight bit")
    for batch in (1, 7):
        x = make_input(model_name, batch, seed=12)
        assert_within_one_adc_step(result.run(x), result.expected(x), result.last_adc_step())


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_reference_evaluator_agrees_with_onnx_runtime(exported, model_name, config):
    result = exported(model_name, config)
    x = make_input(model_name, 3, seed=13)
    reference = ReferenceEvaluator(result.model).run(None, {result.input_name: x.numpy()})[0]
    got = result.run(x)
    if config == "eight bit":
        assert_within_one_adc_step(reference, got, result.last_adc_step())
    else:
        assert np.abs(reference - got).max() <= 1e-5 * np.abs(got).max()


def test_lenet_top1_agrees_on_the_digits_test_split(tmp_path):
    from xbar import models
    data = models.load_digits_split()
    converted = converted_model(models.load_pretrained("lenet"), data.train_x[:8], eight_bit(),
                                data.train_x[:512].split(128))
    result = Exported(converted, export_onnx(converted, (data.train_x[:8],), tmp_path / "lenet.onnx"))
    ort_top1 = result.run(data.test_x).argmax(axis=1)
    torch_top1 = result.expected(data.test_x).argmax(axis=1)
    assert (ort_top1 == torch_top1).mean() >= 0.995
    assert (ort_top1 == data.test_y.numpy()).mean() > 0.9


# --- the file ---------------------------------------------------------------------------------

def test_file_has_one_ai_xbar_node_per_array(exported, model_name):
    result = exported(model_name, "eight bit")
    model, crossbars = result.model, result.crossbars()
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= 13
    assert {o.domain: o.version for o in model.opset_import}[onnx_ops.DOMAIN] == onnx_ops.VERSION
    bodies = {f.name for f in model.functions if f.domain == onnx_ops.DOMAIN}
    assert bodies == {onnx_layers.op_type(m) for m in crossbars.values()}
    steps = [f.name for f in model.functions if f.domain == onnx_bodies.PERIPHERY_DOMAIN]
    assert steps == [f.name for f in onnx_bodies.PERIPHERY_FUNCTIONS]  # each before the bodies that call it
    initializers = {t.name: t for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.domain == onnx_ops.DOMAIN]
    assert sorted(n.name for n in nodes) == sorted(crossbars)
    for node in nodes:
        module = crossbars[node.name]
        assert node.op_type == onnx_layers.op_type(module)
        assert list(node.input[1:]) == [f"{node.name}.g_plus", f"{node.name}.g_minus", f"{node.name}.bias"]
        assert all(initializers[name].data_type == onnx.TensorProto.FLOAT for name in node.input[1:])
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attributes["layer"] == module.settings.layer.encode()
        assert np.float32(attributes["input_range"]) == np.float32(module.settings.input_range) > 0
        assert set(onnx_layers.expected_attributes(module)) | set(onnx_ops.REGION_ATTRIBUTES) == set(attributes)
    for value in (model.graph.input[0], model.graph.output[0]):
        batch = value.type.tensor_type.shape.dim[0]
        assert batch.dim_param == "batch" and not batch.dim_value


def test_file_metadata_records_tool_converter_config_and_layers(exported):
    result = exported("cnn", "eight bit")
    metadata = {p.key: p.value for p in result.model.metadata_props}
    config = record_of(result.converted, "test", Stage.CONVERTED).config
    assert metadata["xbar.version"] == xbar.__version__
    assert metadata["xbar.converter"] == str(config.converter)
    assert HardwareConfig.from_dict(json.loads(metadata["xbar.hardware_config"])).to_dict() == config.to_dict()
    layers = {layer["node"]: layer for layer in json.loads(metadata["xbar.layers"])}
    assert set(layers) == set(result.crossbars())
    assert layers["depthwise_crossbar"]["has_bias"] is False
    assert layers["conv2_crossbar"]["group"] == 4 and layers["conv2_crossbar"]["strides"] == [2, 2]



class SharedAndDigital(nn.Module):
    """One nn.Linear applied twice, and a weight that stays digital (an einsum that is no matmul)."""

    def __init__(self):
        super().__init__()
        self.fc, self.W = nn.Linear(4, 4), nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        return torch.einsum("bi,ij->bij", self.fc(torch.relu(self.fc(x))), self.W)


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_metadata_records_call_sites_and_digital_layers(tmp_path, method):
    x = torch.randn(3, 4)
    converted = xbar.convert(xbar.prepare(SharedAndDigital(), (x,), capture_method=method))
    model = onnx.load(str(export_onnx(converted, (x,), tmp_path / "shared.onnx")))
    metadata = {p.key: json.loads(p.value) for p in model.metadata_props if p.key.startswith("xbar.")
                and p.key not in ("xbar.version", "xbar.converter", "xbar.domain")}
    (entry,) = metadata["xbar.layers"]
    nodes = [n.name for n in model.graph.node if n.domain == onnx_ops.DOMAIN]
    assert (entry["node"], entry["calls"], entry["call_sites"], nodes) == ("fc_crossbar", 2, nodes, nodes)
    assert (entry["source_weight"], entry["has_bias"], entry["weight_shape"]) == ("fc.weight", True, [4, 4])
    op = "aten.einsum" if method == "export" else "einsum"
    assert metadata["xbar.digital_layers"] == [
        {"layer": "W", "ops": [op], "weights": ["W"], "shapes": [[4, 4]], "reason": NO_KIND}]


def test_reexport_is_byte_identical(exported, model_name, tmp_path):
    result = exported(model_name, "eight bit")
    again = export_onnx(result.converted, (make_input(model_name, 4),), tmp_path / "again.onnx")
    assert again.read_bytes() == result.path.read_bytes()


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_conductances_in_the_file_convert_back_to_the_weights(exported, model_name, config):
    result = exported(model_name, config)
    weights = dict(make_model(model_name).named_parameters())
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer}
    for node in (n for n in result.model.graph.node if n.domain == onnx_ops.DOMAIN):
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        g_min, g_max = attributes["g_min"], attributes["g_max"]
        g_plus, g_minus = (torch.tensor(initializers[name]) for name in node.input[1:3])
        for g in (g_plus, g_minus):
            assert g.min() >= g_min and g.max() <= g_max + g_min
        converter = SinglePairConductanceConverter(g_max=g_max, g_min=g_min)
        recovered = converter.convert_back_to_weights([g_plus, g_minus], {"scale_ratio": attributes["scale_ratio"]})
        original = weights[result.crossbars()[node.name].source_weight].detach()
        assert torch.allclose(recovered, original, atol=1e-5 * float(original.abs().max()))


# --- edge cases -------------------------------------------------------------------------------

class TwinLinear(nn.Module):
    """Two bias-free layers with equal weights: the exporter's optimiser merges their tensors."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)
        self.fc2.weight = nn.Parameter(self.fc1.weight.detach().clone())

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_merged_layer_tensors_are_given_back_to_each_layer(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(4, 8)
    converted = converted_model(TwinLinear().eval(), x, eight_bit(), [torch.randn(32, 8)])
    result = Exported(converted, export_onnx(converted, (x,), tmp_path / "twin.onnx"))
    inputs = {n.name: list(n.input[1:]) for n in result.model.graph.node if n.domain == onnx_ops.DOMAIN}
    assert inputs == {m: [f"{m}.g_plus", f"{m}.g_minus", f"{m}.bias"] for m in ("fc1_crossbar", "fc2_crossbar")}
    assert_within_one_adc_step(result.run(x), result.expected(x), result.last_adc_step())


class SharedLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.out(torch.relu(self.fc(torch.relu(self.fc(x)))))


def test_a_shared_layer_is_two_nodes_on_one_set_of_tensors(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    converted = converted_model(SharedLayer().eval(), x, eight_bit(), [torch.randn(32, 6)])
    result = Exported(converted, export_onnx(converted, (x,), tmp_path / "shared.onnx"))
    inputs = {n.name: list(n.input[1:]) for n in result.model.graph.node if n.domain == onnx_ops.DOMAIN}
    fc = ["fc_crossbar.g_plus", "fc_crossbar.g_minus", "fc_crossbar.bias"]
    assert inputs == {"fc_crossbar": fc, "fc_crossbar_1": fc, "out_crossbar": [f"out_crossbar.{t}" for t in
                                                                                ("g_plus", "g_minus", "bias")]}
    assert_within_one_adc_step(result.run(x), result.expected(x), result.last_adc_step())


def test_each_tile_of_a_tiled_layer_is_a_node_with_its_position(tmp_path):
    config = eight_bit().with_overrides({"mapping.max_input_size": 16, "mapping.max_output_size": 16})
    converted = converted_test_model("mlp", config)
    result = Exported(converted, export_onnx(converted, (make_input("mlp", 4),), tmp_path / "tiled.onnx"))
    crossbars = result.crossbars()
    nodes = {n.name: n for n in result.model.graph.node if n.domain == onnx_ops.DOMAIN}
    assert len(crossbars) > 3 and set(nodes) == set(crossbars)
    for name, node in nodes.items():
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        settings = crossbars[name].settings
        assert (attributes["tile_row"], attributes["tile_col"]) == (settings.tile_row, settings.tile_col)
    x = make_input("mlp", 7, seed=14)
    assert_within_one_adc_step(result.run(x), result.expected(x), result.last_adc_step())


def test_in_place_ops_become_functional_only_where_no_one_sees_the_mutation():
    aten = torch.ops.aten
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    a = graph.call_function(aten.neg.default, (x,))
    read_again = graph.call_function(aten.add.Tensor, (a, graph.call_function(aten.relu_.default, (a,))))
    b = graph.call_function(aten.neg.default, (x,))
    only_reader = graph.call_function(aten.hardtanh_.default, (b, -0.5, 0.5))
    an_input = graph.call_function(aten.relu_.default, (x,))
    total = graph.call_function(aten.add.Tensor, (read_again, only_reader))
    graph.output(graph.call_function(aten.add.Tensor, (total, an_input)))
    graph_module = torch.fx.GraphModule(nn.Module(), graph)
    x = torch.randn(5, 3)
    expected = graph_module(x.clone())
    rewritten = run_passes(graph_module, [FunctionalInPlaceOpsPass()])
    assert [n.target for n in rewritten.graph.nodes if n.op == "call_function"] == [
        aten.neg.default, aten.relu_.default, aten.add.Tensor, aten.neg.default, aten.hardtanh.default,
        aten.relu_.default, aten.add.Tensor, aten.add.Tensor]
    assert torch.equal(rewritten(x.clone()), expected)


class InPlaceActivations(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.relu6, self.fc = nn.Conv2d(3, 4, 3), nn.ReLU6(inplace=True), nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return torch.relu_(self.fc(self.relu6(self.conv(x)).flatten(1)))


def test_in_place_activations_export_in_functional_form(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    converted = converted_model(InPlaceActivations().eval(), x, CONFIGS["ideal, g_min 2"](),
                                [torch.randn(32, 3, 8, 8)])
    in_place = {torch.ops.aten.hardtanh_.default, torch.ops.aten.relu_.default}
    assert in_place <= {n.target for n in converted.graph.nodes}
    rewritten = run_passes(copy_graph_module(converted), [CrossbarToCustomOpsPass(), FunctionalInPlaceOpsPass()])
    assert not in_place & {n.target for n in rewritten.graph.nodes}
    result = Exported(converted, export_onnx(converted, (x,), tmp_path / "in_place.onnx"))
    expected = result.expected(x)
    assert np.abs(result.run(x) - expected).max() <= 1e-5 * np.abs(expected).max()


QUIET_EXPORT = """
import sys, torch
from torch import nn
from xbar import HardwareConfig, calibrate, convert, export_onnx, prepare
torch.manual_seed(0)
x = torch.randn(4, 16)
model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU6(inplace=True), nn.Flatten(), nn.Linear(56, 10)).eval()
config = HardwareConfig().with_overrides({"forward.inp_res": 254, "forward.out_res": 254, "forward.out_bound": 10})
prepared = prepare(model, (x[:, None],), config)
calibrate(prepared, [torch.randn(32, 1, 16)])
converted = convert(prepared)
print("exporting", flush=True)
print("exporting", file=sys.stderr, flush=True)
export_onnx(converted, (x[:, None],), sys.argv[1])
"""


def test_export_writes_nothing_to_stdout_or_stderr(tmp_path, capfd):
    """In a fresh process with Python's default warning filters, as the command line runs."""
    subprocess.run([sys.executable, "-c", QUIET_EXPORT, str(tmp_path / "quiet.onnx")], check=True)
    out, err = capfd.readouterr()
    assert (out, err[-len("exporting\n"):]) == ("exporting\n", "exporting\n"), err
    assert (tmp_path / "quiet.onnx").exists()


def test_export_leaves_the_exporters_logging_as_it_was(exported, tmp_path):
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    before = (logger.level, list(logger.filters), logger.disabled)
    export_onnx(exported("mlp", "eight bit").converted, (make_input("mlp", 4),), tmp_path / "m.onnx")
    assert (logger.level, list(logger.filters), logger.disabled) == before


class TransposedInput(nn.Module):
    """A layer whose input has the batch on dim 1: its row tiles slice a non-contiguous activation."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 96)

    def forward(self, x):
        return self.fc(x.transpose(0, 1))


@pytest.mark.parametrize("name, config", [("transposed input", "ideal, g_min 2"), ("transposed input", "eight bit"),
                                          ("encoder", "eight bit")])
def test_row_tiles_on_an_activation_whose_batch_is_not_dim_0_export(tmp_path, name, config):
    """Tracing matmul on such a slice used to specialise the batch size ("Constraints violated")."""
    torch.manual_seed(0)
    model, shape = ((TransposedInput().eval(), (5, 32)) if name == "transposed input"
                    else (make_model("encoder"), (8, 8)))
    x = torch.randn(4, *shape)
    hardware = CONFIGS[config]().with_overrides({"mapping.max_input_size": 8})
    converted = converted_model(model, x, hardware, [torch.randn(32, *shape) for _ in range(3)])
    assert any(n.name.endswith("_row1_slice") for n in converted.graph.nodes)
    result = Exported(converted, export_onnx(converted, (x,), tmp_path / "m.onnx"))
    for batch in (1, 3):
        x = torch.randn(batch, *shape)
        if config == "eight bit":
            assert_within_one_adc_step(result.run(x), result.expected(x), result.last_adc_step())
        else:
            expected = result.expected(x)
            assert np.abs(result.run(x) - expected).max() <= 1e-5 * np.abs(expected).max()


def test_model_without_crossbar_layers_exports_plain_onnx_with_a_warning(tmp_path):
    x = torch.randn(3, 5)
    with pytest.warns(NoCrossbarLayersWarning):
        converted = convert(prepare(nn.Sequential(nn.ReLU(), nn.Tanh()), (x,)))
    with pytest.warns(NoCrossbarLayersWarning, match="plain ONNX"):
        path = export_onnx(converted, (x,), tmp_path / "plain.onnx")
    result = Exported(converted, path)
    assert not any(n.domain == onnx_ops.DOMAIN for n in result.model.graph.node)
    assert not result.model.functions
    assert np.allclose(result.run(x), torch.tanh(torch.relu(x)).numpy(), atol=1e-6)


@torch.library.custom_op("xbar_test::mystery", mutates_args=())
def mystery(x: torch.Tensor) -> torch.Tensor:
    return x * 2


mystery.register_fake(lambda x: torch.empty_like(x))


class WithMysteryOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(mystery(self.fc1(x)))


def test_unsupported_op_error_names_the_node_and_leaves_no_file(tmp_path):
    x = torch.randn(3, 4)
    converted = convert(prepare(WithMysteryOp(), (x,)))
    existing = tmp_path / "kept.onnx"
    existing.write_bytes(b"previous export")
    for target in (tmp_path / "new.onnx", existing):
        with pytest.raises(ExportError, match=r"node 'mystery' \(xbar_test\.mystery\.default\)") as error:
            export_onnx(converted, (x,), target)
        assert "\n" not in str(error.value)
    assert os.listdir(tmp_path) == ["kept.onnx"]
    assert existing.read_bytes() == b"previous export"


def test_a_prepared_model_is_refused(tmp_path):
    x = make_input("mlp", 4)
    prepared = prepare(make_model("mlp"), (x,))
    with pytest.raises(UserError, match="only prepared: call xbar.convert"):
        export_onnx(prepared, (x,), tmp_path / "m.onnx")
    with pytest.raises(UserError, match="returned by xbar.convert"):
        export_onnx(make_model("mlp"), (x,), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# --- the checks on the exported graph -----------------------------------------------------------

@pytest.fixture
def mlp_ir(exported):
    """The exported eight-bit MLP as ONNX IR, its ai.xbar nodes matched, and its arrays."""
    result = exported("mlp", "eight bit")
    crossbars = CrossbarToCustomOpsPass()(copy_graph_module(result.converted)).graph_module
    crossbars = {n: m for n, m in crossbars.named_modules() if isinstance(m, Crossbar)}
    model = ir.serde.deserialize_model(result.model)
    return model, onnx_layers.match_nodes(model, crossbars), crossbars


def test_check_layers_accepts_the_exported_graph(mlp_ir):
    onnx_layers.check_layers(*mlp_ir)


def test_check_layers_reports_a_missing_attribute(mlp_ir):
    model, matched, crossbars = mlp_ir
    del matched[0][0].attributes["adc_scale"]
    with pytest.raises(ExportError, match="attribute adc_scale"):
        onnx_layers.check_layers(model, matched, crossbars)


def test_check_layers_reports_an_array_reading_another_arrays_tensor(mlp_ir):
    model, matched, crossbars = mlp_ir
    matched[1][0].replace_input_with(1, model.graph.initializers["fc1_crossbar.g_plus"])
    with pytest.raises(ExportError, match="fc2_crossbar.g_plus"):
        onnx_layers.check_layers(model, matched, crossbars)


def test_check_layers_reports_a_missing_node(mlp_ir):
    model, matched, crossbars = mlp_ir
    with pytest.raises(ExportError, match="fc3_crossbar"):
        onnx_layers.check_layers(model, matched[:2], crossbars)


def test_merged_tensors_are_restored_and_other_changes_are_not(mlp_ir):
    model, matched, crossbars = mlp_ir
    fc2 = matched[1][0]
    merged = ir.Value(name="merged", const_value=ir.tensor(crossbars["fc2_crossbar"].bias.numpy()))
    folded = ir.Value(name="folded", const_value=ir.tensor(np.ones(32, np.float32)))
    for value in (merged, folded):
        model.graph.register_initializer(value)
    fc2.replace_input_with(3, merged)
    fc2.replace_input_with(2, folded)
    onnx_layers.restore_layer_tensors(model, matched, crossbars)
    assert fc2.inputs[3] is model.graph.initializers["fc2_crossbar.bias"]
    assert fc2.inputs[2] is folded


def test_a_failed_write_leaves_no_file(exported, tmp_path, monkeypatch):
    result = exported("mlp", "eight bit")

    def disk_full(*args):
        raise OSError("disk full")

    monkeypatch.setattr("xbar.compiler.onnx.export.os.replace", disk_full)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(result.converted, (make_input("mlp", 4),), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []
