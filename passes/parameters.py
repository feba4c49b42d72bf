"""Hardware parameters in aihwkit's shape: IO (DAC/ADC), pre/post processing, mapping.

Field names, defaults and meanings follow aihwkit's ``IOParameters``,
``InputRangeParameter``, ``PrePostProcessingParameter`` and ``MappingParameter``
so that aihwkit users recognise them. Only the fields xbar simulates exist; each
class validates itself and raises :class:`ConfigError` for values that cannot mean
anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from .errors import UserError


class ConfigError(UserError):
    """A hardware configuration that cannot be simulated or mapped."""


class NoiseManagementType(Enum):
    """Dynamic input scaling before the DAC (aihwkit's enum; xbar simulates NONE)."""

    NONE = "None"
    ABS_MAX = "AbsMax"
    ABS_MAX_NP_SUM = "AbsMaxNPSum"
    MAX = "Max"
    CONSTANT = "Constant"
    AVERAGE_ABS_MAX = "AverageAbsMax"


class BoundManagementType(Enum):
    """Output-bound management (aihwkit's enum; xbar simulates NONE)."""

    NONE = "None"
    ITERATIVE = "Iterative"
    ITERATIVE_WORST_CASE = "IterativeWorstCase"
    SHIFT = "Shift"


def _check_unit_interval(owner: str, name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{owner}.{name} must be in [0, 1], got {value}")


@dataclass
class IOParameters:
    """Forward-pass periphery of a crossbar: DAC, ADC and output bound.

    ``inp_res`` / ``out_res`` follow aihwkit: a value > 1 is a number of steps over
    the converter's full range, a value in (0, 1] is a resolution (1 / steps), and
    a value <= 0 means an ideal converter. The DAC spans [-1, 1] (the input range
    has already scaled the input there); the ADC spans [-out_bound, out_bound] in
    units of ``I / (g_max - g_min)``; ``out_bound <= 0`` means no output bound.

    Defaults describe an ideal periphery (xbar's default, unlike aihwkit's noisy
    7/9-bit default): set ``inp_res``, ``out_res`` and ``out_bound`` for a real
    chip, or pick a preset.
    """

    is_perfect: bool = False
    """No DAC, ADC or bound at all when True (aihwkit's meaning)."""
    inp_res: float = -1.0
    """DAC steps (> 1), resolution (0, 1], or ideal (<= 0)."""
    out_res: float = -1.0
    """ADC steps (> 1), resolution (0, 1], or ideal (<= 0)."""
    out_bound: float = -1.0
    """ADC clip level in units of I / (g_max - g_min); <= 0 means unbounded."""
    noise_management: NoiseManagementType = NoiseManagementType.NONE
    """Dynamic input scaling; only NONE is simulated (use the learned input range)."""
    bound_management: BoundManagementType = BoundManagementType.NONE
    """Iterative re-scaling on output clipping; only NONE is simulated."""

    @property
    def dac_steps(self) -> float:
        """Number of DAC steps over [-1, 1], or 0 for an ideal DAC."""
        return 0.0 if self.is_perfect else _steps(self.inp_res)

    @property
    def adc_steps(self) -> float:
        """Number of ADC steps over [-out_bound, out_bound], or 0 for an ideal ADC."""
        return 0.0 if self.is_perfect else _steps(self.out_res)

    @property
    def bound(self) -> float:
        """The ADC clip level, or 0 when the output is unbounded."""
        return 0.0 if self.is_perfect or self.out_bound <= 0 else float(self.out_bound)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for settings xbar cannot simulate."""
        if not isinstance(self.noise_management, NoiseManagementType):
            raise ConfigError(f"forward.noise_management must be one of "
                              f"{[m.name for m in NoiseManagementType]}, got {self.noise_management!r}")
        if not isinstance(self.bound_management, BoundManagementType):
            raise ConfigError(f"forward.bound_management must be one of "
                              f"{[m.name for m in BoundManagementType]}, got {self.bound_management!r}")
        if self.is_perfect:
            return
        if self.noise_management != NoiseManagementType.NONE:
            raise ConfigError(
                f"forward.noise_management={self.noise_management.name} is not simulated by xbar; "
                "set it to NONE and enable the learned input range (pre_post.input_range.enable)")
        if self.bound_management != BoundManagementType.NONE:
            raise ConfigError(
                f"forward.bound_management={self.bound_management.name} is not simulated by xbar; "
                "set it to NONE (the learned input range with manage_output_clipping replaces it)")
        if self.adc_steps and self.bound <= 0:
            raise ConfigError(f"forward.out_res={self.out_res} needs forward.out_bound > 0: "
                              "an ADC's steps span [-out_bound, out_bound]")


def _steps(res: float) -> float:
    """aihwkit's resolution convention: > 1 steps, (0, 1] resolution, <= 0 ideal."""
    if res <= 0:
        return 0.0
    return float(res) if res > 1 else 1.0 / float(res)


@dataclass
class InputRangeParameter:
    """The learned input range: a clip to [-r, r] before each crossbar layer.

    Behaves as aihwkit's parameter of the same name: ``enable=False`` means no
    clip; the range is learned with aihwkit's gradient rule (see
    ``xbar.passes.input_range``) and initialised from the standard deviation of the
    first ``init_from_data`` batches.
    """

    enable: bool = False
    """Whether to clip and scale the input by a (learned) range. Off: no clip."""
    learn_input_range: bool = True
    """Learn the range (a parameter); if False it is a buffer set by calibration."""
    init_value: float = 3.0
    """Initial range before any data has been seen."""
    init_from_data: int = 100
    """Number of batches that initialise the range from data; 0 turns it off."""
    init_std_alpha: float = 3.0
    """Multiplier of the batch standard deviation for the data initialisation."""
    decay: float = 0.001
    """Shrinks the range when few inputs clip: ``grad += decay * r``."""
    input_min_percentage: float = 0.95
    """The decay applies only when the fraction of unclipped inputs exceeds this."""
    manage_output_clipping: bool = False
    """Grow the range when the ADC clips (needs ``forward.out_bound > 0``)."""
    output_min_percentage: float = 0.95
    """Growth applies when the unclipped ADC-output fraction is below this:
    ``grad -= (1 - fraction) * r``."""
    gradient_scale: float = 1.0
    """Scales the range gradient (a learning-rate factor); relative branch only."""
    gradient_relative: bool = True
    """Make the range gradient relative to the current range (``grad *= r``)."""
    calibration_info: Optional[str] = None
    """Records the post-training calibration that set the range, if any."""

    def supports_manage_output_clipping(self, rpu_config: Any) -> bool:
        """Whether ``rpu_config``'s forward periphery allows ``manage_output_clipping``."""
        forward = getattr(rpu_config, "forward", None)
        if not isinstance(forward, IOParameters) or forward.is_perfect:
            return False
        return (forward.noise_management == NoiseManagementType.NONE
                and forward.bound_management == BoundManagementType.NONE)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot mean anything."""
        owner = "pre_post.input_range"
        if not self.init_value > 0:
            raise ConfigError(f"{owner}.init_value must be > 0, got {self.init_value}")
        if not isinstance(self.init_from_data, int) or self.init_from_data < 0:
            raise ConfigError(f"{owner}.init_from_data must be an integer >= 0, got {self.init_from_data!r}")
        for name in ("init_std_alpha", "decay", "gradient_scale"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{owner}.{name} must be >= 0, got {getattr(self, name)}")
        _check_unit_interval(owner, "input_min_percentage", self.input_min_percentage)
        _check_unit_interval(owner, "output_min_percentage", self.output_min_percentage)


@dataclass
class PrePostProcessingParameter:
    """Digital pre- and post-processing around the crossbar (the input range)."""

    input_range: InputRangeParameter = field(default_factory=InputRangeParameter)


@dataclass
class MappingParameter:
    """How a layer's weight is laid out on physical arrays.

    ``max_input_size`` / ``max_output_size`` are the array's rows and columns;
    0 means one array of any size (no tiling). ``weight_scaling_columnwise`` gives
    every output column its own scale ratio instead of the converter's one ratio
    per tile (off by default: the reference converter's behaviour).
    """

    max_input_size: int = 0
    max_output_size: int = 0
    weight_scaling_columnwise: bool = False

    def validate(self) -> None:
        for name in ("max_input_size", "max_output_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"mapping.{name} must be an integer >= 0 (0 = no tiling), got {value!r}")
