"""Unroll each recurrent layer into its per-step matmuls, before matching, so each weight is a linear layer.

Rules of :class:`UnrollRecurrentPass`, for each call of ``nn.LSTM``, ``nn.GRU`` or
``nn.RNN`` (a module call or its aten op, :mod:`xbar.passes.recurrent`):

* the sequence length is the example's: the graph runs once on the example
  inputs to read it, and the unrolled graph takes that length only (another
  raises :class:`~xbar.passes.errors.SequenceLengthError`);
* each layer and direction runs, at every step ``t`` (last to first for the
  reverse direction), ``F.linear(x_t, weight_ih, bias_ih)`` and
  ``F.linear(h_{t-1}, weight_hh, bias_hh)``, the cell's gates
  (:mod:`xbar.passes.numerics.recurrent`) and, for a projected LSTM,
  ``F.linear(h_t, weight_hr)``; every step reads the same weight, so each weight
  is one crossbar layer (one array, one input range) with a call site per step;
* step 0 multiplies the initial state too: the call's, else zeros;
* a layer above the first takes the previous layer's step outputs, its
  directions concatenated; the output stacks the last layer's on the time dim,
  ``h_n`` (``c_n``) the final states as ``[layers * directions, batch, hidden]``;
* the call's users read the new values (the module's ``(output, (h_n, c_n))``, or
  aten's ``(output, h_n, c_n)``); values nothing reads are not built;
* dropout between layers is not applied: the graph keeps the eval behaviour it was captured with;
* an unbatched module call (input [steps, features], states [layers * directions,
  hidden]) is unrolled on vectors, as the module computes it;
* a call that cannot be unrolled (a PackedSequence input) stays as it is, its
  reason in ``node.meta[REFUSED_META]`` for matching to report;
* the nodes bounding the steps carry their :class:`~xbar.passes.recurrent.LoopPart` in
  ``node.meta[LOOP_META]`` (the step inputs, initial states and results), for an export to roll the
  steps back into a loop (:mod:`xbar.passes.rewrites.scan_recurrent`);
* a graph without recurrent calls is left untouched (``modified=False``).
"""

from __future__ import annotations

import operator
import re
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..kinds.base import Refused
from ..matching import REFUSED_META
from ..numerics import recurrent as cells
from ..operands import resolve_attribute
from ..recurrent import GATES, LOOP_META, DirectionWeights, LoopPart, RecurrentCall, RecurrentLoop, recurrent_call

NOT_A_TENSOR = Refused("its input is not a tensor when the example runs (a PackedSequence?)")


class UnrollRecurrentPass(PassBase):
    """Replace each recurrent call by its per-step graph of linear ops; see the module docstring."""

    def __init__(self, example_inputs: Sequence):
        super().__init__()
        self.example_inputs = tuple(example_inputs)

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        found = [(n, recurrent_call(graph_module, n)) for n in graph_module.graph.nodes]
        calls = [call for _, call in found if isinstance(call, RecurrentCall)]
        for node, call in found:
            if isinstance(call, Refused):
                node.meta[REFUSED_META] = call.reason
        if not calls:
            return PassResult(graph_module, False)
        shapes = _input_shapes(graph_module, calls, self.example_inputs)
        modified = False
        for call in calls:
            shape = shapes.get(call.node)
            if shape is None or len(shape) not in (2, 3):
                call.node.meta[REFUSED_META] = NOT_A_TENSOR.reason if shape is None else \
                    f"an input of {len(shape)} dims (not [steps, features] or a batch of them)"
                continue
            time_dim = 1 if call.batch_first and len(shape) == 3 else 0
            _Unroller(graph_module, call, shape[time_dim], time_dim).replace()
            modified = True
        return PassResult(graph_module, modified)


class _InputShapes(fx.Interpreter):
    """Runs the graph and keeps the shape of each watched call's input (None when not a tensor)."""

    def __init__(self, graph_module: fx.GraphModule, calls: list[RecurrentCall]):
        super().__init__(graph_module)
        self.watched = {call.node: call.input for call in calls}
        self.shapes: dict[fx.Node, Optional[tuple]] = {}

    def run_node(self, node: fx.Node):
        if node in self.watched:
            value = self.env[self.watched[node]]
            self.shapes[node] = tuple(value.shape) if isinstance(value, torch.Tensor) else None
        return super().run_node(node)


@torch.no_grad()
def _input_shapes(graph_module: fx.GraphModule, calls: list[RecurrentCall], example_inputs: tuple) -> dict:
    interpreter = _InputShapes(graph_module, calls)
    interpreter.run(*example_inputs)
    return interpreter.shapes


class _Unroller:
    """Builds one call's unrolled graph before the call, then hands its users the new values."""

    def __init__(self, graph_module: fx.GraphModule, call: RecurrentCall, steps: int, time_dim: int):
        self.gm, self.graph, self.call = graph_module, graph_module.graph, call
        self.steps, self.time_dim = steps, time_dim
        self.prefix = re.sub(r"[^0-9a-zA-Z_]", "_", call.owner) or "rnn"
        self.meta = {"nn_module_stack": call.module_stack}
        if "stack_trace" in call.node.meta:
            self.meta["stack_trace"] = call.node.meta["stack_trace"]
        self.created: list[fx.Node] = []
        self.reads = {n.target: n for n in self.graph.nodes if n.op == "get_attr"}

    def replace(self) -> None:
        node = self.call.node
        with self.graph.inserting_before(node):
            outputs = self._unrolled()
        _hand_over(self.graph, node, outputs)
        self.graph.erase_node(node)
        for created in reversed(self.created):
            if not created.users:
                self.graph.erase_node(created)

    def _node(self, target, args, name: str) -> fx.Node:
        node = self.graph.create_node("call_function", target, tuple(args), {}, name=name)
        node.meta.update(self.meta)
        self.created.append(node)
        return node

    def _read(self, name: Optional[str]) -> Optional[fx.Node]:
        if name is not None and name not in self.reads:
            self.reads[name] = self.graph.get_attr(name)
        return None if name is None else self.reads[name]

    def _unrolled(self) -> tuple:
        call, time_dim = self.call, self.time_dim
        sequence = self._node(cells.unbind_steps, (call.input, time_dim, self.steps, call.owner),
                              f"{self.prefix}_steps")
        self.loop = RecurrentLoop(sequence.name, call.mode, time_dim, self.steps, call.weights)
        self._tag(sequence, "steps")
        inputs = [self._node(operator.getitem, (sequence, t), f"{self.prefix}_x_t{t}") for t in range(self.steps)]
        initial = self._initial_state()
        finals = []
        for layer, directions in enumerate(call.weights):
            runs = []
            for direction, weights in enumerate(directions):
                index = layer * call.directions + direction
                state = tuple(self._initial(s, index, inputs[0], weights, k) for k, s in enumerate(initial))
                name = f"{self.prefix}_l{layer}{'_reverse' * direction}"
                outputs, state = self._direction(weights, inputs, state, name, reverse=bool(direction))
                runs.append(outputs)
                finals.append(state)
            inputs = runs[0] if len(runs) == 1 else [
                self._node(torch.cat, ([run[t] for run in runs], -1), f"{self.prefix}_l{layer}_t{t}_cat")
                for t in range(self.steps)]
        output = self._tag(self._node(torch.stack, (inputs, time_dim), f"{self.prefix}_output"), "output")
        states = tuple(self._tag(self._node(torch.stack, ([f[k] for f in finals], 0), f"{self.prefix}_{name}_n"),
                                 f"{name}_n")
                       for k, name in enumerate(("h", "c")[:len(finals[0])]))
        if call.nested:
            return (output, states if call.mode == "LSTM" else states[0])
        return (output, *states)

    def _initial_state(self) -> tuple:
        """The call's initial states as nodes or None (zeros): (h0,) or (h0, c0)."""
        count = 2 if self.call.mode == "LSTM" else 1
        state = self.call.state
        if state is None:
            return (None,) * count
        if isinstance(state, (tuple, list)):
            return tuple(state)
        if count == 1:
            return (state,)
        return tuple(self._node(operator.getitem, (state, k), f"{self.prefix}_hx{k}") for k in range(count))

    def _initial(self, state: Optional[fx.Node], index: int, x: fx.Node, weights: DirectionWeights, k: int):
        """Layer-direction ``index``'s initial hidden (k=0) or cell (k=1) state."""
        name = f"{self.prefix}_{'hc'[k]}0_{index}"
        if state is not None:
            return self._tag(self._node(operator.getitem, (state, index), name), f"{'hc'[k]}0", index)
        w_hh = resolve_attribute(self.gm, weights.hh)
        size = w_hh.shape[1] if k == 0 else w_hh.shape[0] // GATES[self.call.mode]
        return self._tag(self._node(cells.zero_state, (x, size), name), f"{'hc'[k]}0", index)

    def _tag(self, node: fx.Node, role: str, index: int = 0) -> fx.Node:
        node.meta[LOOP_META] = LoopPart(self.loop, role, index)
        return node

    def _direction(self, weights: DirectionWeights, inputs: list, state: tuple, base: str, reverse: bool):
        outputs = [None] * self.steps
        for t in (reversed(range(self.steps)) if reverse else range(self.steps)):
            state = self._step(weights, inputs[t], state, f"{base}_t{t}")
            outputs[t] = state[0]
        return outputs, state

    def _step(self, weights: DirectionWeights, x: fx.Node, state: tuple, base: str) -> tuple:
        ih = self._linear(x, weights.ih, weights.bias_ih, f"{base}_ih")
        hh = self._linear(state[0], weights.hh, weights.bias_hh, f"{base}_hh")
        mode = self.call.mode
        if mode == "LSTM":
            cell = self._node(cells.lstm_cell, (ih, hh, state[1]), f"{base}_cell")
            h, c = (self._node(operator.getitem, (cell, k), f"{base}_{'hc'[k]}") for k in range(2))
            if weights.hr is not None:
                h = self._linear(h, weights.hr, None, f"{base}_hr")
            return h, c
        if mode == "GRU":
            return (self._node(cells.gru_cell, (ih, hh, state[0]), f"{base}_cell"),)
        gates = cells.rnn_tanh_cell if mode == "RNN_TANH" else cells.rnn_relu_cell
        return (self._node(gates, (ih, hh), f"{base}_cell"),)

    def _linear(self, x: fx.Node, weight: str, bias: Optional[str], name: str) -> fx.Node:
        args = (x, self._read(weight)) if bias is None else (x, self._read(weight), self._read(bias))
        return self._node(F.linear, args, name)


def _hand_over(graph: fx.Graph, node: fx.Node, value) -> None:
    """Make every user of ``node`` (whose value is the nested tuple ``value`` of nodes) read ``value``'s nodes."""
    for user in list(node.users):
        if user.op == "call_function" and user.target is operator.getitem and user.args[0] is node \
                and isinstance(user.args[1], int):
            item = value[user.args[1]]
            if isinstance(item, fx.Node):
                user.replace_all_uses_with(item)
            else:
                _hand_over(graph, user, item)
            graph.erase_node(user)
    if node.users:
        with graph.inserting_before(node):
            node.replace_all_uses_with(graph.call_function(cells.packed, (value,)))
