"""Zoo models through aihwkit 1.1.0 and through xbar side by side, with the hwa preset's settings on both.

    python -m benchmarks.bench_aihwkit [--models lenet mlp transformer] [--seeds 10] [--out-noise every-read]
        [--finetune]

Each of the zoo's trained models (``load_pretrained(name)``; default LeNet) on each side: xbar's ``hwa`` preset, and
aihwkit's StandardHWATrainingPreset copied field by field onto a TorchInferenceRPUConfig (its pure-torch
tiles; ``convert_to_analog`` copies the weights, with the preset's per-column weight scaling and learned
out scales), less what those tiles refuse or xbar does not read: ``forward.w_noise`` (PCM_READ, training
noise in xbar; the torch tile refuses any w_noise), ``forward.ir_drop`` (the torch tile refuses it; set to 0
on xbar's side too). ``forward.out_noise`` (the preset's 0.04) acts at every read of the evaluation over
time on both sides (``--out-noise every-read``, xbar's default, as aihwkit's tiles read), or on neither
(``training-only``: aihwkit's tiles read with 0, xbar's with ``OutNoiseAtRead.TRAINING_ONLY``); the
noise-free comparison (a) reads without it. Both sides calibrate their input ranges from
the same batches (init from data, the digits training split in batches of 64). ``--finetune`` then
fine-tunes xbar's model with the preset (:data:`xbar.HWA_FINE_TUNING`, the preset's training noise) and
writes its analog weights, mapping scales, learned out scales, biases and ranges into aihwkit's tiles, so
both sides read the same hardware-aware-trained arrays. The zoo's resnet is not offered: aihwkit 1.1.0's
analog convolutions refuse ``groups != 1`` ("Only one group is supported") and its blocks are grouped and
depthwise. aihwkit's layer names are dotted (``blocks.0.fc1``), xbar's joined by underscores.

(a) Noise-free, on the test split, with xbar's ranges copied into aihwkit's tiles: the ranges each side
calibrated; each array's ADC codes against its aihwkit tile's on the input that tile got (one step apart
where float32 sums taken in another order land either side of a rounding boundary: aihwkit multiplies
unfolded patches, xbar convolves); the logits in steps of the last ADC (each column's own step), and top-1
agreement.
(b) Accuracy over time: PCMLikeNoiseModel and global drift compensation on both (aihwkit: its
``program_analog_weights`` / ``drift_analog_weights`` with ``torch.manual_seed(seed)``; xbar:
``accuracy_over_time``), 1 s / 1 d / 1 y, seeds 0..n-1: mean ± std on the test split and the difference of
the means in standard errors of that difference (independent random streams: |z| < 3 is agreement).
Needs aihwkit (``pip install --no-deps aihwkit==1.1.0``); xbar itself never imports it.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import statistics
import warnings

import torch
from rich.table import Table

from xbar import HWA_FINE_TUNING, PCMLikeNoiseModel, calibrate, convert, fine_tune, prepare, preset_config
from xbar.compiler.devices.evaluation import OutNoiseAtRead, accuracy_over_time
from xbar.compiler.pipeline.stages import input_ranges
from xbar.models import load_digits_split, load_pretrained
from xbar.passes.numerics.crossbar import Crossbar, column_out_scale

from benchmarks.common import command_console

TIMES = {"1s": 1.0, "1d": 86400.0, "1y": 365 * 86400.0}
BATCH = 64
MODELS = ("lenet", "mlp", "transformer")
PRESET_FIELDS = ("mapping", "forward", "remap", "clip", "noise_model", "drift_compensation", "pre_post")


def aihwkit_hwa_config(out_noise: float = 0.0):
    """StandardHWATrainingPreset on torch tiles, without the forward fields the module docstring names."""
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import WeightNoiseType
    from aihwkit.simulator.presets.inference import StandardHWATrainingPreset

    preset, config = StandardHWATrainingPreset(), TorchInferenceRPUConfig()
    for field in PRESET_FIELDS:
        setattr(config, field, copy.deepcopy(getattr(preset, field)))
    config.forward.w_noise, config.forward.w_noise_type = 0.0, WeightNoiseType.NONE
    config.forward.ir_drop, config.forward.out_noise = 0.0, out_noise
    return config


def preset_out_noise() -> float:
    """StandardHWATrainingPreset's forward.out_noise."""
    from aihwkit.simulator.presets.inference import StandardHWATrainingPreset

    return StandardHWATrainingPreset().forward.out_noise


def aihwkit_model(name: str, batches: list[torch.Tensor]):
    """The trained zoo model ``name`` converted to aihwkit's analog layers, its ranges initialised from ``batches``."""
    from aihwkit.nn.conversion import convert_to_analog

    analog = convert_to_analog(load_pretrained(name), aihwkit_hwa_config()).train()
    with torch.no_grad():  # init from data happens in training forward passes; no noise is on
        for batch in batches:
            analog(batch)
    return analog.eval()


def set_out_noise(analog, out_noise: float) -> None:
    """aihwkit's output noise in every read from now on (its tiles add it in evaluation too)."""
    for layer in analog.analog_layers():
        for tile in layer.analog_tiles():
            tile.rpu_config.forward.out_noise = out_noise


def xbar_model(name: str, batches: list[torch.Tensor]):
    config = preset_config("hwa").with_overrides({"forward.ir_drop": 0.0})  # as aihwkit's torch tiles
    prepared = prepare(load_pretrained(name), (batches[0][:16],), config)
    calibrate(prepared, batches)
    return prepared


def load_tuned_state(analog, prepared) -> None:
    """xbar's trained arrays in aihwkit's tiles: analog weights W / scales, mapping scales, learned out
    scales, digital biases, the digital layers' state (the ranges: :func:`copy_ranges`)."""
    with torch.no_grad():
        for name, layer in analog.named_analog_layers():
            (tile,) = layer.analog_tiles()
            weight = prepared.get_parameter(f"{name}.weight")
            scales = prepared.get_buffer(f"{our_name(name)}_weight_scales.scales")
            analog_weight = weight / scales.view(-1, *[1] * (weight.dim() - 1))
            tile.tile.weight.copy_(analog_weight.reshape(weight.shape[0], -1))
            tile.set_mapping_scales(scales.clone())
            tile.set_learned_out_scales(prepared.get_parameter(f"{our_name(name)}_out_scaling.alpha").clone())
            layer.analog_module.bias.copy_(prepared.get_parameter(f"{name}.bias"))  # the tile array adds it
        copy_digital_state(analog, prepared)


def copy_digital_state(analog, prepared) -> None:
    """xbar's fine-tuned digital parameters and buffers (layer norms, batch norms, position embeddings) into
    aihwkit's model, by name: everything outside its analog layers."""
    layers = [f"{name}." for name, _ in analog.named_analog_layers()]
    ours = dict(prepared.named_parameters()) | dict(prepared.named_buffers())
    for name, tensor in itertools.chain(analog.named_parameters(), analog.named_buffers()):
        if not any(name.startswith(layer) for layer in layers) and name in ours:
            tensor.copy_(ours[name])


def our_name(their_name: str) -> str:
    """xbar's name of aihwkit's analog layer ``their_name``."""
    return their_name.replace(".", "_")


def their_ranges(analog) -> dict[str, float]:
    return {our_name(name): tile.input_range.item() for name, layer in analog.named_analog_layers()
            for tile in layer.analog_tiles()}


def our_ranges(prepared) -> dict[str, float]:
    return {name.removesuffix("_input_range"): m.value.item() for name, m in input_ranges(prepared).items()}


def copy_ranges(analog, ranges: dict[str, float]) -> None:
    with torch.no_grad():
        for name, layer in analog.named_analog_layers():
            (tile,) = layer.analog_tiles()
            tile.input_range.fill_(ranges[our_name(name)])


def last_adc_steps(converted) -> torch.Tensor:
    """The logits' ADC step, per column: what one code of the last array's ADC is worth after rescaling."""
    last = [m for m in converted.modules() if isinstance(m, Crossbar)][-1]
    columns = column_out_scale(last.settings)
    return columns.abs() if columns is not None else torch.tensor(abs(last.settings.constants["out_scale"]))


def logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(batch) for batch in x.split(256)])


def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * (logits(model, x).argmax(1) == y).float().mean().item()


def their_accuracy_over_time(analog, seeds: int, x, y) -> dict[str, list[float]]:
    """aihwkit's programming and drift on its torch tiles: one programming per seed, each time read from it."""
    values = {label: [] for label in TIMES}
    for seed in range(seeds):
        model = copy.deepcopy(analog).eval()
        torch.manual_seed(seed)
        model.program_analog_weights()
        for label, seconds in TIMES.items():
            model.drift_analog_weights(seconds)
            values[label].append(accuracy(model, x, y))
    return values


def analog_out_noise(analog) -> float:
    return next(next(analog.analog_layers()).analog_tiles()).rpu_config.forward.out_noise


def z_score(ours: list[float], theirs: list[float]) -> float:
    error = math.sqrt((statistics.variance(ours) + statistics.variance(theirs)) / len(ours))
    return (statistics.fmean(ours) - statistics.fmean(theirs)) / error if error else 0.0


def layer_inputs_and_outputs(model, layers: dict[str, torch.nn.Module], x: torch.Tensor) -> dict[str, tuple]:
    """Each named layer's (input, output) when ``model`` runs ``x``."""
    seen = {}
    handles = [layer.register_forward_hook(lambda _, i, o, name=name: seen.__setitem__(name, (i[0], o)))
               for name, layer in layers.items()]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return seen


def codes_apart_per_array(converted, analog, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each array's output on the input aihwkit's tile got, against that tile's output, in the array's
    ADC steps (what one array adds, not what the network accumulates)."""
    ours = {name.removesuffix("_crossbar"): m for name, m in converted.named_modules() if isinstance(m, Crossbar)}
    theirs = layer_inputs_and_outputs(analog, dict(analog.named_analog_layers()), x)
    theirs = {our_name(name): value for name, value in theirs.items()}
    apart = {}
    for name, (their_input, their_output) in theirs.items():
        array = ours[name]
        with torch.no_grad():
            output = array(their_input)
        shape = [1] * output.dim()
        shape[array.kind.channel_dim] = -1  # a linear layer's columns are its last dim, a convolution's dim 1
        steps = column_out_scale(array.settings).abs().view(shape)
        apart[name] = (output - their_output).abs() / steps
    return apart


def noise_free_table(model: str, calibrated: dict[str, float], prepared, converted, analog, split) -> Table:
    """``calibrated``: xbar's ranges before any fine-tuning, beside aihwkit's."""
    ours, theirs = calibrated, their_ranges(analog)
    copy_ranges(analog, our_ranges(prepared))
    apart = codes_apart_per_array(converted, analog, split.test_x)
    table = Table(title=f"(a) {model}, noise-free on the test split: calibrated input ranges (before any fine-tuning); "
                        "each array's ADC codes on aihwkit's tile input (xbar's ranges in both); the logits")
    for column in ("layer", "range xbar", "range aihwkit", "apart", "codes differing", "max, ADC steps"):
        table.add_column(column, justify="right")
    for name in theirs:
        table.add_row(name, f"{ours[name]:.6f}", f"{theirs[name]:.6f}",
                      f"{100 * abs(ours[name] - theirs[name]) / theirs[name]:.4f}%",
                      f"{int((apart[name] > 0.5).sum())} of {apart[name].numel()}", f"{apart[name].max():.3g}")
    a, b = logits(converted, split.test_x), logits(analog, split.test_x)
    steps = (a - b).abs() / last_adc_steps(converted)
    agree = 100 * (a.argmax(1) == b.argmax(1)).float().mean()
    table.add_row("logits", "", "", f"top-1 agree {agree:.2f}%", f"{int((steps > 0.5).sum())} of {steps.numel()}",
                  f"{steps.max():.3g}")
    return table


def over_time_table(model: str, converted, analog, their_ideal: float, split, seeds: int,
                    out_noise: OutNoiseAtRead) -> Table:
    x, y = split.test_x, split.test_y
    ours = accuracy_over_time(converted, PCMLikeNoiseModel(), TIMES, seeds, x, y, compensation="global",
                              out_noise=out_noise)
    theirs = their_accuracy_over_time(analog, seeds, x, y)
    table = Table(title=f"(b) {model}, test accuracy (%), PCMLikeNoiseModel, global drift compensation, {seeds} seeds, "
                        f"output noise {out_noise.value} (aihwkit's out_noise {analog_out_noise(analog):g})")
    for column in ("time", "xbar", "aihwkit", "difference / its std error"):
        table.add_column(column, justify="right")
    table.add_row("noise-free", f"{ours.ideal * 100:.2f}", f"{their_ideal:.2f}", "")
    for point in ours.points:
        values = [100 * v for v in point.values]
        reference = theirs[point.label]
        table.add_row(point.label, f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}",
                      f"{statistics.fmean(reference):.2f} ± {statistics.stdev(reference):.2f}",
                      f"{z_score(values, reference):+.2f}")
    return table


def compare(name: str, split, args, console) -> None:
    """Both tables for zoo model ``name``."""
    batches = list(split.train_x.split(BATCH))
    prepared = xbar_model(name, batches)
    calibrated = our_ranges(prepared)
    analog = aihwkit_model(name, batches)
    if args.finetune:
        fine_tune(prepared, split.train_x, split.train_y, HWA_FINE_TUNING)
        load_tuned_state(analog, prepared)
    converted = convert(prepared)
    console.print(noise_free_table(name, calibrated, prepared, converted, analog, split))
    their_ideal = accuracy(analog, split.test_x, split.test_y)
    out_noise = OutNoiseAtRead(args.out_noise)
    set_out_noise(analog, preset_out_noise() if out_noise is OutNoiseAtRead.EVERY_READ else 0.0)
    console.print(over_time_table(name, converted, analog, their_ideal, split, args.seeds, out_noise))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["lenet"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--finetune", action="store_true", help="fine-tune with the preset, both sides reading it")
    parser.add_argument("--out-noise", choices=[mode.value for mode in OutNoiseAtRead], default="every-read",
                        help="the preset's forward.out_noise at every read on both sides, or on neither")
    args = parser.parse_args(argv)
    console = command_console("bench_aihwkit", argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    split = load_digits_split()
    for name in args.models:
        compare(name, split, args, console)


if __name__ == "__main__":
    main()
