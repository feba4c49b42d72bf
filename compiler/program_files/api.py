"""``xbar.write_programming_files`` and ``xbar.load_conductances``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import torch
from torch import fx

from ...passes.errors import UserError
from ...passes.numerics.crossbar import crossbar_modules
from ..devices.arrays import array_copy
from ..devices.base import BaseNoiseModel
from ..devices.programming import program_measured, programming_of
from .arrays import source_of_converted
from .formats import read_format, write_format
from .onnx_file import measured_model, onnx_source


def write_programming_files(model: Union[fx.GraphModule, str, os.PathLike],
                            directory: Union[str, os.PathLike], format: str = "xbar") -> Path:
    """Write the target conductances (uS) of a converted model, or of an ONNX file xbar exported, into
    ``directory``: per chip, or per logical array without a chip target, and ``manifest.json``
    (:mod:`xbar.compiler.program_files`). ``format="fusion"`` writes aihwkit's Fusion CSV instead, one
    file at that path (:mod:`xbar.compiler.program_files.fusion`). Returns the path written."""
    source = source_of_converted(model) if isinstance(model, fx.GraphModule) else onnx_source(model)
    return write_format(source, directory, format)


def load_conductances(converted: Union[fx.GraphModule, str, os.PathLike], directory: Union[str, os.PathLike],
                      noise_model: Optional[BaseNoiseModel] = None, *, seed: int = 0, format: str = "xbar"):
    """A copy of ``converted`` whose arrays hold the conductances measured in ``directory`` (the programming
    files of ``converted`` with the read-back in place of the targets; refused if they do not match).
    ``format="fusion"`` reads aihwkit's Fusion CSV: the arrays then hold the weights its per-row fit gives.

    ``converted`` may be the path of an ONNX file xbar exported: the result is then the ``onnx.ModelProto``
    that ``xbar import-measured`` writes, in memory (``onnx.save`` it, or :func:`xbar.evaluate_onnx` it).

    With ``noise_model`` the result is a programmed model whose programmed state is the measured one:
    :func:`xbar.drift` drifts it with that device model, its drift parameters drawn from the targets with
    ``seed``, and it records ``noise_model`` and ``seed`` as :func:`xbar.program` does. Without, the arrays
    simply hold the measured values (simulate and export them; nothing to drift)."""
    if isinstance(converted, (str, os.PathLike)):
        if noise_model is not None:
            raise UserError("load_conductances() of an ONNX file gives the file with the measured conductances, "
                            "which ONNX Runtime runs as they are: drop noise_model= (drift needs the converted "
                            "model: load_conductances(converted, directory, noise_model))")
        return measured_model(converted, directory, format)
    if isinstance(converted, fx.GraphModule) and programming_of(converted) is not None:
        raise UserError("load_conductances() expects the converted model whose programming files were written, "
                        "but this one is already programmed: pass the model xbar.convert() returned")
    measured = {name: tuple(torch.from_numpy(side.copy()) for side in pair)
                for name, pair in read_format(source_of_converted(converted), directory, format).items()}
    if noise_model is not None:
        return program_measured(converted, measured, noise_model, seed=seed)
    loaded = array_copy(converted)
    with torch.no_grad():
        for name, crossbar in crossbar_modules(loaded).items():
            for target, value in zip(crossbar.conductances(), measured[name]):
                target.copy_(value.reshape(target.shape).to(target.dtype))
            crossbar.sync_compiled_state()
    return loaded
