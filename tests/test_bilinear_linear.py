"""nn.Bilinear as a linear crossbar layer on the outer product of its inputs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xbar import HardwareConfig, convert, prepare
from xbar.compiler.pipeline.record import Stage, record_of
from xbar.passes.capture import capture
from xbar.passes.rewrites.bilinear_linear import BilinearAsLinearPass, outer_product

IDEAL = HardwareConfig().with_overrides({"pre_post.input_range.enable": False})


class TwoInputs(nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.bil = nn.Bilinear(3, 4, 2, bias=bias)

    def forward(self, x1, x2):
        return self.bil(x1, x2)


class Functional(nn.Module):
    """``F.bilinear`` of an input with itself, on a weight of the model."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(2, 3, 3))

    def forward(self, x):
        return F.bilinear(x, x, self.W)


def test_the_outer_product_is_flattened_as_the_weight_reshapes():
    x1, x2, weight = torch.randn(5, 3), torch.randn(5, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(F.linear(outer_product(x1, x2), weight.reshape(2, -1)), F.bilinear(x1, x2, weight))


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
@pytest.mark.parametrize("bias", [True, False])
def test_a_bilinear_module_is_one_linear_layer_with_the_same_result(bias, method):
    torch.manual_seed(0)
    model, x1, x2 = TwoInputs(bias).eval(), torch.randn(2, 5, 3), torch.randn(2, 5, 4)
    expected = model(x1, x2)
    prepared = prepare(model, (x1, x2), IDEAL, capture_method=method)
    (plan,) = record_of(prepared, "test", Stage.PREPARED).plans
    assert (plan.layer.name, plan.layer.kind.name, plan.layer.bias) == ("bil", "linear", "bil.bias" if bias else None)
    assert tuple(prepared.get_parameter("bil.weight").shape) == (2, 12)
    assert model.bil.weight.shape == (2, 3, 4)  # the user's model is not touched
    with torch.no_grad():
        torch.testing.assert_close(convert(prepared)(x1, x2), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_functional_bilinear_maps_too(method):
    torch.manual_seed(0)
    model, x = Functional().eval(), torch.randn(4, 3)
    prepared = prepare(model, (x,), IDEAL, capture_method=method)
    assert [plan.layer.name for plan in record_of(prepared, "test", Stage.PREPARED).plans] == ["W"]
    with torch.no_grad():
        torch.testing.assert_close(convert(prepared)(x), model(x), atol=1e-5, rtol=1e-5)


def test_a_weight_read_elsewhere_too_is_left_as_it_is():
    class Shared(Functional):
        def forward(self, x):
            return F.bilinear(x, x, self.W) + self.W.sum()

    assert not BilinearAsLinearPass()(capture(Shared().eval(), (torch.randn(4, 3),), "symbolic_trace")).modified
