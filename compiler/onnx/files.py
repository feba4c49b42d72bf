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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional

import numpy as np
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
    a whole serialised proto would have. A large tensor's data is written from its own
    memory (:func:`_tensor_pieces`): saving copies none of it.

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
    pieces = [_tensor_pieces(tensor) for tensor in tensors]
    graph_size = len(graph) + sum(_field_size(GRAPH_INITIALIZER_FIELD, piece.size) for piece in pieces)
    with open(path, "wb") as file:
        file.write(model_bytes[:model_split])
        file.write(_key(MODEL_GRAPH_FIELD) + _varint(graph_size))
        file.write(graph[:graph_split])
        for tensor, piece in zip(tensors, pieces):
            file.write(_key(GRAPH_INITIALIZER_FIELD) + _varint(piece.size))
            skeleton.graph.initializer.append(piece.located(path.name, file.tell()))
            piece.write(file, tensor)
        file.write(graph[graph_split:])
        file.write(model_bytes[model_split:])
    return skeleton


@dataclass(frozen=True)
class _TensorPieces:
    """A serialised TensorProto cut around its raw data: the fields before it, its length (None: the tensor
    has no raw data, every field is in ``head``), the fields after, and the raw bytes themselves where they
    were serialised (None: written from the tensor's own memory, not copied; see :func:`_tensor_pieces`)."""

    head: bytes
    raw_length: Optional[int] = None
    tail: bytes = b""
    raw: Optional[bytes] = None

    @property
    def size(self) -> int:
        raw = 0 if self.raw_length is None else _field_size(TENSOR_RAW_DATA_FIELD, self.raw_length)
        return len(self.head) + raw + len(self.tail)

    def write(self, file: BinaryIO, tensor: ir.TensorProtocol) -> None:
        file.write(self.head)
        if self.raw_length is not None:
            file.write(_key(TENSOR_RAW_DATA_FIELD) + _varint(self.raw_length))
            file.write(_raw_view(tensor) if self.raw is None else self.raw)
        file.write(self.tail)

    def located(self, location: str, offset: int) -> onnx.TensorProto:
        """The tensor as written at ``offset`` in the file ``location``, its raw data referred to there as
        external data; a tensor without raw data, or with at most :data:`EXTERNAL_MIN_BYTES`, as it is."""
        tensor = onnx.TensorProto.FromString(self.head + self.tail)
        if self.raw_length is None:
            return tensor
        if self.raw_length <= EXTERNAL_MIN_BYTES:  # inline, as with a data file: shape inference reads the small ones
            tensor.raw_data = self.raw
            return tensor
        begin = offset + self.size - len(self.tail) - self.raw_length
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(begin)), ("length", str(self.raw_length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        return tensor


def _tensor_pieces(tensor: ir.TensorProtocol) -> _TensorPieces:
    """``tensor`` serialised as ``ir.serde`` serialises it, cut around its raw data. An in-memory tensor of
    more than :data:`EXTERNAL_MIN_BYTES` (a G+ / G-) is serialised without its data, which is written from
    its memory later; any other (small, loaded from a proto, string, packed 4-bit) is serialised whole."""
    if _in_memory(tensor) and tensor.nbytes > EXTERNAL_MIN_BYTES:
        proto = onnx.TensorProto(name=tensor.name, data_type=tensor.dtype.value, dims=tensor.shape.numpy())
        if tensor.doc_string:
            proto.doc_string = tensor.doc_string
        data = proto.SerializeToString()
        split = _field_start(data, TENSOR_RAW_DATA_FIELD)
        return _TensorPieces(data[:split], tensor.nbytes, data[split:])
    data = ir.serde.serialize_tensor(tensor).SerializeToString()
    start = _field_start(data, TENSOR_RAW_DATA_FIELD)
    if start == len(data) or _read_varint(data, start)[0] >> 3 != TENSOR_RAW_DATA_FIELD:
        return _TensorPieces(data)
    length, begin = _read_varint(data, _read_varint(data, start)[1])
    return _TensorPieces(data[:start], length, data[begin + length:], data[begin:begin + length])


def _in_memory(tensor: ir.TensorProtocol) -> bool:
    """An array in memory (a torch tensor, a numpy array) whose raw data is its bytes as they lie."""
    plain = isinstance(tensor, ir.Tensor) and not isinstance(tensor, (ir.ExternalTensor, ir.StringTensor))
    return plain and tensor.dtype.bitwidth >= 8 and not tensor.metadata_props and sys.byteorder == "little"


def _raw_view(tensor: ir.TensorProtocol) -> memoryview:
    """The bytes of an in-memory tensor (:func:`_in_memory`), viewed, not copied."""
    return memoryview(np.ascontiguousarray(tensor.numpy()).reshape(-1).view(np.uint8))


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
