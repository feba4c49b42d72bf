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
from typing import Callable, Iterable, Iterator, Literal, Optional, Sequence, get_args

import torch
from torch import fx, nn

from .errors import CaptureError, DynamicShapeError, UserError
from .shapes import (
    ShapeRequest,
    bounded_sequence,
    constraint_violation,
    probing_sequence,
    requested_shapes,
    widened,
)

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


def export_program(model: nn.Module, inputs: tuple, spec: tuple) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` with the dynamic shapes ``spec`` (:mod:`xbar.passes.shapes`), its dynamic
    dimensions of size 1 widened to 2 first (export would fix them)."""
    return torch.export.export(model, widened(inputs, spec), dynamic_shapes=spec)


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


def capture(model, example_inputs: Sequence, method: CaptureMethod = "export",
            dynamic_shapes=None) -> fx.GraphModule:
    """Return an editable GraphModule of ``model`` (in eval mode); see :func:`capture_with_shapes`."""
    return capture_with_shapes(model, example_inputs, method, dynamic_shapes)[0]


def capture_with_shapes(model, example_inputs: Sequence, method: CaptureMethod = "export",
                        dynamic_shapes=None) -> tuple[fx.GraphModule, tuple]:
    """An editable GraphModule of ``model`` (in eval mode) and the dynamic shapes it was captured with.

    ``model`` may be an ``nn.Module``, an ``ExportedProgram`` or a GraphModule
    (used as it is). ``method`` picks ``torch.export`` (default) or ``torch.fx.symbolic_trace``
    (which fixes no shape: the spec applies at export). ``dynamic_shapes`` is torch.export's
    form, None for xbar's default (:mod:`xbar.passes.shapes`).
    """
    inputs = tuple(example_inputs)
    request = requested_shapes(model, inputs, dynamic_shapes)
    if isinstance(model, torch.export.ExportedProgram):
        return _editable(model.module()), request.spec
    if isinstance(model, fx.GraphModule):
        return model, request.spec
    if not isinstance(model, nn.Module):
        raise UserError(f"expected an nn.Module, ExportedProgram or GraphModule to capture, "
                        f"got a {type(model).__name__}")
    if method not in CAPTURE_METHODS:
        raise UserError(f"unknown capture method {method!r}; use one of {', '.join(CAPTURE_METHODS)}")
    model.eval()
    try:
        if method == "symbolic_trace":
            traced = fx.symbolic_trace(model)
            return traced, _settled(traced, inputs, request)
        return _exported(model, inputs, request)
    except UserError:
        raise
    except Exception as exc:  # any tracer failure is reported as one capture error
        other = next(m for m in CAPTURE_METHODS if m != method)
        raise CaptureError(
            f"could not capture {type(model).__name__} with {method}: {first_line(exc)}. "
            f"Try capture_method={other!r}, or pass your own torch.fx.GraphModule or ExportedProgram"
        ) from exc


def _settled(traced: fx.GraphModule, inputs: tuple, request: ShapeRequest) -> tuple:
    """The spec a traced model keeps: the default's, its ``seq`` bounded, or its fallback, as an export takes.

    ``symbolic_trace`` fixes no shape, so only an export tells which lengths the model takes;
    any other export failure is left for the ONNX export to report."""
    if request.fallback is None:
        return request.spec
    try:
        with quiet_torch():
            return _accepted(lambda spec: export_program(traced, inputs, spec), inputs, request)[1]
    except Exception:  # a tracer failure: only a refused dimension decides here
        return request.spec


def _exported(model: nn.Module, inputs: tuple, request: ShapeRequest) -> tuple[fx.GraphModule, tuple]:
    """Export with the requested spec, or with the one :func:`_accepted` settles on."""
    with quiet_torch(), torch_internal_warnings_ignored():
        program, spec = _accepted(lambda spec: export_program(model, inputs, spec), inputs, request)
    return _editable(program.module()), spec


def _accepted(export: Callable[[tuple], torch.export.ExportedProgram], inputs: tuple,
              request: ShapeRequest) -> tuple[torch.export.ExportedProgram, tuple]:
    """The program and spec of the first that ``export`` takes: the requested spec; where the model cannot take
    the default's every ``seq``, the lengths up to the bound a probing export finds; else the fallback."""
    try:
        return export(request.spec), request.spec
    except Exception as exc:  # a tracer failure: a refused dimension is the user's to fix
        refusal = constraint_violation(exc)
        if refusal is None:
            raise
        if request.fallback is None:
            raise DynamicShapeError(refusal) from exc
    bounded = _bounded(export, inputs, request.spec)
    if bounded is not None:
        try:
            return export(bounded), bounded
        except Exception as exc:  # a bound the probe found but the model refuses: fall back
            if constraint_violation(exc) is None:
                raise
    return export(request.fallback), request.fallback


def _bounded(export: Callable[[tuple], torch.export.ExportedProgram], inputs: tuple, spec: tuple) -> Optional[tuple]:
    """``spec`` with ``seq`` bounded as a probing export with ``Dim.AUTO`` finds, or None if it fixes it."""
    try:
        probe = export(probing_sequence(inputs, spec))
    except Exception:  # the probe only informs; the fallback's export reports any failure
        return None
    return bounded_sequence(probe, inputs, spec)
