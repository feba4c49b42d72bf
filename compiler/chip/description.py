"""A chip to compile for: :class:`Chip`, its fields' meaning, and its TOML form.

A chip is a number of cores, each with arrays of ``rows`` x ``columns`` devices,
the periphery around each array (DACs, ADCs shared by ``columns_per_adc``
columns), the time and energy of one array pass, a digital unit for the
periphery xbar inserts, and an on-chip network between cores. :data:`FIELDS`
says what each field means; :mod:`.shipped` gives each shipped chip's values
and their sources. Nothing here imports torch: ``xbar chips`` lists chips at once.

Terms the cost model (:mod:`.cost`) uses:

* an *input phase* applies one set of input pulses to the rows (PWM: 1 in
  one-phase mode, 4 in four-phase mode; bit-serial: one per input bit slice);
* an *array pass* is one phase read out by one round of ADC conversions, each
  ADC converting one of its ``columns_per_adc`` columns; an MVM takes
  ``phases x columns_per_adc`` passes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ...passes.errors import ConfigError
from ..devices.registry import NOISE_MODELS

PAIR_LAYOUTS = {
    "cell": "G+ and G- in one unit cell (one column per weight)",
    "columns": "G+ and G- on two adjacent columns of one array (two columns per weight)",
    "arrays": "G+ on one array, G- on the same place of a second array (two arrays per tile)",
}
"""How a weight's conductance pair sits on the chip."""
INPUT_MODES = ("pwm", "bit-serial")

FIELDS: dict[str, str] = {
    "name": "the chip's name (`--chip NAME`)",
    "summary": "one line: what the chip is",
    "source": "where the values come from (publications), and which values are derived or assumed",
    "cores": "analog cores on one chip",
    "arrays_per_core": "crossbar arrays in one core",
    "rows": "rows (inputs) of one array",
    "columns": "columns (device columns, outputs) of one array",
    "pair_layout": "how G+ and G- sit: " + "; ".join(f"{k}: {v}" for k, v in PAIR_LAYOUTS.items()),
    "share_arrays": "whether tiles of different layers may share one physical array (disjoint rows and columns)",
    "columns_per_adc": "columns multiplexed onto one ADC (1: an ADC per column)",
    "dac_bits": "bits the input driver applies in one phase",
    "adc_bits": "ADC resolution in bits",
    "input_bits": "bits of an input activation",
    "input_mode": "pwm (pulse-width inputs, `phases` per MVM) or bit-serial (ceil(input_bits / dac_bits) phases)",
    "phases": "input phases per MVM in pwm mode (1: one-phase, 4: four-phase); ignored when bit-serial",
    "pass_ns": "time of one array pass (one phase, one ADC round), ns",
    "mvm_fixed_ns": "time per MVM besides the passes (input load, output hand-off), ns",
    "pass_pj": "array read energy of one pass over the whole array, pJ",
    "dac_pj": "energy of driving one row for one phase, pJ",
    "adc_pj": "energy of one ADC conversion, pJ",
    "output_pj": "energy of the core's own output stage per output column per MVM (local scaling), pJ",
    "digital_ops_per_ns": "throughput of the digital unit running xbar's periphery (clip, scale, bias, adds), "
                          "operations per ns",
    "digital_pj_per_op": "energy of one digital periphery operation, pJ",
    "noc_bytes_per_ns": "on-chip network bandwidth between cores, bytes per ns",
    "noc_pj_per_byte": "energy of moving one byte between cores, pJ",
    "device_model": "the device model `xbar evaluate` programs this chip's arrays with (`xbar evaluate --noise`)",
    "g_max": "the largest conductance the devices are programmed to, uS",
}
"""Every field of :class:`Chip` and what it means (the README's chip table and ``xbar chips`` read this)."""


@dataclass(frozen=True)
class Chip:
    """One chip; see :data:`FIELDS` for each field's meaning and units."""

    name: str
    summary: str
    source: str
    cores: int
    arrays_per_core: int
    rows: int
    columns: int
    pair_layout: str
    columns_per_adc: int
    dac_bits: int
    adc_bits: int
    input_bits: int
    input_mode: str
    pass_ns: float
    pass_pj: float
    adc_pj: float
    phases: int = 1
    share_arrays: bool = True
    mvm_fixed_ns: float = 0.0
    dac_pj: float = 0.0
    output_pj: float = 0.0
    digital_ops_per_ns: float = 1.0
    digital_pj_per_op: float = 0.0
    noc_bytes_per_ns: float = 1.0
    noc_pj_per_byte: float = 0.0
    device_model: str = "pcm"
    g_max: float = 25.0

    def __post_init__(self):
        check_chip(self)

    @property
    def weight_columns(self) -> int:
        """Weights (output channels) one array holds side by side."""
        return self.columns // 2 if self.pair_layout == "columns" else self.columns

    @property
    def arrays_per_tile(self) -> int:
        """Physical arrays one tile takes: 2 when G+ and G- are on two arrays."""
        return 2 if self.pair_layout == "arrays" else 1

    @property
    def arrays(self) -> int:
        """Physical arrays on one chip."""
        return self.cores * self.arrays_per_core

    @property
    def input_phases(self) -> int:
        """Input phases of one MVM."""
        return math.ceil(self.input_bits / self.dac_bits) if self.input_mode == "bit-serial" else self.phases

    @property
    def adcs_per_array(self) -> int:
        return math.ceil(self.columns / self.columns_per_adc)

    def with_mode(self, phases: int) -> "Chip":
        """The same chip run with ``phases`` input phases per MVM (pwm chips)."""
        return dataclasses.replace(self, phases=phases)

    def to_dict(self) -> dict:
        """The TOML form: every field, in :data:`FIELDS` order."""
        return {name: getattr(self, name) for name in FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "chip") -> "Chip":
        """Build from a TOML table; a missing, unknown or mistyped field is one :class:`ConfigError`."""
        specs = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(specs))
        if unknown:
            raise ConfigError(f"{where}: unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS)}")
        missing = [name for name, spec in specs.items() if name not in data and spec.default is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{where}: missing field {missing[0]!r} ({FIELDS[missing[0]]})")
        return cls(**{name: _typed(value, specs[name], where) for name, value in data.items()})


def _typed(value, spec: dataclasses.Field, where: str):
    expected, text = TYPES[spec.type]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}: {spec.name} must be {text}, got {value!r}")
    return value


TYPES = {"int": (int, "an integer"), "float": (float, "a number"), "str": (str, "a string"),
         "bool": (bool, "true or false")}
"""A field's annotation -> its type and how an error names it."""


POSITIVE = ("cores", "arrays_per_core", "rows", "columns", "columns_per_adc", "dac_bits", "adc_bits", "input_bits",
            "phases", "pass_ns", "digital_ops_per_ns", "noc_bytes_per_ns", "g_max")
NON_NEGATIVE = ("mvm_fixed_ns", "pass_pj", "dac_pj", "adc_pj", "output_pj", "digital_pj_per_op", "noc_pj_per_byte")


def check_chip(chip: Chip) -> None:
    """:class:`ConfigError` (one line, naming the chip and field) for a description that means nothing."""
    where = f"chip {chip.name!r}"
    for name in POSITIVE:
        value = getattr(chip, name)
        if not value > 0 or not math.isfinite(value):
            raise ConfigError(f"{where}: {name} must be > 0 ({FIELDS[name]}), got {value!r}")
    for name in NON_NEGATIVE:
        value = getattr(chip, name)
        if not value >= 0 or not math.isfinite(value):
            raise ConfigError(f"{where}: {name} must be >= 0 ({FIELDS[name]}), got {value!r}")
    if chip.pair_layout not in PAIR_LAYOUTS:
        raise ConfigError(f"{where}: pair_layout must be one of {', '.join(PAIR_LAYOUTS)}, got {chip.pair_layout!r}")
    if chip.pair_layout == "columns" and chip.columns < 2:
        raise ConfigError(f"{where}: G+ and G- on two columns need arrays of at least 2 columns, got {chip.columns}")
    if chip.pair_layout == "arrays" and chip.arrays_per_core % 2:
        raise ConfigError(f"{where}: G+ and G- on two arrays need an even number of arrays_per_core, "
                          f"got {chip.arrays_per_core}")
    if chip.input_mode not in INPUT_MODES:
        raise ConfigError(f"{where}: input_mode must be one of {', '.join(INPUT_MODES)}, got {chip.input_mode!r}")
    if chip.columns_per_adc > chip.columns:
        raise ConfigError(f"{where}: columns_per_adc ({chip.columns_per_adc}) exceeds the array's "
                          f"{chip.columns} columns")
    if chip.device_model not in NOISE_MODELS:
        raise ConfigError(f"{where}: device_model must be one of {', '.join(NOISE_MODELS)}, got {chip.device_model!r}")


def load_chip_file(path: Path) -> Chip:
    """A chip from a TOML file (its top-level table holds the fields)."""
    try:
        import tomllib  # lazy: Python 3.10 has none, and only chip files need it
    except ModuleNotFoundError:
        raise ConfigError("chip files need Python 3.11 or later (tomllib)") from None
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--chip {path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--chip {path}: not valid TOML: {exc}") from None
    return Chip.from_dict(data, f"--chip {path}")
