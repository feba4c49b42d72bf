"""IsolateCrossbarLayersPass, rule by rule, on small traced graphs."""

import torch
import torch.nn.functional as F
from pass_graphs import OneLinear, names, run, traced
from torch import nn

from xbar.passes.plan import Role, tag_of, tagged
from xbar.passes.rewrites.isolate_layers import IsolateCrossbarLayersPass


def isolated(module, *example):
    module = module.eval()
    graph_module, plans = traced(module)
    assert run(graph_module, IsolateCrossbarLayersPass(plans)) == [True]
    for x in example:
        assert torch.allclose(graph_module(x), module(x), atol=1e-6)
    return graph_module


def test_a_linear_layer_becomes_its_weight_only_op_then_a_bias_add():
    graph_module = isolated(OneLinear(), torch.randn(3, 6))
    assert names(graph_module) == ["fc_mvm", "fc_add_bias"]
    (mvm,) = tagged(graph_module.graph, Role.MVM)
    assert mvm.target is F.linear and len(mvm.args) == 2 and mvm.args[0].op == "placeholder"
    assert mvm.args[1].op == "get_attr" and mvm.args[1].target == "fc.weight"
    (add_bias,) = tagged(graph_module.graph, Role.ADD_BIAS)
    assert add_bias.args[0] is mvm and add_bias.args[1].target == "fc.bias" and add_bias.args[2] == -1
    assert list(add_bias.users)[0].target is torch.relu  # the old node's user reads the new output
    assert not any(n.op == "call_module" for n in graph_module.graph.nodes)  # the layer node is gone
    assert tag_of(mvm).plan.layer.name == "fc"


def test_a_layer_without_bias_is_only_its_op():
    graph_module = isolated(OneLinear(bias=False), torch.randn(3, 6))
    assert names(graph_module) == ["fc_mvm"]


class MatmulForms(nn.Module):
    """x @ W with W stored [in, out], and addmm (its activation is argument 1)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 5))
        self.proj_weight = nn.Parameter(torch.randn(5, 3))
        self.proj_bias = nn.Parameter(torch.randn(3))

    def forward(self, x):
        return torch.addmm(self.proj_bias, x @ self.w, self.proj_weight)


def test_a_weight_stored_in_by_out_is_read_through_a_transpose():
    graph_module = isolated(MatmulForms(), torch.randn(4, 6))
    assert names(graph_module) == ["w_mvm", "proj_mvm", "proj_add_bias"]
    w_mvm, proj_mvm = tagged(graph_module.graph, Role.MVM)
    for mvm, weight in ((w_mvm, "w"), (proj_mvm, "proj_weight")):
        assert mvm.args[1].target is torch.t and mvm.args[1].args[0].target == weight
    assert proj_mvm.args[0] is w_mvm  # addmm's activation (argument 1) feeds the op


class Convolutions(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
        self.up = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, dilation=1, bias=False)

    def forward(self, x):
        return self.up(self.conv(x))


def test_convolutions_keep_their_geometry_as_arguments():
    graph_module = isolated(Convolutions(), torch.randn(2, 4, 8, 8))
    assert names(graph_module) == ["conv_mvm", "conv_add_bias", "up_mvm"]
    conv, up = tagged(graph_module.graph, Role.MVM)
    assert conv.target is F.conv2d and conv.args[2:] == (None, (2, 2), (1, 1), (1, 1), 2)
    assert up.target is F.conv_transpose2d and up.args[2:] == (None, (2, 2), (1, 1), (1, 1), 1, (1, 1))
    assert tagged(graph_module.graph, Role.ADD_BIAS)[0].args[2] == 1  # the bias is per channel, dim 1


def test_without_plans_the_graph_is_untouched():
    graph_module, _ = traced(OneLinear())
    code = graph_module.code
    assert run(graph_module, IsolateCrossbarLayersPass([])) == [False]
    assert graph_module.code == code
