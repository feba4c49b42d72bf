"""Named hardware presets, each with where its numbers come from.

The presets set the compiled chip (DAC, ADC, bound, arrays, input ranges) and,
for hardware-aware training, the noise of training forward passes; device
programming noise, drift and compensation are ``xbar evaluate``'s (``--noise``,
``--compensation``); IR drop (``forward.ir_drop``) acts in the converted model and the exported file only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...passes.errors import ConfigError

if TYPE_CHECKING:
    from .hardware import HardwareConfig


@dataclass(frozen=True)
class Preset:
    """A named hardware: its dotted-key overrides of ``HardwareConfig()``, what it models, where from."""

    name: str
    description: str
    source: str
    overrides: dict

    def config(self) -> "HardwareConfig":
        # lazy: the config module loads torch, and `xbar presets` lists presets without it
        from .hardware import HardwareConfig

        return HardwareConfig().with_overrides(self.overrides)


def _standard(steps: int, array: int = 0) -> dict:
    """A DAC and ADC of ``steps`` steps, ADC bound 10, square arrays of ``array`` rows (0: no tiling)."""
    tiling = {"mapping.max_input_size": array, "mapping.max_output_size": array} if array else {}
    return {"forward.inp_res": steps, "forward.out_res": steps, "forward.out_bound": 10,
            "pre_post.input_range.enable": True} | tiling


STANDARD_HWA_MAPPING = {"mapping.max_input_size": 512, "mapping.weight_scaling_columnwise": True,
                        "mapping.weight_scaling_omega": 1.0, "mapping.weight_scaling_dynamic": False,
                        "mapping.learn_out_scaling": True, "mapping.out_scaling_columnwise": True,
                        "remap.type": "CHANNELWISE_SYMMETRIC", "remap.remapped_wmax": 1.0,
                        "clip.type": "FIXED_VALUE", "clip.fixed_value": 1.0}
"""The weight mapping of aihwkit's StandardHWATrainingPreset: arrays of 512 rows, stored per-column scales
(omega 1), learned per-column output scales, channelwise remapping and a clip at 1 after every step."""

STANDARD_HWA_FORWARD_NOISE = {"forward.out_noise": 0.04, "forward.w_noise": 0.0175, "forward.w_noise_type": "PCM_READ"}
"""The training noise of aihwkit's StandardHWATrainingPreset (output noise 0.04, PCM read noise 0.0175)."""
STANDARD_HWA_NOISE_MANAGEMENT = {"forward.noise_management": "CONSTANT", "forward.nm_thres": 1.0}
"""aihwkit's StandardHWATrainingPreset scales the range-normalised input by the constant 1 (a no-op under the
learned input range, kept so the exported configuration is the preset's)."""

HWA_TRAINING_NOISE = STANDARD_HWA_FORWARD_NOISE | {"modifier.type": "ADD_NORMAL_PER_CHANNEL", "modifier.std_dev": 0.1}
"""The recipe's training noise: the ``hwa`` preset's, plus Gaussian weight noise of 0.1 times each output
channel's max|W| (chosen on held-out training data: ``python -m benchmarks.bench_hwa --choose``)."""

STANDARD_HWA_IR_DROP = {"forward.ir_drop": 1.0}
"""aihwkit's StandardHWATrainingPreset's IR drop (its other ``ir_drop_*`` fields at their defaults, as there):
simulated in the converted model and the exported file, never in training, as aihwkit switches it off there."""

HWA_NOT_SIMULATED: tuple[str, ...] = ()
"""What of aihwkit's StandardHWATrainingPreset the ``hwa`` preset leaves out, and why: nothing."""


def _left_out(fields: tuple[str, ...]) -> str:
    """The end of a preset's source: what it leaves out of its reference, or that it is complete."""
    return f"; not simulated: {'; '.join(fields)}" if fields else "; complete: nothing of the preset is left out"

IDEAL = {"pre_post.input_range.enable": False}
"""No clip anywhere: without a DAC or ADC, the input range would be the only loss."""

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("ideal",
               "Lossless: no DAC, ADC, bound or input-range clip; one array per layer. The converted model "
               "computes the float model's outputs to float tolerance (a reference to compare the others with).",
               "xbar's default HardwareConfig() with the learned input range off", IDEAL),
        Preset("8bit",
               "8-bit DAC and ADC (254 steps), ADC bound 10, one array per layer, learned input ranges.",
               "the periphery of aihwkit's StandardHWATrainingPreset (inp_res=out_res=254, out_bound=10) "
               "without tiling; `xbar compile`'s default", _standard(254)),
        Preset("8bit-512x512",
               "8-bit DAC and ADC (254 steps), ADC bound 10, 512x512 arrays, learned input ranges.",
               "aihwkit StandardHWATrainingPreset (inp_res=out_res=254, out_bound=10, max_input_size=512, "
               "input range init 3.0 / 100 batches / 3 std / decay 0.001); its noise models are not "
               "simulated and its output tiling (max_output_size=0) is set to 512 for square arrays",
               _standard(254, 512)),
        Preset("hwa",
               "aihwkit's StandardHWATrainingPreset: 8-bit DAC and ADC (254 steps), ADC bound 10, arrays of 512 "
               "rows, stored per-column weight scales remapped and clipped after every step, learned "
               "per-column output scales, learned input ranges, the training noise out_noise 0.04 and "
               "w_noise 0.0175 (PCM read) in training forward passes (fine-tune with it: --finetune), and IR "
               "drop (aihwkit's time-stepped model) in the converted model and the exported file.",
               "aihwkit StandardHWATrainingPreset (inp_res=out_res=254, out_bound=10, out_noise=0.04, "
               "w_noise=0.0175 PCM_READ, noise_management CONSTANT with nm_thres 1.0, max_input_size=512, "
               "max_output_size=0, weight_scaling_omega 1.0 columnwise, learn_out_scaling and "
               "out_scaling_columnwise, digital_bias, remap CHANNELWISE_SYMMETRIC, clip FIXED_VALUE 1.0, input "
               "range init 3.0 / 100 batches / 3 std / decay 0.001; devices PCMLikeNoiseModel and global drift "
               "compensation are xbar evaluate's defaults; ir_drop 1.0, in evaluation only)"
               + _left_out(HWA_NOT_SIMULATED),
               _standard(254) | STANDARD_HWA_FORWARD_NOISE | STANDARD_HWA_MAPPING | STANDARD_HWA_NOISE_MANAGEMENT
               | STANDARD_HWA_IR_DROP),
        Preset("6bit-256x256",
               "6-bit DAC and ADC (62 steps), ADC bound 10, 256x256 arrays, learned input ranges.",
               "the 8bit-512x512 preset at 2**6 - 2 steps and the smaller arrays of low-power designs",
               _standard(62, 256)),
    )
}


DEFAULT_PRESET = "8bit"
"""``xbar compile``'s hardware without --preset or --config; the tests and benchmarks use it too."""


def preset_config(name: str) -> HardwareConfig:
    """The HardwareConfig of a named preset; :class:`ConfigError` lists the names on a miss."""
    try:
        return PRESETS[name].config()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
