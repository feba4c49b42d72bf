"""ai.xbar 4 carries per-column scale ratios and drift gains; float64 and bfloat16 models export
as a float32 graph cast at the boundary. ONNX Runtime reproduces the PyTorch simulation."""

import numpy as np
import onnx
import pytest
import torch
from onnx_parity import Exported, assert_within_one_adc_step

import xbar
from xbar import PCMLikeNoiseModel, calibrate, convert, export_onnx, prepare, preset_config
from xbar.models import load_pretrained
from xbar.passes.numerics.crossbar import Crossbar


def lenet(config, dtype=torch.float32):
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    prepared = prepare(load_pretrained("lenet").to(dtype), (x,), config)
    calibrate(prepared, [x])
    return convert(prepared), x


def crossbars(model):
    return [m for m in model.modules() if isinstance(m, Crossbar)]


def test_the_hwa_preset_exports_its_per_column_scale_ratios_and_onnx_runtime_agrees(tmp_path):
    converted, x = lenet(preset_config("hwa"))
    assert all(m.settings.column_scale_ratios for m in crossbars(converted))
    exported = Exported(converted, export_onnx(converted, (x,), tmp_path / "hwa.onnx"))
    onnx.checker.check_model(exported.model, full_check=True)
    nodes = {n.name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in exported.model.graph.node if n.domain == "ai.xbar"}
    for name, module in exported.crossbars().items():
        assert np.array_equal(np.float32(nodes[name]["column_out_scale"]),
                              np.float32(module.settings.constants["column_out_scale"]))
        assert len(nodes[name]["column_scale_ratios"]) == module.g_plus.shape[0]
    assert_within_one_adc_step(exported.run(x), exported.expected(x), exported.last_adc_step())


def test_per_column_drift_compensation_exports_and_onnx_runtime_agrees(tmp_path):
    converted, x = lenet(preset_config("8bit"))
    drifted = xbar.drift(xbar.program(converted, PCMLikeNoiseModel(), seed=0), 86400.0, seed=1,
                         compensation="per_column")
    gains = [m.settings.column_drift_gains for m in crossbars(drifted)]
    assert all(gains) and len(set(gains[0])) > 1
    exported = Exported(drifted, export_onnx(drifted, (x,), tmp_path / "drifted.onnx"))
    assert_within_one_adc_step(exported.run(x), exported.expected(x), exported.last_adc_step())


@pytest.mark.parametrize("dtype, elem_type", [(torch.float64, onnx.TensorProto.DOUBLE),
                                              (torch.bfloat16, onnx.TensorProto.BFLOAT16)], ids=["float64", "bfloat16"])
def test_a_model_in_another_dtype_exports_as_float32_cast_at_the_boundary(dtype, elem_type, tmp_path):
    converted, x = lenet(preset_config("ideal"), dtype)
    model = onnx.load(export_onnx(converted, (x,), tmp_path / "m.onnx"))
    onnx.checker.check_model(model, full_check=True)
    for value in (model.graph.input[0], model.graph.output[0]):
        assert value.type.tensor_type.elem_type == elem_type
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer
               if t.name.endswith((".g_plus", ".g_minus")))


def test_a_float64_model_runs_in_onnx_runtime_as_its_simulation_to_float32_rounding(tmp_path):
    converted, x = lenet(preset_config("ideal"), torch.float64)
    exported = Exported(converted, export_onnx(converted, (x,), tmp_path / "m.onnx"))
    got = exported.run(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, exported.expected(x), rtol=1e-4, atol=1e-4)
