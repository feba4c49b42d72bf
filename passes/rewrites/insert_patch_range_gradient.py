"""Give each convolution array's learned range the gradient term of its clipped patch elements.

Rules, for each crossbar node (``mvm``, one per array) whose plan enables a learned
input range over patches (``conv_elements = PATCHES``, a kind with patches):
* ``<layer>[_tile<r>_<c>]_range_gradient`` (a
  :class:`~xbar.passes.numerics.patch_range.PatchRangeGradient` submodule of that
  name) goes right after the crossbar, before its output noise and ADC: it passes
  the output through and adds, in the backward, the term that needs each patch
  element's gradient; it reads the range's input (before the clip), the range and
  the array's weight block as the crossbar reads it (with its weight noise);
* the call sites of a shared layer share the modules;
* layers over pixels, linear layers, fixed ranges and layers without a range are left untouched;
* an array with noise or bound management gets one too, which its managed reads then take in (they sum the
  term from each patch element's own gradient).

Run it after the training noise: it puts itself between the crossbar and everything after it.
"""

from __future__ import annotations

from typing import Optional

from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..numerics.patch_range import PatchRangeGradient
from ..numerics.patches import PatchView
from ..operands import resolve_attribute
from ..parameters import ConvRangeElements
from ..plan import NodeTag, Role, add_node, check_names, input_chain, retag, tag_of, tagged


def array_patches(graph_module: fx.GraphModule, tag: NodeTag) -> Optional[PatchView]:
    """The patches one array's range takes its elements from, or None (over each input value once)."""
    plan = tag.plan
    if plan.input_range.conv_elements is not ConvRangeElements.PATCHES:
        return None
    layer = plan.layer
    geometry = layer.geometry if tag.tile is None else layer.kind.with_groups(layer.geometry, tag.tile.groups)
    return layer.kind.patches(tuple(resolve_attribute(graph_module, layer.weight).shape[2:]), geometry)


class InsertPatchRangeGradientPass(PassBase):
    """The clipped patch elements' range-gradient term after each convolution array; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        modified = False
        for mvm in tagged(graph, Role.MVM):
            tag = tag_of(mvm)
            params = tag.plan.input_range
            clip = input_chain(mvm).nodes.get(Role.INPUT_RANGE)
            patches = array_patches(graph_module, tag)
            if clip is None or patches is None or not params.learn_input_range:
                continue
            gradient_tag = retag(tag, Role.RANGE_GRADIENT)
            if not hasattr(graph_module, gradient_tag.name):
                graph_module.add_submodule(gradient_tag.name, PatchRangeGradient(patches, params))
            users = list(mvm.users)
            value = input_chain(mvm).nodes[Role.INPUT_RANGE_VALUE]
            with graph.inserting_after(mvm):
                passed = add_node(graph, "call_module", gradient_tag.name, (mvm, clip.args[0], value, mvm.args[1]),
                                  tag=gradient_tag)
            for user in users:
                user.replace_input_with(mvm, passed)
            modified = True
        return PassResult(graph_module, modified)

    def ensures(self, graph_module: fx.GraphModule) -> None:
        check_names(graph_module.graph, type(self).__name__)
