"""Roll each unrolled recurrent call of a converted graph back into one scan per layer and direction.

Why here, at export, and not in ``prepare``: every other stage keeps the unrolled steps
(:class:`~xbar.passes.rewrites.unroll_recurrent.UnrollRecurrentPass`), so each weight is
one crossbar layer matched, ranged, calibrated and fine-tuned as any other, one array
and one input range shared by its call sites. After conversion those steps are identical
up to the step index (each calls the same arrays with the same arguments), so an export
can write one step as the body of ``torch.ops.higher_order.scan``, which the ONNX
exporter translates into an ONNX ``Scan``: the file then runs every sequence length.

Rules of :class:`ScanRecurrentPass`, run after
:class:`~xbar.passes.rewrites.export_ops.CrossbarToCustomOpsPass`, for each call whose
nodes carry a :class:`~xbar.passes.recurrent.LoopPart`:

* the call becomes one ``<call>_scan`` node of :func:`scanned` that runs, per layer and
  direction, a scan (backwards for the reverse direction) whose body is one step: each weight's
  nodes at its first call site replayed (:class:`CallSite`: its custom op, or a tiled layer's
  slices, arrays, sums and bias, or a multi-device array's op; the tensors they read stay the
  arrays' buffers), the cell's gates (:mod:`xbar.passes.numerics.recurrent`), the projection;
* the initial states are the call's (the unrolled graph's ``h0`` / ``c0`` nodes); zeros are
  built from the input's own shape, so their batch is the input's;
* the users of the call's ``output``, ``h_n`` and ``c_n`` read the scan node's results and the
  unrolled steps are erased;
* the captured program's ``_guards_fn`` call is erased (its input checks hold the example's
  length; torch's own AOT compiler drops it too).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.utils._pytree as pytree
from torch import Tensor, fx
from torch._higher_order_ops.scan import scan
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..errors import ExportError
from ..numerics import recurrent as cells
from ..plan import tag_of
from ..recurrent import LOOP_META, LoopPart, RecurrentLoop

RESULTS = ("output", "h_n", "c_n")
"""The roles of an unrolled call's results, in the order :func:`scanned` returns them."""
GUARDS = "_guards_fn"
"""The submodule torch.export's ``module()`` calls first to check the inputs against the captured shapes."""
CELLS = {"GRU": cells.gru_cell, "RNN_TANH": cells.rnn_tanh_cell, "RNN_RELU": cells.rnn_relu_cell}


def unrolled_lengths(graph_module: fx.GraphModule) -> set[int]:
    """The sequence lengths the graph's recurrent calls were unrolled for (empty: none)."""
    return {part.loop.steps for part in _parts(graph_module) if part.role == "steps"}


def _parts(graph_module: fx.GraphModule):
    return (n.meta[LOOP_META] for n in graph_module.graph.nodes if LOOP_META in n.meta)


class ScanRecurrentPass(PassBase):
    """Replace each unrolled recurrent call by a scan per layer and direction; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        calls: dict[str, dict[tuple[str, int], fx.Node]] = {}
        for node in graph_module.graph.nodes:
            part = node.meta.get(LOOP_META)
            if isinstance(part, LoopPart):
                calls.setdefault(part.loop.key, {})[(part.role, part.index)] = node
        if not calls:
            return PassResult(graph_module, False)
        for nodes in calls.values():
            _roll(graph_module, nodes)
        for guards in graph_module.graph.find_nodes(op="call_module", target=GUARDS):
            graph_module.graph.erase_node(guards)
        graph_module.recompile()
        return PassResult(graph_module, True)


@dataclass(frozen=True)
class Slot:
    """Where a replayed call keeps a value: 0 the input, then the attributes, then each node's result."""

    index: int


@dataclass(frozen=True)
class CallSite:
    """One call of a crossbar layer, in graph order, as plain data a traced scan body can run: each node's
    target and arguments, other nodes' values as :class:`Slot`\\ s; ``attributes`` are the tensors it reads
    (G+, G-, biases)."""

    attributes: tuple[fx.Node, ...]
    calls: tuple[tuple[Callable, tuple, dict], ...]

    @classmethod
    def of(cls, source: fx.Node, nodes: Sequence[fx.Node], attributes: tuple[fx.Node, ...]) -> "CallSite":
        slots = {node: Slot(i) for i, node in enumerate((source, *attributes, *nodes))}
        calls = tuple((node.target, *_plain(fx.map_arg((node.args, node.kwargs), slots.__getitem__)))
                      for node in nodes)
        return cls(attributes, calls)

    def replay(self, value: Tensor, tensors: Sequence[Tensor]) -> Tensor:
        """The call's result (its last node's) for input ``value``, ``tensors`` standing for the attributes."""
        values = [value, *tensors]
        for target, args, kwargs in self.calls:
            args, kwargs = pytree.tree_map(lambda v: values[v.index] if isinstance(v, Slot) else v, (args, kwargs))
            values.append(target(*args, **kwargs))
        return values[-1]


def _plain(value):
    """``value`` with fx's immutable lists and dicts as plain ones (what a traced scan body can take)."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def first_call(graph_module: fx.GraphModule, layer: str) -> CallSite:
    """The nodes of ``layer``'s first call: those tagged with it and connected to its first tagged node
    through one another (another call of the layer reads another step's input)."""
    first = next(n for n in graph_module.graph.nodes if n.op == "call_function" and _layer_of(n) == layer)
    members, stack = set(), [first]
    while stack:
        member = stack.pop()
        if member not in members:
            members.add(member)
            linked = [*member.all_input_nodes, *member.users]
            stack.extend(n for n in linked if n.op == "call_function" and _layer_of(n) == layer)
    ordered = tuple(n for n in graph_module.graph.nodes if n in members)
    outside = [a for n in ordered for a in n.all_input_nodes if a not in members]
    sources = {a for a in outside if a.op != "get_attr"}
    results = [n for n in ordered if any(user not in members for user in n.users)]
    if len(sources) != 1 or results != [ordered[-1]]:
        raise ExportError(f"{layer} reads {len(sources)} inputs and gives {len(results)} results in one step: "
                          "a scan export needs one of each; export it without scan_recurrent")
    return CallSite.of(sources.pop(), ordered, tuple(dict.fromkeys(a for a in outside if a.op == "get_attr")))


def _layer_of(node: fx.Node) -> str | None:
    tag = tag_of(node)
    return None if tag is None else tag.plan.layer.name


def _roll(graph_module: fx.GraphModule, nodes: dict) -> None:
    graph = graph_module.graph
    steps = nodes[("steps", 0)]
    loop: RecurrentLoop = steps.meta[LOOP_META].loop
    weights = [w for directions in loop.weights for d in directions for w in (d.ih, d.hh, d.hr) if w is not None]
    calls = {w: first_call(graph_module, w) for w in weights}
    count = loop.layers * len(loop.weights[0])
    initial, sizes = [], []
    for role in ("h0", "c0")[:2 if loop.mode == "LSTM" else 1]:
        for index in range(count):
            node = nodes[(role, index)]
            zeros = node.target is cells.zero_state
            initial.append(None if zeros else node)
            sizes.append(node.args[1] if zeros else None)
    results = [nodes[(role, 0)] for role in RESULTS if (role, 0) in nodes]
    region = _ancestors(results)
    with graph.inserting_before(min(results, key=_position(graph))):
        tensors = [graph.get_attr(a.target) for w in weights for a in calls[w].attributes]
        rolled = graph.create_node("call_function", scanned(loop, calls, sizes),
                                   (steps.args[0], tuple(initial), tuple(tensors)), {},  # the unbound sequence
                                   name=f"{steps.name.removesuffix('_steps')}_scan")
        for k, role in enumerate(RESULTS):
            if (role, 0) in nodes:
                nodes[(role, 0)].replace_all_uses_with(graph.call_function(operator.getitem, (rolled, k)))
    for node in reversed(list(graph.nodes)):
        if node in region and not node.users:
            graph.erase_node(node)


def _position(graph: fx.Graph) -> Callable[[fx.Node], int]:
    order = {node: i for i, node in enumerate(graph.nodes)}
    return order.__getitem__


def _ancestors(nodes: list[fx.Node]) -> set[fx.Node]:
    seen, stack = set(), list(nodes)
    while stack:
        node = stack.pop()
        if node in seen or node.op in ("placeholder", "call_module"):
            continue
        seen.add(node)
        stack.extend(node.all_input_nodes)
    return seen


def scanned(loop: RecurrentLoop, calls: dict[str, CallSite], sizes: list) -> Callable:
    """The function of a rolled call: ``(x, initial, tensors) -> (output, h_n[, c_n])`` as the unrolled steps
    compute them, a scan per layer and direction; ``initial[i]`` None is zeros of ``sizes[i]`` features;
    ``tensors`` are the attributes of ``calls``, weight after weight."""
    directions = len(loop.weights[0])

    def run(x: Tensor, initial: tuple, tensors: tuple) -> tuple:
        arrays, start = {}, 0
        for weight, call in calls.items():
            arrays[weight], start = tensors[start:start + len(call.attributes)], start + len(call.attributes)

        def linear(weight: str, value: Tensor) -> Tensor:
            return calls[weight].replay(value, arrays[weight])

        sequence = x.movedim(loop.time_dim, 0)
        states = [start if start is not None else sequence.new_zeros((*sequence.shape[1:-1], size))
                  for start, size in zip(initial, sizes)]
        count = loop.layers * directions
        finals = []
        for layer, runs in enumerate(loop.weights):
            outputs = []
            for direction, w in enumerate(runs):
                index = layer * directions + direction
                # copies, not views: scan traces a view's base with sizes of its own, which then disagree
                state = tuple(states[k * count + index].clone() for k in range(len(states) // count))
                final, ys = scan(_step(loop.mode, w, linear), state, sequence.clone(), reverse=bool(direction))
                outputs.append(ys)
                finals.append(final)
            sequence = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)
        output = sequence.movedim(0, loop.time_dim)
        return (output, *(torch.stack([f[k] for f in finals], 0) for k in range(len(finals[0]))))

    run.__name__ = f"{loop.key.removesuffix('_steps')}_scan"
    return run


def _step(mode: str, w, linear: Callable) -> Callable:
    """One step of one layer and direction: ``(state, x_t) -> (next state, h_t)``, as the unrolled step."""
    def step(state: tuple, x: Tensor) -> tuple:
        ih, hh = linear(w.ih, x), linear(w.hh, state[0])
        if mode == "LSTM":
            h, c = cells.lstm_cell(ih, hh, state[1])
            if w.hr is not None:
                h = linear(w.hr, h)
            return (h, c), h.clone()
        h = CELLS[mode](ih, hh, state[0]) if mode == "GRU" else CELLS[mode](ih, hh)
        return (h,), h.clone()

    return step
