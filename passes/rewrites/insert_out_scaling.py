"""Insert the learned output scale of each crossbar array (``mapping.learn_out_scaling``).

Rules, for each crossbar node (``mvm``, one per array) whose plan learns its output scale:
* ``<layer>[_tile<r>_<c>]_out_scaling`` (an :class:`~xbar.passes.numerics.weight_mapping.OutScaling`
  submodule of that name, one value or one per output column with ``out_scaling_columnwise``)
  multiplies the array's output after its ADC and rescale, before the bias or a tiled
  layer's column sum (aihwkit's order); a shared layer's call sites share it;
* other layers, and graphs without crossbar layers, are left untouched.

Run it after the converters: it follows the ADC and the rescale.
"""

from __future__ import annotations

from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..numerics.weight_mapping import OutScaling, weight_block
from ..plan import Role, add_node, check_names, output_chain, retag, tag_of, tagged


class InsertOutScalingPass(PassBase):
    """A learned output scale after each array; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        modified = False
        for mvm in tagged(graph, Role.MVM):
            tag = tag_of(mvm)
            plan = tag.plan
            if not plan.mapping.learn_out_scaling:
                continue
            scaling_tag = retag(tag, Role.OUT_SCALING)
            if not hasattr(graph_module, scaling_tag.name):
                weight = weight_block(graph_module, plan, tag.tile)
                columns = weight.shape[0] if plan.mapping.out_scaling_columnwise else 1
                graph_module.add_submodule(scaling_tag.name, OutScaling(columns, plan.layer.channel_dim, weight.dim()))
            last = ([mvm] + output_chain(mvm))[-1]
            users = list(last.users)
            with graph.inserting_after(last):
                scaled = add_node(graph, "call_module", scaling_tag.name, (last,), tag=scaling_tag)
            for user in users:
                user.replace_input_with(last, scaled)
            modified = True
        return PassResult(graph_module, modified)

    def ensures(self, graph_module: fx.GraphModule) -> None:
        check_names(graph_module.graph, type(self).__name__)
