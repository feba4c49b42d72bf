"""The zoo's trained LeNet with the hwa preset against aihwkit 1.1.0's StandardHWATrainingPreset on its torch
tiles (the preset's fields copied onto a TorchInferenceRPUConfig, less the forward noise and IR drop those
tiles refuse, and xbar's IR drop off too): the same calibrated input ranges, and noise-free logits within one
step of the last ADC."""

import copy

import numpy as np
import pytest
import torch
from aihwkit.nn.conversion import convert_to_analog
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters.enums import WeightNoiseType
from aihwkit.simulator.presets.inference import StandardHWATrainingPreset

from xbar import calibrate, convert, prepare, preset_config
from xbar.compiler.pipeline.stages import input_ranges
from xbar.models import load_digits_split, load_pretrained
from xbar.passes.numerics.crossbar import Crossbar, column_out_scale


def their_hwa_config() -> TorchInferenceRPUConfig:
    preset, config = StandardHWATrainingPreset(), TorchInferenceRPUConfig()
    for field in ("mapping", "forward", "remap", "clip", "noise_model", "drift_compensation", "pre_post"):
        setattr(config, field, copy.deepcopy(getattr(preset, field)))
    forward = config.forward
    forward.w_noise, forward.w_noise_type, forward.ir_drop, forward.out_noise = 0.0, WeightNoiseType.NONE, 0.0, 0.0
    return config


@pytest.fixture(scope="module")
def both():
    """(xbar's prepared and converted LeNet, aihwkit's analog LeNet, the digits), both calibrated on the
    first 3 training batches of 32 (aihwkit's convolutions are slow on CPU)."""
    digits = load_digits_split()
    batches = list(digits.train_x.split(32))[:3]
    config = preset_config("hwa").with_overrides({"forward.ir_drop": 0.0})  # as their torch tiles
    prepared = prepare(load_pretrained("lenet"), (batches[0],), config)
    calibrate(prepared, batches)
    analog = convert_to_analog(load_pretrained("lenet"), their_hwa_config()).train()
    with torch.no_grad():  # aihwkit initialises its ranges in training forward passes
        for batch in batches:
            analog(batch)
    return prepared, convert(prepared), analog.eval(), digits


def test_the_calibrated_ranges_are_aihwkits(both):
    prepared, _, analog, _ = both
    ours = {name.removesuffix("_input_range"): m.value.item() for name, m in input_ranges(prepared).items()}
    theirs = {name: tile.input_range.item() for name, layer in analog.named_analog_layers()
              for tile in layer.analog_tiles()}
    assert ours.keys() == theirs.keys() and len(ours) == 5
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, rel=1e-5)


def test_noise_free_logits_are_aihwkits_within_one_adc_step(both):
    """One step where float32 sums in a different order land on either side of a rounding boundary."""
    _, converted, analog, digits = both
    x, y = digits.test_x[:200], digits.test_y[:200]
    with torch.no_grad():
        ours, theirs = converted(x), analog(x)
    last = [m for m in converted.modules() if isinstance(m, Crossbar)][-1]
    steps = column_out_scale(last.settings).abs()
    assert steps.numel() == 10  # one step per column: learned out scales times per-column weight scales
    apart = ((ours - theirs).abs() / steps).numpy()  # the same bias on both sides: codes apart
    assert apart.max() <= 1 + 1e-3 and np.mean(apart > 0.5) < 0.01
    assert np.mean(apart > 1e-3) < 0.01  # elsewhere the same code
    agree = ours.argmax(1) == theirs.argmax(1)
    assert agree.float().mean() >= 0.995
    assert (ours.argmax(1) == y).float().mean() > 0.85
