"""The settings of one crossbar array, and the float32 constants its periphery computes with.

Plain data, no torch: the ONNX export writes them as node attributes, and
``xbar inspect`` reads them back from a file without loading torch.
"""

from __future__ import annotations

import struct
import typing
from dataclasses import asdict, dataclass, fields

NOISE_MANAGEMENT_MODES = {"NONE": 0, "ABS_MAX": 1, "MAX": 2, "CONSTANT": 3}
"""Simulated ``noise_management`` name -> the code of the ``nm_mode`` constant."""
DYNAMIC_MODES = (NOISE_MANAGEMENT_MODES["ABS_MAX"], NOISE_MANAGEMENT_MODES["MAX"])
"""The modes whose scale depends on the input (each vector its own); CONSTANT alone is folded into the
array's constants (:class:`CrossbarSettings`)."""


def bound_management_rounds(bound_management: str, max_bm_factor: int, max_bm_res: float, dac_steps: float) -> int:
    """How many reads bound management makes at most (1 without it): reduction 1, 2, 4, ... up to the first one
    past ``max_bm_factor`` or, with a DAC, past ``max_bm_res * dac_steps / 2``."""
    if bound_management == "NONE":
        return 1
    limit = min(max_bm_factor, max_bm_res * dac_steps / 2) if dac_steps else max_bm_factor
    rounds, reduction = 1, 1.0
    while not reduction > limit:
        reduction *= 2
        rounds += 1
    return rounds


IR_DROP_LOW_VOLTAGE = 0.2
"""The IR-drop model's low row voltage (V), the unit its column charge is counted in (:mod:`.ir_drop`)."""


def f32(value: float) -> float:
    """Round a Python float to the nearest float32 value (no tensor, so a compiler traces it)."""
    return struct.unpack("f", struct.pack("f", value))[0]


@dataclass(frozen=True)
class CrossbarSettings:
    """Everything a backend needs to program one array and its periphery.

    Primary fields describe the hardware; the derived float32 constants
    (:meth:`constants`) are what the simulation and the ONNX body compute with.
    ``tile_row`` / ``tile_col`` place the array in its layer's grid of arrays.
    ``column_scale_ratios`` (an xbar extension, empty by default) gives each
    output column its own scale ratio, which then replaces ``scale_ratio``.
    ``drift_gain`` (1 by default) is the digital gain drift compensation applies
    to the ADC codes; it is folded into ``out_scale``, so ``z * out_scale`` (one
    float32 multiply, in PyTorch and in an ONNX body alike) applies it bit for
    bit. ``column_drift_gains`` (empty by default) is its per-column form; both
    per-column forms are folded into the constant ``column_out_scale``. ``column_offsets`` (empty by
    default; float32 values) is what recalibration adds to each output column after the rescale and the
    bias, in the layer's output units: with ``column_drift_gains`` the per-column affine correction a
    digital periphery applies to the ADC output.
    ``noise_management``, ``nm_thres``, ``bound_management``, ``max_bm_factor`` and
    ``max_bm_res`` are aihwkit's forward fields (:mod:`.management`; the names of the
    enum members), derived into the constants ``nm_mode`` and ``bm_rounds``; CONSTANT noise
    management without bound management is one scale per array, folded into ``input_clip``,
    ``in_scale`` and ``out_scale``. ``ir_drop`` (0: none) and the ``ir_drop_*`` fields are aihwkit's
    forward fields of its time-stepped IR-drop model (:mod:`.ir_drop`); ``ir_drop_rows`` is the
    physical array's rows its input is padded to, ``ir_drop_integration_sum`` and ``adc_quantization``
    0 or 1 (``adc_quantization`` and ``adc_frequency`` act with IR drop only, as in aihwkit); without IR
    drop every one of them is 0, with it the floats are float32 values (what a file holds).

    No bound, no converter, no range is 0, in every field and constant:
    ``input_range == 0`` means no input range (no clip, r = 1), ``dac_steps`` /
    ``adc_steps == 0`` ideal converters, ``out_bound == 0`` no ADC clip, and the
    constants ``input_clip`` / ``dac_clip`` / ``adc_clip == 0`` no clip.
    (aihwkit's ``<= 0`` spelling in the config is read as 0 by :class:`IOParameters`.)
    """

    layer: str
    input_range: float
    scale_ratio: float
    g_min: float
    g_max: float
    dac_steps: float
    adc_steps: float
    out_bound: float
    tile_row: int = 0
    tile_col: int = 0
    drift_gain: float = 1.0
    column_scale_ratios: tuple[float, ...] = ()
    column_drift_gains: tuple[float, ...] = ()
    column_offsets: tuple[float, ...] = ()
    mapped_wmax: float = 1.0
    out_scales: tuple[float, ...] = ()
    noise_management: str = "NONE"
    nm_thres: float = 0.0
    bound_management: str = "NONE"
    max_bm_factor: int = 1000
    max_bm_res: float = 0.25
    ir_drop: float = 0.0
    ir_drop_rs: float = 0.0
    ir_drop_segments: int = 0
    ir_drop_time_step_resolution_scale: float = 0.0
    ir_drop_v_read: float = 0.0
    ir_drop_integration_sum: int = 0
    ir_drop_rows: int = 0
    adc_quantization: int = 0
    adc_frequency: float = 0.0

    def __post_init__(self):
        # derived once, when the settings are made: a compiler then reads plain attributes
        constants = self._derive_constants()
        constants["column_out_scale"] = self._derive_column_out_scale(constants["out_scale"])
        object.__setattr__(self, "_constants", constants)

    @property
    def constants(self) -> dict:
        """The float32 constants of the module docstring, plus rounding flags and the per-column
        ``out_scale`` (empty: ``out_scale`` for every column)."""
        return self._constants

    def _constant_management(self) -> tuple[float, float]:
        """CONSTANT noise management without bound management, folded into the periphery: its scale ``c``
        (nm_thres, or 1) and the input clip that ``clamp(clip(x, -r, r) / r / c, -1, 1)`` amounts to."""
        if self.noise_management != "CONSTANT" or self.bound_management != "NONE":
            return 1.0, self.input_range
        scale = self.nm_thres or 1.0
        return scale, self.input_range * min(1.0, scale) if self.input_range else scale

    def _derive_constants(self) -> dict:
        nm, input_clip = self._constant_management()
        r = self.input_range or 1.0
        h_in = self.dac_steps / 2 if self.dac_steps else 0.0
        h_out = self.adc_steps / 2 if self.adc_steps else 0.0
        bound = self.out_bound
        g_span = self.g_max - self.g_min
        in_unit = 1.0 / h_in if h_in else 1.0
        adc_unit = bound / h_out if h_out else 1.0
        return {
            "input_clip": f32(input_clip) if input_clip else 0.0,
            "in_scale": f32((h_in or 1.0) / r / nm),
            "dac_round": int(bool(h_in)),
            "dac_clip": f32(h_in) if h_in else 0.0,
            "adc_scale": f32(in_unit / g_span * self.mapped_wmax / adc_unit),
            "adc_round": int(bool(h_out)),
            "adc_clip": f32(bound / adc_unit) if bound else 0.0,
            "out_scale": f32(adc_unit * r * g_span / self.scale_ratio / self.mapped_wmax * self.drift_gain
                              * (self.out_scales[0] if len(self.out_scales) == 1 else 1.0) * nm),
            "nm_mode": NOISE_MANAGEMENT_MODES[self.noise_management],
            "bm_rounds": bound_management_rounds(self.bound_management, self.max_bm_factor, self.max_bm_res,
                                                 self.dac_steps),
        } | self._ir_drop_constants(in_unit / g_span * self.mapped_wmax / adc_unit)

    def _ir_drop_constants(self, adc_scale: float) -> dict:
        """The IR-drop model's samples per read, the ADC's tick (the conductances' multiplier) and the
        tick-count-to-ADC-code multiplier (:mod:`.ir_drop`); all 0 without IR drop."""
        if not self.ir_drop_active:
            return {"ir_drop_steps": 0, "ir_drop_tick": 0.0, "ir_drop_adc_scale": 0.0}
        tick = IR_DROP_LOW_VOLTAGE * self.adc_frequency / 100 if self.adc_quantization else 1.0
        return {"ir_drop_steps": int((self.dac_steps + 2) / 2 * self.ir_drop_time_step_resolution_scale),
                "ir_drop_tick": f32(tick), "ir_drop_adc_scale": f32(f32(adc_scale) / tick)}

    def _derive_column_out_scale(self, out_scale: float) -> tuple[float, ...]:
        """float32 values, computed without tensors (under a tracer's fake mode, a tensor has no values)."""
        learned = self.out_scales if len(self.out_scales) > 1 else ()
        columns = len(self.column_scale_ratios or self.column_drift_gains or learned)
        if not columns:
            return ()
        if self.column_scale_ratios:
            scales = [out_scale * self.scale_ratio / s for s in self.column_scale_ratios]
        else:
            scales = [out_scale] * columns
        for factors in (self.column_drift_gains, learned):
            if factors:
                scales = [scale * factor for scale, factor in zip(scales, factors)]
        return tuple(f32(scale) for scale in scales)

    @property
    def ir_drop_active(self) -> bool:
        """Whether the array simulates IR drop (:mod:`.ir_drop`)."""
        return self.ir_drop > 0

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def hardware_fields(cls) -> dict[str, type]:
        """Name -> type of every field, in field order: the custom ops' and the ONNX nodes' hardware arguments."""
        types = typing.get_type_hints(cls)
        return {f.name: types[f.name] for f in fields(cls)}

    def hardware(self) -> dict:
        """The values of :meth:`hardware_fields`, in field order."""
        return {name: getattr(self, name) for name in self.hardware_fields()}
