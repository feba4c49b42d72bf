"""The converted crossbar layer: one call from input to output on G+ and G-.

:func:`run_crossbar` runs the hardware model (README, "The hardware model") of
one array on conductances, in the units a backend programs, around its layer
kind's canonical op:

    q = clip(x, -r, r) * in_scale            DAC codes (rounded, clipped to +-h_in)
    z = ((G+ - G-) * adc_scale) q            ADC codes (rounded, clipped to +-z_max)
    y = z * out_scale + bias                 digital rescale

With ``in_scale = h_in / r``, ``adc_scale = 1 / (h_in (g_max - g_min)) * h_out / B``
and ``out_scale = B / h_out * r * (g_max - g_min) / s`` this is exactly
``y = ADC(DAC(clip(x) / r) (G+ - G-) / (g_max - g_min)) r (g_max - g_min) / s + b``
(h = steps / 2; a missing DAC, ADC or range contributes a factor 1). The
scalars are computed once, in float32, by :class:`CrossbarSettings`, so the
ONNX function body and PyTorch use bit-identical constants.
"""

from __future__ import annotations

import struct
import typing
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

import torch
from torch import Tensor, fx, nn

from ..kinds.base import LayerKind
from .management import DYNAMIC_MODES, NOISE_MANAGEMENT_MODES, bound_management_rounds, managed_codes


def _f32(value: float) -> float:
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
    per-column forms are folded into the constant ``column_out_scale``.
    ``noise_management``, ``nm_thres``, ``bound_management``, ``max_bm_factor`` and
    ``max_bm_res`` are aihwkit's forward fields (:mod:`.management`; the names of the
    enum members), derived into the constants ``nm_mode`` and ``bm_rounds``; CONSTANT noise
    management without bound management is one scale per array, folded into ``input_clip``,
    ``in_scale`` and ``out_scale``.

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
    noise_management: str = "NONE"
    nm_thres: float = 0.0
    bound_management: str = "NONE"
    max_bm_factor: int = 1000
    max_bm_res: float = 0.25

    def __post_init__(self):
        # derived once, when the settings are made: a compiler then reads plain attributes
        constants = self._derive_constants()
        constants["column_out_scale"] = self._derive_column_out_scale(constants["out_scale"])
        columns = constants["column_out_scale"]
        column_out_scale = torch.tensor(columns, dtype=torch.float32) if columns else None
        object.__setattr__(self, "_constants", constants)
        object.__setattr__(self, "_column_out_scale", column_out_scale)

    @property
    def constants(self) -> dict:
        """The float32 constants of the module docstring, plus rounding flags and the per-column
        ``out_scale`` (empty: ``out_scale`` for every column)."""
        return self._constants

    @property
    def column_out_scale(self) -> Optional[Tensor]:
        """The constant ``column_out_scale`` as a float32 tensor, or None for one scale ratio and gain per array."""
        return self._column_out_scale

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
            "input_clip": _f32(input_clip) if input_clip else 0.0,
            "in_scale": _f32((h_in or 1.0) / r / nm),
            "dac_round": int(bool(h_in)),
            "dac_clip": _f32(h_in) if h_in else 0.0,
            "adc_scale": _f32(in_unit / g_span / adc_unit),
            "adc_round": int(bool(h_out)),
            "adc_clip": _f32(bound / adc_unit) if bound else 0.0,
            "out_scale": _f32(adc_unit * r * g_span / self.scale_ratio * self.drift_gain * nm),
            "nm_mode": NOISE_MANAGEMENT_MODES[self.noise_management],
            "bm_rounds": bound_management_rounds(self.bound_management, self.max_bm_factor, self.max_bm_res,
                                                 self.dac_steps),
        }

    def _derive_column_out_scale(self, out_scale: float) -> tuple[float, ...]:
        """float32 values, computed without tensors (under a tracer's fake mode, a tensor has no values)."""
        if not self.column_scale_ratios and not self.column_drift_gains:
            return ()
        if self.column_scale_ratios:
            scales = [out_scale * self.scale_ratio / s for s in self.column_scale_ratios]
        else:
            scales = [out_scale] * len(self.column_drift_gains)
        if self.column_drift_gains:
            scales = [scale * gain for scale, gain in zip(scales, self.column_drift_gains)]
        return tuple(_f32(scale) for scale in scales)

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


def _periphery_in(x: Tensor, c: dict) -> Tensor:
    """Clip, scale and (with a DAC) round the input: one new tensor, then in place."""
    if c["input_clip"]:
        x = torch.clamp(x, -c["input_clip"], c["input_clip"])
        if c["in_scale"] != 1.0:
            x.mul_(c["in_scale"])
    elif c["in_scale"] != 1.0:
        x = x * c["in_scale"]
    else:
        return x  # no range and no DAC (a DAC needs a range): nothing to do
    if c["dac_round"]:
        x.round_()
        if not float(c["dac_clip"]).is_integer():  # an integer bound cannot be rounded past
            x.clamp_(-c["dac_clip"], c["dac_clip"])
    return x


def adc_weight(g_plus: Tensor, g_minus: Tensor, settings: CrossbarSettings) -> Tensor:
    """``(G+ - G-) * adc_scale``: the array maps DAC codes straight to ADC codes."""
    return (g_plus - g_minus).mul_(settings.constants["adc_scale"])


def _periphery_out(z: Tensor, bias: Optional[Tensor], settings: CrossbarSettings, channel_dim: int,
                   out_scale: Optional[Tensor] = None) -> Tensor:
    """Round and clip the ADC codes ``z`` in place, scale back, add the bias.

    ``out_scale`` (a float32 tensor of the settings' value) replaces the settings'
    scale when given: the same multiply, but a compiled graph takes it as an input.
    """
    c = settings.constants
    if c["adc_round"]:
        z = z.round_()
    if c["adc_clip"]:
        z = z.clamp_(-c["adc_clip"], c["adc_clip"])
    return _rescale(z, bias, settings, channel_dim, out_scale)


def _rescale(z: Tensor, bias: Optional[Tensor], settings: CrossbarSettings, channel_dim: int,
             out_scale: Optional[Tensor] = None) -> Tensor:
    """Multiply the ADC codes ``z`` by ``out_scale`` and add the bias, in place."""
    c = settings.constants
    per_column = settings.column_out_scale if out_scale is None else out_scale
    if per_column is None:
        z = z.mul_(c["out_scale"])
    elif per_column.dim() == 0 or channel_dim == -1:
        z = z.mul_(per_column)
    else:
        z = z.mul_(per_column.view(-1, *([1] * (z.dim() - 2))))
    if bias is None:
        return z
    if channel_dim != -1:
        bias = bias.view(-1, *([1] * (z.dim() - 2)))
    return z.add_(bias)  # not add(alpha=): that fuses multiply and add, which ONNX's Mul, Add do not


def run_crossbar(kind: LayerKind, x: Tensor, weight: Tensor, bias: Optional[Tensor], settings: CrossbarSettings,
                 geometry: Any, out_scale: Optional[Tensor] = None) -> Tensor:
    """One array of ``kind``: ``weight`` = :func:`adc_weight`, shaped like the layer's weight block;
    ``out_scale`` as :func:`_periphery_out` takes it; with noise or bound management, :mod:`.management`'s
    reads."""
    c = settings.constants
    if c["nm_mode"] in DYNAMIC_MODES or c["bm_rounds"] > 1:
        return _rescale(managed_codes(kind, x, weight, settings, geometry), bias, settings, kind.channel_dim,
                        out_scale)
    codes = kind.mvm(_periphery_in(x, c), weight, geometry)
    return _periphery_out(codes, bias, settings, kind.channel_dim, out_scale)


class Crossbar(nn.Module):
    """One converted crossbar array: G+ / G- buffers, the digital bias, the periphery.

    ``kind`` and ``geometry`` (the kind's; None for a linear layer) say which op the
    array computes. ``source_weight`` names the original parameter, so the
    conductances can be traced back to it.

    The array keeps :func:`adc_weight` of its buffers and its ``out_scale`` as
    tensors. Eagerly, the weight is re-derived whenever G+ or G- changed (even in
    place). Under ``torch.compile`` both are read as they are, so they are kept
    current whenever G+, G- or the settings are assigned or loaded
    (:meth:`refresh`); after editing G+ or G- in place, call :meth:`refresh`
    before running a compiled model again.
    """

    _DERIVED_FROM = frozenset({"g_plus", "g_minus", "settings"})

    def __init__(self, g_plus: Tensor, g_minus: Tensor, bias: Optional[Tensor], settings: CrossbarSettings,
                 kind: LayerKind, geometry: Any, source_weight: str):
        super().__init__()
        self._adc_weight, self._adc_weight_key, self._out_scale = None, None, None
        self.register_buffer("g_plus", g_plus)
        self.register_buffer("g_minus", g_minus)
        self.register_buffer("bias", bias)
        self.settings = settings
        self.kind = kind
        self.geometry = geometry
        self.source_weight = source_weight

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if name in self._DERIVED_FROM:
            self.refresh()

    def register_buffer(self, name: str, tensor: Optional[Tensor], persistent: bool = True) -> None:
        super().register_buffer(name, tensor, persistent)
        if name in self._DERIVED_FROM:
            self.refresh()

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.refresh()

    def refresh(self) -> None:
        """Re-derive the ADC weight and the out_scale tensor from the buffers and settings, in place
        where the shapes allow (a compiled graph keeps reading the same tensors)."""
        if not all(name in self.__dict__ or name in self._buffers for name in self._DERIVED_FROM):
            return  # still being built
        self._adc_weight_key = None
        self.adc_weight()
        scale = self.settings.column_out_scale
        if scale is None:
            scale = torch.tensor(self.settings.constants["out_scale"], dtype=torch.float32)
        if self._out_scale is not None and self._out_scale.shape == scale.shape:
            self._out_scale.copy_(scale)
        else:
            self._out_scale = scale.clone()

    @torch.no_grad()
    def load_array(self, other: "Crossbar") -> None:
        """Take ``other``'s conductances, bias, ADC weight and out_scale, in place (same array, other
        devices or gains: a programmed or drifted copy), so a compiled graph reading this array runs
        ``other``. A per-column out_scale here takes a global one there, not the reverse."""
        for mine, theirs in ((self.g_plus, other.g_plus), (self.g_minus, other.g_minus), (self.bias, other.bias),
                             (self._adc_weight, other.adc_weight()), (self._out_scale, other._out_scale)):
            if mine is not None:
                mine.copy_(theirs)
        self._adc_weight_key = None  # eagerly, the next call re-derives the weight from the buffers

    def adc_weight(self) -> Tensor:
        """:func:`adc_weight` of the buffers, cached until G+ or G- changes."""
        key = (self.g_plus.data_ptr(), self.g_plus._version, self.g_minus.data_ptr(), self.g_minus._version)
        if self._adc_weight_key != key:
            with torch.no_grad():
                weight = adc_weight(self.g_plus, self.g_minus, self.settings)
                if self._adc_weight is not None and self._adc_weight.shape == weight.shape:
                    weight = self._adc_weight.copy_(weight)
                self._adc_weight = weight
            self._adc_weight_key = key
        return self._adc_weight

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():  # no version checks in a graph: the tensors as refresh() left them
            return run_crossbar(self.kind, x, self._adc_weight, self.bias, self.settings, self.geometry,
                                self._out_scale)
        return run_crossbar(self.kind, x, self.adc_weight(), self.bias, self.settings, self.geometry)

    def extra_repr(self) -> str:
        s = self.settings
        return (f"{self.kind.describe(self.g_plus.dim())}, {tuple(self.g_plus.shape)}, r={s.input_range:.4g}, "
                f"scale_ratio={s.scale_ratio:.4g}, dac_steps={s.dac_steps:g}, adc_steps={s.adc_steps:g}")


def crossbar_modules(graph_module: fx.GraphModule) -> dict[str, Crossbar]:
    """Module name -> Crossbar (an array shared by several call sites once)."""
    return {name: m for name, m in graph_module.named_modules() if isinstance(m, Crossbar)}
