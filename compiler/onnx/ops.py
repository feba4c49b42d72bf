"""The ``ai.xbar`` ONNX ops: schemas, function bodies and the exporter's translations.

One node per crossbar array (a layer, or one tile of a tiled layer), of its layer
kind's op (``onnx_op``: ``ai.xbar::CrossbarLinear``, ``CrossbarConv``,
``CrossbarConvTranspose``), version :data:`VERSION`, inputs ``X, G_plus, G_minus,
B``, output ``Y``. G+ and G- are float32 conductances in microsiemens shaped like
the weight; ``B`` is the digital bias, all zeros for an array without one (an ONNX
function body cannot test for an absent input).

Attributes: the hardware (the :meth:`~xbar.passes.numerics.crossbar.CrossbarSettings.scalar_fields`
``layer``, ``input_range``, ``scale_ratio``, ``g_min``, ``g_max``, ``dac_steps``,
``adc_steps``, ``out_bound`` (0 means none), ``tile_row``, ``tile_col``), the
float32 constants the simulation computes with (``CrossbarSettings.constants``:
``inf`` bounds mean no clip, ``dac_round`` / ``adc_round`` switch rounding on),
and the kind's geometry as ONNX ``Conv`` / ``ConvTranspose`` attributes
(``onnx_attributes`` of the kind).

Only the function bodies are written per op; each kind's schema and translation
are generated from the settings' fields and the kind (:class:`CrossbarOp`). The
bodies, in standard ONNX ops, repeat the elementwise steps of
:func:`xbar.passes.numerics.crossbar.run_crossbar` one for one with the same constants, so
they agree with PyTorch bit for bit except in the matmul's accumulation order.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import onnx
from onnx.defs import OpSchema
from onnxscript import FLOAT, script
from onnxscript import opset20 as op
from onnxscript.values import OnnxFunction, Opset

from ...passes.kinds import KINDS
from ...passes.kinds.base import LayerKind
from ...passes.numerics.crossbar import CrossbarSettings
from ...passes.rewrites.export_ops import CUSTOM_OPS, TENSORS, decode_arguments, op_parameters

DOMAIN = "ai.xbar"
VERSION = 3
"""Bump whenever an op's meaning changes or an op is added (2: ``CrossbarConvTranspose``;
3: the ``drift_gain`` attribute)."""

OPSET = op.version
"""The standard ONNX opset of the exported graph and of the function bodies (they must match)."""
XBAR = Opset(DOMAIN, VERSION)
_ATTR = OpSchema.AttrType
BOOL = onnx.TensorProto.BOOL

HARDWARE_ATTRIBUTES = {
    "layer": "name of the source layer in the PyTorch model",
    "input_range": "learned input range r (0: none, no clip)",
    "scale_ratio": "converter scale ratio s = (g_max - g_min) / max|W|, uS per weight unit",
    "g_min": "conductance of the logical zero, uS",
    "g_max": "largest conductance above g_min, uS",
    "dac_steps": "DAC steps over [-1, 1] (0: ideal)",
    "adc_steps": "ADC steps over [-out_bound, out_bound] (0: ideal)",
    "out_bound": "ADC clip level in units of I / (g_max - g_min) (0: unbounded)",
    "tile_row": "row of this array in its layer's grid of arrays (input slice)",
    "tile_col": "column of this array in its layer's grid of arrays (output slice)",
    "drift_gain": "digital drift-compensation gain on the ADC output (1: none); already folded into out_scale",
}
"""The meaning of each of :meth:`CrossbarSettings.scalar_fields` (a field without one fails at import)."""
CONSTANT_ATTRIBUTES = {
    "input_clip": (float, "clip bound of the input (inf: no clip)"),
    "in_scale": (float, "input multiplier to DAC codes"),
    "dac_round": (int, "1: round the DAC codes (half to even)"),
    "dac_clip": (float, "clip bound of the DAC codes after rounding (inf: no clip)"),
    "adc_scale": (float, "current (uS x DAC code) multiplier to ADC codes"),
    "adc_round": (int, "1: round the ADC codes (half to even)"),
    "adc_clip": (float, "clip bound of the ADC codes after rounding (inf: no clip)"),
    "out_scale": (float, "ADC code multiplier to the layer's output units, before the bias"),
}
ATTRIBUTE_TYPES = {str: _ATTR.STRING, float: _ATTR.FLOAT, int: _ATTR.INT, tuple[int, ...]: _ATTR.INTS}
"""Python type -> ONNX attribute type."""
ANNOTATIONS = {str: str, float: float, int: int, tuple[int, ...]: Sequence[int]}
"""Python type -> the annotation torch.onnx reads an attribute parameter's type from."""


def attribute_specs(kind: LayerKind) -> dict[str, tuple[type, str]]:
    """Every attribute of the kind's op: name -> (Python type, meaning)."""
    settings = {name: (t, HARDWARE_ATTRIBUTES[name]) for name, t in CrossbarSettings.scalar_fields().items()}
    return settings | CONSTANT_ATTRIBUTES | dict(kind.onnx_attributes)


def node_attributes(kind: LayerKind, settings: CrossbarSettings, geometry) -> dict:
    """The attributes of one array's node: hardware fields, derived constants, geometry."""
    return settings.scalars() | settings.constants | kind.onnx_values(geometry)


def _schema(kind: LayerKind) -> OpSchema:
    return OpSchema(
        kind.onnx_op, DOMAIN, VERSION, f"A {kind.name} layer on a crossbar array with input range, DAC and ADC.",
        inputs=[
            OpSchema.FormalParameter("X", "T", "activation (channels on dim 1, or last for linear)"),
            OpSchema.FormalParameter("G_plus", "T", "positive conductances, uS, shaped like the weight"),
            OpSchema.FormalParameter("G_minus", "T", "negative conductances, uS, shaped like the weight"),
            OpSchema.FormalParameter("B", "T", "digital bias [out] (zeros when the layer has none)"),
        ],
        outputs=[OpSchema.FormalParameter("Y", "T", "layer output")],
        type_constraints=[("T", ["tensor(float)"], "float32 tensors")],
        attributes=[OpSchema.Attribute(name, ATTRIBUTE_TYPES[t], text) for name, (t, text) in
                    attribute_specs(kind).items()],
    )


def _translation(kind: LayerKind) -> Callable:
    """``xbar::crossbar_<kind>`` -> one ``ai.xbar::<onnx_op>`` node.

    torch.onnx tells a translation's inputs from its attributes by the annotations
    of its signature, so the generated function gets a real one.
    """
    emit = getattr(XBAR, kind.onnx_op)

    def translate(x, g_plus, g_minus, bias, *values):
        settings, geometry = decode_arguments(kind, values)
        return emit(x, g_plus, g_minus, bias, **node_attributes(kind, settings, geometry))

    tensors = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=FLOAT)
               for name in ("x", *TENSORS)]
    scalars = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ANNOTATIONS[t])
               for name, t in op_parameters(kind).items()]
    translate.__signature__ = inspect.Signature(tensors + scalars, return_annotation=FLOAT)
    translate.__annotations__ = {p.name: p.annotation for p in tensors + scalars} | {"return": FLOAT}
    translate.__name__ = translate.__qualname__ = f"translate_crossbar_{kind.name}"
    return translate


SCHEMAS = {kind.onnx_op: _schema(kind) for kind in KINDS}


def register_schemas() -> None:
    """Register the ``ai.xbar`` schemas with onnx (once per process)."""
    for schema in SCHEMAS.values():
        if not onnx.defs.has(schema.name, VERSION, DOMAIN):
            onnx.defs.register_schema(schema)


register_schemas()


# Function bodies. Every body declares all the op's attributes, used or not, so each
# attribute of a node belongs to its function. A step whose constant makes it a
# no-op (rounding off, an infinite bound, an integer DAC bound after rounding) is
# skipped by an If on a constant, which a runtime resolves once. An integer ADC
# bound clips before rounding (round(clip(z, -c, c)) = clip(round(z), -c, c) for
# an integer c), which lets ONNX Runtime fuse the clip into the Conv.
@script(XBAR, default_opset=op)
def CrossbarLinear(X: FLOAT, G_plus: FLOAT, G_minus: FLOAT, B: FLOAT,
                   layer: str, input_range: float, scale_ratio: float, g_min: float, g_max: float,
                   dac_steps: float, adc_steps: float, out_bound: float, tile_row: int, tile_col: int,
                   drift_gain: float,
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
    adc_bound = op.Constant(value_float=adc_clip)
    integer_bound = op.And(op.Not(op.IsInf(adc_bound)), op.Equal(op.Floor(adc_bound), adc_bound))
    if integer_bound:  # the same codes as rounding first, and the runtime can fuse the clip into the mvm
        z = op.Clip(z, op.Neg(adc_bound), adc_bound)
    if op.Cast(op.Constant(value_int=adc_round), to=BOOL):
        z = op.Round(z)
    if op.And(op.Not(op.IsInf(adc_bound)), op.Not(integer_bound)):
        z = op.Clip(z, op.Neg(adc_bound), adc_bound)
    return op.Add(op.Mul(z, op.Constant(value_float=out_scale)), B)


@script(XBAR, default_opset=op)
def CrossbarConv(X: FLOAT, G_plus: FLOAT, G_minus: FLOAT, B: FLOAT,
                 layer: str, input_range: float, scale_ratio: float, g_min: float, g_max: float,
                 dac_steps: float, adc_steps: float, out_bound: float, tile_row: int, tile_col: int,
                 drift_gain: float,
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
    adc_bound = op.Constant(value_float=adc_clip)
    integer_bound = op.And(op.Not(op.IsInf(adc_bound)), op.Equal(op.Floor(adc_bound), adc_bound))
    if integer_bound:  # the same codes as rounding first, and the runtime can fuse the clip into the mvm
        z = op.Clip(z, op.Neg(adc_bound), adc_bound)
    if op.Cast(op.Constant(value_int=adc_round), to=BOOL):
        z = op.Round(z)
    if op.And(op.Not(op.IsInf(adc_bound)), op.Not(integer_bound)):
        z = op.Clip(z, op.Neg(adc_bound), adc_bound)
    spatial_ones = op.ConstantOfShape(op.Shape(op.Shape(G_plus, start=2)), value=[1])
    channel_bias = op.Reshape(B, op.Concat(op.Constant(value_ints=[-1]), spatial_ones, axis=0))
    return op.Add(op.Mul(z, op.Constant(value_float=out_scale)), channel_bias)




@script(XBAR, default_opset=op)
def CrossbarConvTranspose(X: FLOAT, G_plus: FLOAT, G_minus: FLOAT, B: FLOAT,
                          layer: str, input_range: float, scale_ratio: float, g_min: float, g_max: float,
                          dac_steps: float, adc_steps: float, out_bound: float, tile_row: int, tile_col: int,
                          drift_gain: float,
                          input_clip: float, in_scale: float, dac_round: int, dac_clip: float,
                          adc_scale: float, adc_round: int, adc_clip: float, out_scale: float,
                          strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int], group: int,
                          output_padding: Sequence[int]) -> FLOAT:
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
    z = op.ConvTranspose(q, weight, strides=strides, pads=pads, output_padding=output_padding,
                         dilations=dilations, group=group)
    adc_bound = op.Constant(value_float=adc_clip)
    integer_bound = op.And(op.Not(op.IsInf(adc_bound)), op.Equal(op.Floor(adc_bound), adc_bound))
    if integer_bound:  # the same codes as rounding first, and the runtime can fuse the clip into the mvm
        z = op.Clip(z, op.Neg(adc_bound), adc_bound)
    if op.Cast(op.Constant(value_int=adc_round), to=BOOL):
        z = op.Round(z)
    if op.And(op.Not(op.IsInf(adc_bound)), op.Not(integer_bound)):
        z = op.Clip(z, op.Neg(adc_bound), adc_bound)
    spatial_ones = op.ConstantOfShape(op.Shape(op.Shape(G_plus, start=2)), value=[1])
    channel_bias = op.Reshape(B, op.Concat(op.Constant(value_ints=[-1]), spatial_ones, axis=0))
    return op.Add(op.Mul(z, op.Constant(value_float=out_scale)), channel_bias)


FUNCTIONS: dict[str, OnnxFunction] = {f.name: f for f in (CrossbarLinear, CrossbarConv, CrossbarConvTranspose)}
"""ONNX op type -> its function body."""


@dataclass(frozen=True)
class CrossbarOp:
    """Everything about one kind's op: the torch custom op, the ONNX schema, the
    function body, and the translation from the one to the other."""

    kind: LayerKind
    custom_op: object
    schema: OpSchema
    function: OnnxFunction
    translation: Callable


CROSSBAR_OPS = {kind: CrossbarOp(kind, CUSTOM_OPS[kind], SCHEMAS[kind.onnx_op], FUNCTIONS[kind.onnx_op],
                                 _translation(kind)) for kind in KINDS}
"""Layer kind -> its op."""
TRANSLATIONS = {o.custom_op: o.translation for o in CROSSBAR_OPS.values()}
"""The exporter's ``custom_translation_table``."""
