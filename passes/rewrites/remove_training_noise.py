"""Remove the training noise before lowering: a programmed array has no training noise.

Rules: every ``<layer>_weight_noise`` and ``<layer>_output_noise`` node is
replaced by its first input (the clean weight block, the crossbar's output) and
its submodule leaves the GraphModule; a graph without them is left untouched.
"""

from __future__ import annotations

from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..errors import PostconditionError
from ..plan import Role, tagged

NOISE_ROLES = (Role.WEIGHT_NOISE, Role.OUTPUT_NOISE)


class RemoveTrainingNoisePass(PassBase):
    """Bypass and erase the training-noise nodes; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        nodes = [node for role in NOISE_ROLES for node in tagged(graph, role)]
        for node in nodes:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        for name in {node.target for node in nodes}:
            graph_module.delete_submodule(name)
        return PassResult(graph_module, bool(nodes))

    def ensures(self, graph_module: fx.GraphModule) -> None:
        left = [node.name for role in NOISE_ROLES for node in tagged(graph_module.graph, role)]
        if left:
            raise PostconditionError(f"{type(self).__name__}: training-noise nodes remain: {left}")
