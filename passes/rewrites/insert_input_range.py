"""Insert the learned input range and its scale nodes around each crossbar layer.

Rules, for each crossbar node (``mvm``) whose plan enables the input range:
* ``<layer>_input_range`` (an :class:`InputRange` submodule of the same name)
  clips the activation; the arrays of one input slice of a tiled layer share one
  (``<layer>_row<r>_input_range``), and so do the call sites of a shared layer;
* ``<layer>_normalize`` divides by the range before the crossbar, and
  ``<layer>_rescale`` multiplies by it after (neither passes gradient to the range);
* the ``add_bias`` node, if any, stays after the rescale;
* a convolution's range takes its statistics over the patches of its array (or row
  of arrays) unless ``conv_elements = PIXELS``;
* layers with the input range disabled, and graphs without crossbar layers, are
  left untouched.
"""

from __future__ import annotations

from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..numerics import periphery
from ..numerics.input_range import InputRange
from ..plan import Role, Scope, add_node, check_names, retag, tag_of, tagged
from .insert_patch_range_gradient import array_patches


class InsertInputRangePass(PassBase):
    """Clip, normalise and rescale by the learned range; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        groups: dict[tuple, list[fx.Node]] = {}
        for mvm in tagged(graph, Role.MVM):
            tag = tag_of(mvm)
            if tag.plan.input_range.enable:
                row = tag.tile.row if tag.tile else None
                groups.setdefault((tag.plan.layer.name, row, mvm.args[0]), []).append(mvm)
        for mvms in groups.values():
            tag = tag_of(mvms[0])
            activation = mvms[0].args[0]  # read now: an earlier layer's rescale may have replaced it
            clip_tag = retag(tag, Role.INPUT_RANGE, Scope.ROW)
            if not hasattr(graph_module, clip_tag.name):
                graph_module.add_submodule(clip_tag.name,
                                           InputRange(tag.plan.input_range, array_patches(graph_module, tag)))
            with graph.inserting_before(mvms[0]):
                clipped = add_node(graph, "call_module", clip_tag.name, (activation,), tag=clip_tag)
                value = add_node(graph, "get_attr", f"{clip_tag.name}.value", (),
                                 tag=retag(tag, Role.INPUT_RANGE_VALUE, Scope.ROW))
                normalized = add_node(graph, "call_function", periphery.normalize, (clipped, value),
                                      tag=retag(tag, Role.NORMALIZE, Scope.ROW))
            for mvm in mvms:
                mvm.replace_input_with(activation, normalized)
                users = list(mvm.users)
                with graph.inserting_after(mvm):
                    rescaled = add_node(graph, "call_function", periphery.rescale, (mvm, value),
                                        tag=retag(tag_of(mvm), Role.RESCALE))
                for user in users:
                    user.replace_input_with(mvm, rescaled)
        return PassResult(graph_module, bool(groups))

    def ensures(self, graph_module: fx.GraphModule) -> None:
        check_names(graph_module.graph, type(self).__name__)
