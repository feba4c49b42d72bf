"""forward.out_noise at every analog read in evaluation, as aihwkit 1.1.0's torch tiles add it.

aihwkit's tile adds ``out_noise * N(0, 1)`` to its normalised output before the ADC at every read, in
evaluation too; xbar's arrays do so once given a generator (evaluation over time gives each read one), and
read noise-free otherwise. The noise is compared with aihwkit's over many reads (its std per column, with an
ADC that rounds it and without one), and with the formula; the draws follow the caller's seeds.
"""

import pytest
import torch
from aihwkit.nn import AnalogLinear
from aihwkit.simulator.parameters.enums import NoiseManagementType
from aihwkit_tiles import aihwkit_config, layer_and_input, xbar_config

import xbar
from xbar import OutNoiseAtRead, PCMLikeNoiseModel, UserError, accuracy_over_time
from xbar.compiler.devices.evaluation import read_out_noise_from
from xbar.models import load_digits_split, load_pretrained
from xbar.passes.numerics.crossbar import column_out_scale, crossbar_modules, out_noise_in_codes

OUT_NOISE, READS = 0.1, 300
PERIPHERIES = {"adc": 254, "ideal_converters": -1}  # forward.inp_res = out_res


def their_layer(steps: float, managed: bool):
    config = aihwkit_config(omega=1.0, columnwise=False, steps=steps)
    config.forward.out_noise = OUT_NOISE
    if managed:
        config.pre_post.input_range.enable = False
        config.forward.noise_management = NoiseManagementType.ABS_MAX
    layer, x = layer_and_input("linear")
    return AnalogLinear.from_digital(layer, config).eval(), x


def our_layer(steps: float, managed: bool):
    overrides = {"forward.out_noise": OUT_NOISE}
    if managed:
        overrides |= {"pre_post.input_range.enable": False, "forward.noise_management": "ABS_MAX"}
    layer, x = layer_and_input("linear")
    config = xbar_config(omega=1.0, columnwise=False, steps=steps).with_overrides(overrides)
    return xbar.convert(xbar.prepare(layer, (x[:2],), config)), x


def deviations(model, x: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """[reads, samples, columns]: each read's output minus the noise-free output."""
    with torch.no_grad():
        return torch.stack([model(x) - clean for _ in range(READS)])


def their_deviations(steps: float, managed: bool) -> torch.Tensor:
    analog, x = their_layer(steps, managed)
    with torch.no_grad():
        for tile in analog.analog_tiles():
            tile.rpu_config.forward.out_noise = 0.0
        clean = analog(x)
        for tile in analog.analog_tiles():
            tile.rpu_config.forward.out_noise = OUT_NOISE
    torch.manual_seed(5)  # aihwkit draws from torch's default generator
    return deviations(analog, x, clean)


def our_deviations(steps: float, managed: bool) -> torch.Tensor:
    converted, x = our_layer(steps, managed)
    with torch.no_grad():
        clean = converted(x)
    return deviations(read_out_noise_from(converted, torch.Generator().manual_seed(5)), x, clean)


@pytest.mark.parametrize("managed", [False, True], ids=["input_range", "abs_max_noise_management"])
@pytest.mark.parametrize("periphery", PERIPHERIES)
def test_each_columns_output_noise_has_the_std_aihwkits_tile_reads_with(periphery, managed):
    """19,200 draws per column on each side: the std's standard error is 0.5%, the bound 4%."""
    ours, theirs = our_deviations(PERIPHERIES[periphery], managed), their_deviations(PERIPHERIES[periphery], managed)
    ratio = ours.std(dim=(0, 1)) / theirs.std(dim=(0, 1))
    assert ((ratio - 1).abs() < 0.04).all(), ratio
    assert ours.mean(dim=(0, 1)).abs().max() < 4 * ours.std(dim=(0, 1)).max() / (ours[..., 0].numel() ** 0.5)


def test_without_a_converter_the_noise_is_out_noise_times_each_columns_output_step():
    """No ADC: one code is one unit of aihwkit's normalised output, so the std is ``out_noise * out_scale``."""
    converted, x = our_layer(-1, False)
    (array,) = crossbar_modules(converted).values()
    scale = column_out_scale(array.settings)
    step = scale.abs() if scale is not None else torch.tensor(abs(array.settings.constants["out_scale"]))
    standardised = our_deviations(-1, False) / (step * out_noise_in_codes(OUT_NOISE, array.settings))
    assert abs(standardised.std().item() - 1) < 0.02  # 115,200 draws: standard error 0.2%
    assert abs(standardised.mean().item()) < 4 / standardised.numel() ** 0.5


def test_an_adc_code_is_out_bound_over_half_its_steps_of_aihwkits_output():
    converted, _ = our_layer(254, False)
    (array,) = crossbar_modules(converted).values()
    assert out_noise_in_codes(0.04, array.settings) == pytest.approx(0.04 * 127 / array.settings.out_bound)


def test_the_converted_model_reads_noise_free_until_given_a_generator_and_then_follows_its_seed():
    converted, x = our_layer(254, False)
    with torch.no_grad():
        clean = converted(x)
        assert torch.equal(converted(x), clean)
        first = read_out_noise_from(converted, torch.Generator().manual_seed(9))(x)
        again = read_out_noise_from(converted, torch.Generator().manual_seed(9))(x)
        other = read_out_noise_from(converted, torch.Generator().manual_seed(10))(x)
        assert torch.equal(read_out_noise_from(converted, None)(x), clean)
    assert torch.equal(first, again)
    assert not torch.equal(first, other) and not torch.equal(first, clean)


def lenet_hwa():
    digits = load_digits_split()
    prepared = xbar.prepare(load_pretrained("lenet"), (digits.train_x[:2],), xbar.preset_config("hwa"))
    xbar.calibrate(prepared, list(digits.train_x[:256].split(64)))
    return xbar.convert(prepared), digits.test_x[:300], digits.test_y[:300]


def test_evaluation_over_time_reads_with_output_noise_by_default_seeded_per_seed_and_time():
    converted, x, y = lenet_hwa()
    times = {"1s": 1.0, "1d": 86400.0}
    run = lambda **kw: accuracy_over_time(converted, PCMLikeNoiseModel(), times, 2, x, y, **kw)  # noqa: E731
    noisy, again, quiet = run(), run(), run(out_noise=OutNoiseAtRead.TRAINING_ONLY)
    assert noisy.as_dict() == again.as_dict()
    assert noisy.as_dict()["out_noise_at_read"] == "every-read"
    assert quiet.out_noise is OutNoiseAtRead.TRAINING_ONLY and noisy.ideal == quiet.ideal
    assert [p.values for p in noisy.points] != [p.values for p in quiet.points]


def test_a_compiled_evaluation_refuses_output_noise_at_every_read():
    converted, x, y = lenet_hwa()
    with pytest.raises(UserError, match="TRAINING_ONLY"):
        accuracy_over_time(converted, PCMLikeNoiseModel(), {"1s": 1.0}, 1, x, y, compile=True)
