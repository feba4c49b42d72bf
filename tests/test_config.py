"""Reference parameters, the converter and HardwareConfig validation."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xbar import (
    BoundManagementType,
    ConfigError,
    HardwareConfig,
    InputRangeParameter,
    IOParameters,
    LayerRule,
    NoiseManagementType,
    PrePostProcessingParameter,
    SinglePairConductanceConverter,
    prepare,
)
from xbar.passes.parameters import ConvRangeElements, MappingParameter, WeightModifierParameter

from conftest import make_input, make_model


def test_input_range_defaults_follow_aihwkit():
    p = InputRangeParameter()
    assert dataclasses.asdict(p) == dict(
        enable=False, learn_input_range=True, init_value=3.0, init_from_data=100, init_std_alpha=3.0,
        decay=0.001, input_min_percentage=0.95, manage_output_clipping=False, output_min_percentage=0.95,
        gradient_scale=1.0, gradient_relative=True, conv_elements=ConvRangeElements.PATCHES, calibration_info=None)
    assert PrePostProcessingParameter().input_range == InputRangeParameter()


def test_supports_manage_output_clipping():
    p = InputRangeParameter()
    assert p.supports_manage_output_clipping(HardwareConfig())
    assert not p.supports_manage_output_clipping(object())
    assert not p.supports_manage_output_clipping(HardwareConfig(forward=IOParameters(is_perfect=True)))
    assert not p.supports_manage_output_clipping(
        HardwareConfig(forward=IOParameters(noise_management=NoiseManagementType.ABS_MAX)))
    assert not p.supports_manage_output_clipping(
        HardwareConfig(forward=IOParameters(bound_management=BoundManagementType.ITERATIVE)))


def test_resolution_convention():
    assert IOParameters(inp_res=254).dac_steps == 254
    assert IOParameters(inp_res=1 / 126).dac_steps == pytest.approx(126)
    assert IOParameters(inp_res=-1).dac_steps == 0
    assert IOParameters(inp_res=254, is_perfect=True).dac_steps == 0
    assert IOParameters(out_bound=0).bound == 0


@pytest.mark.parametrize("overrides, message", [
    ({"pre_post.input_range.init_value": -1.0}, "init_value must be > 0"),
    ({"pre_post.input_range.init_value": 0.0}, "init_value must be > 0"),
    ({"pre_post.input_range.input_min_percentage": 1.5}, r"input_min_percentage must be in \[0, 1\]"),
    ({"pre_post.input_range.output_min_percentage": -0.1}, r"output_min_percentage must be in \[0, 1\]"),
    ({"pre_post.input_range.init_from_data": -2}, "init_from_data must be an integer >= 0"),
    ({"pre_post.input_range.decay": -0.5}, "decay must be >= 0"),
    ({"forward.out_res": 254}, "needs forward.out_bound > 0"),
    ({"forward.inp_res": 254, "pre_post.input_range.enable": False}, "no range to scale its input by"),
    ({"pre_post.input_range.manage_output_clipping": True}, "needs forward.out_bound > 0"),
    ({"pre_post.input_range.manage_output_clipping": True, "forward.is_perfect": True}, "non-perfect forward"),
    ({"forward.noise_management": "average_abs_max"}, "not simulated by xbar .*running average"),
    ({"forward.noise_management": "abs_max_np_sum"}, "not simulated by xbar"),
    ({"forward.bound_management": "shift"}, "not simulated by xbar"),
    ({"forward.nm_thres": -1.0}, "nm_thres must be >= 0"),
    ({"forward.max_bm_factor": 0}, "max_bm_factor must be an integer >= 1"),
    ({"forward.max_bm_res": 0.0}, "max_bm_res must be > 0"),
    ({"forward.inp_res": 254, "pre_post.input_range.enable": False, "forward.noise_management": "constant"},
     "no range to scale its input by"),
    ({"forward.noise_management": "bogus"}, "must be one of"),
    ({"converter.g_min": 25.0}, "scale ratio would be 0"),
    ({"converter.g_max": -1.0}, "g_max should be a positive value"),
    ({"forward.inp_res": "many"}, "must be a float"),
    ({"forward.colour": 1}, "unknown config key 'forward.colour'"),
    ({"mapping.max_input_size": -4}, "max_input_size must be an integer >= 0"),
])
def test_invalid_configs_raise_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        HardwareConfig().with_overrides(overrides)


@pytest.mark.parametrize("key", ["forward.out_bound", "forward.inp_res", "converter.g_max",
                                 "pre_post.input_range.init_value", "pre_post.input_range.decay"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "NaN", "Infinity", "-inf"])
def test_non_finite_numbers_are_config_errors(key, value):
    with pytest.raises(ConfigError, match=rf"^{key} must be a finite number, got "):
        HardwareConfig().with_overrides({key: value})
    section, _, leaf = key.rpartition(".")
    data = {}
    nested = data
    for part in section.split("."):
        nested = nested.setdefault(part, {})
    nested[leaf] = value
    with pytest.raises(ConfigError, match="must be a finite number"):
        HardwareConfig.from_dict(data)


def test_layer_rule_overrides_must_be_finite_too():
    with pytest.raises(ConfigError, match="layer rule name=fc1: forward.out_bound must be a finite number"):
        HardwareConfig.from_dict({"layers": [{"name": "fc1", "overrides": {"forward.out_bound": float("nan")}}]})


def test_config_round_trips_through_a_dict():
    config = HardwareConfig().with_overrides({"forward.inp_res": 254, "forward.out_res": 254,
                                              "forward.out_bound": 10, "converter.g_min": 1.5})
    again = HardwareConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    assert str(again.converter) == "SinglePairConductanceConverter(g_max=25.00, g_min=1.50)"
    with pytest.raises(ConfigError, match="unknown config key 'pre_post.colour'"):
        HardwareConfig.from_dict({"pre_post": {"colour": 1}})


def test_converter_defaults_errors_and_str():
    c = SinglePairConductanceConverter()
    assert (c.g_max, c.g_min, c.scale_ratio) == (25.0, 0.0, None)
    assert str(c) == "SinglePairConductanceConverter(g_max=25.00, g_min=0.00)"
    for kwargs, message in [({"g_max": -1.0}, "g_max should be a positive value"),
                            ({"g_min": -1.0}, "g_min should be a positive value"),
                            ({"g_max": 1.0, "g_min": 2.0}, "g_min should be smaller than g_max")]:
        with pytest.raises(ValueError, match=message):
            SinglePairConductanceConverter(**kwargs)
    with pytest.raises(ValueError, match="exactly two elements"):
        c.convert_back_to_weights([torch.ones(1)], {"scale_ratio": 1.0})
    with pytest.raises(ValueError, match="do not contain scale_ratio"):
        c.convert_back_to_weights([torch.ones(1), torch.ones(1)], {})


def test_converter_arithmetic():
    c = SinglePairConductanceConverter(g_max=20.0, g_min=2.0)
    w = torch.tensor([[0.5, -1.0], [0.0, 0.25]])
    (g_plus, g_minus), params = c.convert_to_conductances(w)
    assert float(params["scale_ratio"]) == pytest.approx(18.0)
    assert torch.allclose(g_plus, torch.tensor([[11.0, 2.0], [2.0, 6.5]]))
    assert torch.allclose(g_minus, torch.tensor([[2.0, 20.0], [2.0, 2.0]]))


def test_all_zero_weight_never_divides_by_zero():
    (g_plus, g_minus), params = SinglePairConductanceConverter().convert_to_conductances(torch.zeros(3, 3))
    assert float(params["scale_ratio"]) == pytest.approx(25.0 / 1e-7)
    assert torch.equal(g_plus, torch.zeros(3, 3)) and torch.equal(g_minus, torch.zeros(3, 3))


@settings(max_examples=50, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 6), g_min=st.floats(0, 5), span=st.floats(1, 50),
       columnwise=st.booleans(), seed=st.integers(0, 2**16))
def test_converting_back_recovers_the_weights(rows, cols, g_min, span, columnwise, seed):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    c = SinglePairConductanceConverter(g_max=g_min + span, g_min=g_min)
    conductances, params = c.convert_to_conductances(w, columnwise=columnwise)
    for g in conductances:
        assert float(g.min()) >= g_min - 1e-5 and float(g.max()) <= c.g_max + g_min + 1e-5
    assert torch.allclose(c.convert_back_to_weights(conductances, params), w, atol=1e-5 * (1 + g_min))


@pytest.mark.parametrize("build, message", [
    (lambda: IOParameters(out_res=254), r"forward.out_res=254 needs forward.out_bound > 0"),
    (lambda: IOParameters(out_noise=-1.0), r"forward.out_noise must be >= 0"),
    (lambda: InputRangeParameter(init_value=0.0), r"pre_post.input_range.init_value must be > 0"),
    (lambda: MappingParameter(max_input_size=-1), r"mapping.max_input_size must be an integer >= 0"),
    (lambda: WeightModifierParameter(std_dev=-1.0), r"modifier.std_dev must be >= 0"),
    (lambda: HardwareConfig(pre_post=PrePostProcessingParameter(), forward=IOParameters(inp_res=254)),
     r"forward.inp_res sets a DAC, but there is no range"),
    (lambda: LayerRule(), r"a layer rule needs exactly one of module_type, name or pattern"),
])
def test_config_groups_refuse_meaningless_values_when_built(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_what_xbar_does_not_simulate_is_accepted_when_built_and_refused_when_prepared():
    config = HardwareConfig(forward=IOParameters(noise_management=NoiseManagementType.AVERAGE_ABS_MAX))
    with pytest.raises(ConfigError, match="forward.noise_management=AVERAGE_ABS_MAX is not simulated by xbar") as error:
        prepare(make_model("mlp"), (make_input("mlp", 2),), config)
    assert "CONSTANT with nm_thres set to that value" in str(error.value)  # what evaluation computes instead
