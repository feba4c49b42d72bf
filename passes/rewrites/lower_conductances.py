"""Lower each crossbar array to conductances: one ``<layer>_crossbar`` call.

Rules, for each crossbar node (``mvm``, one per array) of a prepared graph:
* the converter maps the array's (float) weight block to G+ and G- in uS and a
  scale ratio (a multi-device converter to its devices, a :class:`MultiDeviceCrossbar`, and the ratio
  its ``weight_combination`` gives); a shared layer's call sites share one :class:`Crossbar` module;
* input range -> normalize -> DAC -> mvm -> ADC -> rescale -> learned out scaling (and the bias, when
  the layer is one array) collapse into one ``call_module`` of that module, which
  carries the learned range and output scales (frozen), the DAC/ADC settings and the digital bias;
  a tiled layer keeps its digital sum, concatenation and one bias add;
* the converter maps the analog weights (:mod:`~xbar.passes.numerics.weight_mapping`):
  with scales derived from the weights, max|W| (per column if columnwise) maps to
  g_max - g_min, standing for the analog weight omega; with stored scales (or none,
  omega 0), ``W' = W / alpha`` maps with one ratio per array, g_max - g_min standing
  for max|W'| (``mapped_wmax``), and a logical weight's ratio is that over alpha; ``clip`` and
  ``remap`` constrain the array's weight copy and scales first unless an optimiser step left
  the weights so (the programmed array satisfies them either way);
* the original weights, the input-range and weight-scale modules leave the GraphModule;
* a graph without crossbar nodes is left untouched.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..errors import PostconditionError
from ..numerics.converter import ZERO_CLIP, SinglePairConductanceConverter, abs_max_of
from ..numerics.crossbar import Crossbar, MultiDeviceCrossbar
from ..numerics.ir_drop import ir_drop_fields
from ..numerics.settings import CrossbarSettings
from ..numerics.weight_constraints import constrain
from ..numerics.weight_mapping import analog_weights, initial_scales, weight_block
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


def _scale_ratio(converter, params: dict):
    """The array's scale ratio (uS per weight unit, g_max - g_min standing for max|W|): the single pair's
    own, or what a multi-device converter's :meth:`weight_combination` makes of its params."""
    return params["scale_ratio"] if isinstance(converter, SinglePairConductanceConverter) \
        else converter.weight_combination(params)[2]


def _dynamic_mapping(plan, weight: Tensor) -> tuple[list[Tensor], dict, float, tuple[float, ...], float]:
    """Scales re-derived from the weights (omega > 0, xbar's default): the converter maps max|W| (of the
    array, or of each column) to g_max - g_min, which stands for the analog weight omega."""
    if plan.columnwise:  # the array's own ratio stays the reference; columns use theirs
        conductances, params = plan.converter.convert_to_conductances(weight, True)
        array_ratio = plan.converter.convert_to_conductances(weight)[1]["scale_ratio"]
        return conductances, params, float(array_ratio), tuple(params["scale_ratio"].flatten().tolist()), \
            plan.mapping.weight_scaling_omega
    conductances, params = plan.converter.convert_to_conductances(weight)
    return conductances, params, float(_scale_ratio(plan.converter, params)), (), plan.mapping.weight_scaling_omega


def _stored_mapping(plan, weight: Tensor, scales: Tensor) -> tuple[list[Tensor], dict, float, tuple[float, ...],
                                                                   float]:
    """aihwkit's mapping: the converter maps the analog weights ``W' = W / alpha`` (one scale ratio s'
    for the array); a logical weight's ratio is ``s' / alpha``, and g_max - g_min stands for max|W'|."""
    analog = analog_weights(weight, scales)
    conductances, params = plan.converter.convert_to_conductances(analog)
    analog_ratio = _scale_ratio(plan.converter, params)
    mapped_wmax = float(abs_max_of(analog).clamp(min=ZERO_CLIP))
    if scales.numel() == 1:
        return conductances, params, float(analog_ratio / scales), (), mapped_wmax
    array_ratio = _scale_ratio(plan.converter, plan.converter.convert_to_conductances(weight)[1])
    return conductances, params, float(array_ratio), tuple((analog_ratio / scales).tolist()), mapped_wmax


def array_scales(graph_module: fx.GraphModule, tag: NodeTag, weight: Tensor) -> Optional[Tensor]:
    """The array's stored weight scales (its ``WeightScales`` module), 1 for omega 0 without them, or
    None when they are re-derived from the weights."""
    plan = tag.plan
    if not plan.stores_scales:
        return None if plan.mapping.weight_scaling_omega > 0 else initial_scales(weight, plan.mapping)
    module = getattr(graph_module, retag(tag, Role.WEIGHT_SCALES).name, None)
    return initial_scales(weight, plan.mapping, plan.scale_rows) if module is None else module.scales.detach()


def _constrained_since_written(graph_module: fx.GraphModule, tag: NodeTag) -> bool:
    """Whether the array's weight block is as its last clip and remap left it."""
    module = getattr(graph_module, retag(tag, Role.WEIGHT_SCALES).name, None)
    return module is not None and module.constrained(weight_block(graph_module, tag.plan, tag.tile))


def learned_out_scales(graph_module: fx.GraphModule, tag: NodeTag) -> tuple[float, ...]:
    """The array's learned output scales (its ``OutScaling`` module), or () when it learns none."""
    module = getattr(graph_module, retag(tag, Role.OUT_SCALING).name, None)
    return () if module is None else tuple(module.alpha.detach().flatten().tolist())


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
    scales = array_scales(graph_module, tag, weight)
    if (plan.clip.active or plan.remap.active) and not _constrained_since_written(graph_module, tag):
        weight, scales = constrain(weight, scales, plan.clip, plan.remap)  # what the programmed array holds
    conductances, params, array_ratio, column_ratios, mapped_wmax = (
        _dynamic_mapping(plan, weight) if scales is None else _stored_mapping(plan, weight, scales))
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
        mapped_wmax=mapped_wmax,
        out_scales=learned_out_scales(graph_module, tag),
        **management_fields(plan.io),
        **ir_drop_fields(plan.io, plan.layer.kind, weight[0].numel(), plan.mapping.max_input_size),
    )
    layer = plan.layer
    geometry = layer.geometry if tag.tile is None else layer.kind.with_groups(layer.geometry, tag.tile.groups)
    out_noise = 0.0 if plan.io.is_perfect else float(plan.io.out_noise)  # aihwkit's perfect periphery reads noise-free
    conductances = [g.contiguous() for g in conductances]
    if isinstance(plan.converter, SinglePairConductanceConverter):
        return Crossbar(*conductances, bias, settings, layer.kind, geometry, layer.weight, out_noise)
    significances, offset, _ = plan.converter.weight_combination(params)
    return MultiDeviceCrossbar(dict(zip(plan.converter.device_names, conductances)), significances, offset, bias,
                               settings, layer.kind, geometry, layer.weight, out_noise)


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
            if (node in input_sides or tag_of(node) is not None and tag_of(node).role is Role.WEIGHT_SCALES) \
                    and not node.users:
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
