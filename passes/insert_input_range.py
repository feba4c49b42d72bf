"""Insert the learned input range and its scale nodes around each crossbar layer.

Rules, for each crossbar node whose plan enables the input range:
* ``<layer>_input_range`` (an :class:`InputRange` submodule of the same name,
  one per layer, shared by its call sites) clips the activation;
* ``<layer>_normalize`` divides by the range before the crossbar, and
  ``<layer>_rescale`` multiplies by it after (both without gradient to the range);
* the ``add_bias`` node, if any, stays after the rescale;
* layers with the input range disabled, and graphs without crossbar layers, are
  left untouched.
"""

from __future__ import annotations

from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from . import periphery
from .input_range import InputRange
from .plan import add_node, check_names, tagged


class InsertInputRangePass(PassBase):
    """Clip, normalise and rescale by the learned range; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        modified = False
        for crossbar in tagged(graph, "mvm"):
            tag = crossbar.meta["xbar"]
            plan = tag.plan
            if not plan.input_range.enable:
                continue
            module_name = f"{plan.prefix}_input_range"
            if not hasattr(graph_module, module_name):
                graph_module.add_submodule(module_name, InputRange(plan.input_range))
            activation = crossbar.args[0]
            with graph.inserting_before(crossbar):
                clipped = add_node(graph, "call_module", module_name, (activation,),
                                   role="input_range", key=tag.key, plan=plan)
                value = add_node(graph, "get_attr", f"{module_name}.value", (),
                                 role="input_range_value", key=tag.key, plan=plan)
                normalized = add_node(graph, "call_function", periphery.normalize, (clipped, value),
                                      role="normalize", key=tag.key, plan=plan)
            crossbar.replace_input_with(activation, normalized)
            users = list(crossbar.users)
            with graph.inserting_after(crossbar):
                rescaled = add_node(graph, "call_function", periphery.rescale, (crossbar, value),
                                    role="rescale", key=tag.key, plan=plan)
            for user in users:
                user.replace_input_with(crossbar, rescaled)
            modified = True
        return PassResult(graph_module, modified)

    def ensures(self, graph_module: fx.GraphModule) -> None:
        check_names(graph_module.graph, type(self).__name__)
