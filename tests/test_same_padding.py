"""padding='same' convolutions with an even kernel: a digital pad of one zero, then a symmetric crossbar conv."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xbar import HardwareConfig, convert, prepare
from xbar.compiler.pipeline.record import Stage, record_of
from xbar.passes.capture import capture
from xbar.passes.rewrites.same_padding import UnevenSamePaddingPass

IDEAL = HardwareConfig().with_overrides({"pre_post.input_range.enable": False})


class Functional(nn.Module):
    """``F.conv2d(..., padding='same')`` on a weight of the model, kernel 2 x 3."""

    def __init__(self):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(3, 2, 2, 3)), nn.Parameter(torch.randn(3))

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, padding="same")


CASES = {  # model, input shape, expected symmetric padding
    "conv1d k2": (lambda: nn.Conv1d(2, 3, 2, padding="same"), (2, 2, 7), (0,)),
    "conv2d k2x3": (lambda: nn.Conv2d(2, 3, (2, 3), padding="same"), (2, 2, 5, 6), (0, 1)),
    "conv2d k4 groups": (lambda: nn.Conv2d(4, 4, 4, padding="same", groups=2), (2, 4, 6, 6), (1, 1)),
    "conv2d k2 dilation 3": (lambda: nn.Conv2d(2, 2, 2, padding="same", dilation=3), (2, 2, 7, 7), (1, 1)),
    "conv3d k2 no bias": (lambda: nn.Conv3d(2, 2, 2, padding="same", bias=False), (2, 2, 3, 4, 5), (0, 0, 0)),
    "functional k2x3": (Functional, (2, 2, 5, 6), (0, 1)),
}


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_an_even_kernel_maps_and_gives_the_float_result(name, method):
    make, shape, padding = CASES[name]
    torch.manual_seed(0)
    model, x = nn.Sequential(make()).eval(), torch.randn(*shape)
    prepared = prepare(model, (x,), IDEAL, capture_method=method)
    (plan,) = record_of(prepared, "test", Stage.PREPARED).plans
    assert (plan.layer.kind.name, plan.layer.geometry.padding) == ("conv", padding)
    assert [n.name for n in prepared.graph.nodes if n.target is F.pad] != []
    with torch.no_grad():
        torch.testing.assert_close(convert(prepared)(x), model(x), atol=1e-5, rtol=1e-5)


def test_odd_kernels_explicit_padding_and_other_padding_modes_are_left_as_they_are():
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding="same"), nn.Conv2d(2, 2, 2, padding=1),
                          nn.Conv2d(2, 2, 2, padding="same", padding_mode="reflect"))
    gm = capture(model.eval(), (torch.randn(2, 2, 6, 6),), "symbolic_trace")
    assert not UnevenSamePaddingPass()(gm).modified
