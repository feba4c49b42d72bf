"""The function bodies of the ``ai.xbar`` ops, in standard ONNX ops, built from shared periphery steps.

Every body is its kind's mvm between the same four steps, each a model-local
function of the domain :data:`PERIPHERY_DOMAIN` (the file carries them beside the
bodies, which call them; a runtime inlines both):

* ``InputDac``: clip to the input range, scale to DAC codes, round, clip to the DAC bound;
* ``AdcWeight``: ``(G+ - G-) * adc_scale``, the array mapping DAC codes to ADC codes;
* ``Adc``: round the ADC codes and clip them to the ADC bound;
* ``Rescale`` / ``RescaleChannels``: multiply by ``out_scale`` (or, per output
  column, ``column_out_scale``), add the bias, then a recalibration's ``column_offsets``
  (when there are any), on the last dim or on dim 1.

They repeat the elementwise steps of :func:`xbar.passes.numerics.crossbar.run_crossbar`
one for one with the same float32 constants, so ONNX and PyTorch agree bit for bit
except in the matmul's accumulation order. A step whose constant makes it a no-op
(rounding off, a 0 (no) bound, an integer DAC bound after rounding, no per-column
scale) is skipped by an If on a constant, which a runtime resolves once. An integer
ADC bound clips before rounding (round(clip(z, -c, c)) = clip(round(z), -c, c) for
an integer c), which lets ONNX Runtime fuse the clip into the mvm.

With noise or bound management (``nm_mode`` ABS_MAX or MAX, ``bm_rounds`` > 1) the linear and convolution
bodies read through ``ManagedReads`` / ``ManagedPatchReads`` instead: every bound-management read at once, each
input vector (a convolution's patch, which ``Patches`` / ``TransposedPatches`` unfold) divided by its own scale.

With IR drop (``ir_drop`` > 0) the linear and convolution bodies read the array through ``IrDropOperands``
(aihwkit's time-stepped model as one matrix product, in float64 as PyTorch derives it), ``PulseCounts`` and
``OscillatorCodes`` instead of ``AdcWeight``; a convolution's drop is the same ``Conv`` of the pulse counts,
which is its unfolded patches' product (a padding zero's count is 0).

Every op body declares all the op's attributes, used or not, so each attribute of
a node belongs to its function; the optional annotation attributes (which part of the
layer's weight a node holds, where it sits on a chip) are for backends and no body reads them.
"""

from __future__ import annotations

from typing import Sequence

import onnx
from onnxscript import FLOAT, script
from onnxscript import opset20 as op
from onnxscript.values import OnnxFunction, Opset

from .names import DOMAIN, PERIPHERY_DOMAIN, PERIPHERY_VERSION, VERSION

OPSET = op.version
"""The standard ONNX opset of the exported graph and of the function bodies (they must match)."""

XBAR = Opset(DOMAIN, VERSION)
PERIPHERY = Opset(PERIPHERY_DOMAIN, PERIPHERY_VERSION)
BOOL = onnx.TensorProto.BOOL
DOUBLE = onnx.TensorProto.DOUBLE


@script(PERIPHERY, default_opset=op)
def InputDac(X: FLOAT, input_clip: float, in_scale: float, dac_round: int, dac_clip: float) -> FLOAT:
    input_bound = op.Constant(value_float=input_clip)
    if op.Equal(input_bound, op.Constant(value_float=0.0)):
        x = op.Identity(X)
    else:
        x = op.Clip(X, op.Neg(input_bound), input_bound)
    q = op.Mul(x, op.Constant(value_float=in_scale))
    if op.Cast(op.Constant(value_int=dac_round), to=BOOL):
        q = op.Round(q)
    dac_bound = op.Constant(value_float=dac_clip)
    if op.Not(op.Equal(op.Floor(dac_bound), dac_bound)):  # also skips 0, no DAC
        q = op.Clip(q, op.Neg(dac_bound), dac_bound)
    return q


@script(PERIPHERY, default_opset=op)
def AdcWeight(G_plus: FLOAT, G_minus: FLOAT, adc_scale: float) -> FLOAT:
    return op.Mul(op.Sub(G_plus, G_minus), op.Constant(value_float=adc_scale))


@script(PERIPHERY, default_opset=op)
def Adc(Z: FLOAT, adc_round: int, adc_clip: float) -> FLOAT:
    adc_bound = op.Constant(value_float=adc_clip)
    bounded = op.Not(op.Equal(adc_bound, op.Constant(value_float=0.0)))
    integer_bound = op.And(bounded, op.Equal(op.Floor(adc_bound), adc_bound))
    if integer_bound:  # the same codes as rounding first, and the runtime can fuse the clip into the mvm
        z = op.Clip(Z, op.Neg(adc_bound), adc_bound)
    else:
        z = op.Identity(Z)
    if op.Cast(op.Constant(value_int=adc_round), to=BOOL):
        z = op.Round(z)
    if op.And(bounded, op.Not(integer_bound)):
        z = op.Clip(z, op.Neg(adc_bound), adc_bound)
    return z


@script(PERIPHERY, default_opset=op)
def OutScale(out_scale: float, column_out_scale: Sequence[float]) -> FLOAT:
    columns = op.Constant(value_floats=column_out_scale)
    if op.Equal(op.Size(columns), op.Constant(value_int=0)):
        scale = op.Constant(value_float=out_scale)
    else:
        scale = op.Identity(columns)
    return scale


@script(PERIPHERY, default_opset=op)
def Rescale(Z: FLOAT, B: FLOAT, out_scale: float, column_out_scale: Sequence[float],
            column_offsets: Sequence[float]) -> FLOAT:
    scale = OutScale(out_scale=out_scale, column_out_scale=column_out_scale)
    y = op.Add(op.Mul(Z, scale), B)
    offsets = op.Constant(value_floats=column_offsets)
    if op.Equal(op.Size(offsets), op.Constant(value_int=0)):
        out = op.Identity(y)
    else:
        out = op.Add(y, offsets)
    return out


@script(PERIPHERY, default_opset=op)
def RescaleChannels(Z: FLOAT, B: FLOAT, out_scale: float, column_out_scale: Sequence[float],
                    column_offsets: Sequence[float]) -> FLOAT:
    spatial_ones = op.ConstantOfShape(op.Shape(op.Shape(Z, start=2)), value=[1])
    per_channel = op.Concat(op.Constant(value_ints=[-1]), spatial_ones, axis=0)
    scale = OutScale(out_scale=out_scale, column_out_scale=column_out_scale)
    y = op.Add(op.Mul(Z, op.Reshape(scale, per_channel)), op.Reshape(B, per_channel))
    offsets = op.Constant(value_floats=column_offsets)
    if op.Equal(op.Size(offsets), op.Constant(value_int=0)):
        out = op.Identity(y)
    else:
        out = op.Add(y, op.Reshape(offsets, per_channel))
    return out


@script(PERIPHERY, default_opset=op)
def NormalisedInput(X: FLOAT, input_range: float) -> FLOAT:
    """``clip(X, -r, r) / r`` with an input range r, else ``X``: what noise and bound management scale."""
    zero = op.Constant(value_float=0.0)
    one = op.Constant(value_float=1.0)
    r = op.Constant(value_float=input_range)
    no_range = op.Equal(r, zero)
    clip = op.Where(no_range, op.Div(one, zero), r)
    return op.Div(op.Clip(X, op.Neg(clip), clip), op.Where(no_range, one, r))


@script(PERIPHERY, default_opset=op)
def ReadScales(AbsMax: FLOAT, Max: FLOAT, nm_mode: int, nm_thres: float, bm_rounds: int):
    """The input multiplier of every read (``1 / (nm * 2**k)``, stacked on a new first dim) from each input
    vector's max magnitude and max (``AbsMax``, ``Max``), and 0 when every vector's scale is 0 (else 1).
    Choices on attributes are Where, not If (ONNX Runtime cannot inline an If whose branches read another If's
    output)."""
    zero = op.Constant(value_float=0.0)
    one = op.Constant(value_float=1.0)
    mode = op.Constant(value_int=nm_mode)
    raw = op.Where(op.Equal(mode, op.Constant(value_int=2)), Max, AbsMax)
    ceiling = op.Constant(value_float=nm_thres)
    capped = op.Greater(ceiling, zero)
    raw = op.Where(capped, op.Min(raw, ceiling), raw)
    raw = op.Where(op.Equal(mode, op.Constant(value_int=3)), op.Where(capped, ceiling, one), raw)  # CONSTANT
    raw = op.Where(op.Equal(mode, op.Constant(value_int=0)), one, raw)  # bound management alone
    any_scale = op.ReduceMax(op.Cast(op.Not(op.Equal(raw, zero)), to=onnx.TensorProto.FLOAT), keepdims=0)
    nm = op.Where(op.LessOrEqual(raw, zero), one, raw)
    rounds = op.Constant(value_int=bm_rounds)
    stacked = op.Concat(op.Reshape(rounds, op.Constant(value_ints=[1])),
                        op.ConstantOfShape(op.Shape(op.Shape(nm)), value=[1]), axis=0)
    powers = op.Cast(op.Range(op.Constant(value_int=0), rounds, op.Constant(value_int=1)), to=onnx.TensorProto.FLOAT)
    reduction = op.Reshape(op.Pow(op.Constant(value_float=2.0), powers), stacked)
    return op.Div(op.Div(one, op.Unsqueeze(nm, op.Constant(value_ints=[0]))), reduction), any_scale


@script(PERIPHERY, default_opset=op)
def ManagedDac(V: FLOAT, dac_steps: float) -> FLOAT:
    """The DAC codes of the scaled normalised input ``V``: rounded with a DAC, clipped to its bound (or 1)."""
    zero = op.Constant(value_float=0.0)
    half = op.Div(op.Constant(value_float=dac_steps), op.Constant(value_float=2.0))
    dac = op.Greater(half, zero)
    bound_in = op.Where(dac, half, op.Constant(value_float=1.0))
    return op.Clip(op.Where(dac, op.Round(op.Mul(V, bound_in)), V), op.Neg(bound_in), bound_in)


@script(PERIPHERY, default_opset=op)
def ChosenRead(Z: FLOAT, Scale: FLOAT, AnyScale: FLOAT, adc_round: int, adc_clip: float, bm_rounds: int) -> FLOAT:
    """The ADC codes of every read ``Z`` (stacked on the first dim) rounded and clipped; the first read that does
    not clip (else the last) is kept, divided by its input multiplier ``Scale`` and times ``AnyScale``."""
    zero = op.Constant(value_float=0.0)
    rounds = op.Constant(value_int=bm_rounds)
    z = op.Where(op.Cast(op.Constant(value_int=adc_round), to=BOOL), op.Round(Z), Z)
    bound_out = op.Constant(value_float=adc_clip)
    bound_out = op.Where(op.Greater(bound_out, zero), bound_out, op.Div(op.Constant(value_float=1.0), zero))
    flat = op.Reshape(op.Abs(z), op.Concat(op.Reshape(rounds, op.Constant(value_ints=[1])),
                                           op.Constant(value_ints=[-1]), axis=0))
    passed = op.Cast(op.LessOrEqual(op.ReduceMax(flat, op.Constant(value_ints=[1]), keepdims=0), bound_out),
                     to=onnx.TensorProto.FLOAT)
    z = op.Clip(z, op.Neg(bound_out), bound_out)
    first = op.ArgMax(passed, axis=0, keepdims=0)
    chosen = op.Where(op.Greater(op.ReduceMax(passed, keepdims=0), zero), first,
                      op.Sub(rounds, op.Constant(value_int=1)))
    return op.Mul(op.Gather(op.Div(z, Scale), chosen, axis=0), AnyScale)


@script(PERIPHERY, default_opset=op)
def ManagedReads(X: FLOAT, WeightT: FLOAT, input_range: float, dac_steps: float, adc_round: int, adc_clip: float,
                 nm_mode: int, nm_thres: float, bm_rounds: int) -> FLOAT:
    """Noise and bound management (:mod:`xbar.passes.numerics.management`) of a linear array, each input vector
    along the last dim: every read at once (the input divided by 1, 2, 4, ...), then :func:`ChosenRead`."""
    x_n = NormalisedInput(X, input_range=input_range)
    last_dim = op.Constant(value_ints=[-1])
    scale, any_scale = ReadScales(op.ReduceMax(op.Abs(x_n), last_dim, keepdims=1),
                                  op.ReduceMax(x_n, last_dim, keepdims=1),
                                  nm_mode=nm_mode, nm_thres=nm_thres, bm_rounds=bm_rounds)
    q = ManagedDac(op.Mul(op.Unsqueeze(x_n, op.Constant(value_ints=[0])), scale), dac_steps=dac_steps)
    return ChosenRead(op.MatMul(q, WeightT), scale, any_scale, adc_round=adc_round, adc_clip=adc_clip,
                      bm_rounds=bm_rounds)


@script(PERIPHERY, default_opset=op)
def Patches(X: FLOAT, Kernel: FLOAT, strides: Sequence[int], pads: Sequence[int],
            dilations: Sequence[int]) -> FLOAT:
    """The patches of ``X`` [batch, channels, *spatial] for a convolution of ``Kernel``'s spatial shape:
    [batch, channels x taps, *output positions], channel-major as the weight's rows, padding zeros included
    (a Conv of each channel with one one-hot kernel per tap, which copies the values exactly)."""
    one_1d = op.Constant(value_ints=[1])
    kernel = op.Shape(Kernel, start=2)
    taps = op.ReduceProd(kernel, keepdims=1)
    one_hot = op.Reshape(op.EyeLike(op.ConstantOfShape(op.Concat(taps, taps, axis=0))),
                         op.Concat(taps, one_1d, kernel, axis=0))
    channels_apart = op.Reshape(X, op.Concat(op.Constant(value_ints=[-1]), one_1d, op.Shape(X, start=2), axis=0))
    u = op.Conv(channels_apart, one_hot, strides=strides, pads=pads, dilations=dilations)
    return op.Reshape(u, op.Concat(op.Shape(X, start=0, end=1), op.Constant(value_ints=[-1]),
                                   op.Shape(u, start=2), axis=0))


@script(PERIPHERY, default_opset=op)
def TransposedPatches(X: FLOAT, Kernel: FLOAT, strides: Sequence[int], pads: Sequence[int],
                      dilations: Sequence[int], output_padding: Sequence[int]) -> FLOAT:
    """:func:`Patches` of a transposed convolution, in its weight's tap order, inserted zeros included (a
    ConvTranspose of each channel with one one-hot kernel per tap)."""
    one_1d = op.Constant(value_ints=[1])
    kernel = op.Shape(Kernel, start=2)
    taps = op.ReduceProd(kernel, keepdims=1)
    one_hot = op.Reshape(op.EyeLike(op.ConstantOfShape(op.Concat(taps, taps, axis=0))),
                         op.Concat(one_1d, taps, kernel, axis=0))
    channels_apart = op.Reshape(X, op.Concat(op.Constant(value_ints=[-1]), one_1d, op.Shape(X, start=2), axis=0))
    u = op.ConvTranspose(channels_apart, one_hot, strides=strides, pads=pads, dilations=dilations,
                         output_padding=output_padding)
    return op.Reshape(u, op.Concat(op.Shape(X, start=0, end=1), op.Constant(value_ints=[-1]),
                                   op.Shape(u, start=2), axis=0))


@script(PERIPHERY, default_opset=op)
def PatchRows(Weight: FLOAT) -> FLOAT:
    """A convolution's [out, in / groups, *kernel] weight as the 1x1 kernel [out, in / groups x taps, 1, ...]
    that reads :func:`Patches`."""
    return op.Reshape(Weight, op.Concat(op.Shape(Weight, start=0, end=1), op.Constant(value_ints=[-1]),
                                        op.ConstantOfShape(op.Shape(op.Shape(Weight, start=2)), value=[1]), axis=0))


@script(PERIPHERY, default_opset=op)
def TransposedPatchRows(Weight: FLOAT, group: int) -> FLOAT:
    """A transposed convolution's [in, out / groups, *kernel] weight as the 1x1 kernel that reads
    :func:`TransposedPatches`: each group's block transposed, then :func:`PatchRows`."""
    groups = op.Reshape(op.Constant(value_int=group), op.Constant(value_ints=[1]))
    group_outputs = op.Shape(Weight, start=1, end=2)
    blocks = op.Reshape(Weight, op.Concat(groups, op.Constant(value_ints=[-1]), group_outputs,
                                          op.ReduceProd(op.Shape(Weight, start=2), keepdims=1), axis=0))
    rows = op.Reshape(op.Transpose(blocks, perm=[0, 2, 1, 3]),
                      op.Concat(op.Mul(groups, group_outputs), op.Constant(value_ints=[-1]), axis=0))
    return op.Reshape(rows, op.Concat(op.Shape(rows), op.ConstantOfShape(op.Shape(op.Shape(Weight, start=2)),
                                                                          value=[1]), axis=0))


@script(PERIPHERY, default_opset=op)
def ManagedPatchReads(U: FLOAT, Rows: FLOAT, dac_steps: float, adc_round: int, adc_clip: float, nm_mode: int,
                      nm_thres: float, bm_rounds: int, group: int) -> FLOAT:
    """:func:`ManagedReads` of a convolution array, each patch one input vector: ``U`` the patches of the
    normalised input, ``Rows`` the 1x1 kernel that reads them; the reads on the batch dim, read after read."""
    channel_dim = op.Constant(value_ints=[1])
    scale, any_scale = ReadScales(op.ReduceMax(op.Abs(U), channel_dim, keepdims=1),
                                  op.ReduceMax(U, channel_dim, keepdims=1),
                                  nm_mode=nm_mode, nm_thres=nm_thres, bm_rounds=bm_rounds)
    q = ManagedDac(op.Mul(op.Unsqueeze(U, op.Constant(value_ints=[0])), scale), dac_steps=dac_steps)
    z = op.Conv(op.Reshape(q, op.Concat(op.Constant(value_ints=[-1]), op.Shape(U, start=1), axis=0)), Rows,
                group=group)
    rounds = op.Reshape(op.Constant(value_int=bm_rounds), op.Constant(value_ints=[1]))
    z = op.Reshape(z, op.Concat(rounds, op.Shape(U, start=0, end=1), op.Shape(z, start=1), axis=0))
    return ChosenRead(z, scale, any_scale, adc_round=adc_round, adc_clip=adc_clip, bm_rounds=bm_rounds)


@script(PERIPHERY, default_opset=op)
def IrDropOperands(G_plus: FLOAT, G_minus: FLOAT, g_min: float, ir_drop: float, ir_drop_rs: float,
                   ir_drop_segments: int, ir_drop_v_read: float, ir_drop_rows: int, ir_drop_steps: int,
                   ir_drop_tick: float):
    """:func:`xbar.passes.numerics.ir_drop.ir_drop_operands` in float64, op for op: ``W_eff`` [out, in x kernel]
    and the offset [out] of an array's [out, ...] conductances, each times ``ir_drop_tick``."""
    one = op.Cast(op.Constant(value_float=1.0), to=DOUBLE)
    million = op.Cast(op.Constant(value_float=1e6), to=DOUBLE)
    gp = op.Transpose(op.Cast(op.Flatten(G_plus, axis=1), to=DOUBLE))  # [rows used, cols]
    gm = op.Transpose(op.Cast(op.Flatten(G_minus, axis=1), to=DOUBLE))
    used = op.Shape(gp, start=0, end=1)
    # ir_drop_rows and ir_drop_segments at least a valid value: ONNX Runtime builds a branch's kernels from its
    # constants even when the branch is never taken (a file without IR drop has 0 in both)
    rows = op.Max(op.Unsqueeze(op.Constant(value_int=ir_drop_rows), op.Constant(value_ints=[0])), used)
    before = op.Div(op.Sub(rows, used), op.Constant(value_ints=[2]))
    zero_1d = op.Constant(value_ints=[0])
    pads = op.Concat(before, zero_1d, op.Sub(op.Sub(rows, used), before), zero_1d, axis=0)
    floor = op.Cast(op.Constant(value_float=g_min), to=DOUBLE)
    gp = op.Pad(gp, pads, floor)
    gm = op.Pad(gm, pads, floor)
    g_sum = op.Add(gp, gm)
    columns = op.Shape(g_sum, start=1, end=2)
    odd = op.Equal(op.Mod(op.Range(op.Constant(value_int=0), op.Squeeze(columns), op.Constant(value_int=1)),
                          op.Constant(value_int=2)), op.Constant(value_int=1))
    flip_starts, flip_ends = op.Constant(value_ints=[-1]), op.Constant(value_ints=[-9223372036854775807])
    flip_axes, flip_steps = op.Constant(value_ints=[0]), op.Constant(value_ints=[-1])
    arranged = op.Where(odd, op.Slice(g_sum, flip_starts, flip_ends, flip_axes, flip_steps), g_sum)
    segments = op.Max(op.Unsqueeze(op.Constant(value_int=ir_drop_segments), op.Constant(value_ints=[0])),
                      op.Constant(value_ints=[1]))
    seg_g = op.ReduceSum(op.Reshape(arranged, op.Concat(segments, op.Constant(value_ints=[-1]), columns, axis=0)),
                         op.Constant(value_ints=[1]), keepdims=0)  # [segments, cols]
    gth = op.Add(seg_g, op.Div(one, op.Mul(million, million)))
    wire = op.Mul(op.Cast(op.Constant(value_float=ir_drop), to=DOUBLE),
                  op.Cast(op.Constant(value_float=ir_drop_rs), to=DOUBLE))
    per_segment_rows = op.Div(rows, segments)
    rw = op.Mul(op.Mul(op.Div(one, million), wire), op.Cast(op.Squeeze(per_segment_rows), to=DOUBLE))
    index = op.Unsqueeze(op.Range(op.Constant(value_int=0), op.Squeeze(segments), op.Constant(value_int=1)),
                         op.Constant(value_ints=[1]))  # [segments, 1]
    share = op.Expand(one, op.Shape(gth))
    r_th = op.Div(one, op.Gather(gth, op.Constant(value_int=0), axis=0))
    k = op.Constant(value_int=1)
    for _ in range(op.Sub(op.Squeeze(segments), op.Constant(value_int=1))):
        r_1 = op.Add(r_th, rw)
        r_2 = op.Div(one, op.Gather(gth, k, axis=0))
        r_th = op.Div(op.Mul(r_1, r_2), op.Add(r_1, r_2))
        share = op.Mul(share, op.Where(op.Less(index, k), op.Div(r_th, r_1), one))
        share = op.Where(op.Equal(index, k), op.Div(r_th, r_2), share)
        k = op.Add(k, op.Constant(value_int=1))
    half = op.Div(one, op.Add(one, one))
    r_th = op.Add(r_th, op.Mul(half, rw))
    per_segment = op.Div(share, op.Mul(gth, r_th))
    idle = op.ReduceSum(op.Div(op.Mul(share, seg_g), op.Mul(gth, r_th)), op.Constant(value_ints=[0]), keepdims=0)
    conductance = op.Div(one, r_th)
    per_row = op.Reshape(op.Expand(op.Unsqueeze(per_segment, op.Constant(value_ints=[1])),
                                   op.Concat(segments, per_segment_rows, columns, axis=0)),
                         op.Concat(rows, columns, axis=0))
    row_factor = op.Where(odd, op.Slice(per_row, flip_starts, flip_ends, flip_axes, flip_steps), per_row)
    w_eff = op.Slice(op.Mul(op.Sub(gp, gm), row_factor), before, op.Add(before, used), zero_1d)
    scale = op.Constant(value_float=ir_drop_tick)
    weight = op.Mul(op.Cast(op.Transpose(w_eff), to=onnx.TensorProto.FLOAT), scale)
    low = op.Div(op.Cast(op.Constant(value_float=2.0), to=DOUBLE), op.Cast(op.Constant(value_float=10.0), to=DOUBLE))
    v_read = op.Div(op.Cast(op.Constant(value_float=ir_drop_v_read), to=DOUBLE), low)
    offset = op.Mul(op.Cast(op.Constant(value_int=ir_drop_steps), to=DOUBLE),
                    op.Sub(op.Mul(op.Add(one, one), idle), op.Mul(v_read, conductance)))
    return weight, op.Mul(op.Cast(offset, to=onnx.TensorProto.FLOAT), scale)


@script(PERIPHERY, default_opset=op)
def PulseCounts(Q: FLOAT, dac_steps: float, ir_drop_steps: int, ir_drop_integration_sum: int) -> FLOAT:
    """:func:`xbar.passes.numerics.ir_drop.code_counts` of the DAC codes ``Q``: the integration weight of the
    samples ``i / (steps - 1)`` during which each input's pulse is on, signed (sums of halves: exact), looked up
    in the table of every code magnitude (the integers up to ``dac_steps / 2``, and that bound)."""
    half = op.Div(op.Constant(value_float=dac_steps), op.Constant(value_float=2.0))
    sizes = op.Cast(op.Add(op.Ceil(half), op.Constant(value_float=1.0)), to=onnx.TensorProto.INT64)
    codes = op.Min(op.Cast(op.Range(op.Constant(value_int=0), sizes, op.Constant(value_int=1)),
                           to=onnx.TensorProto.FLOAT), half)
    x = op.Mul(codes, op.Div(op.Constant(value_float=2.0), op.Constant(value_float=dac_steps)))
    steps = op.Constant(value_int=ir_drop_steps)
    index = op.Range(op.Constant(value_int=0), steps, op.Constant(value_int=1))
    last = op.Sub(steps, op.Constant(value_int=1))
    times = op.Div(op.Cast(index, to=onnx.TensorProto.FLOAT),
                   op.Cast(op.Max(last, op.Constant(value_int=1)), to=onnx.TensorProto.FLOAT))
    half_weight = op.Constant(value_float=0.5)
    zero = op.Constant(value_float=0.0)
    trapezoid = op.Sub(op.Where(op.Equal(index, op.Constant(value_int=0)), half_weight, zero),
                       op.Where(op.Equal(index, last), half_weight, zero))
    plain = op.Cast(op.Constant(value_int=ir_drop_integration_sum), to=BOOL)
    weights = op.Add(op.Constant(value_float=1.0), op.Where(plain, zero, trapezoid))
    on = op.Cast(op.Greater(op.Unsqueeze(x, op.Constant(value_ints=[-1])), times), to=onnx.TensorProto.FLOAT)
    table = op.MatMul(on, weights)
    return op.Mul(op.Sign(Q), op.Gather(table, op.Cast(op.Ceil(op.Abs(Q)), to=onnx.TensorProto.INT64)))


@script(PERIPHERY, default_opset=op)
def OscillatorCodes(Ticks: FLOAT, adc_quantization: int, ir_drop_adc_scale: float) -> FLOAT:
    """The column charge counted in whole oscillator ticks (truncated towards zero) with ``adc_quantization``,
    then in ADC codes."""
    if op.Cast(op.Constant(value_int=adc_quantization), to=BOOL):
        ticks = op.Mul(op.Sign(Ticks), op.Floor(op.Abs(Ticks)))
    else:
        ticks = op.Identity(Ticks)
    return op.Mul(ticks, op.Constant(value_float=ir_drop_adc_scale))


PERIPHERY_FUNCTIONS: tuple[OnnxFunction, ...] = (InputDac, AdcWeight, Adc, OutScale, Rescale, RescaleChannels,
                                                  NormalisedInput, ReadScales, ManagedDac, ChosenRead, ManagedReads,
                                                  Patches, TransposedPatches, PatchRows, TransposedPatchRows,
                                                  ManagedPatchReads, IrDropOperands, PulseCounts, OscillatorCodes)
"""The shared steps, each after the ones it calls (``onnx.reference`` loads functions in order)."""


@script(XBAR, default_opset=op)
def CrossbarLinear(X: FLOAT, G_plus: FLOAT, G_minus: FLOAT, B: FLOAT,
                   layer: str, input_range: float, scale_ratio: float, g_min: float, g_max: float,
                   dac_steps: float, adc_steps: float, out_bound: float, tile_row: int, tile_col: int,
                   drift_gain: float, column_scale_ratios: Sequence[float], column_drift_gains: Sequence[float],
                   column_offsets: Sequence[float], mapped_wmax: float, out_scales: Sequence[float],
                   noise_management: str, nm_thres: float, bound_management: str, max_bm_factor: int,
                   max_bm_res: float, ir_drop: float, ir_drop_rs: float, ir_drop_segments: int,
                   ir_drop_time_step_resolution_scale: float, ir_drop_v_read: float, ir_drop_integration_sum: int,
                   ir_drop_rows: int, adc_quantization: int, adc_frequency: float,
                   input_clip: float, in_scale: float, dac_round: int, dac_clip: float,
                   adc_scale: float, adc_round: int, adc_clip: float, out_scale: float,
                   column_out_scale: Sequence[float], nm_mode: int, bm_rounds: int,
                   ir_drop_steps: int, ir_drop_tick: float, ir_drop_adc_scale: float) -> FLOAT:
    weight_t = op.Transpose(AdcWeight(G_plus, G_minus, adc_scale=adc_scale))
    mode = op.Constant(value_int=nm_mode)
    dynamic = op.Or(op.Equal(mode, op.Constant(value_int=1)), op.Equal(mode, op.Constant(value_int=2)))
    managed = op.Or(dynamic, op.Greater(op.Constant(value_int=bm_rounds), op.Constant(value_int=1)))
    if managed:
        codes = ManagedReads(X, weight_t, input_range=input_range, dac_steps=dac_steps, adc_round=adc_round,
                             adc_clip=adc_clip, nm_mode=nm_mode, nm_thres=nm_thres, bm_rounds=bm_rounds)
    else:
        q = InputDac(X, input_clip=input_clip, in_scale=in_scale, dac_round=dac_round, dac_clip=dac_clip)
        if op.Greater(op.Constant(value_float=ir_drop), op.Constant(value_float=0.0)):
            drop_weight, offset = IrDropOperands(
                G_plus, G_minus, g_min=g_min, ir_drop=ir_drop, ir_drop_rs=ir_drop_rs,
                ir_drop_segments=ir_drop_segments, ir_drop_v_read=ir_drop_v_read, ir_drop_rows=ir_drop_rows,
                ir_drop_steps=ir_drop_steps, ir_drop_tick=ir_drop_tick)
            counts = PulseCounts(q, dac_steps=dac_steps, ir_drop_steps=ir_drop_steps,
                                 ir_drop_integration_sum=ir_drop_integration_sum)
            z = OscillatorCodes(op.Add(op.MatMul(counts, op.Transpose(drop_weight)), offset),
                                adc_quantization=adc_quantization, ir_drop_adc_scale=ir_drop_adc_scale)
        else:
            z = op.MatMul(q, weight_t)
        codes = Adc(z, adc_round=adc_round, adc_clip=adc_clip)
    return Rescale(codes, B, out_scale=out_scale, column_out_scale=column_out_scale, column_offsets=column_offsets)


@script(XBAR, default_opset=op)
def CrossbarConv(X: FLOAT, G_plus: FLOAT, G_minus: FLOAT, B: FLOAT,
                 layer: str, input_range: float, scale_ratio: float, g_min: float, g_max: float,
                 dac_steps: float, adc_steps: float, out_bound: float, tile_row: int, tile_col: int,
                 drift_gain: float, column_scale_ratios: Sequence[float], column_drift_gains: Sequence[float],
                 column_offsets: Sequence[float], mapped_wmax: float, out_scales: Sequence[float],
                 noise_management: str, nm_thres: float, bound_management: str, max_bm_factor: int,
                 max_bm_res: float, ir_drop: float, ir_drop_rs: float, ir_drop_segments: int,
                 ir_drop_time_step_resolution_scale: float, ir_drop_v_read: float, ir_drop_integration_sum: int,
                 ir_drop_rows: int, adc_quantization: int, adc_frequency: float,
                 input_clip: float, in_scale: float, dac_round: int, dac_clip: float,
                 adc_scale: float, adc_round: int, adc_clip: float, out_scale: float,
                 column_out_scale: Sequence[float], nm_mode: int, bm_rounds: int,
                 ir_drop_steps: int, ir_drop_tick: float, ir_drop_adc_scale: float,
                 strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int], group: int) -> FLOAT:
    mode = op.Constant(value_int=nm_mode)
    dynamic = op.Or(op.Equal(mode, op.Constant(value_int=1)), op.Equal(mode, op.Constant(value_int=2)))
    managed = op.Or(dynamic, op.Greater(op.Constant(value_int=bm_rounds), op.Constant(value_int=1)))
    if managed:
        patches = Patches(NormalisedInput(X, input_range=input_range), G_plus, strides=strides, pads=pads,
                          dilations=dilations)
        codes = ManagedPatchReads(patches, PatchRows(AdcWeight(G_plus, G_minus, adc_scale=adc_scale)),
                                  dac_steps=dac_steps, adc_round=adc_round, adc_clip=adc_clip, nm_mode=nm_mode,
                                  nm_thres=nm_thres, bm_rounds=bm_rounds, group=group)
    else:
        q = InputDac(X, input_clip=input_clip, in_scale=in_scale, dac_round=dac_round, dac_clip=dac_clip)
        if op.Greater(op.Constant(value_float=ir_drop), op.Constant(value_float=0.0)):
            drop_weight, offset = IrDropOperands(
                G_plus, G_minus, g_min=g_min, ir_drop=ir_drop, ir_drop_rs=ir_drop_rs,
                ir_drop_segments=ir_drop_segments, ir_drop_v_read=ir_drop_v_read, ir_drop_rows=ir_drop_rows,
                ir_drop_steps=ir_drop_steps, ir_drop_tick=ir_drop_tick)
            counts = PulseCounts(q, dac_steps=dac_steps, ir_drop_steps=ir_drop_steps,
                                 ir_drop_integration_sum=ir_drop_integration_sum)
            ticks = op.Conv(counts, op.Reshape(drop_weight, op.Shape(G_plus)), strides=strides, pads=pads,
                            dilations=dilations, group=group)
            spatial_ones = op.ConstantOfShape(op.Shape(op.Shape(ticks, start=2)), value=[1])
            per_channel = op.Concat(op.Constant(value_ints=[-1]), spatial_ones, axis=0)
            z = OscillatorCodes(op.Add(ticks, op.Reshape(offset, per_channel)), adc_quantization=adc_quantization,
                                ir_drop_adc_scale=ir_drop_adc_scale)
        else:
            z = op.Conv(q, AdcWeight(G_plus, G_minus, adc_scale=adc_scale),
                        strides=strides, pads=pads, dilations=dilations, group=group)
        codes = Adc(z, adc_round=adc_round, adc_clip=adc_clip)
    return RescaleChannels(codes, B, out_scale=out_scale, column_out_scale=column_out_scale,
                           column_offsets=column_offsets)


@script(XBAR, default_opset=op)
def CrossbarConvTranspose(X: FLOAT, G_plus: FLOAT, G_minus: FLOAT, B: FLOAT,
                          layer: str, input_range: float, scale_ratio: float, g_min: float, g_max: float,
                          dac_steps: float, adc_steps: float, out_bound: float, tile_row: int, tile_col: int,
                          drift_gain: float, column_scale_ratios: Sequence[float],
                          column_drift_gains: Sequence[float], column_offsets: Sequence[float], mapped_wmax: float,
                          out_scales: Sequence[float], noise_management: str, nm_thres: float, bound_management: str,
                          max_bm_factor: int, max_bm_res: float, ir_drop: float, ir_drop_rs: float,
                          ir_drop_segments: int,
                          ir_drop_time_step_resolution_scale: float, ir_drop_v_read: float,
                          ir_drop_integration_sum: int, ir_drop_rows: int, adc_quantization: int, adc_frequency: float,
                          input_clip: float, in_scale: float, dac_round: int, dac_clip: float,
                          adc_scale: float, adc_round: int, adc_clip: float, out_scale: float,
                          column_out_scale: Sequence[float], nm_mode: int, bm_rounds: int,
                          ir_drop_steps: int, ir_drop_tick: float, ir_drop_adc_scale: float,
                          strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int], group: int,
                          output_padding: Sequence[int]) -> FLOAT:
    weight = AdcWeight(G_plus, G_minus, adc_scale=adc_scale)
    mode = op.Constant(value_int=nm_mode)
    dynamic = op.Or(op.Equal(mode, op.Constant(value_int=1)), op.Equal(mode, op.Constant(value_int=2)))
    managed = op.Or(dynamic, op.Greater(op.Constant(value_int=bm_rounds), op.Constant(value_int=1)))
    if managed:
        patches = TransposedPatches(NormalisedInput(X, input_range=input_range), G_plus, strides=strides, pads=pads,
                                    dilations=dilations, output_padding=output_padding)
        codes = ManagedPatchReads(patches, TransposedPatchRows(weight, group=group), dac_steps=dac_steps,
                                  adc_round=adc_round, adc_clip=adc_clip, nm_mode=nm_mode, nm_thres=nm_thres,
                                  bm_rounds=bm_rounds, group=group)
    else:
        q = InputDac(X, input_clip=input_clip, in_scale=in_scale, dac_round=dac_round, dac_clip=dac_clip)
        z = op.ConvTranspose(q, weight, strides=strides, pads=pads, output_padding=output_padding,
                             dilations=dilations, group=group)
        codes = Adc(z, adc_round=adc_round, adc_clip=adc_clip)
    return RescaleChannels(codes, B, out_scale=out_scale, column_out_scale=column_out_scale,
                           column_offsets=column_offsets)


FUNCTIONS: dict[str, OnnxFunction] = {f.name: f for f in (CrossbarLinear, CrossbarConv, CrossbarConvTranspose)}
"""ONNX op type -> its function body."""
