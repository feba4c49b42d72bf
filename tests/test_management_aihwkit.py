"""Noise and bound management (forward.noise_management, forward.bound_management) against aihwkit 1.1.0.

aihwkit's pure-torch inference tile (TorchInferenceRPUConfig, no output noise, weight_scaling_omega 1 so its
ADC sees ``W x / max|W|`` as xbar's does) is the oracle of the converted model, op by op and mode by mode; the
exported ONNX file must compute the same at run time in ONNX Runtime.
"""

import json
import warnings

import onnx
import pytest
import torch
from aihwkit.nn import AnalogLinear
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters.enums import BoundManagementType as TheirBM
from aihwkit.simulator.parameters.enums import NoiseManagementType as TheirNM
from torch import nn

import xbar
from xbar import ConfigError, HardwareConfig, LayerRule
from xbar.compiler.onnx import ops as onnx_ops
from xbar.compiler.onnx.runtime import onnx_runner
from xbar.passes.numerics.crossbar import crossbar_modules

IN, OUT = 40, 12
MODES = {  # name -> forward settings (aihwkit's names)
    "abs_max": dict(noise_management="ABS_MAX"),
    "abs_max_thres": dict(noise_management="ABS_MAX", nm_thres=1.5),
    "max": dict(noise_management="MAX"),
    "max_thres": dict(noise_management="MAX", nm_thres=0.5),
    "constant": dict(noise_management="CONSTANT", nm_thres=3.0),
    "constant_one": dict(noise_management="CONSTANT", inp_res=-1),
    "iterative": dict(noise_management="ABS_MAX", bound_management="ITERATIVE", out_bound=1.5),
    "worst_case": dict(noise_management="CONSTANT", nm_thres=2.0, bound_management="ITERATIVE_WORST_CASE",
                       out_bound=1.0),
    "bm_alone": dict(bound_management="ITERATIVE", inp_res=-1, out_res=-1, out_bound=1.0),
    "bm_ideal_converters": dict(noise_management="ABS_MAX", bound_management="ITERATIVE", inp_res=-1,
                                out_res=-1, out_bound=0.5),
    "bm_factor_limit": dict(noise_management="ABS_MAX", bound_management="ITERATIVE", out_bound=0.2,
                            max_bm_factor=3),
}
PERIPHERY = dict(inp_res=254, out_res=254, out_bound=10.0)


def layer() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(IN, OUT).eval()


def inputs(n: int = 64) -> torch.Tensor:
    return torch.randn(n, IN, generator=torch.Generator().manual_seed(1)) * 2


def settings(mode: str) -> dict:
    return PERIPHERY | MODES[mode]


def theirs(forward: dict, x: torch.Tensor, input_range: float = 0.0) -> torch.Tensor:
    config = TorchInferenceRPUConfig()
    config.forward.out_noise = 0.0
    config.mapping.weight_scaling_omega = 1.0
    for name, value in ({"noise_management": "NONE", "bound_management": "NONE"} | forward).items():  # xbar's
        enum = {"noise_management": TheirNM, "bound_management": TheirBM}.get(name)
        setattr(config.forward, name, getattr(enum, value) if enum else value)
    if input_range:
        config.pre_post.input_range.enable = True
        config.pre_post.input_range.learn_input_range = False
        config.pre_post.input_range.init_value = input_range
        config.pre_post.input_range.init_from_data = 0
    reference = layer()
    analog = AnalogLinear(IN, OUT, bias=True, rpu_config=config)
    analog.set_weights(reference.weight.data, reference.bias.data)
    with torch.no_grad():
        return analog.eval()(x)


def converted(forward: dict, input_range: float = 0.0):
    overrides = {f"forward.{k}": v for k, v in forward.items()} | {
        "pre_post.input_range.enable": bool(input_range), "pre_post.input_range.init_value": input_range or 3.0,
        "pre_post.input_range.init_from_data": 0}
    return xbar.convert(xbar.prepare(layer(), (inputs(2),), HardwareConfig().with_overrides(overrides)))


def ours(forward: dict, x: torch.Tensor, input_range: float = 0.0) -> torch.Tensor:
    with torch.no_grad():
        return converted(forward, input_range)(x)


def assert_same_outputs(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal to float tolerance but for rare values one rounding step apart (two runtimes' float orders)."""
    scale = b.abs().max().item()
    off = (a - b).abs() > 1e-5 * scale
    assert off.float().mean().item() <= 0.01, f"{off.sum().item()} of {off.numel()} outputs differ"


@pytest.mark.parametrize("mode", MODES)
def test_the_converted_layer_computes_what_aihwkits_tile_computes(mode):
    x = inputs()
    assert_same_outputs(ours(settings(mode), x), theirs(settings(mode), x))


@pytest.mark.parametrize("mode", ["iterative", "worst_case", "bm_alone", "bm_ideal_converters", "bm_factor_limit"])
def test_bound_management_iterates_where_the_output_saturates(mode):
    """The bound is low enough that the first read clips: without bound management the answer differs."""
    x = inputs()
    plain = {k: v for k, v in settings(mode).items() if k not in ("bound_management", "max_bm_factor")}
    managed = ours(settings(mode), x)
    assert (managed - ours(plain, x)).abs().max() > 1e-3
    assert (managed - theirs(plain, x)).abs().max() > 1e-3
    assert_same_outputs(managed, theirs(settings(mode), x))


def test_max_with_every_scale_zero_outputs_the_bias_alone_as_aihwkit_does():
    x = -inputs().abs()
    x[:, 0] = 0.0  # every vector's max is 0
    forward = PERIPHERY | dict(noise_management="MAX")
    assert torch.equal(ours(forward, x), layer().bias.detach().expand(len(x), -1))
    assert_same_outputs(ours(forward, x), theirs(forward, x))
    x[0, 1] = 0.5  # one vector with a positive max: the others' scale counts as 1
    assert_same_outputs(ours(forward, x), theirs(forward, x))


def test_with_an_input_range_aihwkit_still_manages_the_normalised_input():
    """aihwkit does not switch noise management off under an input range: it scales x / r again."""
    x = inputs()
    forward = PERIPHERY | dict(noise_management="ABS_MAX")
    managed = ours(forward, x, input_range=8.0)
    assert_same_outputs(managed, theirs(forward, x, input_range=8.0))
    assert (managed - ours(PERIPHERY, x, input_range=8.0)).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["abs_max_thres", "max", "constant", "iterative", "bm_alone"])
def test_onnx_runtime_computes_the_scaling_from_the_input(mode, tmp_path):
    model = converted(settings(mode))
    path = xbar.export_onnx(model, (inputs(2),), tmp_path / "managed.onnx")
    loaded = onnx.load(str(path))
    assert {o.domain: o.version for o in loaded.opset_import}[onnx_ops.DOMAIN] == onnx_ops.VERSION == 6
    (node,) = [n for n in loaded.graph.node if n.domain == onnx_ops.DOMAIN]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attributes["noise_management"].decode() == MODES[mode].get("noise_management", "NONE")
    assert attributes["bm_rounds"] == crossbar_modules(model)["weight_crossbar"].settings.constants["bm_rounds"]
    exported = json.loads({p.key: p.value for p in loaded.metadata_props}["xbar.hardware_config"])["forward"]
    assert {k: exported[k] for k in MODES[mode]} == {k: v for k, v in MODES[mode].items()}
    for x in (inputs(64), inputs(3) * 5):  # another batch, another scale: computed at run time
        with torch.no_grad():
            assert_same_outputs(onnx_runner(path)(x), model(x))


def test_the_settings_reach_each_array_through_config_rules_and_the_exported_config():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(IN, 16), nn.Linear(16, OUT)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    config = HardwareConfig(layers=[LayerRule(name="fc2", overrides={"forward.noise_management": "max",
                                                                     "forward.bound_management": "iterative",
                                                                     "forward.nm_thres": 0.5})])
    config = config.with_overrides({"forward.noise_management": "abs_max", "forward.max_bm_res": 0.5,
                                    "pre_post.input_range.enable": False})
    assert HardwareConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    assert {"nm_thres": 0.0, "max_bm_factor": 1000, "max_bm_res": 0.5}.items() <= config.to_dict()["forward"].items()
    model = xbar.convert(xbar.prepare(Two().eval(), (inputs(2),), config))
    arrays = {name: c.settings for name, c in crossbar_modules(model).items()}
    assert (arrays["fc1_crossbar"].noise_management, arrays["fc1_crossbar"].bound_management) == ("ABS_MAX", "NONE")
    fc2 = arrays["fc2_crossbar"]
    assert (fc2.noise_management, fc2.nm_thres, fc2.bound_management, fc2.max_bm_res) == ("MAX", 0.5, "ITERATIVE",
                                                                                           0.5)
    assert fc2.constants["nm_mode"] == 2 and fc2.constants["bm_rounds"] == 11  # no DAC: 1, 2, ..., 1024 > 1000


def test_a_perfect_forward_and_a_convolution_are_handled_as_aihwkit_and_xbar_can():
    perfect = converted({"is_perfect": True, "noise_management": "ABS_MAX", "bound_management": "ITERATIVE"})
    assert crossbar_modules(perfect)["weight_crossbar"].settings.constants["nm_mode"] == 0  # aihwkit: an ideal matmul
    conv = nn.Sequential(nn.Conv2d(2, 3, 3)).eval()
    config = HardwareConfig().with_overrides({"forward.noise_management": "abs_max"})
    with pytest.raises(ConfigError, match="simulated on linear layers only"):
        xbar.prepare(conv, (torch.randn(1, 2, 5, 5),), config)


def test_a_compiled_graph_runs_every_read_without_a_data_dependent_branch(monkeypatch):
    from xbar.compiler.pipeline import compiled

    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    model, x = converted(settings("iterative")), inputs()
    with torch.no_grad():
        assert torch.equal(compiled.compiled(model)(x), model(x))


def test_fine_tuning_says_it_trains_without_the_management():
    prepared = xbar.prepare(layer(), (inputs(2),), HardwareConfig().with_overrides(
        {"forward.noise_management": "abs_max", "pre_post.input_range.enable": False}))
    with pytest.warns(xbar.passes.errors.ManagementNotTrainedWarning, match="weight without forward.noise_management"):
        xbar.fine_tune(prepared, inputs(8), torch.zeros(8, dtype=torch.long), xbar.FineTuning(epochs=1))


@pytest.mark.parametrize("forward", [dict(noise_management="CONSTANT", nm_thres=0.5),
                                     dict(noise_management="CONSTANT", nm_thres=4.0, inp_res=-1)], ids=["0.5", "4"])
def test_constant_noise_management_on_a_convolution_is_aihwkits(forward, tmp_path):
    """One scale per array: folded into the constants, so every kind takes it (the ONNX body unchanged)."""
    from aihwkit.nn import AnalogConv2d

    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1).eval()
    x = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(2)) * 2
    forward = PERIPHERY | forward
    config = TorchInferenceRPUConfig()
    config.forward.out_noise = 0.0
    config.mapping.weight_scaling_omega = 1.0
    config.forward.bound_management = TheirBM.NONE
    config.forward.noise_management = TheirNM.CONSTANT
    for name in ("nm_thres", "inp_res", "out_res", "out_bound"):
        setattr(config.forward, name, forward[name])
    analog = AnalogConv2d(2, 4, 3, padding=1, rpu_config=config)
    analog.set_weights(conv.weight.data, conv.bias.data)
    overrides = {f"forward.{k}": v for k, v in forward.items()} | {"pre_post.input_range.enable": False}
    model = xbar.convert(xbar.prepare(conv, (x[:1],), HardwareConfig().with_overrides(overrides)))
    with torch.no_grad():
        assert_same_outputs(model(x), analog.eval()(x))
    path = xbar.export_onnx(model, (x[:1],), tmp_path / "conv.onnx")
    with torch.no_grad():
        assert_same_outputs(onnx_runner(path)(x), model(x))


def test_the_hwa_preset_is_aihwkits_constant_management_and_computes_as_before():
    hwa = xbar.preset_config("hwa")
    assert (hwa.forward.noise_management.name, hwa.forward.nm_thres) == ("CONSTANT", 1.0)
    x = inputs()
    prepared = xbar.prepare(layer(), (inputs(2),), hwa)
    xbar.calibrate(prepared, [x])
    plain = xbar.prepare(layer(), (inputs(2),), hwa.with_overrides({"forward.noise_management": "NONE"}))
    xbar.calibrate(plain, [x])
    with torch.no_grad():
        assert torch.equal(xbar.convert(prepared)(x), xbar.convert(plain)(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error", xbar.passes.errors.ManagementNotTrainedWarning)
        xbar.fine_tune(prepared, inputs(8), torch.zeros(8, dtype=torch.long), xbar.FineTuning(epochs=1))
