"""Insert the DAC before and the ADC after each crossbar layer.

Rules, for each crossbar node (``mvm``):
* a DAC (``inp_res``) inserts ``<layer>_dac`` between the crossbar and its
  (normalised) input, one per input shared by several arrays;
* an ADC (``out_res``) or output bound (``out_bound``) inserts ``<layer>_adc``
  right after the crossbar, before the rescale; with ``manage_output_clipping``
  it feeds output clipping back into the range's gradient, reading the range's
  batch statistics (``<layer>_range_statistics``, the input range's ``statistics``);
  it counts in units of the analog weights' output ``W' x``: ``omega`` (the plan's
  ``mapping.weight_scaling_omega``) for a scale derived from the weight, or the stored
  scales (``<layer>_weight_scales``, :mod:`~xbar.passes.rewrites.weight_scales`, made here for
  every array that stores them, ADC or not);
* an ideal periphery (``is_perfect``, no resolution, no bound) inserts nothing;
* an array with noise or bound management gets them too, and
  :class:`~xbar.passes.rewrites.insert_managed_reads.InsertManagedReadsPass` then takes them into its
  managed reads, which code every read themselves.
"""

from __future__ import annotations

from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..numerics import periphery
from ..plan import Role, Scope, add_node, check_names, input_chain, retag, tag_of, tagged
from .weight_scales import weight_scales_node


class InsertConvertersPass(PassBase):
    """DAC and ADC nodes; see the module docstring for the rules."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        modified = False
        dac_inputs: dict[fx.Node, list[fx.Node]] = {}
        for mvm in tagged(graph, Role.MVM):
            if tag_of(mvm).plan.io.dac_steps:
                dac_inputs.setdefault(mvm.args[0], []).append(mvm)
        for mvms in dac_inputs.values():
            tag = tag_of(mvms[0])
            source = mvms[0].args[0]
            with graph.inserting_before(mvms[0]):
                dac = add_node(graph, "call_function", periphery.dac, (source, tag.plan.io.dac_steps),
                               tag=retag(tag, Role.DAC, Scope.ROW))
            for mvm in mvms:
                mvm.replace_input_with(source, dac)
            modified = True
        statistics: dict[fx.Node, fx.Node] = {}  # range value -> its statistics, one per range
        for mvm in tagged(graph, Role.MVM):
            tag = tag_of(mvm)
            plan, io = tag.plan, tag.plan.io
            scales = weight_scales_node(graph_module, mvm)  # stored scales: read by the ADC and the noise
            if not io.bound:
                continue
            value = input_chain(mvm).nodes.get(Role.INPUT_RANGE_VALUE)
            manage = plan.input_range.enable and plan.input_range.manage_output_clipping
            users = list(mvm.users)
            feedback = self._feedback(graph, mvm, value, statistics) if manage else {}
            scaling = dict(columnwise=plan.columnwise, omega=plan.mapping.weight_scaling_omega)
            if scales is not None:
                scaling["scales"] = scales
            with graph.inserting_after(mvm):
                adc = add_node(graph, "call_function", periphery.adc, (mvm, mvm.args[1], value),
                               dict(bound=io.bound, steps=io.adc_steps, channel_dim=plan.layer.channel_dim,
                                    **scaling, **feedback),
                               tag=retag(tag, Role.ADC))
            for user in users:
                user.replace_input_with(mvm, adc)
            modified = True
        return PassResult(graph_module, modified)

    @staticmethod
    def _feedback(graph: fx.Graph, mvm: fx.Node, value: fx.Node, statistics: dict[fx.Node, fx.Node]) -> dict:
        """The ADC's output-clipping arguments: the range's ``output_min_percentage`` and its statistics
        (one node per range, made once in ``statistics``)."""
        if value not in statistics:
            with graph.inserting_after(value):
                statistics[value] = add_node(graph, "get_attr", value.target.rpartition(".")[0] + ".statistics",
                                             (), tag=retag(tag_of(value), Role.RANGE_STATISTICS))
        return dict(output_min_percentage=tag_of(mvm).plan.input_range.output_min_percentage,
                    statistics=statistics[value])

    def ensures(self, graph_module: fx.GraphModule) -> None:
        check_names(graph_module.graph, type(self).__name__)
