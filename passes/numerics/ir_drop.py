"""IR drop along an array's columns in evaluation: aihwkit's time-stepped Thevenin model.

xbar reproduces the model of aihwkit's pure-torch IR-drop tile (``TorchInferenceRPUConfigIRDropT``), not the
C++ tile's steady-state one (``ir_drop_g_ratio``), which cannot be checked against a reference here. In that
model each input drives its row with a pulse whose width is ``|x|`` (``x`` the DAC's value in [-1, 1]) for
one ``ONE_PASS`` read sampled at ``T = int((dac_steps + 2) / 2 * ir_drop_time_step_resolution_scale)``
times ``t = i / (T - 1)`` (:func:`sample_times`). At time ``t`` row ``i`` holds G+ at 0.6 V and G- at 0.2 V when
``x_i > t``, the reverse when ``x_i < -t``, and both at 0.4 V otherwise. The rows are lumped into
``ir_drop_segments`` segments (each a Thevenin source: conductance ``sum (G+ + G-) + 1e-12`` uS, voltage
the conductance-weighted mean), joined along the column by wires of ``ir_drop * ir_drop_rs`` Ohm per row,
half a segment's wire to the ADC. Even columns are read at one end (row 0 farthest), odd ones at the other.
The column current ``(V_th - ir_drop_v_read) / R_th`` is integrated over the samples (the trapezoid rule
with the first sample doubled, aihwkit's default, or their plain sum with ``ir_drop_integration_sum``),
counted, with ``adc_quantization`` (aihwkit's default), in whole ticks of ``100 / adc_frequency`` truncated
towards zero (aihwkit's current-controlled-oscillator ADC, before the ADC of ``out_res``),
and divided by 0.2 (aihwkit divides by ``dac_steps / 2`` too, which xbar's DAC codes already count in):
without wires this is ``(G+ - G-) q`` (``q`` the DAC codes) plus aihwkit's read-voltage offset. The
array's rows are padded to ``rows`` (the physical array's, aihwkit's ``phys_input_size``), half before
and half after, with rows at ``g_min`` and input 0.

Every segment's conductance is the same at every sample, so ``R_th`` and the weight each segment's voltage
has in ``V_th`` are fixed by G+ and G-: the integrated current is a matrix product,
``c(x) @ W_eff^T + offset``, with ``c(x_i) = sign(x_i) * sum_t w_t [|x_i| > t]`` (``w_t`` the
integration weights), ``W_eff = (G+ - G-)`` times each row's segment factor, and one offset per column.
:func:`ir_drop_operands` derives ``W_eff`` and the offset once per conductance state (float64, then
float32); :func:`pulse_counts` is the per-input part, looked up per DAC code (:func:`code_counts`).
aihwkit's own arithmetic is the same sum in another order (float32), so the two agree to float rounding
(which can move an oscillator tick's edge).

The conductances are the array's own G+ / G- (programmed and drifted ones included); aihwkit re-derives
them from the tile's weights with its noise model's converter, which gives the same conductances for an
unprogrammed array mapped by the same converter. An odd number of columns is simulated too (aihwkit's
tile needs an even one).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..kinds.base import LayerKind
from ..parameters import IOParameters
from .settings import IR_DROP_LOW_VOLTAGE, CrossbarSettings, f32

HIGH, LOW, IDLE = 0.6, IR_DROP_LOW_VOLTAGE, 0.4
"""Row voltages (V) of the model: the driving device, the opposite one, and both when the row is idle."""
REGULARISATION = 1e-12
"""Conductance (uS) added to each segment, as aihwkit does, so an empty segment has a finite resistance."""


def sample_times(steps: int) -> Tensor:
    """The sample times ``i / (steps - 1)``, each the float32 value nearest to it (float32 division of the two
    integers gives the same, so an ONNX body computes them bit for bit). aihwkit's ``torch.linspace`` gives these
    values at every sample a DAC code's pulse can tie with for the 254-step DAC (at other steps, where a code can
    equal a sample exactly, its values depend on the CPU's vector width and decide some ties otherwise)."""
    return (torch.arange(steps, dtype=torch.float64) / max(steps - 1, 1)).float()


def integration_weights(steps: int, plain_sum: bool) -> Tensor:
    """Each sample's weight in the integral: 1 each, or the trapezoid rule with the first sample doubled."""
    weights = torch.ones(steps, dtype=torch.float64)
    if not plain_sum and steps > 0:
        weights[0] += 0.5
        weights[-1] -= 0.5
    return weights


def pulse_counts(x: Tensor, times: Tensor, weights: Tensor) -> Tensor:
    """``c(x)``: the integration weight of the samples during which each input's pulse is on, signed."""
    on = (x.abs().unsqueeze(-1) > times).to(x.dtype)
    return torch.sign(x) * (on @ weights.to(x.dtype))


@functools.lru_cache(maxsize=64)
def count_table(dac_steps: float, steps: int, plain_sum: bool, dtype: torch.dtype) -> Tensor:
    """:func:`pulse_counts` of every magnitude a DAC code can take: entry ``j`` for code ``min(j, dac_steps / 2)``
    (integers up to the bound, and the bound itself where it is not one), so a read looks its counts up
    instead of comparing each input with every sample."""
    half = dac_steps / 2
    codes = torch.arange(math.ceil(half) + 1, dtype=dtype).clamp_(max=half)
    return pulse_counts(codes * (2.0 / dac_steps), sample_times(steps), integration_weights(steps, plain_sum))


def code_counts(q: Tensor, dac_steps: float, steps: int, plain_sum: bool) -> Tensor:
    """:func:`pulse_counts` of the DAC's value ``q / (dac_steps / 2)``, from :func:`count_table`: the same
    values, since a DAC code's magnitude is an integer or the DAC's bound (its index: the magnitude rounded up)."""
    table = count_table(float(dac_steps), steps, plain_sum, q.dtype)
    return torch.sign(q) * table[q.abs().ceil().long()]


def _padded(g: Tensor, rows: int, g_min: float) -> tuple[Tensor, int]:
    """``g`` [rows_used, cols] padded to ``rows`` rows at ``g_min``, half before; and the rows added before."""
    before = (rows - g.shape[0]) // 2
    after = rows - g.shape[0] - before
    pad_before = torch.full((before, g.shape[1]), g_min, dtype=g.dtype)
    pad_after = torch.full((after, g.shape[1]), g_min, dtype=g.dtype)
    return torch.cat((pad_before, g, pad_after)), before


def _segment_factors(g_sum: Tensor, segments: int, wire: float) -> tuple[Tensor, Tensor, Tensor]:
    """For columns read at the last row: each segment's factor on its rows' ``(G+ - G-)`` current, each one's
    factor on its idle voltage, and the column's ``1 / R_th`` (``g_sum`` [rows, cols] of ``G+ + G-``)."""
    seg_g = g_sum.view(segments, -1, g_sum.shape[1]).sum(dim=1)  # [segments, cols]
    gth = seg_g + REGULARISATION
    rw = 1e-6 * wire * (g_sum.shape[0] // segments)  # MOhm: conductances are in uS
    share = torch.ones_like(gth)  # share[k]: segment k's weight in V_th, updated as segments join
    r_th = 1.0 / gth[0]
    for k in range(1, segments):
        r_1 = r_th + rw
        r_2 = 1.0 / gth[k]
        r_th = r_1 * r_2 / (r_1 + r_2)
        share[:k] *= r_th / r_1
        share[k] = r_th / r_2
    r_th = r_th + 0.5 * rw
    return share / (gth * r_th), share * seg_g / (gth * r_th), 1.0 / r_th


def _column_factors(g_plus: Tensor, g_minus: Tensor, segments: int, wire: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row factors [rows, cols] and per-column idle terms and ``1 / R_th``, even columns read at the last
    row and odd ones at the first."""
    g_sum = g_plus + g_minus
    rows, cols = g_sum.shape
    row_factor = torch.empty_like(g_sum)
    idle = torch.empty(cols, dtype=g_sum.dtype)
    conductance = torch.empty(cols, dtype=g_sum.dtype)
    for parity, flip in ((0, False), (1, True)):
        g = g_sum[:, parity::2].flip(0) if flip else g_sum[:, parity::2]
        per_segment, idle_share, conductance[parity::2] = _segment_factors(g, segments, wire)
        per_row = per_segment.repeat_interleave(rows // segments, dim=0)
        row_factor[:, parity::2] = per_row.flip(0) if flip else per_row
        idle[parity::2] = idle_share.sum(dim=0)
    return row_factor, idle, conductance


@torch.no_grad()
def ir_drop_operands(g_plus: Tensor, g_minus: Tensor, *, g_min: float, rows: int, segments: int, wire: float,
                     v_read: float, steps: int, plain_sum: bool) -> tuple[Tensor, Tensor]:
    """``(W_eff, offset)`` of the module docstring for G+ / G- [out, in] (uS): W_eff [out, in] and offset [out]
    in the units of ``(G+ - G-) q``, ``q`` in DAC codes (float32)."""
    gp, before = _padded(g_plus.detach().double().T, rows, g_min)
    gm, _ = _padded(g_minus.detach().double().T, rows, g_min)
    row_factor, idle, conductance = _column_factors(gp, gm, segments, wire)
    used = slice(before, before + g_plus.shape[1])
    w_eff = ((gp - gm) * row_factor)[used].T
    total_weight = float(integration_weights(steps, plain_sum).sum())
    offset = total_weight * (IDLE / LOW * idle - v_read / LOW * conductance)
    return w_eff.float().contiguous(), offset.float()


def ir_drop_codes(kind: LayerKind, q: Tensor, weight: Tensor, offset: Tensor, settings: CrossbarSettings,
                  geometry: Any) -> Tensor:
    """The ADC codes of one read with IR drop: ``weight`` / ``offset`` are :func:`array_operands`', ``q`` the
    DAC codes (the DAC's value ``q / (dac_steps / 2)`` in float32, as aihwkit's)."""
    counts = code_counts(q, settings.dac_steps, settings.constants["ir_drop_steps"],
                         bool(settings.ir_drop_integration_sum))
    ticks = kind.mvm(counts, weight, geometry)
    ticks = ticks.add_(offset if kind.channel_dim == -1 else offset.view(-1, *([1] * (ticks.dim() - 2))))
    if settings.adc_quantization:
        ticks = ticks.trunc_()
    return ticks.mul_(settings.constants["ir_drop_adc_scale"])


def ir_drop_fields(io: IOParameters, kind: LayerKind, array_rows: int, max_input_size: int) -> dict:
    """The array's ``ir_drop*`` settings (``array_rows``: its matrix's rows, a convolution's patch elements);
    :class:`ConfigError` in one line where xbar does not simulate them."""
    if io.is_perfect or not io.ir_drop > 0:
        return {}
    rows = max_input_size or array_rows
    if kind.name not in ("linear", "conv"):
        raise ConfigError(f"forward.ir_drop is simulated on linear and convolution layers (as aihwkit's tiles), "
                          f"not on {kind.name} layers: set forward.ir_drop 0 for them with a layer rule")
    if not io.dac_steps:
        raise ConfigError("forward.ir_drop needs a DAC (forward.inp_res > 0): its pulses are the DAC's codes")
    if io.managed_per_vector:
        raise ConfigError("forward.ir_drop is not simulated with ABS_MAX / MAX noise management or bound "
                          "management: use CONSTANT or NONE and bound_management NONE")
    if rows % io.ir_drop_segments:
        raise ConfigError(f"forward.ir_drop_segments={io.ir_drop_segments} must divide the array's {rows} rows "
                          "(mapping.max_input_size, or the layer's inputs without one)")
    return {"ir_drop": f32(io.ir_drop), "ir_drop_rs": f32(io.ir_drop_rs), "ir_drop_segments": int(io.ir_drop_segments),
            "ir_drop_time_step_resolution_scale": f32(io.ir_drop_time_step_resolution_scale),
            "ir_drop_v_read": f32(io.ir_drop_v_read), "ir_drop_integration_sum": int(io.ir_drop_integration_sum),
            "ir_drop_rows": int(rows), "adc_quantization": int(io.adc_quantization),
            "adc_frequency": f32(io.adc_frequency)}


def array_operands(g_plus: Tensor, g_minus: Tensor, settings: CrossbarSettings) -> tuple[Tensor, Tensor]:
    """:func:`ir_drop_operands` of one array's conductances in the oscillator's ticks (the constant
    ``ir_drop_tick``: the column charge, 0.2 of :func:`ir_drop_operands`' units, counted in ticks of
    ``100 / adc_frequency`` with ``adc_quantization``, else 1),
    ``W_eff`` shaped like them: what the crossbar op reads. A convolution's array is its [out, in x kernel]
    matrix, whose rows are the unfolded patch's elements, as aihwkit's convolution tiles see it; in a grouped
    one (which aihwkit has not) each column reads its own group's patch elements only, as if each group's
    block of the array were an array of its own (the columns of the model are independent)."""
    w_eff, offset = ir_drop_operands(
        g_plus.flatten(1), g_minus.flatten(1), g_min=settings.g_min, rows=settings.ir_drop_rows,
        segments=settings.ir_drop_segments,
        wire=settings.ir_drop * settings.ir_drop_rs, v_read=settings.ir_drop_v_read,
        steps=settings.constants["ir_drop_steps"],
        plain_sum=bool(settings.ir_drop_integration_sum))
    scale = settings.constants["ir_drop_tick"]
    return w_eff.mul_(scale).view(g_plus.shape), offset.mul_(scale)
