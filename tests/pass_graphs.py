"""Small hand-written graphs for the pass tests: tiny modules, symbolic_trace, plans."""

from typing import Optional

import torch
from torch import fx, nn

from xbar import HardwareConfig
from xbar.compiler.pipeline.stages import plan_layers
from xbar.passes.matching import LayerSelection
from xbar.passes.plan import LayerPlan, tag_of

WIDE_RANGE = {"pre_post.input_range.init_value": 1e6, "pre_post.input_range.init_from_data": 0}
"""A range no test input reaches: the clip changes nothing."""


class OneLinear(nn.Module):
    def __init__(self, inputs=6, outputs=4, bias=True):
        super().__init__()
        self.fc = nn.Linear(inputs, outputs, bias=bias)

    def forward(self, x):
        return torch.relu(self.fc(x))


def traced(module: nn.Module, overrides: Optional[dict] = None) -> tuple[fx.GraphModule, list[LayerPlan]]:
    """``module`` traced (eval, seeded weights) and the plans a config with ``overrides`` gives."""
    graph_module = fx.symbolic_trace(module.eval())
    config = HardwareConfig().with_overrides(overrides or {}).validate()
    return graph_module, plan_layers(graph_module, config, LayerSelection())[0]


def run(graph_module: fx.GraphModule, *passes) -> list[bool]:
    """Run passes in order (their postconditions included); each one's ``modified``."""
    modified = []
    for graph_pass in passes:
        modified.append(graph_pass(graph_module).modified)
        graph_module.graph.lint()
        graph_module.recompile()
    return modified


def names(graph_module: fx.GraphModule) -> list[str]:
    """The names of the tagged nodes, in graph order."""
    return [n.name for n in graph_module.graph.nodes if tag_of(n) is not None]
