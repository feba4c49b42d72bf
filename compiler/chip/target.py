"""Compiling for a chip: the hardware config its arrays imply, and the mapping of a converted model onto it.

Which wins where the chip and the hardware config both speak:

* array size: the chip's. The tiling (``mapping.max_input_size`` / ``max_output_size``) becomes the chip's
  rows and weight columns; a config asking for larger arrays is refused, smaller ones are kept (each tile
  then fills part of an array).
* g_max: the chip's devices'; a config with another ``converter.g_max`` is refused. ``xbar evaluate
  --chip`` programs the chip's ``device_model`` unless ``--noise`` or a ``[noise]`` section names another.
* DAC / ADC: the config's decide the simulated numerics, the chip's the cost. On a PWM chip (one ADC
  conversion per MVM output, the conversion xbar simulates) a config ADC finer than the chip's
  (ideal, or more than ``2**adc_bits - 2`` steps, aihwkit's count for n bits) is refused: the
  compiled model would claim an accuracy the chip cannot reach. A bit-serial chip converts every
  input bit slice; xbar's one-ADC model does not simulate that, so its ADC resolution enters the
  cost only.
"""

from __future__ import annotations

from typing import Optional, Sequence

from torch import fx

from ...passes.errors import ConfigError
from ..config.hardware import HardwareConfig
from ..inspection.converted import summarize_converted
from .description import Chip
from .model_work import layer_work
from .placement import Mapping, place

DEFAULT_G_MAX = HardwareConfig().converter.g_max
"""The default converter's g_max: a config that keeps it takes a chip's devices' g_max."""

MAPPING_KEY = "xbar.chip_mapping"
"""Where a converted GraphModule keeps its :class:`Mapping` (``graph_module.meta``)."""


def chip_config(config: HardwareConfig, chip: Chip) -> HardwareConfig:
    """``config`` with the chip's array size as its tiling and, where the config keeps the default converter
    g_max, the chip's; :class:`ConfigError` where they disagree."""
    rows, columns = chip.rows, chip.weight_columns
    mapping = config.mapping
    for key, asked, limit in (("max_input_size", mapping.max_input_size, rows),
                              ("max_output_size", mapping.max_output_size, columns)):
        if asked > limit:
            raise ConfigError(f"mapping.{key}={asked} is larger than {chip.name}'s arrays ({rows} rows x {columns} "
                              f"weight columns); drop it to use the chip's size")
    steps, levels = config.forward.adc_steps, 2 ** chip.adc_bits
    if chip.input_mode == "pwm" and (not steps or steps > levels - 2):
        have = f"{steps:g} ADC steps" if steps else "an ideal ADC"
        raise ConfigError(f"the hardware config has {have} but {chip.name}'s ADC has {chip.adc_bits} bits "
                          f"({levels} levels): set forward.out_res to at most {levels - 2} steps (e.g. --preset 8bit)")
    devices = {}
    if config.converter.g_max != chip.g_max:
        if config.converter.g_max != DEFAULT_G_MAX:
            raise ConfigError(f"converter.g_max={config.converter.g_max:g} uS differs from {chip.name}'s devices "
                              f"({chip.g_max:g} uS): drop the setting, or give the chip file that g_max")
        devices = {"converter.g_max": chip.g_max}  # the default converter takes the chip's devices
    return config.with_overrides({"mapping.max_input_size": mapping.max_input_size or rows,
                                  "mapping.max_output_size": mapping.max_output_size or columns} | devices)


def map_converted(converted: fx.GraphModule, example_inputs: Sequence, chip: Chip, chips: int = 1,
                  replicate: bool = True) -> Mapping:
    """Place a converted model's arrays on ``chips`` copies of ``chip`` and cost one inference on
    ``example_inputs``' shapes; the mapping is kept on ``converted`` for the export."""
    if not isinstance(chips, int) or isinstance(chips, bool) or chips < 1:
        raise ConfigError(f"chips must be a positive integer, got {chips!r}")
    mapping = place(chip, layer_work(converted, summarize_converted(converted), example_inputs), chips, replicate)
    converted.meta[MAPPING_KEY] = mapping
    return mapping


def check_capacity(converted: fx.GraphModule, chip: Chip, chips: int = 1) -> None:
    """:class:`~xbar.passes.errors.CapacityError` unless the arrays of ``converted`` fit ``chips`` chips:
    checked on a model converted before calibration, so a model that cannot fit fails in seconds."""
    place(chip, layer_work(converted, summarize_converted(converted), None), chips, replicate=False)


def mapping_of(converted: fx.GraphModule) -> Optional[Mapping]:
    """The mapping :func:`map_converted` kept on ``converted``, if any."""
    return getattr(converted, "meta", {}).get(MAPPING_KEY)
