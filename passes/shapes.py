"""Dynamic shapes: which dimensions of a model's inputs stay free, in torch.export's own form.

A spec has the structure of the positional inputs: per tensor, None (static) or a dict
``{dim: torch.export.Dim(...)}`` (or a sequence with one entry per dimension), nested as the
inputs nest; a dict keyed by ``forward``'s parameter names is accepted too. Capture, the
compiled path and the ONNX export all follow the one spec :func:`xbar.prepare` settled on.

xbar's default (``dynamic_shapes=None``), for a model given as an ``nn.Module``:

- dimension 0 of every tensor is ``batch`` (as before);
- dimension 1 is ``seq``, from 1 up, for an integer or boolean tensor of rank 2 (token ids or
  a mask, [batch, seq]), and for a floating tensor of rank 3 ([batch, seq, features]) when
  the model's layers with a weight include ``nn.Linear`` and no convolution or recurrent
  layer (those read dimension 1 as channels, or time first); never for a model with a recurrent
  layer (``prepare`` unrolls it over the example's length). Where the model takes lengths
  only up to a bound (a position table sliced to the input's length), ``seq`` runs from 1 to
  the bound torch.export finds; where it takes one length only (a position table added
  whole fixes it), the default ``seq`` stays the example's length and only ``batch`` is dynamic.

A given spec is used as given: a dimension the model cannot take is refused
(:class:`~xbar.passes.errors.DynamicShapeError`, with torch.export's suggested fix), never fixed
silently. A captured ``ExportedProgram`` or ``GraphModule`` defaults to ``batch`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, fx, nn
from torch.export import Dim
from torch.utils._sympy.numbers import int_oo

from .errors import DynamicShapeError
from .inputs import forward_parameters

BATCH = "batch"
SEQUENCE = "seq"
SEQUENTIAL_READERS = (nn.modules.conv._ConvNd, nn.RNNBase)
"""Layers that read dimension 1 of a rank-3 input as channels (convolutions) or not as a sequence (RNNs)."""


@dataclass(frozen=True)
class ShapeRequest:
    """The spec to capture with, and the one to fall back to when the model cannot take the default's ``seq``
    (not even up to a bound)."""

    spec: tuple
    fallback: Optional[tuple] = None


def requested_shapes(model, inputs: tuple, dynamic_shapes=None) -> ShapeRequest:
    """The spec for ``inputs`` (positional): ``dynamic_shapes`` checked and in positional form, or the default."""
    if dynamic_shapes is not None:
        return ShapeRequest(positional_shapes(model, inputs, dynamic_shapes))
    if not isinstance(model, nn.Module) or isinstance(model, fx.GraphModule):
        return ShapeRequest(default_shapes(inputs, sequence_of=lambda x: False))
    if any(isinstance(m, nn.RNNBase) for m in model.modules()):  # unrolled over the example's length
        return ShapeRequest(default_shapes(inputs, sequence_of=lambda x: False))
    linear = _linear_only(model)
    spec = default_shapes(inputs, lambda x: has_sequence_axis(x, linear))
    batch_only = default_shapes(inputs, sequence_of=lambda x: False)
    return ShapeRequest(spec, batch_only if any(has_sequence_axis(x, linear) for x in _tensors(inputs)) else None)


def default_shapes(inputs: tuple, sequence_of: Callable[[Tensor], bool]) -> tuple:
    """``batch`` at dimension 0 of every tensor, and ``seq`` at dimension 1 where ``sequence_of`` says so."""
    batch, seq = Dim(BATCH), Dim(SEQUENCE, min=1)
    return map_tensors(lambda x, _: None if x.dim() == 0 else {0: batch} | ({1: seq} if sequence_of(x) else {}),
                       inputs, None)


def with_sequence_dim(inputs, spec, lengths: set[int]) -> tuple:
    """``spec`` with ``seq`` (from 1 up) at dimension 1 of each tensor whose dimension 1 has one of the
    ``lengths`` (the recurrent calls' unrolled lengths; the batch-first convention of the default spec)."""
    seq = Dim(SEQUENCE, min=1)
    return map_tensors(lambda x, dims: dims if x.dim() < 2 or x.shape[1] not in lengths else (dims or {}) | {1: seq},
                       inputs, spec)


def probing_sequence(inputs, spec) -> tuple:
    """``spec`` with its ``seq`` dimensions left to torch.export (``Dim.AUTO``): the export that finds which
    lengths the model takes, for :func:`bounded_sequence` to read."""
    return _with_sequence(inputs, spec, Dim.AUTO)


def bounded_sequence(probe: torch.export.ExportedProgram, inputs, spec) -> Optional[tuple]:
    """``spec`` with its ``seq`` running from 1 to the largest length ``probe`` (exported with
    :func:`probing_sequence`) allows every input, or None where the probe fixed a length or found no bound."""
    sizes = [value.shape[dim] for (_, dims), value in zip(dynamic_dims(inputs, spec), _input_values(probe))
             for dim, entry in dims.items() if _is_sequence(entry)]
    if not sizes or not all(isinstance(size, torch.SymInt) for size in sizes):
        return None
    ranges = [probe.range_constraints.get(size.node.expr) for size in sizes]
    if any(bounds is None or bounds.upper == int_oo for bounds in ranges):
        return None
    return _with_sequence(inputs, spec, Dim(SEQUENCE, min=1, max=min(int(bounds.upper) for bounds in ranges)))


def _with_sequence(inputs, spec, entry) -> tuple:
    return map_tensors(lambda x, dims: None if dims is None else
                       {dim: entry if _is_sequence(old) else old for dim, old in dims.items()}, inputs, spec)


def _is_sequence(entry) -> bool:
    return getattr(entry, "__name__", None) == SEQUENCE


def _input_values(program: torch.export.ExportedProgram) -> list:
    """The fake tensors of the program's user inputs, in pytree order."""
    user = set(program.graph_signature.user_inputs)
    values = [node.meta.get("val") for node in program.graph.nodes if node.op == "placeholder" and node.name in user]
    return [value for value in values if isinstance(value, Tensor)]


def has_sequence_axis(x: Tensor, linear_model: bool) -> bool:
    """Token ids or a mask [batch, seq], or [batch, seq, features] into a model of linear layers."""
    if x.dtype == torch.bool or not (x.is_floating_point() or x.is_complex()):
        return x.dim() == 2
    return x.dim() == 3 and linear_model


def _linear_only(model: nn.Module) -> bool:
    modules = list(model.modules())
    return (any(isinstance(m, nn.Linear) for m in modules)
            and not any(isinstance(m, SEQUENTIAL_READERS) for m in modules))


def positional_shapes(model, inputs: tuple, dynamic_shapes) -> tuple:
    """A user's spec as a tuple with one entry per positional input, checked against the inputs' structure."""
    if isinstance(dynamic_shapes, dict):
        parameters = [p.name for p in forward_parameters(model) or []]
        unknown = [key for key in dynamic_shapes if key not in parameters[:len(inputs)]]
        if unknown:
            raise DynamicShapeError(f"dynamic_shapes names {', '.join(map(repr, unknown))}, not among the inputs "
                                    f"forward({', '.join(parameters[:len(inputs)])}) is given; key it by those names")
        dynamic_shapes = tuple(dynamic_shapes.get(name) for name in parameters[:len(inputs)])
    if not isinstance(dynamic_shapes, (tuple, list)) or len(dynamic_shapes) != len(inputs):
        count = len(dynamic_shapes) if isinstance(dynamic_shapes, (tuple, list)) else "not a sequence"
        raise DynamicShapeError(f"dynamic_shapes needs one entry per input ({len(inputs)}), got {count}; give a "
                                "tuple like the inputs, e.g. ({0: Dim('batch'), 1: Dim('seq')},)")
    spec = tuple(dynamic_shapes)
    map_tensors(lambda x, dims: dims, inputs, spec, check=True)
    return spec


def map_tensors(fn: Callable[[Tensor, Optional[dict]], object], inputs, spec, check: bool = False,
                where: str = "input"):
    """``inputs`` with each tensor replaced by ``fn(tensor, its dims dict or None)``, walking ``spec`` beside them;
    ``check`` refuses a spec whose structure or dimensions do not fit."""
    if isinstance(inputs, Tensor):
        return fn(inputs, _dims(inputs, spec, where, check))
    if isinstance(inputs, dict):
        if check and spec is not None and (not isinstance(spec, dict) or set(spec) - set(inputs)):
            raise DynamicShapeError(f"dynamic_shapes for {where} must be a dict with keys among {list(inputs)}")
        return {key: map_tensors(fn, value, None if spec is None else spec.get(key), check, f"{where}[{key!r}]")
                for key, value in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        if check and spec is not None and (not isinstance(spec, (tuple, list)) or len(spec) != len(inputs)):
            raise DynamicShapeError(f"dynamic_shapes for {where} must be a sequence of {len(inputs)} entries")
        values = [map_tensors(fn, value, None if spec is None else spec[i], check, f"{where}[{i}]")
                  for i, value in enumerate(inputs)]
        return type(inputs)(*values) if hasattr(inputs, "_fields") else type(inputs)(values)
    return inputs


def _dims(x: Tensor, spec, where: str, check: bool) -> Optional[dict]:
    """A tensor's spec entry as ``{dim: entry}`` of its dynamic dimensions (None: all static)."""
    if spec is None:
        return None
    if isinstance(spec, (tuple, list)):
        spec = dict(enumerate(spec))
    if not isinstance(spec, dict):
        raise DynamicShapeError(f"dynamic_shapes for {where}: expected a dict {{dim: Dim}}, got "
                                f"{type(spec).__name__}")
    if check:
        for dim in spec:
            if not isinstance(dim, int) or not 0 <= dim < x.dim():
                raise DynamicShapeError(f"dynamic_shapes names dimension {dim!r} of {where}, which has "
                                        f"{x.dim()} (0 to {x.dim() - 1})")
    return {dim: entry for dim, entry in spec.items() if is_dynamic(entry)}


def is_dynamic(entry) -> bool:
    return entry is not None and not isinstance(entry, int) and entry is not Dim.STATIC


def widened(inputs, spec):
    """The inputs with each dynamic dimension of size 1 repeated to 2 (torch.export fixes a size-1 dimension)."""
    def widen(x: Tensor, dims: Optional[dict]) -> Tensor:
        sizes = [2 if dims and d in dims and size == 1 else size for d, size in enumerate(x.shape)]
        return x if sizes == list(x.shape) else x.expand(*sizes).contiguous()

    return map_tensors(widen, inputs, spec)


def dynamic_dims(inputs, spec) -> list[tuple[Tensor, dict]]:
    """Each tensor of ``inputs`` with its dynamic dimensions (a dict, possibly empty), in pytree order."""
    found = []
    map_tensors(lambda x, dims: found.append((x, dims or {})), inputs, spec)
    return found


def _tensors(inputs) -> list[Tensor]:
    return [x for x, _ in dynamic_dims(inputs, None)]


def dimension_names(program: torch.export.ExportedProgram, inputs, spec) -> dict[str, str]:
    """The program's symbol for each dynamic dimension (``s77``) -> its name: the Dim's own (a derived
    dimension's root's, so ``2*s25`` reads ``2*h``), else ``input<i>_dim<d>`` for an unnamed hint."""
    names = {}
    for i, ((_, dims), value) in enumerate(zip(dynamic_dims(inputs, spec), _input_values(program))):
        for dim, entry in dims.items():
            size = value.shape[dim]
            symbols = size.node.expr.free_symbols if isinstance(size, torch.SymInt) else set()
            if len(symbols) == 1:
                root = getattr(entry, "root", entry)
                names[str(next(iter(symbols)))] = getattr(root, "__name__", None) or f"input{i}_dim{dim}"
    return names


def constraint_violation(exc: BaseException) -> Optional[str]:
    """One line for torch.export's refusal of a dynamic dimension (with its suggested fix), or None when
    ``exc`` is some other failure."""
    while exc is not None:
        text = str(exc)
        if text.startswith("Constraints violated"):
            dims = text.partition("(")[2].partition(")")[0]
            fixes = text.partition("Suggested fixes:")[2].split("\n\n")[0]
            fix = "; ".join(line.strip() for line in fixes.strip().splitlines() if line.strip())
            return (f"the model cannot take every size of the dynamic dimension(s) {dims}"
                    + (f": torch.export suggests {fix}" if fix else "")
                    + "; declare them so in dynamic_shapes, or leave them static")
        exc = exc.__cause__ or exc.__context__
    return None
