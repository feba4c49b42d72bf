"""Lower each crossbar layer to conductances: one ``<layer>_crossbar`` call.

Rules, for each crossbar call site of a prepared graph:
* the converter maps the (float) weight to G+ and G- in uS and a scale ratio,
  once per weight (a shared weight gives one :class:`Crossbar` module);
* the chain input range -> normalize -> DAC -> crossbar -> ADC -> rescale -> add_bias
  collapses into one ``call_module`` of that module, which carries the learned
  range (frozen), the DAC/ADC settings and the digital bias;
* the original weights, biases and input-range modules leave the GraphModule;
* a graph without crossbar nodes is left untouched.
"""

from __future__ import annotations

from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from .crossbar import Crossbar, CrossbarSettings
from .matching import _resolve
from .plan import LayerPlan, PassError, add_node, check_names, erase_if_unused, layer_nodes, tag_of, tagged

CHAIN = ("input_range", "input_range_value", "normalize", "dac", "mvm", "adc", "rescale", "add_bias")


def build_crossbar(graph_module: fx.GraphModule, plan: LayerPlan) -> Crossbar:
    """Convert one planned layer's current weight, range and bias into a Crossbar."""
    layer = plan.layer
    weight = _resolve(graph_module, layer.weight).detach()
    if layer.weight_transposed:
        weight = weight.t()
    (g_plus, g_minus), params = plan.converter.convert_to_conductances(weight.contiguous(), plan.columnwise)
    if plan.columnwise:
        raise PassError("LowerToConductancesPass: columnwise scale ratios are not lowered yet")
    range_module = getattr(graph_module, f"{plan.prefix}_input_range", None)
    io = plan.io
    settings = CrossbarSettings(
        layer=layer.name,
        input_range=float(range_module.value.detach()) if range_module is not None else 0.0,
        scale_ratio=float(params["scale_ratio"]),
        g_min=float(plan.converter.g_min),
        g_max=float(plan.converter.g_max),
        dac_steps=io.dac_steps,
        adc_steps=io.adc_steps,
        out_bound=io.bound,
    )
    bias = _resolve(graph_module, layer.bias).detach().clone() if layer.bias else None
    return Crossbar(g_plus.contiguous(), g_minus.contiguous(), bias, settings, layer.geometry, layer.weight)


def drop_unused_tensors(graph_module: fx.GraphModule) -> None:
    """Delete submodules and tensors that no node reads any more."""
    graph_module.delete_all_unused_submodules()
    read = {n.target for n in graph_module.graph.nodes if n.op == "get_attr"}
    called = {n.target for n in graph_module.graph.nodes if n.op == "call_module"}
    names = [name for name, _ in graph_module.named_parameters(remove_duplicate=False)]
    names += [name for name, _ in graph_module.named_buffers(remove_duplicate=False)]
    for name in names:
        owner, _, attr = name.rpartition(".")
        inside_called = any(name.startswith(m + ".") for m in called)
        if name not in read and not inside_called:
            module = graph_module.get_submodule(owner) if owner else graph_module
            if hasattr(module, attr):
                delattr(module, attr)


class LowerToConductancesPass(PassBase):
    """Collapse each prepared layer into a Crossbar call; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        sites = list(tagged(graph, "mvm"))
        for crossbar in sites:
            tag = tag_of(crossbar)
            plan = tag.plan
            nodes = layer_nodes(graph, tag.key)
            entry = next(nodes[role] for role in CHAIN if role in nodes and role != "input_range_value")
            activation = entry.args[0]
            exit_node = next(nodes[role] for role in reversed(CHAIN) if role in nodes)
            module_name = f"{plan.prefix}_crossbar"
            if not hasattr(graph_module, module_name):
                graph_module.add_submodule(module_name, build_crossbar(graph_module, plan))
            operands = {a for n in nodes.values() for a in n.args if isinstance(a, fx.Node)} - set(nodes.values())
            with graph.inserting_after(exit_node):
                lowered = add_node(graph, "call_module", module_name, (activation,),
                                   role="crossbar", key=tag.key, plan=plan)
            exit_node.replace_all_uses_with(lowered)
            for role in reversed(CHAIN):
                if role in nodes:
                    graph.erase_node(nodes[role])
            for operand in operands:
                erase_if_unused(graph, operand)
        drop_unused_tensors(graph_module)
        return PassResult(graph_module, bool(sites))

    def ensures(self, graph_module: fx.GraphModule) -> None:
        left = [n.name for n in graph_module.graph.nodes if (t := tag_of(n)) and t.role != "crossbar"]
        if left:
            raise PassError(f"{type(self).__name__}: prepared nodes left after lowering: {left}")
        check_names(graph_module.graph, type(self).__name__)
