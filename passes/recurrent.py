"""Find the calls of ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` in either kind of FX graph, and their weights.

One pure function, :func:`recurrent_call`, that reads a node and says what
recurrent layer it runs (:class:`RecurrentCall`), why it cannot be unrolled
(:class:`~xbar.passes.kinds.base.Refused`), or None (not a recurrent call). A
module-level graph (``symbolic_trace``) calls the module; ``torch.export`` gives
``aten.lstm.input`` / ``aten.gru.input`` / ``aten.rnn_tanh.input`` /
``aten.rnn_relu.input`` on the flat weight list in PyTorch's order (per layer,
per direction: ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, ``weight_hr``).
:class:`~xbar.passes.rewrites.unroll_recurrent.UnrollRecurrentPass` edits the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
from torch import fx, nn

from .kinds.base import Refused
from .operands import tensor_attribute

aten = torch.ops.aten

GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
"""Mode (as ``nn.RNNBase.mode`` names it) -> gates per hidden unit."""

ATEN_MODES = {aten.lstm.input: "LSTM", aten.gru.input: "GRU",
              aten.rnn_tanh.input: "RNN_TANH", aten.rnn_relu.input: "RNN_RELU"}
PACKED_TARGETS = frozenset({aten.lstm.data, aten.gru.data, aten.rnn_tanh.data, aten.rnn_relu.data})
PACKED = Refused("a PackedSequence input is not unrolled")


@dataclass(frozen=True)
class DirectionWeights:
    """The qualified tensor names of one layer's one direction (biases and projection may be absent)."""

    ih: str
    hh: str
    bias_ih: Optional[str]
    bias_hh: Optional[str]
    hr: Optional[str]


@dataclass(frozen=True)
class RecurrentCall:
    """One call of a recurrent layer.

    ``state`` is the initial-state argument as the call holds it (None: zeros; a
    node or a tuple / list of nodes, each ``[layers * directions, batch, hidden]``);
    ``weights[layer][direction]``; ``nested`` is True for the module's outputs
    ``(output, (h_n, c_n))``, False for aten's flat ``(output, h_n, c_n)``;
    ``owner`` is the module's path (for node names); ``module_stack`` the ``nn_module_stack``
    the unrolled nodes carry, so a selection by module type still finds them.
    """

    node: fx.Node
    mode: str
    input: fx.Node
    state: Any
    weights: tuple[tuple[DirectionWeights, ...], ...]
    batch_first: bool
    nested: bool
    owner: str
    module_stack: dict

    @property
    def directions(self) -> int:
        return len(self.weights[0])


LOOP_META = "xbar_recurrent_loop"
"""``node.meta`` key of the nodes of an unrolled call that bound its steps (a :class:`LoopPart`)."""


@dataclass(frozen=True)
class RecurrentLoop:
    """What a pass needs to roll an unrolled call's steps back into a loop: the call's cell, the input's
    time dim, the example's length and the weights; ``key`` tells calls of the same module apart."""

    key: str
    mode: str
    time_dim: int
    steps: int
    weights: tuple[tuple[DirectionWeights, ...], ...]

    @property
    def layers(self) -> int:
        return len(self.weights)


@dataclass(frozen=True)
class LoopPart:
    """The role of a node in its unrolled call: ``steps`` (the step inputs), ``h0`` / ``c0`` (layer-direction
    ``index``'s initial state), ``output``, ``h_n``, ``c_n`` (the call's results)."""

    loop: RecurrentLoop
    role: str
    index: int = 0


def recurrent_call(gm: fx.GraphModule, node: fx.Node) -> Union[RecurrentCall, Refused, None]:
    """The recurrent layer ``node`` calls, why it cannot be unrolled, or None (not such a call)."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return _module_call(node, module) if isinstance(module, nn.RNNBase) else None
    if node.op == "call_function" and node.target in PACKED_TARGETS:
        return PACKED
    if node.op == "call_function" and node.target in ATEN_MODES:
        return _aten_call(gm, node)
    return None


def _module_call(node: fx.Node, module: nn.RNNBase) -> Union[RecurrentCall, Refused]:
    if module.mode not in GATES:
        return Refused(f"recurrent mode {module.mode} is not unrolled")
    if not isinstance(node.args[0], fx.Node):
        return Refused("its input is not a tensor of the graph")
    state = node.args[1] if len(node.args) > 1 else node.kwargs.get("hx")
    directions = 2 if module.bidirectional else 1
    weights = tuple(tuple(_named_weights(module, node.target, layer, direction) for direction in range(directions))
                    for layer in range(module.num_layers))
    stack = node.meta.get("nn_module_stack") or {node.target: (node.target, type(module))}
    return RecurrentCall(node, module.mode, node.args[0], state, weights, module.batch_first, True, node.target,
                         dict(stack))


def _named_weights(module: nn.RNNBase, owner: str, layer: int, direction: int) -> DirectionWeights:
    suffix = f"_l{layer}{'_reverse' if direction else ''}"

    def name(kind: str) -> Optional[str]:
        return f"{owner}.{kind}{suffix}" if getattr(module, f"{kind}{suffix}", None) is not None else None

    return DirectionWeights(name("weight_ih"), name("weight_hh"), name("bias_ih"), name("bias_hh"), name("weight_hr"))


def _aten_call(gm: fx.GraphModule, node: fx.Node) -> Union[RecurrentCall, Refused]:
    x, state, params, has_biases, num_layers, _dropout, _train, bidirectional, batch_first = node.args
    names = [tensor_attribute(gm, p) for p in params]
    if not isinstance(x, fx.Node) or None in names:
        return Refused("its input or weights are not tensors of the graph")
    directions = 2 if bidirectional else 1
    per_direction, extra = divmod(len(names), num_layers * directions)
    projected = per_direction - 2 - 2 * bool(has_biases)
    if extra or projected not in (0, 1):
        return Refused(f"{len(names)} weights do not make {num_layers} layers of {directions} directions")
    groups = [names[i:i + per_direction] for i in range(0, len(names), per_direction)]
    weights = tuple(tuple(_listed_weights(groups[layer * directions + d], has_biases, projected)
                          for d in range(directions)) for layer in range(num_layers))
    owner = weights[0][0].ih.rpartition(".")[0]
    return RecurrentCall(node, ATEN_MODES[node.target], x, state, weights, bool(batch_first), False, owner,
                         dict(node.meta.get("nn_module_stack") or {}))


def _listed_weights(group: list[str], has_biases: bool, projected: int) -> DirectionWeights:
    ih, hh, *rest = group
    biases = rest[:2] if has_biases else [None, None]
    return DirectionWeights(ih, hh, *biases, rest[-1] if projected else None)
