"""The converted crossbar layer: one call from input to output on G+ and G-.

:func:`run_crossbar` runs the hardware model (README, "The hardware model") of
one array on conductances, in the units a backend programs, around its layer
kind's canonical op:

    q = clip(x, -r, r) * in_scale            DAC codes (rounded, clipped to +-h_in)
    z = ((G+ - G-) * adc_scale) q            ADC codes (rounded, clipped to +-z_max)
    y = z * out_scale + bias (+ offset)      digital rescale (offset: a recalibration's, per column)

With ``in_scale = h_in / r``, ``adc_scale = m / (h_in (g_max - g_min)) * h_out / B``
and ``out_scale = B / h_out * r * (g_max - g_min) / (s m)`` this is exactly
``y = ADC(DAC(clip(x) / r) (G+ - G-) m / (g_max - g_min)) r (g_max - g_min) / (s m) + b``
(h = steps / 2; a missing DAC, ADC or range contributes a factor 1; ``m`` =
``mapped_wmax``, the analog weight ``g_max - g_min`` stands for, so the ADC sees the
analog weights' output ``W' x``). The
scalars are computed once, in float32, by :class:`CrossbarSettings`, so the
ONNX function body and PyTorch use bit-identical constants.

Output noise at read (aihwkit's ``forward.out_noise``, which its tiles add at
every analog read, in evaluation too) is off unless a :class:`Crossbar` is given
a generator (:meth:`Crossbar.read_out_noise_from`): the converted model is
deterministic, and evaluation over time switches it on per read.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, fx, nn

from ..kinds.base import LayerKind
from .compiled_state import CompiledState
from .ir_drop import array_operands, ir_drop_codes
from .management import managed_codes
from .settings import DYNAMIC_MODES, CrossbarSettings


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


def device_sum(conductances: Sequence[Tensor], significances: Sequence[float], offset: float) -> Tensor:
    """``sum_k c_k G_k + offset`` in uS: a multi-device array's ``W s`` (see :mod:`.multi_device_converters`),
    summed in device order as the exported graph sums it."""
    total = conductances[0] * significances[0]
    for conductance, significance in zip(conductances[1:], significances[1:]):
        total = total + conductance * significance
    return total + offset if offset else total


def combined_weight(conductances: Sequence[Tensor], significances: Sequence[float], offset: float,
                    settings: CrossbarSettings) -> Tensor:
    """:func:`device_sum` times ``adc_scale``: a multi-device array's ADC weight."""
    return device_sum(conductances, significances, offset).mul_(settings.constants["adc_scale"])


def column_out_scale(settings: CrossbarSettings) -> Optional[Tensor]:
    """The constant ``column_out_scale`` as a float32 tensor, or None for one scale ratio and gain per array."""
    columns = settings.constants["column_out_scale"]
    return torch.tensor(columns, dtype=torch.float32) if columns else None


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
    """Multiply the ADC codes ``z`` by ``out_scale``, add the bias, then the settings' ``column_offsets``, in
    place."""
    c = settings.constants
    per_column = column_out_scale(settings) if out_scale is None else out_scale
    if per_column is None:
        z = z.mul_(c["out_scale"])
    else:
        z = z.mul_(per_column if per_column.dim() == 0 else _per_channel(per_column, z, channel_dim))
    if bias is not None:
        z = z.add_(_per_channel(bias, z, channel_dim))  # not add(alpha=): that fuses multiply and add, unlike ONNX
    offsets = settings.column_offsets
    if offsets:
        z = z.add_(_per_channel(torch.tensor(offsets, dtype=torch.float32), z, channel_dim))
    return z


def _per_channel(values: Tensor, z: Tensor, channel_dim: int) -> Tensor:
    """``values`` (one per output channel) shaped to broadcast over ``z``'s channel dim."""
    return values if channel_dim == -1 else values.view(-1, *([1] * (z.dim() - 2)))


OutNoise = Callable[[Tensor], Tensor]
"""Adds output noise to one read's ADC input (codes, before rounding and clipping), in place, and returns it."""


def run_crossbar(kind: LayerKind, x: Tensor, weight: Tensor, bias: Optional[Tensor], settings: CrossbarSettings,
                 geometry: Any, out_scale: Optional[Tensor] = None, ir_drop_offset: Optional[Tensor] = None,
                 out_noise: Optional[OutNoise] = None) -> Tensor:
    """One array of ``kind``: ``weight`` = :func:`adc_weight`, shaped like the layer's weight block;
    ``out_scale`` as :func:`_periphery_out` takes it; with noise or bound management, :mod:`.management`'s
    reads; with IR drop, ``weight`` and ``ir_drop_offset`` are :func:`.ir_drop.array_operands`';
    ``out_noise`` (None: none) acts on every read before the ADC."""
    c = settings.constants
    if c["nm_mode"] in DYNAMIC_MODES or c["bm_rounds"] > 1:
        return _rescale(managed_codes(kind, x, weight, settings, geometry, out_noise), bias, settings,
                        kind.channel_dim, out_scale)
    if settings.ir_drop_active:
        codes = ir_drop_codes(kind, _periphery_in(x, c), weight, ir_drop_offset, settings, geometry)
    else:
        codes = kind.mvm(_periphery_in(x, c), weight, geometry)
    if out_noise is not None:
        codes = out_noise(codes)
    return _periphery_out(codes, bias, settings, kind.channel_dim, out_scale)


def out_noise_in_codes(out_noise: float, settings: CrossbarSettings) -> float:
    """aihwkit's ``forward.out_noise`` (a std in its normalised output, where the ADC clips at ``out_bound``)
    in this array's ADC codes: one code is ``out_bound / (adc_steps / 2)`` of that output (1 without an ADC)."""
    half_steps = settings.adc_steps / 2
    return out_noise * half_steps / settings.out_bound if half_steps else out_noise


class Crossbar(CompiledState, nn.Module):
    """One converted crossbar array: G+ / G- buffers, the digital bias, the periphery.

    ``kind`` and ``geometry`` (the kind's; None for a linear layer) say which op the
    array computes. ``source_weight`` names the original parameter, so the
    conductances can be traced back to it. ``out_noise`` is the array's
    ``forward.out_noise`` (aihwkit's units); it is read only once a generator is given
    (:meth:`read_out_noise_from`).

    Eagerly, :func:`adc_weight` of the buffers is derived on the first read and
    re-derived whenever G+, G- (even in place) or the ADC scale changed; until an
    array is read it holds its conductances alone (a converted model that is only
    exported never holds a third copy of its weights). A compiled graph reads
    ``compiled_weight`` and ``compiled_out_scale`` as they are; :meth:`sync_compiled_state`,
    which the compiled path calls before every call, keeps them current, in place, so the
    graph keeps reading the same tensors. A ``torch.compile`` of your own reads them
    as the last sync or eager read left them, and derives the weight in its graph
    from an array never read.
    """

    device_names: tuple[str, ...] = ("g_plus", "g_minus")
    """The conductance buffers, one per device of a weight: G+ and G- here (see :class:`MultiDeviceCrossbar`)."""

    def __init__(self, g_plus: Tensor, g_minus: Tensor, bias: Optional[Tensor], settings: CrossbarSettings,
                 kind: LayerKind, geometry: Any, source_weight: str, out_noise: float = 0.0):
        super().__init__()
        self.register_buffer("g_plus", g_plus)
        self.register_buffer("g_minus", g_minus)
        self._init_array(bias, settings, kind, geometry, source_weight, out_noise)

    def _init_array(self, bias: Optional[Tensor], settings: CrossbarSettings, kind: LayerKind, geometry: Any,
                    source_weight: str, out_noise: float) -> None:
        """Everything but the conductances: the bias, the settings, the derived state."""
        self.register_buffer("bias", bias)
        self.settings = settings
        self.kind = kind
        self.geometry = geometry
        self.source_weight = source_weight
        self.out_noise = float(out_noise)
        self.out_noise_generator: Optional[torch.Generator] = None
        # derived, never saved: plain attributes, not buffers
        self.compiled_weight: Optional[Tensor] = None
        self.compiled_out_scale: Optional[Tensor] = None
        self.ir_drop_offset: Optional[Tensor] = None  # with IR drop: the ADC-code offset of each column
        self._weight_key: Optional[tuple] = None
        self._out_scale_settings: Optional[CrossbarSettings] = None
        self._sync_out_scale()

    def conductances(self) -> list[Tensor]:
        """The device buffers in :attr:`device_names` order."""
        return [getattr(self, name) for name in self.device_names]

    @property
    def shape(self) -> torch.Size:
        """The weight block's shape (every device's)."""
        return getattr(self, self.device_names[0]).shape

    def weight_of(self, conductances: Sequence[Tensor], settings: CrossbarSettings) -> Tensor:
        """The ADC weight of these devices' conductances (:func:`adc_weight` of G+ and G-)."""
        return adc_weight(*conductances, settings)

    def adc_weight(self) -> Tensor:
        """:meth:`weight_of` the buffers, cached until a device or the ADC scale changes."""
        key = (*((g.data_ptr(), g._version) for g in self.conductances()), self.settings.constants["adc_scale"],
               self.settings if self.settings.ir_drop_active else None)
        if self._weight_key != key:
            with torch.no_grad():
                weight, offset = self._derived_operands()
                if offset is not None:
                    self._keep_ir_drop_offset(offset)
                if self.compiled_weight is not None and self.compiled_weight.shape == weight.shape:
                    weight = self.compiled_weight.copy_(weight)
                self.compiled_weight = weight
            self._weight_key = key
        return self.compiled_weight

    def _derived_operands(self) -> tuple[Tensor, Optional[Tensor]]:
        """The ADC weight of the buffers and, with IR drop active, each column's ADC-code offset."""
        if self.settings.ir_drop_active:
            return array_operands(self.g_plus, self.g_minus, self.settings)
        return self.weight_of(self.conductances(), self.settings), None

    def _keep_ir_drop_offset(self, offset: Tensor) -> None:
        """Take the new IR-drop offset in place where the shape allows, so a compiled graph reads it too."""
        if self.ir_drop_offset is not None and self.ir_drop_offset.shape == offset.shape:
            self.ir_drop_offset.copy_(offset)
        else:
            self.ir_drop_offset = offset

    def sync_compiled_state(self) -> None:
        """Re-derive the ADC weight and the out_scale tensor where the buffers or the settings changed."""
        self.adc_weight()
        self._sync_out_scale()

    def _sync_out_scale(self) -> None:
        if self._out_scale_settings is self.settings:
            return
        scale = column_out_scale(self.settings)
        if scale is None:
            scale = torch.tensor(self.settings.constants["out_scale"], dtype=torch.float32)
        if self.compiled_out_scale is not None and self.compiled_out_scale.shape == scale.shape:
            self.compiled_out_scale.copy_(scale)
        else:
            self.compiled_out_scale = scale.clone()
        self._out_scale_settings = self.settings

    @torch.no_grad()
    def load_array(self, other: "Crossbar") -> None:
        """Take ``other``'s conductances, bias and out_scale in place (same array, other devices or gains:
        a programmed or drifted copy), keeping this array's settings, so a compiled graph reading this
        array runs ``other``. A per-column out_scale here takes a global one there, not the reverse."""
        for mine, theirs in zip((*self.conductances(), self.bias), (*other.conductances(), other.bias)):
            if mine is not None:
                mine.copy_(theirs)
        other.sync_compiled_state()
        self.sync_compiled_state()
        self.compiled_out_scale.copy_(other.compiled_out_scale)

    def read_out_noise_from(self, generator: Optional[torch.Generator]) -> None:
        """Add ``out_noise`` at every read from now on, drawn from ``generator`` (aihwkit's reads);
        None: read without it (the default)."""
        self.out_noise_generator = generator

    def _add_out_noise(self, codes: Tensor) -> Tensor:
        noise = torch.randn(codes.shape, generator=self.out_noise_generator, dtype=codes.dtype, device=codes.device)
        # multiply, then add (not add(alpha=), which fuses them): what ONNX Runtime computes from the same draws
        return codes.add_(noise.mul_(out_noise_in_codes(self.out_noise, self.settings)))

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():  # no version checks in a graph: the tensors as the last sync left them
            weight, offset = ((self.compiled_weight, self.ir_drop_offset) if self.compiled_weight is not None
                              else self._derived_operands())
            return run_crossbar(self.kind, x, weight, self.bias, self.settings, self.geometry,
                                self.compiled_out_scale, offset)
        weight = self.adc_weight()
        noisy = self.out_noise_generator is not None and self.out_noise > 0
        return run_crossbar(self.kind, x, weight, self.bias, self.settings, self.geometry,
                            ir_drop_offset=self.ir_drop_offset, out_noise=self._add_out_noise if noisy else None)

    def extra_repr(self) -> str:
        s = self.settings
        return (f"{self.kind.describe(len(self.shape))}, {tuple(self.shape)}, r={s.input_range:.4g}, "
                f"scale_ratio={s.scale_ratio:.4g}, dac_steps={s.dac_steps:g}, adc_steps={s.adc_steps:g}")


class MultiDeviceCrossbar(Crossbar):
    """An array of several devices per weight (a converter of :mod:`.multi_device_converters`): one buffer
    per device, named by the converter, and the array computes with ``sum_k c_k G_k + offset``
    (:func:`combined_weight`) where a single pair's computes with ``G+ - G-``."""

    def __init__(self, devices: dict[str, Tensor], significances: tuple[float, ...], offset: float,
                 bias: Optional[Tensor], settings: CrossbarSettings, kind: LayerKind, geometry: Any,
                 source_weight: str, out_noise: float = 0.0):
        nn.Module.__init__(self)
        self.device_names = tuple(devices)
        for name, conductance in devices.items():
            self.register_buffer(name, conductance)
        self.significances = tuple(float(c) for c in significances)
        self.offset = float(offset)
        self._init_array(bias, settings, kind, geometry, source_weight, out_noise)

    def weight_of(self, conductances: Sequence[Tensor], settings: CrossbarSettings) -> Tensor:
        return combined_weight(conductances, self.significances, self.offset, settings)


def crossbar_modules(graph_module: fx.GraphModule) -> dict[str, Crossbar]:
    """Module name -> Crossbar (an array shared by several call sites once)."""
    return {name: m for name, m in graph_module.named_modules() if isinstance(m, Crossbar)}
