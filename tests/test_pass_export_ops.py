"""CrossbarToCustomOpsPass, rule by rule, on small traced graphs."""

import torch
from pass_graphs import run, traced
from torch import nn

from xbar.passes.kinds import CONV_TRANSPOSE, LINEAR
from xbar.passes.numerics.crossbar import Crossbar
from xbar.passes.rewrites.export_ops import CUSTOM_OPS, CrossbarToCustomOpsPass
from xbar.passes.rewrites.insert_input_range import InsertInputRangePass
from xbar.passes.rewrites.isolate_layers import IsolateCrossbarLayersPass
from xbar.passes.rewrites.lower_conductances import LowerToConductancesPass


class UpAndOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, bias=False)  # 6 outputs: 3 per group
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(self.up(x).mean((2, 3)))


def converted():
    graph_module, plans = traced(UpAndOut())
    run(graph_module, IsolateCrossbarLayersPass(plans), InsertInputRangePass(), LowerToConductancesPass())
    return graph_module.eval()


def test_each_crossbar_call_becomes_its_kinds_custom_op_in_place():
    graph_module = converted()
    x = torch.randn(2, 4, 5, 5)
    expected = graph_module(x)
    order = [n.name for n in graph_module.graph.nodes]
    assert run(graph_module, CrossbarToCustomOpsPass()) == [True]
    nodes = {n.name: n for n in graph_module.graph.nodes}
    assert [n for n in nodes if n in order] == order  # same names, same order; the buffer reads come in before
    for name, kind in (("up_crossbar", CONV_TRANSPOSE), ("fc_crossbar", LINEAR)):
        node = nodes[name]
        assert node.op == "call_function" and node.target == CUSTOM_OPS[kind]
        assert [a.target for a in node.args[1:4]] == [f"{name}.g_plus", f"{name}.g_minus", f"{name}.bias"]
        assert node.args[4] == name.split("_")[0]  # the settings follow, layer first
    assert nodes["up_crossbar"].args[-5:] == ([2, 2], [0, 0], [0, 0], [1, 1], 2)  # the geometry last
    assert isinstance(graph_module.up_crossbar, Crossbar)  # the module stays: it owns the buffers
    assert torch.equal(graph_module(x), expected)


def test_an_array_without_bias_gets_one_zero_per_output_channel():
    graph_module = converted()
    assert graph_module.up_crossbar.bias is None
    run(graph_module, CrossbarToCustomOpsPass())
    assert torch.equal(graph_module.up_crossbar.bias, torch.zeros(6))  # G+ is [4, 3, 3, 3]: 2 groups of 3


def test_a_graph_without_crossbar_calls_is_untouched():
    graph_module, _ = traced(nn.Sequential(nn.ReLU()))
    code = graph_module.code
    assert run(graph_module, CrossbarToCustomOpsPass()) == [False]
    assert graph_module.code == code
