"""Recalibration (``xbar.recalibrate``): a programmed, drifted model's periphery fitted back to the converted
model's noise-free arrays from a few unlabelled batches; exported and run by ONNX Runtime; ``xbar evaluate
--recalibrate``."""

import json
from functools import lru_cache

import numpy as np
import onnx
import pytest
import torch
from onnx_parity import Exported, assert_within_one_adc_step
from torch import nn

import xbar
from xbar import PCMLikeNoiseModel, preset_config
from xbar.compiler.devices.evaluation import read_seed
from xbar.compiler.devices.recalibration import RecalibrationMethod, _ColumnStatistics
from xbar.models import load_digits_split
from xbar.passes.errors import UserError
from xbar.passes.numerics.crossbar import crossbar_modules

from conftest import MLP, GroupedCNN, SharedLayer, run

YEAR = 365 * 86400.0


class ConvBN(nn.Module):
    """A convolution with digital batch norm, then a linear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


MODELS = {"mlp": (MLP, (16,), {}), "tiled mlp": (MLP, (16,), {"mapping.max_input_size": 8,
                                                              "mapping.max_output_size": 8}),
          "conv": (GroupedCNN, (3, 8, 8), {}), "shared": (SharedLayer, (4,), {}), "conv bn": (ConvBN, (3, 8, 8), {})}


def inputs(shape, count, seed):
    return torch.randn(count, *shape, generator=torch.Generator().manual_seed(seed))


@lru_cache(maxsize=None)
def converted(name: str, ideal: bool = False):
    factory, shape, overrides = MODELS[name]
    torch.manual_seed(0)
    model = factory().eval()
    if name == "conv bn":  # trained-looking statistics
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    config = (xbar.HardwareConfig() if ideal else preset_config("8bit")).with_overrides(overrides)
    prepared = xbar.prepare(model, (inputs(shape, 2, 0),), config)
    xbar.calibrate(prepared, inputs(shape, 256, 1).split(64))
    return xbar.convert(prepared)


def drifted(name: str, seconds: float = YEAR, compensation="global"):
    programmed = xbar.program(converted(name), PCMLikeNoiseModel(), seed=3)
    return xbar.drift(programmed, seconds, seed=4, compensation=compensation)


def output_error(model, name: str, ideal: bool = False) -> float:
    """Mean squared distance of ``model``'s outputs from the converted model's, on inputs no fit saw."""
    x = inputs(MODELS[name][1], 512, 9)
    with torch.no_grad():
        return float(((model(x) - converted(name, ideal)(x)) ** 2).mean())


def batches(name: str):
    return inputs(MODELS[name][1], 256, 5).split(64)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_recalibration_restores_the_outputs_and_beats_global_compensation(name):
    plain, compensated = drifted(name, compensation=None), drifted(name)
    recalibrated = xbar.recalibrate(plain, batches(name))
    assert output_error(recalibrated, name) < 0.5 * output_error(plain, name)
    assert output_error(recalibrated, name) < output_error(compensated, name)


@pytest.mark.parametrize("method", ["column_gain", "global_gain"])
def test_the_gain_methods_restore_the_outputs_too(method):
    plain = drifted("conv", compensation=None)
    assert output_error(xbar.recalibrate(plain, batches("conv"), method=method), "conv") < output_error(plain, "conv")


def test_the_affine_fit_of_an_exact_affine_recovers_its_gain_and_offset():
    t = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b = torch.tensor([0.5, 2.0, 0.8], dtype=torch.float64), torch.tensor([0.1, -0.3, 0.0], dtype=torch.float64)
    statistics = _ColumnStatistics()
    statistics.add(t[:400] * a + b, t[:400])  # two calls, as a shared array's
    statistics.add(t[400:] * a + b, t[400:])
    gains, offsets = statistics.fit(RecalibrationMethod.AFFINE)
    np.testing.assert_allclose(gains, (1 / a).tolist(), rtol=1e-12)
    np.testing.assert_allclose(offsets, (-b / a).tolist(), atol=1e-12)


def test_arrays_scaled_column_by_column_are_scaled_back_exactly():
    """Ideal periphery: an array holding its targets times a per-column factor is its target again."""
    programmed = xbar.program(converted("conv", ideal=True), PCMLikeNoiseModel(prog_noise_scale=0.0,
                                                                              read_noise_scale=0.0), seed=0)
    factors = {}
    for name, array in crossbar_modules(programmed).items():
        factors[name] = torch.linspace(0.6, 0.9, array.g_plus.shape[0])
        shape = (-1, *[1] * (array.g_plus.dim() - 1))
        array.g_plus.mul_(factors[name].view(shape))
        array.g_minus.mul_(factors[name].view(shape))
    recalibrated = xbar.recalibrate(programmed, batches("conv"))
    for name, array in crossbar_modules(recalibrated).items():
        np.testing.assert_allclose(array.settings.column_drift_gains, (1 / factors[name]).tolist(), rtol=1e-4)
        assert max(map(abs, array.settings.column_offsets)) < 1e-4
    assert output_error(recalibrated, "conv", ideal=True) < 1e-9


def test_batch_norm_statistics_are_re_estimated_from_the_drifted_inputs():
    model = drifted("conv bn")
    recalibrated = xbar.recalibrate(model, batches("conv bn"), method="batch_norm")
    x = torch.cat(batches("conv bn"))
    with torch.no_grad():
        conv = crossbar_modules(model)["conv_crossbar"](x)
    torch.testing.assert_close(recalibrated.bn.running_mean, conv.mean((0, 2, 3)))
    torch.testing.assert_close(recalibrated.bn.running_var, conv.var((0, 2, 3)))
    assert not torch.equal(model.bn.running_mean, recalibrated.bn.running_mean)  # the input model keeps its own


def test_recalibration_is_deterministic_and_leaves_its_input_alone():
    model = drifted("tiled mlp")
    before = {n: (a.settings, a.g_plus.clone()) for n, a in crossbar_modules(model).items()}
    first, second = (xbar.recalibrate(model, batches("tiled mlp")) for _ in range(2))
    assert [a.settings for a in crossbar_modules(first).values()] == \
        [a.settings for a in crossbar_modules(second).values()]
    assert all(a.settings == before[n][0] and torch.equal(a.g_plus, before[n][1])
               for n, a in crossbar_modules(model).items())
    assert len(crossbar_modules(first)) > 3  # tiled: each tile its own correction
    assert len({a.settings.column_drift_gains for a in crossbar_modules(first).values()}) == len(before)


@pytest.mark.parametrize("call, message", [
    (lambda: xbar.recalibrate(converted("mlp"), batches("mlp")), "expects a programmed model"),
    (lambda: xbar.recalibrate(drifted("mlp"), [], method="affine"), "at least one batch"),
    (lambda: xbar.recalibrate(drifted("mlp"), torch.zeros(4, 16)), "a list of input batches"),
    (lambda: xbar.recalibrate(drifted("mlp"), batches("mlp"), method="lstsq"), "one of 'affine'"),
    (lambda: xbar.recalibrate(drifted("mlp"), batches("mlp"), method="batch_norm"), "no digital batch norm"),
    (lambda: xbar.drift(xbar.recalibrate(drifted("mlp"), batches("mlp")), 1.0, seed=0), "is recalibrated"),
])
def test_misuse_is_one_line(call, message):
    with pytest.raises(UserError, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["mlp", "tiled mlp", "conv"])
def test_onnx_runtime_runs_a_recalibrated_export_as_pytorch_does(name, tmp_path):
    recalibrated = xbar.recalibrate(drifted(name), batches(name))
    path = xbar.export_onnx(recalibrated, (inputs(MODELS[name][1], 1, 0),), tmp_path / "recalibrated.onnx")
    exported = Exported(recalibrated, path)
    offsets = [a for node in exported.model.graph.node for a in node.attribute if a.name == "column_offsets"]
    assert offsets and all(len(a.floats) > 0 for a in offsets)
    metadata = {p.key: p.value for p in exported.model.metadata_props}
    assert json.loads(metadata["xbar.programming"])["recalibration"] == "affine"
    x = inputs(MODELS[name][1], 64, 7)
    assert_within_one_adc_step(exported.run(x), exported.expected(x), exported.last_adc_step())
    assert onnx.load(path).opset_import  # a file onnx reads


def test_evaluate_recalibrate_reports_what_the_library_gives(capsys):
    status, out, err = run(capsys, "evaluate", "mlp", "--seeds", "1", "--times", "1y", "--recalibrate", "2", "--json")
    assert status == 0, err
    report = json.loads(out)
    digits = load_digits_split()
    config = preset_config("8bit")
    prepared = xbar.prepare(xbar.models.load_pretrained("mlp"), (digits.train_x[:1],), config)
    xbar.calibrate(prepared, digits.train_x.split(64)[:config.pre_post.input_range.init_from_data])
    programmed = xbar.program(xbar.convert(prepared), PCMLikeNoiseModel(), seed=0)
    recalibrated = xbar.recalibrate(xbar.drift(programmed, YEAR, seed=read_seed(0, YEAR)),
                                    [(b,) for b in digits.train_x.split(64)[:2]])
    assert report["recalibration"] == "affine"
    assert report["recalibrated_times"][0]["accuracies"] == [xbar.accuracy(recalibrated, digits.test_x,
                                                                           digits.test_y, 64)]


@pytest.mark.parametrize("count, message", [("0", "--recalibrate: expected a positive integer"),
                                            ("100", "--recalibrate 100 asks for 100 batches of 64, but digits "
                                                    "holds 22")])
def test_evaluate_recalibrate_refuses_a_bad_count_in_one_line(capsys, count, message):
    status, out, err = run(capsys, "evaluate", "mlp", "--seeds", "1", "--recalibrate", count)
    assert status == 2 and out == "" and len(err.splitlines()) == 1 and message in err, err
