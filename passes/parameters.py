"""Hardware parameters in aihwkit's shape: IO (DAC/ADC, forward noise), pre/post
processing, mapping, and the weight modifier of hardware-aware training.

Field names, defaults and meanings follow aihwkit's ``IOParameters``,
``InputRangeParameter``, ``PrePostProcessingParameter``, ``MappingParameter`` and
``WeightModifierParameter``
so that aihwkit users recognise them. Only the fields xbar simulates exist; each
class validates itself and raises :class:`ConfigError` for values that cannot mean
anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from .errors import ConfigError


class NoiseManagementType(Enum):
    """Dynamic input scaling before the DAC (aihwkit's enum; xbar simulates NONE, ABS_MAX, MAX and CONSTANT,
    see :mod:`xbar.passes.numerics.management`)."""

    NONE = "None"
    ABS_MAX = "AbsMax"
    ABS_MAX_NP_SUM = "AbsMaxNPSum"
    MAX = "Max"
    CONSTANT = "Constant"
    AVERAGE_ABS_MAX = "AverageAbsMax"


class BoundManagementType(Enum):
    """Output-bound management (aihwkit's enum; xbar simulates NONE, ITERATIVE and ITERATIVE_WORST_CASE, which
    aihwkit's torch tile computes alike)."""

    NONE = "None"
    ITERATIVE = "Iterative"
    ITERATIVE_WORST_CASE = "IterativeWorstCase"
    SHIFT = "Shift"


class WeightNoiseType(Enum):
    """Weight read noise of the forward pass (aihwkit's enum; xbar simulates NONE and PCM_READ)."""

    NONE = "None"
    PCM_READ = "PCMRead"


class WeightModifierType(Enum):
    """Noise added to the weights in training forward passes (aihwkit's names; the simulated members).

    With ``amax`` the array's ``max|W|`` (per output channel for the per-channel
    type; ``assumed_wmax`` unless ``rel_to_actual_wmax``) and ``N`` standard normal:

    * ADD_NORMAL, ADD_NORMAL_PER_CHANNEL: ``W + std_dev * amax * N``;
    * POLY: ``W + amax * std_dev * P(|W| / amax) * N`` with ``P(a) = sum_k coeffs[k] a**k``;
    * PROG_NOISE (programming noise): ``sign(W) * |W + amax * (std_dev / g_max) * P(|W| / amax) * N|``,
      the noise mirrored at zero so a weight keeps its sign; with
      ``coeffs = (0.26348, 1.9650, -1.1731)`` (microsiemens) and ``std_dev = 1`` it is
      the PCM programming noise of one device at ``g_max``.

    aihwkit's other types (MultNormal, the discretising ones, DoReFa, and PCMNoise,
    its drift and read model at ``pcm_t_inference``) are not simulated.
    """

    NONE = "None"
    ADD_NORMAL = "AddNormal"
    ADD_NORMAL_PER_CHANNEL = "AddNormalPerChannel"
    POLY = "Poly"
    PROG_NOISE = "ProgNoise"


class ConvRangeElements(Enum):
    """What a convolution's input range takes as its elements (xbar's name for a choice aihwkit does not offer).

    * PATCHES (the reference, aihwkit's): the array's unfolded input, one patch per
      output position (a group's channels times the kernel taps, padding zeros
      included), so a pixel counts once per patch it falls in: the std of the
      init from data, the gradient's sum over clipped elements (each with its own
      gradient) and the decay's unclipped fraction are over patch elements;
    * PIXELS (xbar's extension): the convolution's input values, each once (the
      rule a linear layer's range follows, applied to the raw input).

    Linear layers see no patches: both give the same there.
    """

    PATCHES = "Patches"
    PIXELS = "Pixels"


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

    Defaults describe an ideal, noise-free periphery (xbar's default, unlike
    aihwkit's noisy 7/9-bit default with ``out_noise = 0.06``): set ``inp_res``,
    ``out_res`` and ``out_bound`` for a real chip, or pick a preset. ``out_noise``
    and ``w_noise`` are training noise: they act in training forward passes only
    (unless ``modifier.enable_during_test``), never in the converted model.

    ``ir_drop`` > 0 (aihwkit's StandardHWATrainingPreset sets 1.0) simulates aihwkit's time-stepped IR-drop
    model (its torch IR-drop tile; :mod:`xbar.passes.numerics.ir_drop`) on converted linear and
    convolution arrays (a convolution's on its unfolded patches), with ``ir_drop_*``, ``adc_quantization`` and
    ``adc_frequency`` (aihwkit's names and defaults, read only with IR drop).
    Like aihwkit, which switches it off in training, the prepared (trainable) graph never
    simulates it, in training or in eval mode: only the converted model does.
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
    """Dynamic input scaling before the DAC, undone after the ADC (NONE, ABS_MAX, MAX, CONSTANT)."""
    bound_management: BoundManagementType = BoundManagementType.NONE
    """Halve the input and read again while the ADC clips (NONE, ITERATIVE, ITERATIVE_WORST_CASE)."""
    nm_thres: float = 0.0
    """Noise management's ceiling on the ABS_MAX / MAX scale, CONSTANT's scale (0: none; CONSTANT then 1)."""
    max_bm_factor: int = 1000
    """Bound management stops once the input has been divided by more than this."""
    max_bm_res: float = 0.25
    """... or by more than ``max_bm_res`` DAC steps' worth (``max_bm_res * dac_steps / 2``; with a DAC only)."""
    out_noise: float = 0.0
    """Std of Gaussian noise added to ``I / (g_max - g_min)`` before the ADC (training only)."""
    w_noise: float = 0.0
    """Weight read noise scale (training only), shaped by ``w_noise_type``."""
    w_noise_type: WeightNoiseType = WeightNoiseType.NONE
    """PCM_READ: ``y_i += w_noise * sqrt(sum_j |w_ij| x_j**2) * N``, w in units of max|W|."""
    ir_drop: float = 0.0
    """Scale of the wire resistance of aihwkit's time-stepped IR-drop model, converted model only (0: none)."""
    ir_drop_rs: float = 0.15
    """Wire resistance (Ohm) from one row's cell to the next, scaled by ``ir_drop``."""
    ir_drop_segments: int = 8
    """Segments a column's rows are lumped into (must divide the array's rows)."""
    ir_drop_time_step_resolution_scale: float = 1.0
    """Samples of one read: ``int((dac_steps + 2) / 2 * this)``."""
    ir_drop_v_read: float = 0.4005
    """The ADC's read voltage (V) the column current is taken against."""
    ir_drop_integration_sum: bool = False
    """Integrate the column current by a plain sum of its samples instead of aihwkit's trapezoid rule."""
    adc_quantization: bool = True
    """With IR drop only: count the column charge in whole ticks of ``100 / adc_frequency`` (aihwkit's CCO)."""
    adc_frequency: float = 6.24
    """With IR drop only: the current-controlled oscillator's frequency (GHz) of ``adc_quantization``."""

    @property
    def output_noise(self) -> bool:
        """Whether training forward passes add out_noise or w_noise to the array's output."""
        return not self.is_perfect and (self.out_noise > 0 or self.read_noise > 0)

    @property
    def read_noise(self) -> float:
        """The PCM read-noise scale, or 0 when off."""
        return self.w_noise if self.w_noise_type == WeightNoiseType.PCM_READ and not self.is_perfect else 0.0

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

    def __post_init__(self):
        self.check_values()  # refused when built, not first when a model is prepared

    def check_values(self) -> None:
        """Raise :class:`ConfigError` for settings that cannot mean anything (checked when built)."""
        if not isinstance(self.noise_management, NoiseManagementType):
            raise ConfigError(f"forward.noise_management must be one of "
                              f"{[m.name for m in NoiseManagementType]}, got {self.noise_management!r}")
        if not isinstance(self.bound_management, BoundManagementType):
            raise ConfigError(f"forward.bound_management must be one of "
                              f"{[m.name for m in BoundManagementType]}, got {self.bound_management!r}")
        if not isinstance(self.w_noise_type, WeightNoiseType):
            raise ConfigError(f"forward.w_noise_type must be one of "
                              f"{[m.name for m in WeightNoiseType]}, got {self.w_noise_type!r}")
        for name in ("out_noise", "w_noise", "nm_thres"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"forward.{name} must be >= 0, got {getattr(self, name)}")
        self._check_ir_drop()
        if isinstance(self.max_bm_factor, bool) or not isinstance(self.max_bm_factor, int) or self.max_bm_factor < 1:
            raise ConfigError(f"forward.max_bm_factor must be an integer >= 1, got {self.max_bm_factor!r}")
        if not self.max_bm_res > 0:
            raise ConfigError(f"forward.max_bm_res must be > 0, got {self.max_bm_res}")
        if self.w_noise > 0 and self.w_noise_type == WeightNoiseType.NONE:
            raise ConfigError(f"forward.w_noise={self.w_noise} needs forward.w_noise_type = PCM_READ "
                              "(or set w_noise to 0)")
        if self.adc_steps and self.bound <= 0:
            raise ConfigError(f"forward.out_res={self.out_res} needs forward.out_bound > 0: "
                              "an ADC's steps span [-out_bound, out_bound]")

    def _check_ir_drop(self) -> None:
        for name in ("ir_drop", "ir_drop_rs"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"forward.{name} must be >= 0, got {getattr(self, name)}")
        if not self.adc_frequency > 0:
            raise ConfigError(f"forward.adc_frequency must be > 0, got {self.adc_frequency}")
        if not self.ir_drop_time_step_resolution_scale > 0:
            raise ConfigError("forward.ir_drop_time_step_resolution_scale must be > 0, got "
                              f"{self.ir_drop_time_step_resolution_scale}")
        segments = self.ir_drop_segments
        if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
            raise ConfigError(f"forward.ir_drop_segments must be an integer >= 1, got {segments!r}")

    @property
    def managed(self) -> bool:
        """Whether noise or bound management acts (never on a perfect periphery, as in aihwkit)."""
        return not self.is_perfect and (self.noise_management != NoiseManagementType.NONE
                                        or self.bound_management != BoundManagementType.NONE)

    @property
    def managed_per_vector(self) -> bool:
        """Whether the management depends on the input vector or the call (ABS_MAX, MAX, any bound management):
        unlike CONSTANT, more than one scale per array."""
        return self.managed and (self.noise_management in (NoiseManagementType.ABS_MAX, NoiseManagementType.MAX)
                                 or self.bound_management != BoundManagementType.NONE)

    @property
    def scales_input(self) -> bool:
        """Whether noise management gives the DAC a scale of its own (ABS_MAX, MAX, CONSTANT with nm_thres > 0)."""
        nm = self.noise_management
        return nm in (NoiseManagementType.ABS_MAX, NoiseManagementType.MAX) or (
            nm == NoiseManagementType.CONSTANT and self.nm_thres > 0)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for settings that cannot mean anything or that xbar cannot simulate
        (aihwkit's stateful or special management types: accepted when built, refused when prepared)."""
        self.check_values()
        if self.is_perfect:
            return
        if self.noise_management in UNSIMULATED_NOISE_MANAGEMENT:
            raise ConfigError(
                f"forward.noise_management={self.noise_management.name} is not simulated by xbar "
                f"({UNSIMULATED_NOISE_MANAGEMENT[self.noise_management]}); choose ABS_MAX, MAX, CONSTANT or NONE")
        if self.bound_management == BoundManagementType.SHIFT:
            raise ConfigError("forward.bound_management=SHIFT is not simulated by xbar (nor by aihwkit's torch "
                              "tile); choose ITERATIVE, ITERATIVE_WORST_CASE or NONE")


UNSIMULATED_NOISE_MANAGEMENT = {
    NoiseManagementType.AVERAGE_ABS_MAX: "its scale is a running average of the abs max over the inputs of "
                                         "training, which only aihwkit's C++ tiles keep (its torch tile refuses "
                                         "it); in evaluation it is one fixed scale per array: CONSTANT with "
                                         "nm_thres set to that value",
    NoiseManagementType.ABS_MAX_NP_SUM: "aihwkit's torch tile refuses it too",
}
"""The noise-management types xbar refuses, and why."""


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
    ``xbar.passes.numerics.input_range``) and initialised from the standard deviation of the
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
    conv_elements: ConvRangeElements = ConvRangeElements.PATCHES
    """A convolution's range statistics over its patches (aihwkit's) or, as an xbar extension, its pixels;
    see :class:`ConvRangeElements`."""
    calibration_info: Optional[str] = None
    """aihwkit's information field for post-training calibrations; xbar leaves it as given and keeps
    what its calibration found in the compile record instead (a config describes hardware, not results)."""

    def supports_manage_output_clipping(self, rpu_config: Any) -> bool:
        """Whether ``rpu_config``'s forward periphery allows ``manage_output_clipping``."""
        forward = getattr(rpu_config, "forward", None)
        if not isinstance(forward, IOParameters) or forward.is_perfect:
            return False
        return (forward.noise_management == NoiseManagementType.NONE
                and forward.bound_management == BoundManagementType.NONE)

    def __post_init__(self):
        self.validate()  # refused when built, not first when a model is prepared

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot mean anything."""
        owner = "pre_post.input_range"
        if not isinstance(self.conv_elements, ConvRangeElements):
            raise ConfigError(f"{owner}.conv_elements must be one of {[m.name for m in ConvRangeElements]}, "
                              f"got {self.conv_elements!r}")
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
    """How a layer's weight is laid out on physical arrays and scaled onto them (aihwkit's names).

    ``max_input_size`` / ``max_output_size`` are the array's rows and columns;
    0 means one array of any size (no tiling; xbar's default, aihwkit's is 512).

    Weight scaling (aihwkit's ``apply_weight_scaling``): each array stores the
    analog weights ``W' = W / alpha`` and multiplies its output by ``alpha`` in
    digital; the ADC's bound and steps and the training output noise count in
    units of ``W' x``. ``weight_scaling_omega > 0`` sets ``alpha = max|W| / omega``
    (per output column with ``weight_scaling_columnwise``; an all-zero one gets 1);
    ``omega = 0`` (aihwkit's default) scales nothing (``alpha = 1``: the ADC sees
    ``W x`` in weight units). xbar's default is omega 1 with
    ``weight_scaling_dynamic``: ``alpha`` is re-derived from the current weights
    at every forward (as if remapped before each one), so the ADC counts in units
    of ``max|W|``. With ``weight_scaling_dynamic = False`` (aihwkit's behaviour)
    ``alpha`` is derived once, when the model is prepared (aihwkit's
    ``set_weights``), and changed after that only by ``remap``. The conductance
    converter maps each array's analog weights, one scale ratio per array
    (with ``weight_scaling_columnwise``, effectively one per column).

    ``learn_out_scaling`` adds a learned digital output scale per array (one, or
    one per output column with ``out_scaling_columnwise``), initialised to 1 and
    trained by ``fine_tune`` with the weights (aihwkit's ``out_scaling_alpha``).
    ``digital_bias`` (True, aihwkit's default) adds the bias in digital after the
    scales; an analog bias column is not simulated.
    """

    max_input_size: int = 0
    max_output_size: int = 0
    weight_scaling_columnwise: bool = False
    """One scale alpha per output column instead of one per array."""
    weight_scaling_omega: float = 1.0
    """The analog weight max|W'| that max|W| is scaled to; 0: no scaling (aihwkit's default 0; xbar's 1)."""
    weight_scaling_dynamic: bool = True
    """xbar extension: re-derive alpha from the weights at every forward (True) or keep aihwkit's stored one."""
    learn_out_scaling: bool = False
    """Learn a digital output scale per array (aihwkit's ``out_scaling_alpha``)."""
    out_scaling_columnwise: bool = False
    """One learned output scale per output column instead of one per array."""
    digital_bias: bool = True
    """Add the bias in digital (True, aihwkit's default); False (an analog bias column) is not simulated."""

    def __post_init__(self):
        self.validate()  # refused when built, not first when a model is prepared

    def validate(self) -> None:
        for name in ("max_input_size", "max_output_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"mapping.{name} must be an integer >= 0 (0 = no tiling), got {value!r}")
        if not self.weight_scaling_omega >= 0:
            raise ConfigError(f"mapping.weight_scaling_omega must be >= 0 (0 = no weight scaling), "
                              f"got {self.weight_scaling_omega}")
        if self.out_scaling_columnwise and not self.learn_out_scaling:
            raise ConfigError("mapping.out_scaling_columnwise needs mapping.learn_out_scaling = true")
        if not self.digital_bias:
            raise ConfigError("mapping.digital_bias = false (the bias as an analog column) is not simulated; "
                              "set it to true (the bias is added in digital)")


@dataclass
class WeightModifierParameter:
    """Noise on the weights in training forward passes: hardware-aware training.

    aihwkit's names and defaults (type NONE: no noise). Drawn afresh every
    forward per array, added straight through (the gradient reaches the clean
    weight); off in eval unless ``enable_during_test``,
    which keeps all of xbar's training noise (this and ``forward.out_noise`` /
    ``forward.w_noise``) on in eval too. See :class:`WeightModifierType` for the formulas.
    """

    type: WeightModifierType = WeightModifierType.NONE
    """Which noise; NONE turns the modifier off."""
    std_dev: float = 0.0
    """Noise scale, relative to amax (divided by ``g_max`` for PROG_NOISE)."""
    rel_to_actual_wmax: bool = True
    """amax is the array's (or channel's) max|W|; otherwise ``assumed_wmax``."""
    assumed_wmax: float = 1.0
    """The amax used when ``rel_to_actual_wmax`` is False."""
    enable_during_test: bool = False
    """Keep the training noise on in eval mode (calibration stays noise-free)."""
    coeffs: tuple[float, ...] = (0.0105392, 0.0768, -0.046925)
    """Polynomial coefficients of POLY and PROG_NOISE, constant term first."""
    g_max: float = 25.0
    """PROG_NOISE: the conductance (uS) that ``coeffs`` are relative to."""

    @property
    def active(self) -> bool:
        return self.type != WeightModifierType.NONE and self.std_dev > 0

    @property
    def per_channel(self) -> bool:
        return self.type == WeightModifierType.ADD_NORMAL_PER_CHANNEL

    def __post_init__(self):
        self.validate()  # refused when built, not first when a model is prepared

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot mean anything."""
        if not isinstance(self.type, WeightModifierType):
            raise ConfigError(f"modifier.type must be one of {[m.name for m in WeightModifierType]}, "
                              f"got {self.type!r}")
        if not self.std_dev >= 0:
            raise ConfigError(f"modifier.std_dev must be >= 0, got {self.std_dev}")
        for name in ("assumed_wmax", "g_max"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"modifier.{name} must be > 0, got {getattr(self, name)}")
        if not self.coeffs or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)
                                      for c in self.coeffs):
            raise ConfigError(f"modifier.coeffs must be a non-empty list of finite numbers, got {self.coeffs!r}")
