"""Insert the DAC before and the ADC after each crossbar layer.

Rules, for each crossbar node:
* a DAC (``inp_res``) inserts ``<layer>_dac`` between the crossbar and its input
  (the normalised input, when the layer has an input range);
* an ADC (``out_res``) or output bound (``out_bound``) inserts ``<layer>_adc``
  right after the crossbar, before the rescale; with ``manage_output_clipping``
  it feeds output clipping back into the range's gradient;
* an ideal periphery (``is_perfect``, no resolution, no bound) inserts nothing.
"""

from __future__ import annotations

from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from . import periphery
from .plan import add_node, check_names, layer_nodes, tagged


class InsertConvertersPass(PassBase):
    """DAC and ADC nodes; see the module docstring for the rules."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        modified = False
        for crossbar in tagged(graph, "mvm"):
            tag = crossbar.meta["xbar"]
            plan, io = tag.plan, tag.plan.io
            if io.dac_steps:
                source = crossbar.args[0]
                with graph.inserting_before(crossbar):
                    dac = add_node(graph, "call_function", periphery.dac, (source, io.dac_steps),
                                   role="dac", key=tag.key, plan=plan)
                crossbar.replace_input_with(source, dac)
                modified = True
            if io.bound:
                value = layer_nodes(graph, tag.key).get("input_range_value")
                manage = plan.input_range.enable and plan.input_range.manage_output_clipping
                users = list(crossbar.users)
                with graph.inserting_after(crossbar):
                    adc = add_node(graph, "call_function", periphery.adc, (crossbar, crossbar.args[1], value),
                                   dict(bound=io.bound, steps=io.adc_steps, channel_dim=plan.layer.channel_dim,
                                        columnwise=plan.columnwise,
                                        output_min_percentage=plan.input_range.output_min_percentage if manage else None),
                                   role="adc", key=tag.key, plan=plan)
                for user in users:
                    user.replace_input_with(crossbar, adc)
                modified = True
        return PassResult(graph_module, modified)

    def ensures(self, graph_module: fx.GraphModule) -> None:
        check_names(graph_module.graph, type(self).__name__)
