"""Find the layers whose weights can live in a crossbar, in either kind of FX graph.

One pure function, :func:`find_crossbar_layers`, that reads a GraphModule and
returns what it found; it edits nothing. It understands module-level graphs
(``torch.fx.symbolic_trace``: ``call_module`` to ``nn.Linear`` / ``nn.ConvNd``,
or functional calls) and ATen-level graphs (``torch.export``'s ``.module()``:
``aten.linear`` / ``aten.convNd`` / ``aten.matmul`` / ``aten.mm`` / ``aten.addmm``).

Rules:
* a linear, 1-3d convolution, matmul, mm or addmm is a crossbar layer when its
  weight operand is a tensor attribute (parameter or constant), possibly through
  one transpose; a product of two activations (attention scores) stays digital;
* transposed convolutions and convolutions with non-zero padding modes stay digital;
* a layer is named after its weight (``fc1.weight`` -> ``fc1``,
  ``attn.in_proj_weight`` -> ``attn.in_proj``), so a shared weight is one layer;
* a decomposed graph (``aten.convolution``) is refused: capture without decompositions.
"""

from __future__ import annotations

import fnmatch
import operator
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import fx, nn

from .crossbar import ConvGeometry
from .errors import UserError

aten = torch.ops.aten

LINEAR_TARGETS = {F.linear, torch._C._nn.linear, aten.linear.default}
CONV_TARGETS = {
    F.conv1d: 1, F.conv2d: 2, F.conv3d: 3,
    aten.conv1d.default: 1, aten.conv2d.default: 2, aten.conv3d.default: 3,
}
MATMUL_TARGETS = {torch.matmul, operator.matmul, torch.mm, aten.matmul.default, aten.mm.default}
ADDMM_TARGETS = {torch.addmm, aten.addmm.default}
TRANSPOSE_TARGETS = {torch.t, aten.t.default}
DECOMPOSED_TARGETS = {aten.convolution.default, aten._convolution.default}
CONV_MODULES = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}


class MatchError(UserError):
    """The graph cannot be matched as it is (e.g. it was decomposed)."""


@dataclass(frozen=True)
class CrossbarLayer:
    """One crossbar layer found in a graph.

    ``weight`` / ``bias`` are qualified tensor names in the GraphModule;
    ``activation_index`` is the position of the input activation in ``node.args``
    (read it when rewriting: an earlier rewrite may have replaced that node);
    ``weight_transposed`` is True when the weight is stored [in, out] (matmul
    forms); ``geometry`` is None for linear layers.
    """

    name: str
    node: fx.Node
    activation_index: int
    kind: str
    weight: str
    bias: Optional[str]
    weight_transposed: bool
    geometry: Optional[ConvGeometry]
    module_type: str

    @property
    def channel_dim(self) -> int:
        """The output dimension that indexes output channels."""
        return -1 if self.geometry is None else 1


Pattern = Union[str, type]


def names_module_type(name: str, module_type: str) -> bool:
    """Whether ``name`` spells ``module_type``: in full, by its class name (``Linear``),
    or, for PyTorch's own modules, as ``nn.Linear`` / ``torch.nn.Linear``."""
    short = module_type.rsplit(".", 1)[-1]
    if name in (module_type, short):
        return True
    return module_type.startswith("torch.nn.") and name in (f"nn.{short}", f"torch.nn.{short}")


@dataclass(frozen=True)
class LayerSelection:
    """Which found layers go to crossbars.

    A pattern is matched against the layer name (``fnmatch``: ``"encoder.*"``) or
    its module type (a class, or its name: ``"Conv2d"``). A layer is selected when
    it matches an ``include`` pattern (or ``include`` is empty) and no ``exclude``
    pattern; ``keep_first_last_digital`` also leaves the first and last layer digital.
    """

    include: Sequence[Pattern] = ()
    exclude: Sequence[Pattern] = ()
    keep_first_last_digital: bool = False

    def matches(self, layer: CrossbarLayer, patterns: Sequence[Pattern]) -> bool:
        for pattern in patterns:
            if isinstance(pattern, type):
                if names_module_type(pattern.__name__, layer.module_type):
                    return True
            elif fnmatch.fnmatchcase(layer.name, pattern) or names_module_type(pattern, layer.module_type):
                return True
        return False

    def select(self, layers: list[CrossbarLayer]) -> list[CrossbarLayer]:
        chosen = [l for l in layers
                  if (not self.include or self.matches(l, self.include)) and not self.matches(l, self.exclude)]
        if self.keep_first_last_digital and layers:
            edge = {layers[0].name, layers[-1].name}
            chosen = [l for l in chosen if l.name not in edge]
        return chosen


def _tensor_attr(gm: fx.GraphModule, node) -> Optional[str]:
    """The qualified name of a get_attr tensor of rank >= 1, else None."""
    if isinstance(node, fx.Node) and node.op == "get_attr":
        value = resolve_attribute(gm, node.target)
        if isinstance(value, torch.Tensor):
            return node.target
    return None


def resolve_attribute(gm: nn.Module, qualname: str):
    """The object at dotted path ``qualname`` below ``gm``, or None."""
    obj = gm
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _weight_operand(gm: fx.GraphModule, node) -> tuple[Optional[str], bool]:
    """(weight name, transposed-by-the-graph) for a weight operand, or (None, False)."""
    name = _tensor_attr(gm, node)
    if name is not None:
        return name, False
    if isinstance(node, fx.Node) and (
        (node.op == "call_function" and node.target in TRANSPOSE_TARGETS)
        or (node.op == "call_method" and node.target == "t")
    ):
        name = _tensor_attr(gm, node.args[0])
        return name, name is not None
    return None, False


def layer_name(weight: str) -> str:
    """``fc1.weight`` -> ``fc1``; ``attn.in_proj_weight`` -> ``attn.in_proj``; else the name."""
    for suffix in (".weight", "_weight"):
        if weight.endswith(suffix) and len(weight) > len(suffix):
            return weight[: -len(suffix)]
    return weight


def _module_type(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    owner = list(stack.values())[-1][1]
    return owner if isinstance(owner, str) else f"{owner.__module__}.{owner.__qualname__}"


def _arg(node: fx.Node, index: int, name: str, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _ntuple(value, n: int) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n


def _geometry(stride, padding, dilation, groups, kernel: Sequence[int]) -> Optional[ConvGeometry]:
    n = len(kernel)
    stride, dilation = _ntuple(stride, n), _ntuple(dilation, n)
    if padding == "valid":
        padding = 0
    elif padding == "same":
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        if any(t % 2 for t in total):
            return None  # asymmetric 'same' padding: keep the layer digital
        padding = tuple(t // 2 for t in total)
    return ConvGeometry(stride, _ntuple(padding, n), dilation, int(groups))


def _match_module(gm: fx.GraphModule, node: fx.Node) -> Optional[CrossbarLayer]:
    module = gm.get_submodule(node.target)
    kind_type = f"{type(module).__module__}.{type(module).__qualname__}"
    bias = f"{node.target}.bias" if getattr(module, "bias", None) is not None else None
    if isinstance(module, nn.Linear):
        return CrossbarLayer(node.target, node, 0, "linear", f"{node.target}.weight",
                             bias, False, None, kind_type)
    dims = CONV_MODULES.get(type(module))
    if dims and module.padding_mode == "zeros":
        geometry = _geometry(module.stride, module.padding, module.dilation, module.groups,
                             module.kernel_size)
        if geometry is not None:
            return CrossbarLayer(node.target, node, 0, f"conv{dims}d",
                                 f"{node.target}.weight", bias, False, geometry, kind_type)
    return None


def _match_function(gm: fx.GraphModule, node: fx.Node) -> Optional[CrossbarLayer]:
    target = node.target
    if target in LINEAR_TARGETS:
        weight, transposed = _weight_operand(gm, _arg(node, 1, "weight"))
        bias = _tensor_attr(gm, _arg(node, 2, "bias"))
        kind, geometry = "linear", None
        if _arg(node, 2, "bias") is not None and bias is None:
            return None
    elif target in CONV_TARGETS:
        weight, transposed = _tensor_attr(gm, _arg(node, 1, "weight")), False
        bias = _tensor_attr(gm, _arg(node, 2, "bias"))
        if weight is None or (_arg(node, 2, "bias") is not None and bias is None):
            return None
        kernel = resolve_attribute(gm, weight).shape[2:]
        geometry = _geometry(_arg(node, 3, "stride", 1), _arg(node, 4, "padding", 0),
                             _arg(node, 5, "dilation", 1), _arg(node, 6, "groups", 1), kernel)
        kind = f"conv{CONV_TARGETS[target]}d"
        if geometry is None:
            return None
    elif target in MATMUL_TARGETS:
        weight, transposed = _weight_operand(gm, node.args[1])
        transposed = not transposed  # x @ W stores W as [in, out]
        bias, kind, geometry = None, "linear", None
    elif target in ADDMM_TARGETS:
        if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
            return None
        weight, transposed = _weight_operand(gm, node.args[2])
        transposed = not transposed
        bias, kind, geometry = _tensor_attr(gm, node.args[0]), "linear", None
        if bias is None:
            return None
    else:
        return None
    if weight is None or resolve_attribute(gm, weight).dim() < 2:
        return None
    activation_index = 1 if target in ADDMM_TARGETS else 0
    return CrossbarLayer(layer_name(weight), node, activation_index, kind, weight, bias, transposed,
                         geometry, _module_type(node))


def find_crossbar_layers(gm: fx.GraphModule, selection: LayerSelection = LayerSelection()) -> list[CrossbarLayer]:
    """The selected crossbar layers of ``gm`` in graph order."""
    found = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in DECOMPOSED_TARGETS:
            raise MatchError(
                f"node {node.name!r} ({node.target}) comes from a decomposed graph; capture the model "
                "with torch.export.export(...).module() without run_decompositions(), or symbolic_trace")
        layer = None
        if node.op == "call_module":
            layer = _match_module(gm, node)
        elif node.op == "call_function":
            layer = _match_function(gm, node)
        if layer is not None:
            found.append(layer)
    return selection.select(found)
