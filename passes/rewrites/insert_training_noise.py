"""Insert the training noise of hardware-aware training around each crossbar array.

Rules, for each crossbar node (``mvm``, one per array):
* an active weight modifier (``modifier.type`` not NONE, ``std_dev > 0``) inserts
  ``<layer>_weight_noise`` (a :class:`~xbar.passes.numerics.training_noise.WeightNoise`
  submodule of that name) between the array's weight block and the crossbar, so
  amax is the array's (or its channels'); with stored weight scales the noise is drawn on the
  analog weights ``W' = W / alpha`` (aihwkit's) and reads the scales node;
* ``forward.out_noise`` or ``forward.w_noise`` (PCM_READ) inserts
  ``<layer>_output_noise`` (an :class:`~xbar.passes.numerics.training_noise.OutputNoise`)
  right after the crossbar, before the ADC, reading the crossbar's (DAC'd) input
  and clean weight block (and the stored weight scales, when the plan keeps them);
* tiled layers get one of each per array (``<layer>_tile<r>_<c>_...``); the call
  sites of a shared layer share the modules;
* the ADC keeps reading the clean weight (its scale is the programmed array's);
* a layer without training noise, and a graph without crossbar layers, are left untouched.

Run it after the converters: it puts itself between the crossbar and the ADC.
"""

from __future__ import annotations

from typing import Optional

from torch import fx, nn
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..numerics.training_noise import OutputNoise, WeightNoise
from ..plan import NodeTag, Role, add_node, check_names, retag, tag_of, tagged
from .weight_scales import weight_scales_node


def _module_node(graph_module: fx.GraphModule, tag: NodeTag, module: nn.Module, args: tuple,
                 kwargs: Optional[dict] = None) -> fx.Node:
    """A call_module node of ``tag``'s name, adding the module unless a shared layer's earlier call site did."""
    if not hasattr(graph_module, tag.name):
        graph_module.add_submodule(tag.name, module)
    return add_node(graph_module.graph, "call_module", tag.name, args, kwargs, tag=tag)


class InsertTrainingNoisePass(PassBase):
    """Weight and output noise for training; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        modified = False
        for mvm in tagged(graph, Role.MVM):
            tag = tag_of(mvm)
            plan = tag.plan
            activation, weight, *mvm_args = mvm.args
            if plan.io.output_noise:
                users = list(mvm.users)
                noise = OutputNoise(plan.io, plan.modifier.enable_during_test, mvm.target,
                                    plan.layer.channel_dim, plan.columnwise, plan.mapping.weight_scaling_omega)
                scales = weight_scales_node(graph_module, mvm)
                with graph.inserting_after(mvm):
                    noisy = _module_node(graph_module, retag(tag, Role.OUTPUT_NOISE), noise,
                                         (mvm, activation, weight, *mvm_args),
                                         {} if scales is None else {"scales": scales})
                for user in users:
                    user.replace_input_with(mvm, noisy)
                modified = True
            if plan.modifier.active:
                scales = weight_scales_node(graph_module, mvm)
                with graph.inserting_before(mvm):
                    noisy = _module_node(graph_module, retag(tag, Role.WEIGHT_NOISE), WeightNoise(plan.modifier),
                                         (weight,), {} if scales is None else {"scales": scales})
                mvm.update_arg(1, noisy)
                modified = True
        return PassResult(graph_module, modified)

    def ensures(self, graph_module: fx.GraphModule) -> None:
        check_names(graph_module.graph, type(self).__name__)
