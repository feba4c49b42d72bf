"""Lower each crossbar array to conductances: one ``<layer>_crossbar`` call.

Rules, for each crossbar node (``mvm``, one per array) of a prepared graph:
* the converter maps the array's (float) weight block to G+ and G- in uS and a
  scale ratio; a shared layer's call sites share one :class:`Crossbar` module;
* input range -> normalize -> DAC -> mvm -> ADC -> rescale (and the bias, when
  the layer is one array) collapse into one ``call_module`` of that module, which
  carries the learned range (frozen), the DAC/ADC settings and the digital bias;
  a tiled layer keeps its digital sum, concatenation and one bias add;
* the original weights and the input-range modules leave the GraphModule;
* a graph without crossbar nodes is left untouched.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..errors import PostconditionError
from ..numerics.crossbar import Crossbar, CrossbarSettings
from ..operands import resolve_attribute
from ..plan import (
    NodeTag,
    Role,
    add_node,
    check_names,
    erase_if_unused,
    input_chain,
    output_chain,
    retag,
    tag_of,
    tagged,
)

KEPT_ROLES = (Role.CROSSBAR, Role.SLICE, Role.COLUMN_SUM, Role.CONCAT, Role.ADD_BIAS)
"""The digital nodes of a tiled layer that stay after lowering."""


def _weight_block(graph_module: fx.GraphModule, tag: NodeTag) -> Tensor:
    layer = tag.plan.layer
    weight = resolve_attribute(graph_module, layer.weight).detach()
    if layer.weight_transposed:
        weight = weight.t()
    if tag.tile is not None:
        weight = weight[layer.kind.block_index(tag.tile)]
    return weight.contiguous()


def management_fields(io) -> dict:
    """The array's noise and bound management settings (NONE on a perfect periphery, as aihwkit's MVM)."""
    managed = io.managed
    return {"noise_management": io.noise_management.name if managed else "NONE", "nm_thres": float(io.nm_thres),
            "bound_management": io.bound_management.name if managed else "NONE",
            "max_bm_factor": int(io.max_bm_factor), "max_bm_res": float(io.max_bm_res)}


def build_crossbar(graph_module: fx.GraphModule, tag: NodeTag, input_range: float,
                   bias: Optional[Tensor]) -> Crossbar:
    """Convert one array's current weight block, range and bias into a Crossbar."""
    plan = tag.plan
    weight = _weight_block(graph_module, tag)
    (g_plus, g_minus), params = plan.converter.convert_to_conductances(weight, plan.columnwise)
    ratios = params["scale_ratio"]
    if plan.columnwise:  # the array's own ratio stays the reference; columns use theirs
        array_ratio = plan.converter.convert_to_conductances(weight)[1]["scale_ratio"]
        column_ratios = tuple(ratios.flatten().tolist())
    else:
        array_ratio, column_ratios = ratios, ()
    settings = CrossbarSettings(
        layer=plan.layer.name,
        input_range=input_range,
        scale_ratio=float(array_ratio),
        g_min=float(plan.converter.g_min),
        g_max=float(plan.converter.g_max),
        dac_steps=plan.io.dac_steps,
        adc_steps=plan.io.adc_steps,
        out_bound=plan.io.bound,
        tile_row=tag.tile.row if tag.tile else 0,
        tile_col=tag.tile.col if tag.tile else 0,
        column_scale_ratios=column_ratios,
        **management_fields(plan.io),
    )
    layer = plan.layer
    geometry = layer.geometry if tag.tile is None else layer.kind.with_groups(layer.geometry, tag.tile.groups)
    return Crossbar(g_plus.contiguous(), g_minus.contiguous(), bias, settings, layer.kind, geometry, layer.weight)


def drop_unused_tensors(graph_module: fx.GraphModule) -> None:
    """Delete submodules and tensors that no node reads any more."""
    graph_module.delete_all_unused_submodules()
    read = {n.target for n in graph_module.graph.nodes if n.op == "get_attr"}
    called = {n.target for n in graph_module.graph.nodes if n.op == "call_module"}
    names = [name for name, _ in graph_module.named_parameters(remove_duplicate=False)]
    names += [name for name, _ in graph_module.named_buffers(remove_duplicate=False)]
    for name in names:
        owner, _, attr = name.rpartition(".")
        owners = {name.rsplit(".", depth)[0] for depth in range(1, name.count(".") + 1)}
        if name not in read and not owners & called:
            module = graph_module.get_submodule(owner) if owner else graph_module
            if hasattr(module, attr):
                delattr(module, attr)


class LowerToConductancesPass(PassBase):
    """Collapse each prepared array into a Crossbar call; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        mvms = tagged(graph, Role.MVM)
        input_sides = set()
        for mvm in mvms:
            tag = tag_of(mvm)
            inputs = input_chain(mvm)
            outputs = output_chain(mvm)
            last = outputs[-1] if outputs else mvm
            bias_node = self._own_bias(last, tag)
            if bias_node is not None:
                outputs.append(bias_node)
                last = bias_node
            name = retag(tag, Role.CROSSBAR).name
            if not hasattr(graph_module, name):
                clip = inputs.nodes.get(Role.INPUT_RANGE)
                input_range = float(graph_module.get_submodule(clip.target).value.detach()) if clip else 0.0
                bias = resolve_attribute(graph_module, bias_node.args[1].target).detach().clone() if bias_node else None
                graph_module.add_submodule(name, build_crossbar(graph_module, tag, input_range, bias))
            with graph.inserting_after(last):
                lowered = add_node(graph, "call_module", name, (inputs.source,), tag=retag(tag, Role.CROSSBAR))
            last.replace_all_uses_with(lowered)
            weight_reads = dict.fromkeys(a for n in (mvm, *outputs) for a in n.all_input_nodes)
            for node in reversed([mvm, *outputs]):
                graph.erase_node(node)
            for read in weight_reads:
                erase_if_unused(graph, read)
            input_sides.update(inputs.nodes.values())
        for node in reversed(list(graph.nodes)):
            if node in input_sides and not node.users:
                graph.erase_node(node)
        drop_unused_tensors(graph_module)
        return PassResult(graph_module, bool(mvms))

    @staticmethod
    def _own_bias(last: fx.Node, tag: NodeTag) -> Optional[fx.Node]:
        """The bias add right after an untiled layer's output, which the Crossbar absorbs."""
        if tag.tile is not None or len(last.users) != 1:
            return None
        (user,) = last.users
        user_tag = tag_of(user)
        return user if user_tag is not None and user_tag.role is Role.ADD_BIAS else None

    def ensures(self, graph_module: fx.GraphModule) -> None:
        left = [n.name for n in graph_module.graph.nodes if (t := tag_of(n)) and t.role not in KEPT_ROLES]
        if left:
            raise PostconditionError(f"{type(self).__name__}: prepared nodes left after lowering: {left}")
        check_names(graph_module.graph, type(self).__name__)
