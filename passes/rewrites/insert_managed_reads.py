"""Simulate noise and bound management in the prepared graph: one managed call per array.

Rules, for each crossbar node (``mvm``, one per array) whose plan's noise or bound management changes what
the array computes (:func:`~xbar.passes.numerics.management.management_changes_reads`):
* the crossbar node becomes a call of ``<layer>[_tile<r>_<c>]_managed_reads`` (a
  :class:`~xbar.passes.numerics.managed_training.ManagedReads` submodule of that name) on the normalised
  input and the weight block the op read (with its weight noise), keeping its name and tag, so the passes
  after it and conversion see the array's crossbar node as before;
* it absorbs the array's DAC (erased once no other array of its row reads it), its range's patch-element
  gradient (a convolution's range over patches: summed from each element's own gradient through the reads),
  its training output noise (drawn at every read) and its ADC, whose modules stay registered; the clean
  weight block, the stored weight scales and the range's input and value become its keywords;
* the ADC of a managed array has no output-clipping feedback to keep (``manage_output_clipping`` is refused
  with management);
* the call sites of a shared layer share the module; other layers are left untouched.

Run it last: after the training noise and the patch range gradient, which it takes in.
"""

from __future__ import annotations

from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..numerics.managed_training import ManagedReads
from ..numerics.management import management_changes_reads
from ..numerics.settings import NOISE_MANAGEMENT_MODES, bound_management_rounds
from ..operands import resolve_attribute
from ..plan import Role, check_names, erase_if_unused, retag, tag_of, tagged
from .weight_scales import weight_scales_node

ABSORBED = (Role.RANGE_GRADIENT, Role.OUTPUT_NOISE, Role.ADC)
"""The nodes after a crossbar node that its managed call takes over, in this order."""


def _absorbed(mvm: fx.Node) -> dict[Role, fx.Node]:
    """The range-gradient, output-noise and ADC nodes right after ``mvm`` (those present)."""
    found, node = {}, mvm
    for role in ABSORBED:
        if len(node.users) != 1:
            break
        (user,) = node.users
        if (tag := tag_of(user)) is None or tag.role is not role:
            continue
        found[role] = node = user
    return found


def managed_reads_module(graph_module: fx.GraphModule, mvm: fx.Node, noise=None,
                         range_gradient=None) -> ManagedReads:
    """The :class:`ManagedReads` of the array of ``mvm`` (a crossbar node still calling its op)."""
    tag = tag_of(mvm)
    plan, io = tag.plan, tag.plan.io
    layer = plan.layer
    geometry = layer.geometry if tag.tile is None else layer.kind.with_groups(layer.geometry, tag.tile.groups)
    kernel = tuple(resolve_attribute(graph_module, layer.weight).shape[2:])
    rounds = bound_management_rounds(io.bound_management.name, int(io.max_bm_factor), float(io.max_bm_res),
                                     io.dac_steps)
    return ManagedReads(mvm.target, layer.kind.patches(kernel, geometry),
                        NOISE_MANAGEMENT_MODES[io.noise_management.name], io.nm_thres, rounds, io.dac_steps,
                        io.adc_steps, io.bound, layer.channel_dim, plan.columnwise,
                        plan.mapping.weight_scaling_omega, noise, range_gradient)


class InsertManagedReadsPass(PassBase):
    """A managed call in place of each managed array's DAC, op, output noise and ADC; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        modified = False
        for mvm in tagged(graph, Role.MVM):
            tag = tag_of(mvm)
            plan = tag.plan
            if not management_changes_reads(plan.io, plan.input_range.enable):
                continue
            x, weight, *op_args = mvm.args
            dac = x if (x_tag := tag_of(x)) is not None and x_tag.role is Role.DAC else None
            absorbed = _absorbed(mvm)
            gradient = absorbed.get(Role.RANGE_GRADIENT)
            noise, adc = absorbed.get(Role.OUTPUT_NOISE), absorbed.get(Role.ADC)
            clean = adc.args[1] if adc is not None else noise.args[2] if noise is not None else weight
            if (clean_tag := tag_of(clean)) is not None and clean_tag.role is Role.WEIGHT_NOISE:
                clean = clean.args[0]  # no ADC and no output noise: the weight under the weight noise
            scales = weight_scales_node(graph_module, mvm)
            name = retag(tag, Role.MANAGED_READS).name
            if not hasattr(graph_module, name):
                modules = [None if n is None else graph_module.get_submodule(n.target) for n in (noise, gradient)]
                graph_module.add_submodule(name, managed_reads_module(graph_module, mvm, *modules))
            last = adc or noise or gradient or mvm
            if last is not mvm:
                last.replace_all_uses_with(mvm)
            mvm.op, mvm.target = "call_module", name
            mvm.args = (dac.args[0] if dac is not None else x, weight, *op_args)
            mvm.kwargs = {"clean_weight": clean, **({} if scales is None else {"scales": scales}),
                          **({} if gradient is None else {"range_input": gradient.args[1],
                                                          "input_range": gradient.args[2]})}
            for node in reversed(absorbed.values()):
                reads = node.all_input_nodes
                graph.erase_node(node)
                for read in reads:
                    erase_if_unused(graph, read)
            if dac is not None and not dac.users:
                graph.erase_node(dac)
            modified = True
        return PassResult(graph_module, modified)

    def ensures(self, graph_module: fx.GraphModule) -> None:
        check_names(graph_module.graph, type(self).__name__)

