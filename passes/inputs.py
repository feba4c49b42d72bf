"""A model's inputs as its ``forward`` takes them: in order, matched to its parameters by name, counted in samples.

One rule for every stage that feeds a model (prepare's example, calibration batches, fine-tuning data, the
ONNX export's example): a tensor is the one input; a tuple or list holds the inputs in ``forward``'s order; a
dict whose keys all name ``forward``'s parameters holds the inputs by name; any other dict (or nest) is the
one input of a ``forward`` that takes one (a model reading ``inputs["image"]``). Inputs that do not fit
``forward``'s parameters are refused with one line (:class:`~xbar.passes.errors.InputsError`).
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch
import torch.utils._pytree as pytree
from torch import Tensor

from .errors import InputsError

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def forward_parameters(model) -> Optional[list[inspect.Parameter]]:
    """``forward``'s positional parameters in order; None when it takes ``*args`` or has no readable signature."""
    module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    try:
        signature = inspect.signature(module.forward)
    except (AttributeError, TypeError, ValueError):
        return None
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()):
        return None
    return [p for p in signature.parameters.values() if p.kind in POSITIONAL]


def _signature_text(parameters: list[inspect.Parameter]) -> str:
    return f"forward({', '.join(p.name for p in parameters)})"


def positional_inputs(model, batch, what: str) -> tuple:
    """``batch`` as ``forward``'s positional inputs (see the module's rule), their count checked."""
    parameters = forward_parameters(model)
    if isinstance(batch, (tuple, list)):
        inputs = tuple(batch)
    elif isinstance(batch, dict) and parameters is not None and _keyed_by_name(batch, parameters, what):
        inputs = _by_name(batch, parameters, what)
    else:
        inputs = (batch,)
    check_input_count(parameters, inputs, what)
    return inputs


def _keyed_by_name(batch: dict, parameters: list[inspect.Parameter], what: str) -> bool:
    """Whether a dict holds ``forward``'s inputs by name; a dict for a forward of several inputs must."""
    names = {p.name for p in parameters}
    unknown = [key for key in batch if key not in names]
    if not unknown:
        return True
    if len(parameters) == 1:
        return False  # the dict is the one input
    raise InputsError(f"{what}: {_quoted(unknown)} name{'s' * (len(unknown) == 1)} no parameter of "
                      f"{_signature_text(parameters)}; key the inputs by those names, or pass them as a tuple")


def _by_name(batch: dict, parameters: list[inspect.Parameter], what: str) -> tuple:
    """The dict's inputs in ``forward``'s order, up to the last one given (defaults fill the gaps)."""
    missing = [p.name for p in parameters if p.name not in batch and p.default is inspect.Parameter.empty]
    if missing:
        raise InputsError(f"{what}: no input {_quoted(missing)}, which {_signature_text(parameters)} needs; "
                          "add it to the dict")
    last = max(i for i, p in enumerate(parameters) if p.name in batch)
    return tuple(batch[p.name] if p.name in batch else p.default for p in parameters[:last + 1])


API_HINT = "pass one per parameter, in order (a tuple), or a dict keyed by their names"


def check_input_count(parameters: Optional[list[inspect.Parameter]], inputs: tuple, what: str,
                      hint: str = API_HINT) -> None:
    """:class:`InputsError` unless ``forward`` takes ``len(inputs)`` positional inputs; ``hint`` says what to do."""
    if parameters is None:
        return
    required = sum(p.default is inspect.Parameter.empty for p in parameters)
    if required <= len(inputs) <= len(parameters):
        return
    wanted = f"{required}" if required == len(parameters) else f"{required} to {len(parameters)}"
    raise InputsError(f"{what}: {_signature_text(parameters)} takes {wanted} input{'s' * (wanted != '1')}, got "
                      f"{len(inputs)}; {hint}")


def tensors_of(inputs) -> list[Tensor]:
    """The tensors in a nest of inputs, in pytree order."""
    return [x for x in pytree.tree_leaves(inputs) if isinstance(x, Tensor)]


def sample_count(inputs, what: str) -> int:
    """The number of samples the inputs hold: the first dimension every one of their tensors shares."""
    counts = sorted({len(x) for x in tensors_of(inputs) if x.dim() > 0})
    if len(counts) != 1:
        raise InputsError(f"{what}: the input tensors hold {' and '.join(map(str, counts)) or 'no'} samples; "
                          "give every input the same first (sample) dimension")
    return counts[0]


def samples_at(inputs, index: Tensor):
    """The samples ``index`` selects from every tensor of a nest of inputs."""
    return pytree.tree_map(lambda x: x[index] if isinstance(x, Tensor) and x.dim() > 0 else x, inputs)


def _quoted(names: list) -> str:
    return ", ".join(repr(name) for name in names)
