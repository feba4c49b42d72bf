"""Each kind's op, defined once: the torch custom op, the ONNX schema, the function
body and the translation all follow CrossbarSettings' fields and the kind's geometry."""

import dataclasses
import inspect

import pytest
import torch

from xbar.compiler.onnx.ops import (
    ANNOTATION_ATTRIBUTES,
    CONSTANT_ATTRIBUTES,
    CROSSBAR_OPS,
    FUNCTIONS,
    SCHEMAS,
    node_attributes,
)
from xbar.passes.kinds import CONV, CONV_TRANSPOSE, KINDS, LINEAR
from xbar.passes.kinds.conv import ConvGeometry
from xbar.passes.kinds.conv_transpose import ConvTransposeGeometry
from xbar.passes.numerics.crossbar import Crossbar
from xbar.passes.numerics.settings import CrossbarSettings
from xbar.passes.rewrites.export_ops import CUSTOM_OPS, TENSORS, op_arguments

SETTINGS = CrossbarSettings("fc", input_range=2.5, scale_ratio=40.0, g_min=1.0, g_max=25.0, dac_steps=254,
                            adc_steps=254, out_bound=10.0, tile_row=1, tile_col=2)
ARRAYS = {  # kind -> (input, weight, geometry)
    LINEAR: ((3, 5, 8), (6, 8), None),
    CONV: ((3, 4, 7, 7), (6, 2, 3, 3), ConvGeometry((2, 2), (1, 1), (1, 1), 2)),
    CONV_TRANSPOSE: ((3, 4, 5, 5), (4, 3, 3, 3), ConvTransposeGeometry((2, 2), (1, 1), (1, 1), (1, 1), 2)),
}


def geometry_fields(kind) -> list[str]:
    return [f.name for f in dataclasses.fields(kind.geometry_type)] if kind.geometry_type else []


def test_every_kind_has_an_op_and_a_function_body():
    assert set(CROSSBAR_OPS) == set(KINDS) == set(CUSTOM_OPS) == set(ARRAYS)
    assert {kind.onnx_op for kind in KINDS} == set(FUNCTIONS) == set(SCHEMAS)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_op_signatures_follow_the_settings_fields(kind):
    settings = [f.name for f in dataclasses.fields(CrossbarSettings)]  # the per-column tuples too
    torch_arguments = [a.name for a in CUSTOM_OPS[kind]._schema.arguments]
    assert torch_arguments == ["x", *TENSORS, *settings, *geometry_fields(kind)]
    assert list(inspect.signature(CROSSBAR_OPS[kind].translation).parameters) == torch_arguments
    attributes = [*settings, *CONSTANT_ATTRIBUTES, *kind.onnx_attributes]
    schema = SCHEMAS[kind.onnx_op]
    assert sorted(schema.attributes) == sorted([*attributes, *ANNOTATION_ATTRIBUTES])  # those no body reads
    assert not any(schema.attributes[name].required for name in ANNOTATION_ATTRIBUTES)
    body = FUNCTIONS[kind.onnx_op]
    assert list(body.to_function_proto().attribute) == attributes
    body_types = {p.name: p.type.name for p in body.op_signature.params if p.name in attributes}
    assert body_types == {name: schema.attributes[name].type.name for name in attributes}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_a_node_carries_exactly_the_schemas_attributes(kind):
    _, _, geometry = ARRAYS[kind]
    assert set(node_attributes(kind, SETTINGS, geometry)) == set(SCHEMAS[kind.onnx_op].attributes) - set(
        ANNOTATION_ATTRIBUTES)  # the annotations are set on the exported nodes
    assert set(SETTINGS.constants) == set(CONSTANT_ATTRIBUTES)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_the_custom_op_runs_the_crossbar(kind):
    x_shape, weight_shape, geometry = ARRAYS[kind]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=generator) * 2
    g_plus, g_minus = (torch.rand(weight_shape, generator=generator) * 25 + 1 for _ in range(2))
    bias = torch.randn(kind.output_channels(weight_shape, geometry), generator=generator)
    array = Crossbar(g_plus, g_minus, bias, SETTINGS, kind, geometry, "fc.weight")
    y = CUSTOM_OPS[kind](x, g_plus, g_minus, bias, *op_arguments(SETTINGS, geometry))
    assert torch.equal(y, array(x))
    assert y.shape == kind.mvm(x, g_plus, geometry).shape
    fake = torch._subclasses.FakeTensorMode()
    with fake:
        traced = CUSTOM_OPS[kind](*(fake.from_tensor(t) for t in (x, g_plus, g_minus, bias)),
                                  *op_arguments(SETTINGS, geometry))
    assert traced.shape == y.shape
