"""ONNX files whose initializers live in a data file next to them, for models past protobuf's 2 GB limit.

One protobuf message cannot exceed 2 GiB, so a model whose G+ / G- weigh more
cannot be one ``.onnx`` file. Its initializers then go to ``<name>.onnx.data``
(ONNX's external data, which ONNX Runtime and ``onnx.load`` read from the
``.onnx`` file's folder); the ``.onnx`` file keeps the graph and each tensor's
offset in the data file. The tensors are streamed from memory to the data file
without a serialised copy of the whole model.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

import onnx_ir as ir

LARGE_MODEL_BYTES = 1536 * 1024 * 1024
"""Initializers above this many bytes go to a data file (room is left for the graph under the 2 GiB limit)."""


def data_file(path: Path) -> Path:
    """The data file of the ONNX file ``path``: ``<name>.onnx.data`` next to it."""
    return path.with_name(f"{path.name}.data")


def initializer_bytes(model: ir.Model) -> int:
    return sum(value.const_value.nbytes for value in model.graph.initializers.values()
               if value.const_value is not None)


def save_with_external_data(model: ir.Model, path: Path, check: Callable[[Path], None]) -> list[Path]:
    """Write ``path`` and its data file, ``check`` the pair, then move both into place; returns both paths.

    Both are written under their final names in a temporary folder next to
    ``path`` (the ``.onnx`` file refers to its data file by name), synced, then
    renamed over any old pair, the data file first; a failure leaves neither
    file nor the folder behind, and any old pair untouched.
    """
    data = data_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    folder.mkdir()
    try:
        ir.save(model, folder / path.name, external_data=data.name, size_threshold_bytes=0)
        (folder / data.name).touch()  # a model without initializers still gets the file the summary names
        staged = [folder / data.name, folder / path.name]
        for file in staged:
            _sync(file)
        check(folder / path.name)
        for file in staged:
            os.replace(file, path.with_name(file.name))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [path, data]


def _sync(file: Path) -> None:
    with open(file, "rb+") as handle:
        os.fsync(handle.fileno())
