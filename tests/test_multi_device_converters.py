"""aihwkit's multi-device conductance converters: against aihwkit op by op, then through a compiled model."""

import json

import numpy as np
import pytest
import torch
from aihwkit.inference.converter import conductance as aihwkit_conductance
from aihwkit.inference.noise.pcm import PCMLikeNoiseModel as AihwkitPCM
from torch import nn

import xbar
from xbar import HardwareConfig, PCMLikeNoiseModel
from xbar.compiler.onnx.runtime import onnx_runner
from xbar.passes.errors import ConfigError, ConverterError
from xbar.passes.numerics import multi_device_converters as ours
from xbar.passes.numerics.crossbar import MultiDeviceCrossbar, crossbar_modules

TABLE = [[0.0, 0.0, 0.0, 5.0, 10.0], [10.0, 5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 5.0, 10.0], [10.0, 5.0, 0.0, 0.0, 0.0]]
CONVERTERS = {
    "NPairConductanceConverter": dict(f_lst=[1.0, 2.0, 4.0]),
    "DualPairConductanceConverter": dict(f_lst=[1.0, 3.0], g_max=30.0, g_min=2.0),
    "CustomPairConductanceConverter": dict(f_lst=[1.0, 3.0], g_lst=TABLE),
    "SingleDeviceConductanceConverter": {},
}
SHAPES = [(7,), (5, 9), (4, 3, 3, 3)]


def weights(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", CONVERTERS)
def test_conductances_and_convert_back_equal_aihwkits(name, shape):
    reference = getattr(aihwkit_conductance, name)(**CONVERTERS[name])
    converter = getattr(ours, name)(**CONVERTERS[name])
    w = weights(shape)
    theirs, their_params = reference.convert_to_conductances(w)
    theirs = theirs if isinstance(theirs, list) else [theirs]  # aihwkit's single device returns the tensor
    mine, params = converter.convert_to_conductances(w)
    assert len(mine) == len(theirs) == len(converter.device_names)
    for g, expected in zip(mine, theirs):
        torch.testing.assert_close(g, expected.to(g.dtype), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(torch.as_tensor(params["scale_ratio"]), torch.as_tensor(their_params["scale_ratio"]))
    back = reference.convert_back_to_weights(theirs if len(theirs) > 1 else theirs[0], their_params)
    torch.testing.assert_close(converter.convert_back_to_weights(mine, params), back.reshape(w.shape))


@pytest.mark.parametrize("name", CONVERTERS)
def test_the_device_combination_is_the_weight_times_the_arrays_scale_ratio(name):
    converter = getattr(ours, name)(**CONVERTERS[name])
    w = weights((6, 8), seed=1)
    conductances, params = converter.convert_to_conductances(w)
    significances, offset, ratio = converter.weight_combination(params)
    assert ratio == pytest.approx((converter.g_max - converter.g_min) / float(w.abs().max()), rel=1e-6)
    combined = sum(c * g for c, g in zip(significances, conductances)) + offset
    torch.testing.assert_close(combined / ratio, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, arguments, message", [
    ("DualPairConductanceConverter", dict(f_lst=[1.0, 2.0, 3.0]), "does not contain two values"),
    ("NPairConductanceConverter", dict(f_lst=(1.0, 2.0)), "must be a list of F factors"),
    ("NPairConductanceConverter", dict(f_lst=[-1.0, -2.0]), "contains negative value"),
    ("NPairConductanceConverter", dict(f_lst=[1.0], g_min=30.0), "g_min should be smaller than g_max"),
    ("CustomPairConductanceConverter", dict(f_lst=[1.0], g_lst=TABLE), "one value in f_lst for every pair"),
    ("SingleDeviceConductanceConverter", dict(g_max=-1.0), "g_max should be a positive value"),
])
def test_aihwkits_errors(name, arguments, message):
    with pytest.raises(ConverterError, match=message):
        getattr(ours, name)(**arguments)
    with pytest.raises(ValueError, match=message):
        getattr(aihwkit_conductance, name)(**arguments)


def test_a_table_that_does_not_invert_is_refused_as_aihwkit_refuses_it():
    table = [[0.0, 1.0], [0.0, 1.0]]
    with pytest.raises(ArithmeticError):
        aihwkit_conductance.CustomPairConductanceConverter([1.0], table)
    with pytest.raises(ArithmeticError):
        ours.CustomPairConductanceConverter([1.0], table)


def config(name: str, **more) -> HardwareConfig:
    overrides = {"converter.type": name} | {f"converter.{k}": v for k, v in CONVERTERS[name].items()}
    return HardwareConfig().with_overrides(overrides | more)


def test_the_config_names_the_converter_round_trips_it_and_refuses_bad_ones():
    chosen = config("DualPairConductanceConverter")
    assert isinstance(chosen.converter, ours.DualPairConductanceConverter)
    assert HardwareConfig.from_dict(json.loads(json.dumps(chosen.to_dict()))).converter.f_lst == [1.0, 3.0]
    assert HardwareConfig().to_dict()["converter"] == {"g_max": 25.0, "g_min": 0.0}  # the pair's stays as it was
    with pytest.raises(ConfigError, match="does not contain two values"):
        HardwareConfig().with_overrides({"converter.type": "DualPairConductanceConverter", "converter.f_lst": [1]})
    with pytest.raises(ConfigError, match="converter.type must be one of"):
        HardwareConfig().with_overrides({"converter.type": "QuadConverter"})
    with pytest.raises(ConfigError, match="takes the keys"):
        HardwareConfig().with_overrides({"converter.f_lst": [1.0]})
    with pytest.raises(ConfigError, match="forward.ir_drop"):
        config("NPairConductanceConverter", **{"forward.ir_drop": 1.0})


MODEL = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
X = torch.randn(16, 2, 6, 6, generator=torch.Generator().manual_seed(2))
PERIPHERY = {"forward.inp_res": 254, "forward.out_res": 254, "forward.out_bound": 10.0}


def compiled(name: str, periphery=None):
    prepared = xbar.prepare(MODEL, (X[:2],), config(name, **(PERIPHERY if periphery is None else periphery)))
    xbar.calibrate(prepared, [X])
    return prepared, xbar.convert(prepared)


@pytest.mark.parametrize("name", CONVERTERS)
def test_converted_model_computes_on_every_device_as_the_prepared_one(name):
    prepared, converted = compiled(name, periphery={"pre_post.input_range.enable": False})
    arrays = crossbar_modules(converted)
    converter = getattr(ours, name)(**CONVERTERS[name])
    for array in arrays.values():
        assert isinstance(array, MultiDeviceCrossbar) and array.device_names == converter.device_names
    with torch.no_grad():
        torch.testing.assert_close(converted(X), prepared(X), rtol=1e-5, atol=1e-5)


def aihwkit_programming_sigma(reference: AihwkitPCM, g_target: torch.Tensor) -> torch.Tensor:
    """aihwkit's programming-noise standard deviation at ``g_target``, from its model's own coefficients."""
    relative = g_target / reference.g_max
    c0, c1, c2 = reference.prog_coeff
    sigma = (c0 + c1 * relative + c2 * relative ** 2) * reference.g_max / reference.prog_coeff_g_max_reference
    return sigma * reference.prog_noise_scale


@pytest.mark.parametrize("name", ["DualPairConductanceConverter", "NPairConductanceConverter"])
def test_programming_noise_is_drawn_per_device_with_aihwkits_statistics(name):
    layer = nn.Linear(256, 128, bias=False).eval()  # 32768 devices of each kind
    converted = xbar.convert(xbar.prepare(layer, (torch.randn(2, 256),), config(name)))
    g_max = config(name).converter.g_max
    programmed = xbar.program(converted, PCMLikeNoiseModel(g_max=g_max), seed=0)
    reference = AihwkitPCM(g_max=g_max)
    (array_name, array), = crossbar_modules(programmed).items()
    target_array = crossbar_modules(converted)[array_name]
    errors, unclamped = [], []
    for device in array.device_names:
        target = getattr(target_array, device)
        standardised = (getattr(array, device) - target) / aihwkit_programming_sigma(reference, target)
        away_from_zero = standardised[target > 2.0]  # where the clamp at 0 uS never acts
        if away_from_zero.numel() >= 1000:  # each device: aihwkit's N(0, sigma(G)) draw
            n = away_from_zero.numel()
            assert abs(float(away_from_zero.mean())) < 5 / n ** 0.5
            assert float(away_from_zero.std()) == pytest.approx(1.0, abs=5 / n ** 0.5)
        errors.append(standardised.flatten())
        unclamped.append((target > 2.0).flatten())
    checked = 0
    for i in range(len(errors)):  # each device its own draw: uncorrelated errors where neither is clamped
        for j in range(i + 1, len(errors)):
            both = unclamped[i] & unclamped[j]
            if both.sum() >= 1000:
                pair = torch.stack([errors[i][both], errors[j][both]])
                assert abs(float(torch.corrcoef(pair)[0, 1])) < 6 / int(both.sum()) ** 0.5
                checked += 1
    assert checked >= 1


@pytest.mark.parametrize("name", CONVERTERS)
def test_drift_export_and_onnx_runtime_parity(name, tmp_path):
    _, converted = compiled(name)
    converter = config(name).converter
    programmed = xbar.program(converted, PCMLikeNoiseModel(g_max=converter.g_max), seed=0)
    drifted = xbar.drift(programmed, 86400.0, seed=1)
    for array_name, array in crossbar_modules(drifted).items():
        for device in array.device_names:  # drifted from its own programmed state
            assert not torch.equal(getattr(array, device), getattr(array, f"{device}_programmed"))
    for model in (converted, drifted):
        path = xbar.export_onnx(model, (X[:2],), tmp_path / "m.onnx")
        with torch.no_grad():
            torch.testing.assert_close(onnx_runner(path)(X), model(X), rtol=0, atol=0)
    import onnx

    nodes = [n for n in onnx.load(str(path)).graph.node if n.domain == "ai.xbar"]
    devices = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}["devices"]
    assert [d.decode() for d in devices] == [f"{nodes[0].name}.{d}" for d in converter.device_names]


@pytest.mark.parametrize("name", ["NPairConductanceConverter", "SingleDeviceConductanceConverter"])
def test_programming_files_carry_every_device_and_read_back(name, tmp_path):
    _, converted = compiled(name)
    directory = xbar.write_programming_files(converted, tmp_path / "prog")
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["converter_settings"]["type"] == name
    region = manifest["regions"][0]
    names = list(crossbar_modules(converted)[region["name"]].device_names)
    assert region["devices"] == names and len(region["device_significances"]) == len(names)
    with np.load(directory / "arrays.npz") as stored:
        assert {f"{region['name']}.{d}" for d in names} <= set(stored.files)
        measured = {key: stored[key] * 1.01 for key in stored.files}  # a chip's read-back
    np.savez(directory / "arrays.npz", **measured)
    loaded = xbar.load_conductances(converted, directory)
    for array_name, array in crossbar_modules(loaded).items():
        for device in array.device_names:
            target = getattr(crossbar_modules(converted)[array_name], device)
            torch.testing.assert_close(getattr(array, device), target * 1.01)
    onnx_path = xbar.export_onnx(converted, (X[:2],), tmp_path / "m.onnx")
    from_model = json.loads((xbar.write_programming_files(converted, tmp_path / "a") / "manifest.json").read_text())
    from_file = json.loads((xbar.write_programming_files(onnx_path, tmp_path / "b") / "manifest.json").read_text())
    for key in ("arrays", "regions", "converter_settings"):  # the ONNX file gives the same files
        assert from_file[key] == from_model[key]
