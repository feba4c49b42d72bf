"""Find the layers whose weights can live in a crossbar, in either kind of FX graph.

One pure function, :func:`match_layers`, that reads a GraphModule and returns
what it found and what it saw and refused, with why (:class:`Matching`); it
edits nothing (:func:`find_crossbar_layers` keeps only the selected layers). It understands module-level graphs
(``torch.fx.symbolic_trace``: ``call_module`` to a layer module, or functional
calls) and ATen-level graphs (``torch.export``'s ``.module()``). What each kind of
layer matches is its :class:`~xbar.passes.kinds.base.LayerKind`'s business; this
module asks every kind in :data:`~xbar.passes.kinds.KINDS`.

Rules:
* a linear, matmul, mm, addmm, 1-3d convolution or 1-3d transposed convolution
  is a crossbar layer when its weight operand is a tensor attribute (parameter or
  constant), possibly through one transpose, and its bias (if any) is one too; a
  product of two activations (attention scores) stays digital;
* convolutions with non-zero padding modes or asymmetric ``'same'`` padding, and
  transposed convolutions called with ``output_size``, stay digital;
* a layer is named after its weight (``fc1.weight`` -> ``fc1``,
  ``attn.in_proj_weight`` -> ``attn.in_proj``), so a shared weight is one layer;
* a decomposed graph (``aten.convolution``) is refused: capture without decompositions;
* a :class:`LayerSelection` says why it leaves a found layer digital (:meth:`LayerSelection.refusal`);
* a call a rewrite before matching left as it was says why in ``node.meta[REFUSED_META]``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from torch import fx

from .errors import MatchError
from .kinds import KINDS
from .kinds.base import LayerKind, Operands, Refused
from .module_names import names_module_type
from .operands import resolve_attribute

aten = torch.ops.aten

DECOMPOSED_TARGETS = {aten.convolution.default, aten._convolution.default}

REFUSED_META = "xbar_refused"
"""``node.meta`` key: why a rewrite before matching kept this call digital (an unrolling it refused)."""


@dataclass(frozen=True)
class CrossbarLayer:
    """One crossbar layer found in a graph.

    ``weight`` / ``bias`` are qualified tensor names in the GraphModule;
    ``activation_index`` is the position of the input activation in ``node.args``
    (read it when rewriting: an earlier rewrite may have replaced that node);
    ``weight_transposed`` is True when the weight is stored [in, out] (matmul
    forms); ``geometry`` is the kind's (None for linear layers).
    """

    name: str
    node: fx.Node
    activation_index: int
    kind: LayerKind
    weight: str
    bias: Optional[str]
    weight_transposed: bool
    geometry: Any
    module_type: str

    @property
    def channel_dim(self) -> int:
        """The dim of the activation and the output that indexes channels."""
        return self.kind.channel_dim


Pattern = Union[str, type]


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
        return [layer for layer in layers if self.refusal(layer, layers) is None]

    def refusal(self, layer: CrossbarLayer, layers: list[CrossbarLayer]) -> Optional[str]:
        """Why the selection leaves ``layer`` (one of ``layers``, in graph order) digital, or None."""
        if self.include and not self.matches(layer, self.include):
            return "matches no include pattern"
        excluded = next((p for p in self.exclude if self.matches(layer, [p])), None)
        if excluded is not None:
            return f"excluded by pattern {getattr(excluded, '__name__', excluded)!r}"
        if self.keep_first_last_digital and layer.name == layers[0].name:
            return "first layer (keep_first_last_digital)"
        if self.keep_first_last_digital and layer.name == layers[-1].name:
            return "last layer (keep_first_last_digital)"
        return None


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


def _match(gm: fx.GraphModule, node: fx.Node) -> Union[CrossbarLayer, Refused, None]:
    """The crossbar layer ``node`` is, why a kind that recognises it keeps it digital, or None."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        module_type = f"{type(module).__module__}.{type(module).__qualname__}"
        for kind in KINDS:
            operands = kind.match_module(node, module) if isinstance(module, kind.modules) else None
            if isinstance(operands, Operands):
                return _layer(node.target, node, kind, operands, module_type)
            if operands is not None:
                return operands
    elif node.op == "call_function":
        for kind in KINDS:
            operands = kind.match_call(gm, node) if node.target in kind.targets else None
            if isinstance(operands, Operands) and resolve_attribute(gm, operands.weight).dim() < 2:
                return Refused("its weight has fewer than 2 dims")
            if isinstance(operands, Operands):
                return _layer(layer_name(operands.weight), node, kind, operands, _module_type(node))
            if operands is not None:
                return operands
    return None


def _layer(name: str, node: fx.Node, kind: LayerKind, operands: Operands, module_type: str) -> CrossbarLayer:
    o = operands
    return CrossbarLayer(name, node, o.activation_index, kind, o.weight, o.bias, o.weight_transposed, o.geometry,
                         module_type)


@dataclass(frozen=True)
class Matching:
    """What :func:`match_layers` saw: the crossbar layers in graph order, and the
    calls a layer kind recognised but kept digital (node name -> why)."""

    layers: list[CrossbarLayer]
    refused: dict[str, str]


def match_layers(gm: fx.GraphModule) -> Matching:
    """Every crossbar layer of ``gm`` and every call a kind refused, with why."""
    layers, refused = [], {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in DECOMPOSED_TARGETS:
            raise MatchError(
                f"node {node.name!r} ({node.target}) comes from a decomposed graph; capture the model "
                "with torch.export.export(...).module() without run_decompositions(), or symbolic_trace")
        found = _match(gm, node) or (Refused(node.meta[REFUSED_META]) if REFUSED_META in node.meta else None)
        if isinstance(found, CrossbarLayer):
            layers.append(found)
        elif found is not None:
            refused[node.name] = found.reason
    return Matching(layers, refused)


def find_crossbar_layers(gm: fx.GraphModule, selection: LayerSelection = LayerSelection()) -> list[CrossbarLayer]:
    """The selected crossbar layers of ``gm`` in graph order."""
    return selection.select(match_layers(gm).layers)
