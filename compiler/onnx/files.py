"""Writing an ONNX file, checked from disk, atomically; past protobuf's 2 GB limit with a data file.

One protobuf message cannot exceed 2 GiB, so a model whose G+ / G- weigh more
cannot be one ``.onnx`` file. Its initializers then go to ``<name>.onnx.data``
(ONNX's external data, which ONNX Runtime and ``onnx.load`` read from the
``.onnx`` file's folder); the ``.onnx`` file keeps the graph, each external
tensor's offset in the data file, and the tensors under :data:`EXTERNAL_MIN_BYTES`
(a reshape's target shape, a small bias), which shape inference and the checker
must read without the data file. The tensors are streamed from memory to the data file
without a serialised copy of the whole model. Either way the checker reads the
file from disk, so no serialised copy is held while it runs.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

import onnx_ir as ir

from ..files import data_file

LARGE_MODEL_BYTES = 1536 * 1024 * 1024
"""Initializers above this many bytes go to a data file (room is left for the graph under the 2 GiB limit)."""
EXTERNAL_MIN_BYTES = 1024
"""With a data file, the initializers of more than this many bytes go to it (onnx's own default threshold)."""


def initializer_bytes(model: ir.Model) -> int:
    return sum(value.const_value.nbytes for value in model.graph.initializers.values()
               if value.const_value is not None)


def save_checked(model: ir.Model, path: Path, check: Callable[[Path], None], external_data: bool) -> list[Path]:
    """Write ``path`` (and its data file if ``external_data``), ``check`` it, then move it into place.

    Returns the paths written. The files are written under their final names in
    a temporary folder next to ``path`` (an ``.onnx`` file refers to its data
    file by name), synced, checked, then renamed over any old ones, the data
    file first; a failure leaves no file nor the folder behind, and old files
    untouched.
    """
    data = data_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    folder.mkdir()
    try:
        if external_data:
            ir.save(model, folder / path.name, external_data=data.name, size_threshold_bytes=EXTERNAL_MIN_BYTES)
            (folder / data.name).touch()  # a model without initializers still gets the file the summary names
        else:
            ir.save(model, folder / path.name)
        staged = [folder / data.name, folder / path.name][0 if external_data else 1:]
        for file in staged:
            _sync(file)
        check(folder / path.name)
        for file in staged:
            os.replace(file, path.with_name(file.name))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [path, data] if external_data else [path]


def _sync(file: Path) -> None:
    with open(file, "rb+") as handle:
        os.fsync(handle.fileno())
