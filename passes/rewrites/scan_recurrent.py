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
  custom op with its call sites' arguments (G+, G-, bias read by the node, so they stay the
  arrays' buffers), the cell's gates (:mod:`xbar.passes.numerics.recurrent`), the projection;
* the initial states are the call's (the unrolled graph's ``h0`` / ``c0`` nodes); zeros are
  built from the input's own shape, so their batch is the input's;
* the users of the call's ``output``, ``h_n`` and ``c_n`` read the scan node's results and the
  unrolled steps are erased;
* the captured program's ``_guards_fn`` call is erased (its input checks hold the example's
  length; torch's own AOT compiler drops it too);
* a recurrent weight programmed on several arrays (tiled) or by several devices raises
  :class:`ExportError`.
"""

from __future__ import annotations

import operator
from typing import Callable

import torch
from torch import Tensor, fx
from torch._higher_order_ops.scan import scan
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..errors import ExportError
from ..numerics import recurrent as cells
from ..numerics.crossbar import MultiDeviceCrossbar
from ..recurrent import LOOP_META, LoopPart, RecurrentLoop
from .export_ops import CUSTOM_OPS, TENSORS

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
        sites = _weight_sites(graph_module)
        for nodes in calls.values():
            _roll(graph_module, nodes, sites)
        for guards in graph_module.graph.find_nodes(op="call_module", target=GUARDS):
            graph_module.graph.erase_node(guards)
        graph_module.recompile()
        return PassResult(graph_module, True)


def _weight_sites(graph_module: fx.GraphModule) -> dict[str, fx.Node]:
    """Weight name -> one call site of its array's custom op (None for a weight on several arrays or devices)."""
    sites, arrays = {}, {}
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or node.target not in CUSTOM_OPS.values():
            continue
        array = node.args[1].target.rpartition(".")[0]
        module = graph_module.get_submodule(array)
        arrays.setdefault(module.settings.layer, set()).add(array)
        sites.setdefault(module.settings.layer, None if isinstance(module, MultiDeviceCrossbar) else node)
    return {layer: site if len(arrays[layer]) == 1 else None for layer, site in sites.items()}


def _site(sites: dict, weight: str) -> fx.Node:
    site = sites.get(weight)
    if site is None:
        raise ExportError(f"{weight} is programmed on several arrays (tiled) or devices: a scan export needs each "
                          "recurrent weight on one array of one pair; export it without scan_recurrent")
    return site


def _roll(graph_module: fx.GraphModule, nodes: dict, sites: dict) -> None:
    graph = graph_module.graph
    steps = nodes[("steps", 0)]
    loop: RecurrentLoop = steps.meta[LOOP_META].loop
    weights = [w for directions in loop.weights for d in directions for w in (d.ih, d.hh, d.hr) if w is not None]
    ops = {w: (_site(sites, w).target, _plain(_site(sites, w).args[1 + len(TENSORS):])) for w in weights}
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
        tensors = [graph.get_attr(a.target) for w in weights for a in _site(sites, w).args[1:1 + len(TENSORS)]]
        rolled = graph.create_node("call_function", scanned(loop, ops, weights, sizes),
                                   (steps.args[0], tuple(initial), tuple(tensors)), {},  # the unbound sequence
                                   name=f"{steps.name.removesuffix('_steps')}_scan")
        for k, role in enumerate(RESULTS):
            if (role, 0) in nodes:
                nodes[(role, 0)].replace_all_uses_with(graph.call_function(operator.getitem, (rolled, k)))
    for node in reversed(list(graph.nodes)):
        if node in region and not node.users:
            graph.erase_node(node)


def _plain(arguments: tuple) -> tuple:
    """A node's constant arguments with fx's immutable lists as lists (what the traced scan body can take)."""
    return tuple(list(a) if isinstance(a, list) else a for a in arguments)


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


def scanned(loop: RecurrentLoop, ops: dict, weights: list[str], sizes: list) -> Callable:
    """The function of a rolled call: ``(x, initial, tensors) -> (output, h_n[, c_n])`` as the unrolled steps
    compute them, a scan per layer and direction; ``initial[i]`` None is zeros of ``sizes[i]`` features."""
    directions = len(loop.weights[0])

    def run(x: Tensor, initial: tuple, tensors: tuple) -> tuple:
        arrays = {w: tensors[len(TENSORS) * i:len(TENSORS) * (i + 1)] for i, w in enumerate(weights)}

        def linear(weight: str, value: Tensor) -> Tensor:
            target, arguments = ops[weight]
            return target(value, *arrays[weight], *arguments)

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
