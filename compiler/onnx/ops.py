"""The ``ai.xbar`` ONNX ops: schemas, attributes and the exporter's translations.

One node per crossbar array (a layer, or one tile of a tiled layer), of its layer
kind's op (``onnx_op``: ``ai.xbar::CrossbarLinear``, ``CrossbarConv``,
``CrossbarConvTranspose``), version :data:`VERSION`, inputs ``X, G_plus, G_minus,
B``, output ``Y``, all float32. G+ and G- are conductances in microsiemens shaped
like the weight; ``B`` is the digital bias, all zeros for an array without one (an
ONNX function body cannot test for an absent input).

Attributes: the hardware (every :meth:`~xbar.passes.numerics.crossbar.CrossbarSettings.hardware_fields`
field: ``layer``, ``input_range``, ``scale_ratio``, ``g_min``, ``g_max``, ``dac_steps``,
``adc_steps``, ``out_bound``, ``tile_row``, ``tile_col``, ``drift_gain``, the
per-column ``column_scale_ratios`` / ``column_drift_gains`` / ``column_offsets``, the weight scaling's
``mapped_wmax`` and the learned ``out_scales``), the float32 constants
the simulation computes with (``CrossbarSettings.constants``), and the kind's
geometry as ONNX ``Conv`` / ``ConvTranspose`` attributes (``onnx_attributes`` of
the kind), and the optional :data:`ANNOTATION_ATTRIBUTES` (the part of the layer's
weight the array holds; under a chip target, where it sits), which no body reads.
The per-column values are attributes, not initializers, so the exporter's optimiser
cannot merge one array's with another's.

"None" is written one way: 0. ``input_range``, ``out_bound``, ``dac_steps``,
``adc_steps`` and the clip constants ``input_clip``, ``dac_clip``, ``adc_clip``
are 0 for no range, no converter, no clip; an empty per-column list means the
array's one value (``scale_ratio``, ``drift_gain``, ``out_scale``) for every
column. The config keeps aihwkit's spelling (``<= 0`` is ideal), which
:class:`~xbar.passes.parameters.IOParameters` reads as 0.

Each kind's schema and translation are generated from the settings' fields and
the kind (:class:`CrossbarOp`); the function bodies, sharing their periphery
steps, are in :mod:`xbar.compiler.onnx.bodies`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import onnx
import onnx_ir as ir
from onnx.defs import OpSchema
from onnxscript import FLOAT
from onnxscript.values import OnnxFunction

from ...passes.kinds import KINDS
from ...passes.kinds.base import LayerKind
from ...passes.numerics.settings import CrossbarSettings
from ...passes.rewrites.export_ops import CUSTOM_OPS, TENSORS, decode_arguments, op_parameters
from .bodies import FUNCTIONS, XBAR
from .names import DOMAIN, VERSION

_ATTR = OpSchema.AttrType

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
    "column_scale_ratios": "scale ratio of each output column, replacing scale_ratio (empty: scale_ratio for all)",
    "column_drift_gains": "drift-compensation gain of each output column (empty: drift_gain for all); "
                          "already folded into column_out_scale",
    "column_offsets": "recalibration's offset of each output column, in the layer's output units, added after the "
                      "rescale and the bias (empty: none); with column_drift_gains the per-column affine "
                      "correction a digital periphery applies to the ADC output",
    "mapped_wmax": "the analog weight max|W'| that g_max - g_min stands for: the ADC counts in units of W' x "
                   "(1: of I / (g_max - g_min)); already folded into adc_scale and out_scale",
    "out_scales": "learned digital output scales: one for all columns, or one per column (empty: none); "
                  "already folded into out_scale / column_out_scale",
    "noise_management": "aihwkit's forward.noise_management: NONE, ABS_MAX, MAX or CONSTANT; each input vector "
                        "(last dim; of a convolution, each patch), normalised by the input range, is divided by "
                        "its scale before the DAC and the ADC output multiplied by it (nm_mode)",
    "nm_thres": "cap on the ABS_MAX / MAX scale, and CONSTANT's scale (0: no cap; CONSTANT then 1)",
    "bound_management": "aihwkit's forward.bound_management: NONE, ITERATIVE or ITERATIVE_WORST_CASE (the same "
                        "rule): while any ADC output of the call clips, read again with the input halved "
                        "(bm_rounds)",
    "max_bm_factor": "bound management stops after the first read with the input divided by more than this",
    "max_bm_res": "... or, with a DAC, by more than max_bm_res * dac_steps / 2",
    "ir_drop": "aihwkit's forward.ir_drop, scale of the wire resistance of its time-stepped IR-drop model "
               "(0: none; without it every ir_drop_* attribute, adc_quantization and adc_frequency are 0 too). "
               "With it, each DAC value x = q * 2 / dac_steps drives its row for the samples t < |x|; the rows, "
               "padded to ir_drop_rows at g_min (half before), are lumped into ir_drop_segments Thevenin "
               "segments joined by wires of ir_drop * ir_drop_rs Ohm per row, even columns read at the last row "
               "and odd ones at the first; the integrated column current (V_th - ir_drop_v_read) / R_th is "
               "sign(x) * samples on @ W_eff^T + offset (the function IrDropOperands derives W_eff and the offset "
               "from G+ / G- in float64), counted in whole oscillator ticks with adc_quantization, then the ADC",
    "ir_drop_rs": "wire resistance (Ohm) from one row's cell to the next, scaled by ir_drop",
    "ir_drop_segments": "segments a column's rows are lumped into for the IR drop",
    "ir_drop_time_step_resolution_scale": "IR-drop samples of one read: int((dac_steps + 2) / 2 * this)",
    "ir_drop_v_read": "the ADC's read voltage (V) of the IR-drop model",
    "ir_drop_integration_sum": "1: integrate the IR-drop column current by a plain sum; 0: the trapezoid rule",
    "ir_drop_rows": "the physical array's rows the IR-drop model pads the input to (0 without IR drop)",
    "adc_quantization": "with IR drop only: 1 counts the column charge in whole ticks of 100 / adc_frequency "
                        "(truncated towards zero) before the ADC of adc_steps",
    "adc_frequency": "with IR drop only: the frequency (GHz) of adc_quantization's current-controlled oscillator",
}
"""The meaning of each of :meth:`CrossbarSettings.hardware_fields` (a field without one fails at import)."""
CONSTANT_ATTRIBUTES = {
    "input_clip": (float, "clip bound of the input (0: no clip)"),
    "in_scale": (float, "input multiplier to DAC codes"),
    "dac_round": (int, "1: round the DAC codes (half to even)"),
    "dac_clip": (float, "clip bound of the DAC codes after rounding (0: no clip)"),
    "adc_scale": (float, "current (uS x DAC code) multiplier to ADC codes"),
    "adc_round": (int, "1: round the ADC codes (half to even)"),
    "adc_clip": (float, "clip bound of the ADC codes after rounding (0: no clip)"),
    "out_scale": (float, "ADC code multiplier to the layer's output units, before the bias"),
    "column_out_scale": (tuple[float, ...], "out_scale of each output column (empty: out_scale for all)"),
    "nm_mode": (int, "noise management: 0 none, 1 ABS_MAX, 2 MAX, 3 CONSTANT (scale nm_thres, or 1; without bound "
                     "management already folded into input_clip, in_scale and out_scale)"),
    "bm_rounds": (int, "most reads bound management makes, the input divided by 1, 2, 4, ... (1: none); the first "
                       "read in which no ADC output clips is kept, else the last"),
    "ir_drop_steps": (int, "IR-drop samples of one read, T = int((dac_steps + 2) / 2 * "
                           "ir_drop_time_step_resolution_scale), at times i / (T - 1) (0 without IR drop)"),
    "ir_drop_tick": (float, "with IR drop: the conductances' multiplier, 0.2 * adc_frequency / 100 with "
                            "adc_quantization (the column charge in oscillator ticks), else 1 (0 without IR drop)"),
    "ir_drop_adc_scale": (float, "with IR drop: oscillator ticks to ADC codes, adc_scale / ir_drop_tick "
                                 "(0 without IR drop)"),
}
REGION_ATTRIBUTES = {
    "in_offset": "first column of the layer's [out, in x kernel] weight this array holds",
    "in_size": "columns of that matrix this array holds",
    "out_offset": "first row (output channel) of that matrix this array holds",
    "out_size": "rows of that matrix this array holds",
    "in_total": "columns of the layer's whole [out, in x kernel] weight",
    "out_total": "rows of the layer's whole [out, in x kernel] weight",
}
"""Which part of its layer's weight a node holds (INT; every node; :mod:`xbar.compiler.onnx.annotations`)."""
PLACEMENT_ATTRIBUTES = {
    "replicas": (int, "copies of this array on the chip (each runs a share of the layer's MVMs)"),
    "chip": (tuple[int, ...], "chip of each replica (replica k at index k)"),
    "core": (tuple[int, ...], "core of each replica"),
    "array": (tuple[int, ...], "array within its core of each replica (G- on array + 1 when the pair takes two)"),
    "row_offset": (tuple[int, ...], "first device row of each replica's region on its array"),
    "col_offset": (tuple[int, ...], "first device column of each replica's region on its array"),
}
"""Where a node sits on the chip (only under a chip target)."""
DEVICE_ATTRIBUTES = {
    "devices": (tuple[str, ...], "multi-device converter only: the initializers holding the array's devices in uS, "
                                 "one per device, shaped like the weight (<array>.g_plus_0, <array>.g_minus_0, "
                                 "... lowest significance first; <array>.g_device for one device)"),
    "device_significances": (tuple[float, ...], "multi-device converter only: c_k of each device, with "
                                                "G_plus = sum_k c_k G_k + device_offset and G_minus = 0"),
    "device_offset": (float, "multi-device converter only: the constant of G_plus in uS (a single-device "
                             "converter's reference; 0 for pairs)"),
}
"""What a multi-device array's node says of its devices (:mod:`xbar.compiler.onnx.devices` builds its G_plus)."""
ANNOTATION_ATTRIBUTES = {name: (int, text) for name, text in REGION_ATTRIBUTES.items()} | PLACEMENT_ATTRIBUTES \
    | DEVICE_ATTRIBUTES
"""The optional attributes no function body reads: they are for backends (and checked by onnx's checker)."""
ATTRIBUTE_TYPES = {str: _ATTR.STRING, float: _ATTR.FLOAT, int: _ATTR.INT, tuple[int, ...]: _ATTR.INTS,
                   tuple[float, ...]: _ATTR.FLOATS, tuple[str, ...]: _ATTR.STRINGS}
"""Python type -> ONNX attribute type."""
ANNOTATIONS = {str: str, float: float, int: int, tuple[int, ...]: Sequence[int], tuple[float, ...]: Sequence[float]}
"""Python type -> the annotation torch.onnx reads an attribute parameter's type from."""


def attribute_specs(kind: LayerKind) -> dict[str, tuple[type, str]]:
    """Every attribute of the kind's op: name -> (Python type, meaning)."""
    settings = {name: (t, HARDWARE_ATTRIBUTES[name]) for name, t in CrossbarSettings.hardware_fields().items()}
    return settings | CONSTANT_ATTRIBUTES | dict(kind.onnx_attributes)


def node_attributes(kind: LayerKind, settings: CrossbarSettings, geometry) -> dict:
    """The attributes of one array's node: hardware fields, derived constants, geometry."""
    return settings.hardware() | settings.constants | kind.onnx_values(geometry)


def _schema(kind: LayerKind) -> OpSchema:
    return OpSchema(
        kind.onnx_op, DOMAIN, VERSION, f"A {kind.name} layer on a crossbar array with input range, DAC and ADC.",
        inputs=[
            OpSchema.FormalParameter("X", "T", "activation (channels on dim 1, or last for linear)"),
            OpSchema.FormalParameter("G_plus", "T", "positive conductances, uS, shaped like the weight (a "
                                     "multi-device array: its devices' sum, see the devices attribute)"),
            OpSchema.FormalParameter("G_minus", "T", "negative conductances, uS, shaped like the weight (a "
                                     "multi-device array: zeros)"),
            OpSchema.FormalParameter("B", "T", "digital bias [out] (zeros when the layer has none)"),
        ],
        outputs=[OpSchema.FormalParameter("Y", "T", "layer output")],
        type_constraints=[("T", ["tensor(float)"], "float32 tensors (a model of another dtype is cast at the "
                                                   "graph's boundary)")],
        attributes=[OpSchema.Attribute(name, ATTRIBUTE_TYPES[t], text) for name, (t, text) in
                    attribute_specs(kind).items()]
        + [OpSchema.Attribute(name, ATTRIBUTE_TYPES[t], text, required=False) for name, (t, text) in
           ANNOTATION_ATTRIBUTES.items()],
    )


def _translation(kind: LayerKind) -> Callable:
    """``xbar::crossbar_<kind>`` -> one ``ai.xbar::<onnx_op>`` node.

    torch.onnx tells a translation's inputs from its attributes by the annotations
    of its signature, so the generated function gets a real one.
    """
    emit = getattr(XBAR, kind.onnx_op)
    float_lists = [name for name, (t, _) in attribute_specs(kind).items() if t == tuple[float, ...]]

    def translate(x, g_plus, g_minus, bias, *values):
        settings, geometry = decode_arguments(kind, values)
        attributes = node_attributes(kind, settings, geometry)
        for name in float_lists:  # typed: an empty list would otherwise become INTS
            attributes[name] = ir.AttrFloat32s(name, list(attributes[name]))
        return emit(x, g_plus, g_minus, bias, **attributes)

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
