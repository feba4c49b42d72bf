"""Split an uneven ``padding='same'`` convolution (an even kernel) into a digital pad and a symmetric convolution.

Rules of :class:`UnevenSamePaddingPass`, before matching, for each ``nn.Conv1d/2d/3d``
call, ``F.conv1d/2d/3d`` call or ``aten.conv1d/2d/3d.padding`` call with
``padding='same'`` (zero padding) whose total padding ``dilation * (kernel - 1)`` is
odd along some dim:

* PyTorch pads such a dim by ``total // 2`` before and ``total - total // 2`` after;
* the call becomes ``F.pad`` of the one extra zero after (``<conv>_pad``, digital)
  and ``F.convNd`` with the symmetric ``total // 2`` on the padded input: the same
  result, and a convolution the conv kind maps. Its input range sees the padded
  input, with one more row of zeros per such dim than a symmetric padding gives;
* the new nodes keep the call's module stack (selection by module type) and stack trace;
* other convolutions, and other padding modes, are left as they are (``modified=False``).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..operands import argument, ntuple, resolve_attribute, tensor_attribute

aten = torch.ops.aten

MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d)
PADDING_TARGETS = frozenset({*FUNCTIONS, aten.conv1d.padding, aten.conv2d.padding, aten.conv3d.padding})
KEPT_META = ("nn_module_stack", "stack_trace")


class UnevenSamePaddingPass(PassBase):
    """Rewrite each uneven ``'same'`` convolution as pad + symmetric convolution; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph, modified = graph_module.graph, False
        for node in list(graph.nodes):
            call = _uneven_same(graph_module, node)
            if call is None:
                continue
            x, weight, bias, dilation, groups, kernel = call
            total = [d * (k - 1) for d, k in zip(dilation, kernel)]
            after = [pad for t in reversed(total) for pad in (0, t % 2)]  # F.pad lists the last dim first
            with graph.inserting_before(node):
                weight, bias = _read(graph, weight), _read(graph, bias)
                padded = graph.create_node("call_function", F.pad, (x, after), name=f"{node.name}_pad")
                conv = graph.call_function(FUNCTIONS[len(kernel) - 1],
                                           (padded, weight, bias, 1, tuple(t // 2 for t in total), dilation, groups))
            for new in (padded, conv):
                new.meta.update({key: node.meta[key] for key in KEPT_META if key in node.meta})
            node.replace_all_uses_with(conv)
            graph.erase_node(node)
            modified = True
        return PassResult(graph_module, modified)


def _uneven_same(gm: fx.GraphModule, node: fx.Node) -> Optional[tuple]:
    """(input, weight, bias, dilation, groups, kernel) of an uneven 'same' convolution, else None; a module's
    weight and bias are given by name, a call's as its operands."""
    if node.op == "call_module" and isinstance(module := gm.get_submodule(node.target), MODULES):
        if module.padding != "same" or module.padding_mode != "zeros":
            return None
        bias = None if module.bias is None else f"{node.target}.bias"
        found = (node.args[0], f"{node.target}.weight", bias, module.dilation, module.groups, module.kernel_size)
    elif node.op == "call_function" and node.target in PADDING_TARGETS:
        weight_name = tensor_attribute(gm, argument(node, 1, "weight"))
        if argument(node, 4, "padding", 0) != "same" or weight_name is None:
            return None
        kernel = tuple(resolve_attribute(gm, weight_name).shape[2:])
        found = (node.args[0], argument(node, 1, "weight"), argument(node, 2, "bias"),
                 ntuple(argument(node, 5, "dilation", 1), len(kernel)), argument(node, 6, "groups", 1), kernel)
    else:
        return None
    return None if all(d * (k - 1) % 2 == 0 for d, k in zip(found[3], found[5])) else found


def _read(graph: fx.Graph, operand):
    """A weight or bias operand as a node: the call's own, or a new read of a module's tensor by name."""
    return graph.get_attr(operand) if isinstance(operand, str) else operand
