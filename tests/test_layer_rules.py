"""Per-layer configuration: rules by module type, name pattern and exact name."""

import pytest

from xbar import ConfigError, HardwareConfig, LayerRule, convert, prepare
from xbar.compiler.pipeline.record import Stage, record_of
from xbar.passes.numerics.crossbar import Crossbar

from conftest import make_input, make_model


def plans_of(config, name="cnn"):
    prepared = prepare(make_model(name), (make_input(name, 2),), config)
    return {plan.layer.name: plan for plan in record_of(prepared, "test", Stage.PREPARED).plans}


def test_precedence_global_then_type_then_pattern_then_name():
    config = HardwareConfig(layers=[
        LayerRule(name="conv2", overrides={"forward.out_bound": 3.0}),
        LayerRule(pattern="conv*", overrides={"forward.out_bound": 2.0}),
        LayerRule(module_type="Conv2d", overrides={"forward.out_bound": 1.0, "forward.out_res": 62}),
    ])
    plans = plans_of(config)
    assert (plans["conv1"].io.out_bound, plans["conv1"].rule) == (2.0, "pattern=conv*")
    assert (plans["conv2"].io.out_bound, plans["conv2"].rule) == (3.0, "name=conv2")
    assert (plans["depthwise"].io.out_bound, plans["depthwise"].rule) == (1.0, "module_type=Conv2d")
    assert plans["conv2"].io.out_res == 62  # the type rule's other keys still apply underneath
    assert (plans["fc"].io.out_bound, plans["fc"].rule) == (-1.0, "global")


def test_digital_rules_keep_layers_off_crossbars_and_a_more_specific_rule_wins():
    config = HardwareConfig(layers=[LayerRule(module_type="Conv2d", digital=True),
                                    LayerRule(name="pointwise", overrides={})])
    assert sorted(plans_of(config)) == ["conv1d", "fc", "pointwise"]


def test_rules_round_trip_and_validate():
    config = HardwareConfig.from_dict({"layers": [{"pattern": "fc*", "overrides": {"forward.inp_res": 254}},
                                                  {"name": "fc3", "digital": True}]})
    assert HardwareConfig.from_dict(config.to_dict()).layers == config.layers
    with pytest.raises(ConfigError, match=r"layer rule pattern=fc\*: .*no range to scale"):
        HardwareConfig(layers=[LayerRule(pattern="fc*", overrides={
            "forward.inp_res": 254, "pre_post.input_range.enable": False})]).validate()
    with pytest.raises(ConfigError, match="exactly one of module_type, name or pattern"):
        HardwareConfig(layers=[LayerRule(name="a", pattern="b")]).validate()
    with pytest.raises(ConfigError, match="unknown config key 'layers\\[0\\].colour'"):
        HardwareConfig.from_dict({"layers": [{"colour": "red"}]})


def test_each_layer_is_lowered_with_its_own_settings():
    config = HardwareConfig(layers=[LayerRule(name="fc2", overrides={
        "forward.inp_res": 62, "forward.out_res": 62, "forward.out_bound": 8, "converter.g_max": 40.0})])
    converted = convert(prepare(make_model("mlp"), (make_input("mlp", 2),), config))
    settings = {n: m.settings for n, m in converted.named_children() if isinstance(m, Crossbar)}
    assert (settings["fc2_crossbar"].dac_steps, settings["fc2_crossbar"].g_max) == (62, 40.0)
    assert (settings["fc1_crossbar"].dac_steps, settings["fc1_crossbar"].g_max) == (0, 25.0)
