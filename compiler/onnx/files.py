"""Writing an ONNX file, checked from disk, atomically; past protobuf's 2 GB limit with a data file.

One protobuf message cannot exceed 2 GiB, so a model whose G+ / G- weigh more
cannot be one ``.onnx`` file. Its initializers then go to ``<name>.onnx.data``
(ONNX's external data, which ONNX Runtime and ``onnx.load`` read from the
``.onnx`` file's folder); the ``.onnx`` file keeps the graph, each external
tensor's offset in the data file, and the tensors under :data:`EXTERNAL_MIN_BYTES`
(a reshape's target shape, a small bias), which shape inference and the checker
must read without the data file. The tensors are streamed from memory to the data file
without a serialised copy of the whole model. A single file is streamed too, one
initializer at a time (:func:`_save_streamed`), and checked through a skeleton of
it whose tensors refer to their own bytes in the file as external data, so
neither writing nor checking holds the serialised model.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

import onnx
import onnx_ir as ir

from ..files import data_file

LARGE_MODEL_BYTES = 1536 * 1024 * 1024
"""Initializers above this many bytes go to a data file (room is left for the graph under the 2 GiB limit)."""
EXTERNAL_MIN_BYTES = 1024
"""With a data file, the initializers of more than this many bytes go to it (onnx's own default threshold)."""
MODEL_GRAPH_FIELD = 7
"""``ModelProto.graph``'s field number."""
GRAPH_INITIALIZER_FIELD = 5
"""``GraphProto.initializer``'s field number."""
TENSOR_RAW_DATA_FIELD = 9
"""``TensorProto.raw_data``'s field number."""


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
            checked = folder / path.name
        else:
            checked = folder / f"{path.name}.skeleton"
            onnx.save(_save_streamed(model, folder / path.name), checked)
        staged = [folder / data.name, folder / path.name][0 if external_data else 1:]
        for file in staged:
            _sync(file)
        check(checked)
        for file in staged:
            os.replace(file, path.with_name(file.name))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [path, data] if external_data else [path]


def _sync(file: Path) -> None:
    with open(file, "rb+") as handle:
        os.fsync(handle.fileno())


def _save_streamed(model: ir.Model, path: Path) -> onnx.ModelProto:
    """Write ``model`` as one ``.onnx`` file, one initializer at a time, byte-identical to ``ir.save``.

    The model is serialised without its top-level initializers (small), then the
    protobuf wire format is written by hand: ModelProto's fields before the graph
    (field 7), the graph's length, its fields before the initializers (field 5),
    each TensorProto built and written alone, the graph's remaining fields and
    the model's. Protobuf writes fields in number order, so the bytes are the ones
    a whole serialised proto would have; the peak is about twice the largest tensor.

    Returns the file's skeleton: the same model with each initializer's raw data
    (but the small ones) referred to as external data at its offset in the file
    itself, which the checker reads without loading the tensors.
    """
    values = [value for value in model.graph.initializers.values() if value.const_value is not None]
    tensors = [value.const_value for value in values]
    for value, tensor in zip(values, tensors):
        tensor.name = value.name  # as ir.save names them
        value.const_value = None
    serde_logger = logging.getLogger(ir.serde.__name__)
    serde_logger.addFilter(_no_missing_value_warning)
    try:
        proto = ir.serde.serialize_model(model)
    finally:
        serde_logger.removeFilter(_no_missing_value_warning)
        for value, tensor in zip(values, tensors):
            value.const_value = tensor
    graph = proto.graph.SerializeToString()
    graph_split = _field_start(graph, GRAPH_INITIALIZER_FIELD)
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(proto)
    proto.ClearField("graph")
    model_bytes = proto.SerializeToString()
    model_split = _field_start(model_bytes, MODEL_GRAPH_FIELD)
    sizes = [ir.serde.serialize_tensor(tensor).ByteSize() for tensor in tensors]
    graph_size = len(graph) + sum(_field_size(GRAPH_INITIALIZER_FIELD, n) for n in sizes)
    with open(path, "wb") as file:
        file.write(model_bytes[:model_split])
        file.write(_key(MODEL_GRAPH_FIELD) + _varint(graph_size))
        file.write(graph[:graph_split])
        for tensor, size in zip(tensors, sizes):
            file.write(_key(GRAPH_INITIALIZER_FIELD) + _varint(size))
            data = ir.serde.serialize_tensor(tensor).SerializeToString()
            skeleton.graph.initializer.append(_located(data, path.name, file.tell()))
            file.write(data)
        file.write(graph[graph_split:])
        file.write(model_bytes[model_split:])
    return skeleton


def _located(data: bytes, location: str, offset: int) -> onnx.TensorProto:
    """The serialised tensor ``data`` (at ``offset`` in the file ``location``) with its raw data referred to there
    as external data; a tensor without raw data, or with at most :data:`EXTERNAL_MIN_BYTES`, as it is."""
    start = _field_start(data, TENSOR_RAW_DATA_FIELD)
    view = memoryview(data)
    if start == len(data) or _read_varint(data, start)[0] >> 3 != TENSOR_RAW_DATA_FIELD:
        return onnx.TensorProto.FromString(data)
    length, begin = _read_varint(data, _read_varint(data, start)[1])
    if length <= EXTERNAL_MIN_BYTES:  # inline, as with a data file: shape inference reads the small ones
        return onnx.TensorProto.FromString(data)
    tensor = onnx.TensorProto.FromString(bytes(view[:start]) + bytes(view[begin + length:]))
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset + begin)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _no_missing_value_warning(record: logging.LogRecord) -> bool:
    """Drop serde's warning about an initializer without a value: :func:`_save_streamed` writes them itself."""
    return "does not have a constant value set" not in record.getMessage()


def _field_start(message: bytes, field: int) -> int:
    """Where a serialised message's first field numbered ``field`` or above starts (fields are in number order)."""
    position = 0
    while position < len(message):
        key, end = _read_varint(message, position)
        if key >> 3 >= field:
            break
        wire_type = key & 7
        if wire_type == 0:
            _, end = _read_varint(message, end)
        elif wire_type == 2:
            length, end = _read_varint(message, end)
            end += length
        else:
            end += {1: 8, 5: 4}[wire_type]
        position = end
    return position


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, position


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int) -> bytes:
    """A length-delimited field's key."""
    return _varint(field << 3 | 2)


def _field_size(field: int, size: int) -> int:
    return len(_key(field)) + len(_varint(size)) + size
