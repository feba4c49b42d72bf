"""An einsum that multiplies an activation by one weight matrix is a linear crossbar layer."""

import pytest
import torch
from torch import nn

from xbar import HardwareConfig, convert, prepare
from xbar.compiler.pipeline.record import Stage, record_of
from xbar.passes.capture import capture
from xbar.passes.rewrites.einsum_linear import EinsumAsLinearPass

IDEAL = HardwareConfig().with_overrides({"pre_post.input_range.enable": False})


class Einsum(nn.Module):
    def __init__(self, equation: str, weight_shape: tuple, weight_first: bool = False):
        super().__init__()
        self.equation, self.weight_first = equation, weight_first
        self.W = nn.Parameter(torch.randn(*weight_shape))

    def forward(self, x):
        operands = (self.W, x) if self.weight_first else (x, self.W)
        return torch.einsum(self.equation, *operands)


LINEAR = {  # equation, W's shape, W first, input shape
    "bi,ij->bj": ("bi,ij->bj", (4, 3), False, (2, 4)),
    "...i,ji->...j": ("...i,ji->...j", (3, 4), False, (2, 5, 4)),
    "btd,de->bte": ("btd,de->bte", (4, 3), False, (2, 5, 4)),
    "ij,bi->bj": ("ij,bi->bj", (4, 3), True, (2, 4)),
    "b i , i j -> b j": ("b i , i j -> b j", (4, 3), False, (2, 4)),
}
DIGITAL = {
    "output transposed": ("bi,ij->jb", (4, 3), False, (2, 4)),
    "outer product": ("bi,ij->bij", (4, 3), False, (2, 4)),
    "contraction not last": ("ib,ij->bj", (4, 3), False, (4, 2)),
    "repeated index": ("bbi,ij->bj", (4, 3), False, (2, 2, 4)),
    "implicit output": ("bi,ij", (4, 3), False, (2, 4)),
}


def case(table: dict, name: str):
    equation, shape, weight_first, input_shape = table[name]
    torch.manual_seed(0)
    return Einsum(equation, shape, weight_first).eval(), torch.randn(*input_shape)


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
@pytest.mark.parametrize("name", sorted(LINEAR))
def test_a_matmul_shaped_einsum_is_one_linear_layer_with_the_same_result(name, method):
    model, x = case(LINEAR, name)
    prepared = prepare(model, (x,), IDEAL, capture_method=method)
    (plan,) = record_of(prepared, "test", Stage.PREPARED).plans
    assert (plan.layer.name, plan.layer.kind.name, plan.layer.weight) == ("W", "linear", "W")
    with torch.no_grad():
        torch.testing.assert_close(convert(prepared)(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(DIGITAL))
def test_any_other_einsum_is_left_as_it_is(name):
    model, x = case(DIGITAL, name)
    graph_module = capture(model, (x,), "symbolic_trace")
    assert not EinsumAsLinearPass()(graph_module).modified


def test_a_product_of_two_activations_is_left_as_it_is():
    class Scores(nn.Module):
        def forward(self, q, k):
            return torch.einsum("bi,bj->ij", q, k)

    q = torch.randn(2, 4)
    assert not EinsumAsLinearPass()(capture(Scores(), (q, q), "symbolic_trace")).modified
