"""The model inputs the command line works with: named ``--calib`` arrays put in ``forward``'s order, the
example (the first sample, else random data of each ``--input-shape`` and ``--input-dtype``) and the
``--dynamic`` dimensions in torch.export's form.

The example is a tuple of the positional inputs, as :func:`xbar.prepare` takes it. Integer samples stay
integers for a model with an embedding (token ids) and are cast to its float dtype otherwise. Random token
ids are 0 or 1 (any embedding holds those rows): they only fix the shapes the model is captured at.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch
import torch.utils._pytree as pytree
from torch.export import Dim

from ...passes.errors import DynamicShapeError, InputsError, UsageError
from ...passes.inputs import check_input_count, forward_parameters, samples_at
from .data import Dataset
from .model_loading import LoadedModel

CLI_INPUTS_HINT = ("give --input-shape once per input, in forward's order, or --calib a .npz file with one array "
                   "per input named after forward's parameters")
TOKEN_IDS = 2
"""Random integer example inputs are drawn from 0 .. TOKEN_IDS - 1."""


def in_forward_order(data: Dataset, source: LoadedModel) -> Dataset:
    """A file's named arrays as the positional inputs of the model's ``forward``, matched by name."""
    if not isinstance(data.samples, dict):
        return data
    parameters = forward_parameters(source.model) or []
    names = [p.name for p in parameters]
    unknown = [key for key in data.samples if key not in names]
    if unknown:
        raise InputsError(f"--calib {data.name}: the array{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} "
                          f"name{'s' * (len(unknown) == 1)} no parameter of forward({', '.join(names)}); name "
                          "each array after the input it holds (or the only input's samples 'x')")
    given = [name for name in names if name in data.samples]
    inputs = tuple(data.samples[name] for name in given)
    check_input_count(parameters, inputs, f"--calib {data.name}", CLI_INPUTS_HINT)
    gap = next((name for name in names[:names.index(given[-1])] if name not in data.samples), None)
    if gap is not None:
        raise InputsError(f"--calib {data.name}: no array {gap!r}, which forward({', '.join(names)}) takes "
                          f"before {given[-1]!r}; add it to the file")
    return dataclasses.replace(data, samples=inputs[0] if len(inputs) == 1 else inputs)


def takes_token_ids(model) -> bool:
    """Whether the model looks up integer inputs in an embedding (so integer samples stay integers)."""
    if isinstance(model, torch.export.ExportedProgram):
        return any(node.target == torch.ops.aten.embedding.default for node in model.graph.nodes)
    return any(isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)) for m in model.modules())


def positional(samples) -> tuple:
    """A data set's samples as a tuple of positional inputs."""
    return samples if isinstance(samples, tuple) else (samples,)


def example_inputs(shapes: Optional[Sequence[tuple[int, ...]]], dtypes: Sequence[str], source: LoadedModel,
                   data: Optional[Dataset], float_dtype: torch.dtype) -> tuple:
    """The example: the first sample of the data (checked against --input-shape), else random inputs of
    each --input-shape (or the model's own shape) and --input-dtype (default: the model's float dtype)."""
    if data is not None:
        if dtypes:
            raise UsageError(f"--input-dtype sets the dtype of random example inputs; the samples of {data.name} "
                             "have their own: drop --input-dtype, or save the samples in that dtype")
        inputs = positional(samples_at(data.samples, slice(0, 1)))
        if shapes:
            _check_shapes(shapes, inputs, data.name)
        return inputs
    shapes = shapes or ([source.input_shape] if source.input_shape else None)
    if not shapes:
        raise UsageError("xbar cannot tell the input shape of this model: give --input-shape (e.g. 1,3,32,32; once "
                         "per input) or --calib DATA")
    if len(dtypes) not in (0, 1, len(shapes)):
        raise UsageError(f"{len(dtypes)} --input-dtype for {len(shapes)} --input-shape: give one dtype for every "
                         "input, or one per --input-shape")
    dtypes = [getattr(torch, name) for name in dtypes] or [float_dtype]
    dtypes = dtypes * (len(shapes) // len(dtypes))
    return tuple(_random(shape, dtype, seed) for seed, (shape, dtype) in enumerate(zip(shapes, dtypes)))


def _random(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator, dtype=dtype)
    return torch.randint(0, TOKEN_IDS, shape, generator=generator).to(dtype)


def _check_shapes(shapes: Sequence[tuple[int, ...]], inputs: tuple, name: str) -> None:
    found = [list(x.shape[1:]) for x in inputs]
    if len(shapes) != len(inputs) or any(list(s[1:]) != f for s, f in zip(shapes, found)):
        given = " ".join(",".join(map(str, shape)) for shape in shapes)
        raise UsageError(f"--input-shape {given} does not match the samples of {name}, shaped "
                         f"{' and '.join(map(str, found))}")


def dynamic_spec(dimensions: Optional[Sequence[tuple[str, int]]], example: tuple) -> Optional[tuple]:
    """``--dynamic batch=0,seq=1`` as torch.export's dynamic shapes: each named dimension dynamic in every
    input tensor that has it (one ``Dim`` per name, shared); None (xbar's default) without --dynamic."""
    if dimensions is None:
        return None
    dims = {name: Dim(name, min=0 if index == 0 else 1) for name, index in dimensions}
    tensors = [x for x in pytree.tree_leaves(example) if isinstance(x, torch.Tensor)]
    for name, index in dimensions:
        if not any(x.dim() > index for x in tensors):
            ranks = sorted({x.dim() for x in tensors})
            raise DynamicShapeError(f"--dynamic {name}={index}: no input has a dimension {index} (their ranks: "
                                    f"{', '.join(map(str, ranks))}); number dimensions from 0, the batch")

    def spec(x):
        if not isinstance(x, torch.Tensor):
            return None
        return {index: dims[name] for name, index in dimensions if index < x.dim()} or None

    return tuple(pytree.tree_map(spec, tuple(example)))
