"""Capture a model as a torch.fx GraphModule the passes can edit.

``torch.export`` is the default: it traces models that ``symbolic_trace``
cannot (transformers, control flow on shapes). The exported module is rebuilt as
a plain ``fx.GraphModule`` so that ``.train()`` works on the modules xbar
inserts; the captured model's own batch norm and dropout keep the behaviour they
were exported with (eval), which is what input-range fine-tuning wants.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import sys
import warnings
from typing import Iterable, Iterator, Literal, Sequence, get_args

import torch
import torch.utils._pytree as pytree
from torch import fx, nn

from .errors import CaptureError, UserError

CaptureMethod = Literal["export", "symbolic_trace"]
CAPTURE_METHODS = get_args(CaptureMethod)


LEAF_SPEC_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
"""torch 2.13 warns about its own pytree specs whenever a captured graph is copied or exported."""

FLAT_WEIGHTS_ASSIGNED = r"The tensor attributes .*_flat_weights.* were assigned during export"
"""torch.export warns about the weight list of its own nn.LSTM / nn.GRU / nn.RNN, which no user can change."""


@contextlib.contextmanager
def torch_internal_warnings_ignored() -> Iterator[None]:
    """Hide the warnings torch raises about its own internals (nothing a user can act on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=LEAF_SPEC_DEPRECATION, category=FutureWarning)
        warnings.filterwarnings("ignore", message=FLAT_WEIGHTS_ASSIGNED, category=UserWarning)
        yield


def copy_graph_module(graph_module: fx.GraphModule, share: Iterable[torch.Tensor] = ()) -> fx.GraphModule:
    """A deep copy of ``graph_module``, without torch's internal deprecation warning.

    The copy holds the tensors in ``share`` themselves, not copies: for tensors
    the caller will only read or drop, which a large model cannot afford twice.
    """
    memo = {id(tensor): tensor for tensor in share}
    with torch_internal_warnings_ignored():
        return copy.deepcopy(graph_module, memo)


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Hold back what torch's tracers log and print while they run.

    A failed ``torch.export`` logs warnings and prints its partial graph to stderr
    before raising; the caller reports the failure as one line instead. What a
    successful trace printed is passed on; torch's log level is restored after.
    """
    logger = logging.getLogger("torch")
    level = logger.level
    printed = io.StringIO()
    logger.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(printed):
            yield
    finally:
        logger.setLevel(level)
    sys.stderr.write(printed.getvalue())


def dynamic_batch_inputs(example_inputs: Sequence) -> tuple:
    """Example inputs with batch >= 2 (export specialises size 1) and their dynamic shapes.

    Inputs may be nested (dicts, tuples, lists of tensors): the shapes follow their
    pytree structure, dimension 0 of every tensor leaf being the batch.
    """
    batch = torch.export.Dim("batch")

    def widened(x):
        if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == 1:
            return x.expand(2, *x.shape[1:]).contiguous()
        return x

    def shape(x):
        return {0: batch} if isinstance(x, torch.Tensor) and x.dim() > 0 else None

    inputs = tuple(pytree.tree_map(widened, tuple(example_inputs)))
    return inputs, tuple(pytree.tree_map(shape, inputs))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type's name), for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


KEPT_META = ("nn_module_stack", "stack_trace")


def _editable(module: fx.GraphModule) -> fx.GraphModule:
    """A plain GraphModule of an exported module, without the tracer's fake tensors
    (they cannot be deep-copied and go stale as soon as the graph is edited)."""
    graph_module = fx.GraphModule(module, module.graph)
    for node in graph_module.graph.nodes:
        for key in [k for k in node.meta if k not in KEPT_META]:
            del node.meta[key]
    return graph_module


def capture(model, example_inputs: Sequence, method: CaptureMethod = "export") -> fx.GraphModule:
    """Return an editable GraphModule of ``model`` (in eval mode).

    ``model`` may be an ``nn.Module``, an ``ExportedProgram`` or a GraphModule
    (used as it is). ``method`` picks ``torch.export`` (default, with a dynamic
    batch dimension) or ``torch.fx.symbolic_trace``.
    """
    if isinstance(model, torch.export.ExportedProgram):
        return _editable(model.module())
    if isinstance(model, fx.GraphModule):
        return model
    if not isinstance(model, nn.Module):
        raise UserError(f"expected an nn.Module, ExportedProgram or GraphModule to capture, "
                        f"got a {type(model).__name__}")
    if method not in CAPTURE_METHODS:
        raise UserError(f"unknown capture method {method!r}; use one of {', '.join(CAPTURE_METHODS)}")
    model.eval()
    try:
        if method == "symbolic_trace":
            return fx.symbolic_trace(model)
        inputs, shapes = dynamic_batch_inputs(example_inputs)
        with quiet_torch(), torch_internal_warnings_ignored():
            program = torch.export.export(model, inputs, dynamic_shapes=shapes)
        return _editable(program.module())
    except Exception as exc:  # any tracer failure is reported as one capture error
        other = next(m for m in CAPTURE_METHODS if m != method)
        raise CaptureError(
            f"could not capture {type(model).__name__} with {method}: {first_line(exc)}. "
            f"Try capture_method={other!r}, or pass your own torch.fx.GraphModule or ExportedProgram"
        ) from exc
