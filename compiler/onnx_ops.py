"""The ``ai.xbar`` ONNX ops: schemas, function bodies and the exporter's translations.

One node per crossbar array (a layer, or one tile of a tiled layer):
``ai.xbar::CrossbarLinear`` or ``ai.xbar::CrossbarConv``, version 1, inputs
``X, G_plus, G_minus, B``, output ``Y``. G+ and G- are float32 conductances in
microsiemens shaped like the weight; ``B`` is the digital bias, all zeros for an
array without one (an ONNX function body cannot test for an absent input).

Attributes: the hardware (the :class:`~xbar.passes.crossbar.CrossbarSettings` fields
``layer``, ``input_range``, ``scale_ratio``, ``g_min``, ``g_max``, ``dac_steps``,
``adc_steps``, ``out_bound`` (0 means none), ``tile_row``, ``tile_col``), the
float32 constants the simulation computes with (``CrossbarSettings.constants``:
``inf`` bounds mean no clip, ``dac_round`` / ``adc_round`` switch rounding on),
and for convolutions ONNX ``Conv``'s ``strides``, ``pads``, ``dilations``, ``group``.

The function bodies, in standard ONNX ops, repeat the elementwise steps of
:func:`xbar.passes.crossbar.crossbar_linear` one for one with the same constants, so
they agree with PyTorch bit for bit except in the matmul's accumulation order.
"""

from __future__ import annotations

from typing import Sequence

import onnx
from onnx.defs import OpSchema
from onnxscript import FLOAT, script
from onnxscript import opset20 as op
from onnxscript.values import Opset

from ..passes.crossbar import CrossbarSettings
from ..passes.export_ops import CROSSBAR_CONV, CROSSBAR_LINEAR

DOMAIN = "ai.xbar"
VERSION = 1
"""Bump whenever an op's meaning changes."""

OPSET = op.version
"""The standard ONNX opset of the exported graph and of the function bodies (they must match)."""
XBAR = Opset(DOMAIN, VERSION)
_ATTR = OpSchema.AttrType
BOOL = onnx.TensorProto.BOOL

HARDWARE_ATTRIBUTES = {
    "layer": (_ATTR.STRING, "name of the source layer in the PyTorch model"),
    "input_range": (_ATTR.FLOAT, "learned input range r (0: none, no clip)"),
    "scale_ratio": (_ATTR.FLOAT, "converter scale ratio s = (g_max - g_min) / max|W|, uS per weight unit"),
    "g_min": (_ATTR.FLOAT, "conductance of the logical zero, uS"),
    "g_max": (_ATTR.FLOAT, "largest conductance above g_min, uS"),
    "dac_steps": (_ATTR.FLOAT, "DAC steps over [-1, 1] (0: ideal)"),
    "adc_steps": (_ATTR.FLOAT, "ADC steps over [-out_bound, out_bound] (0: ideal)"),
    "out_bound": (_ATTR.FLOAT, "ADC clip level in units of I / (g_max - g_min) (0: unbounded)"),
    "tile_row": (_ATTR.INT, "row of this array in its layer's grid of arrays (input slice)"),
    "tile_col": (_ATTR.INT, "column of this array in its layer's grid of arrays (output slice)"),
}
CONSTANT_ATTRIBUTES = {
    "input_clip": (_ATTR.FLOAT, "clip bound of the input (inf: no clip)"),
    "in_scale": (_ATTR.FLOAT, "input multiplier to DAC codes"),
    "dac_round": (_ATTR.INT, "1: round the DAC codes (half to even)"),
    "dac_clip": (_ATTR.FLOAT, "clip bound of the DAC codes after rounding (inf: no clip)"),
    "adc_scale": (_ATTR.FLOAT, "current (uS x DAC code) multiplier to ADC codes"),
    "adc_round": (_ATTR.INT, "1: round the ADC codes (half to even)"),
    "adc_clip": (_ATTR.FLOAT, "clip bound of the ADC codes after rounding (inf: no clip)"),
    "out_scale": (_ATTR.FLOAT, "ADC code multiplier to the layer's output units, before the bias"),
}
CONV_ATTRIBUTES = {
    "strides": (_ATTR.INTS, "as ONNX Conv"),
    "pads": (_ATTR.INTS, "as ONNX Conv: begin values, then end values"),
    "dilations": (_ATTR.INTS, "as ONNX Conv"),
    "group": (_ATTR.INT, "as ONNX Conv"),
}


def _schema(name: str, doc: str, extra: dict) -> OpSchema:
    attributes = HARDWARE_ATTRIBUTES | CONSTANT_ATTRIBUTES | extra
    return OpSchema(
        name, DOMAIN, VERSION, doc,
        inputs=[
            OpSchema.FormalParameter("X", "T", "activation (linear: [..., in]; conv: [N, C, *spatial])"),
            OpSchema.FormalParameter("G_plus", "T", "positive conductances, uS, shaped like the weight"),
            OpSchema.FormalParameter("G_minus", "T", "negative conductances, uS, shaped like the weight"),
            OpSchema.FormalParameter("B", "T", "digital bias [out] (zeros when the layer has none)"),
        ],
        outputs=[OpSchema.FormalParameter("Y", "T", "layer output")],
        type_constraints=[("T", ["tensor(float)"], "float32 tensors")],
        attributes=[OpSchema.Attribute(key, kind, text) for key, (kind, text) in attributes.items()],
    )


SCHEMAS = (
    _schema("CrossbarLinear", "y = W x + b on a crossbar array with input range, DAC and ADC.", {}),
    _schema("CrossbarConv", "A 1-3d convolution on a crossbar array with input range, DAC and ADC.",
            CONV_ATTRIBUTES),
)


def register_schemas() -> None:
    """Register the ``ai.xbar`` schemas with onnx (once per process)."""
    for schema in SCHEMAS:
        if not onnx.defs.has(schema.name, VERSION, DOMAIN):
            onnx.defs.register_schema(schema)


register_schemas()


# Function bodies. Every body declares all the op's attributes, used or not, so each
# attribute of a node belongs to its function. A step whose constant makes it a
# no-op (rounding off, an infinite bound, an integer DAC bound after rounding) is
# skipped by an If on a constant, which a runtime resolves once.
@script(XBAR, default_opset=op)
def CrossbarLinear(X: FLOAT, G_plus: FLOAT, G_minus: FLOAT, B: FLOAT,
                   layer: str, input_range: float, scale_ratio: float, g_min: float, g_max: float,
                   dac_steps: float, adc_steps: float, out_bound: float, tile_row: int, tile_col: int,
                   input_clip: float, in_scale: float, dac_round: int, dac_clip: float,
                   adc_scale: float, adc_round: int, adc_clip: float, out_scale: float) -> FLOAT:
    input_bound = op.Constant(value_float=input_clip)
    if op.IsInf(input_bound):
        x = op.Identity(X)
    else:
        x = op.Clip(X, op.Neg(input_bound), input_bound)
    q = op.Mul(x, op.Constant(value_float=in_scale))
    if op.Cast(op.Constant(value_int=dac_round), to=BOOL):
        q = op.Round(q)
    dac_bound = op.Constant(value_float=dac_clip)
    if op.Not(op.Equal(op.Floor(dac_bound), dac_bound)):
        q = op.Clip(q, op.Neg(dac_bound), dac_bound)
    z = op.MatMul(q, op.Transpose(op.Mul(op.Sub(G_plus, G_minus), op.Constant(value_float=adc_scale))))
    if op.Cast(op.Constant(value_int=adc_round), to=BOOL):
        z = op.Round(z)
    adc_bound = op.Constant(value_float=adc_clip)
    if op.Not(op.IsInf(adc_bound)):
        z = op.Clip(z, op.Neg(adc_bound), adc_bound)
    return op.Add(op.Mul(z, op.Constant(value_float=out_scale)), B)


@script(XBAR, default_opset=op)
def CrossbarConv(X: FLOAT, G_plus: FLOAT, G_minus: FLOAT, B: FLOAT,
                 layer: str, input_range: float, scale_ratio: float, g_min: float, g_max: float,
                 dac_steps: float, adc_steps: float, out_bound: float, tile_row: int, tile_col: int,
                 input_clip: float, in_scale: float, dac_round: int, dac_clip: float,
                 adc_scale: float, adc_round: int, adc_clip: float, out_scale: float,
                 strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int], group: int) -> FLOAT:
    input_bound = op.Constant(value_float=input_clip)
    if op.IsInf(input_bound):
        x = op.Identity(X)
    else:
        x = op.Clip(X, op.Neg(input_bound), input_bound)
    q = op.Mul(x, op.Constant(value_float=in_scale))
    if op.Cast(op.Constant(value_int=dac_round), to=BOOL):
        q = op.Round(q)
    dac_bound = op.Constant(value_float=dac_clip)
    if op.Not(op.Equal(op.Floor(dac_bound), dac_bound)):
        q = op.Clip(q, op.Neg(dac_bound), dac_bound)
    weight = op.Mul(op.Sub(G_plus, G_minus), op.Constant(value_float=adc_scale))
    z = op.Conv(q, weight, strides=strides, pads=pads, dilations=dilations, group=group)
    if op.Cast(op.Constant(value_int=adc_round), to=BOOL):
        z = op.Round(z)
    adc_bound = op.Constant(value_float=adc_clip)
    if op.Not(op.IsInf(adc_bound)):
        z = op.Clip(z, op.Neg(adc_bound), adc_bound)
    spatial_ones = op.ConstantOfShape(op.Shape(op.Shape(G_plus, start=2)), value=[1])
    channel_bias = op.Reshape(B, op.Concat(op.Constant(value_ints=[-1]), spatial_ones, axis=0))
    return op.Add(op.Mul(z, op.Constant(value_float=out_scale)), channel_bias)


FUNCTIONS = {"CrossbarLinear": CrossbarLinear, "CrossbarConv": CrossbarConv}


def node_attributes(settings: CrossbarSettings) -> dict:
    """The hardware fields and derived constants of one layer, as node attributes."""
    return settings.scalars() | settings.constants


def conv_attributes(stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], groups: int) -> dict:
    """PyTorch's convolution geometry in ONNX Conv's terms (symmetric pads)."""
    return {"strides": list(stride), "pads": list(padding) * 2, "dilations": list(dilation), "group": groups}


def translate_crossbar_linear(x: FLOAT, g_plus: FLOAT, g_minus: FLOAT, bias: FLOAT, layer: str,
                              input_range: float, scale_ratio: float, g_min: float, g_max: float,
                              dac_steps: float, adc_steps: float, out_bound: float, tile_row: int,
                              tile_col: int) -> FLOAT:
    """``xbar::crossbar_linear`` -> one ``ai.xbar::CrossbarLinear`` node."""
    settings = CrossbarSettings(layer, input_range, scale_ratio, g_min, g_max, dac_steps, adc_steps, out_bound,
                                tile_row, tile_col)
    return XBAR.CrossbarLinear(x, g_plus, g_minus, bias, **node_attributes(settings))


def translate_crossbar_conv(x: FLOAT, g_plus: FLOAT, g_minus: FLOAT, bias: FLOAT, layer: str,
                            input_range: float, scale_ratio: float, g_min: float, g_max: float,
                            dac_steps: float, adc_steps: float, out_bound: float, tile_row: int, tile_col: int,
                            stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                            groups: int) -> FLOAT:
    """``xbar::crossbar_conv`` -> one ``ai.xbar::CrossbarConv`` node."""
    settings = CrossbarSettings(layer, input_range, scale_ratio, g_min, g_max, dac_steps, adc_steps, out_bound,
                                tile_row, tile_col)
    return XBAR.CrossbarConv(x, g_plus, g_minus, bias, **node_attributes(settings),
                             **conv_attributes(stride, padding, dilation, groups))


TRANSLATIONS = {CROSSBAR_LINEAR: translate_crossbar_linear, CROSSBAR_CONV: translate_crossbar_conv}
