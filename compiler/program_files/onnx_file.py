"""The programming files of an ONNX file and the file with measured conductances in place of its targets,
with onnx alone (no torch)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Union

import numpy as np

from ...passes.errors import InspectError
from ..files import reporting_write_errors
from .arrays import Source, source_of_onnx
from .formats import FORMAT_NAMES, read_format
from .write import FORMAT_VERSION

MEASURED_KEY = "xbar.measured"


def load_onnx(path: Union[str, os.PathLike]):
    """The ``onnx.ModelProto`` of an xbar export (external data loaded); :class:`InspectError` for anything else."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise InspectError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, OSError) as exc:
        raise InspectError(f"{path} is not an ONNX model ({exc}); give a file written by `xbar compile -o`") from None
    if not any(p.key == "xbar.version" for p in model.metadata_props):
        raise InspectError(f"{path} carries no xbar metadata; give a file written by `xbar compile -o`")
    _check_domain_version(model, path)
    return model


def _check_domain_version(model, path: Path) -> None:
    """Refuse a file whose ``ai.xbar`` ops are of a newer version than this xbar reads."""
    from ..onnx.names import DOMAIN, VERSION

    written = max((o.version for o in model.opset_import if o.domain == DOMAIN), default=VERSION)
    if written > VERSION:
        raise InspectError(f"{path} uses {DOMAIN} version {written}, newer than the {VERSION} this xbar reads; "
                           "upgrade xbar to read it")


def onnx_source(path: Union[str, os.PathLike]) -> Source:
    return source_of_onnx(load_onnx(path))


def measured_model(path: Union[str, os.PathLike], directory: Union[str, os.PathLike], format: str = "xbar"):
    """The ``onnx.ModelProto`` of the file ``path`` with its G+ / G- (or device) initializers replaced by the
    conductances measured in ``directory`` (checked against the file's targets first), read in ``format``
    (:mod:`.formats`), and ``xbar.measured`` metadata naming the format read."""
    from onnx import numpy_helper

    model = load_onnx(path)
    source = source_of_onnx(model)
    measured = read_format(source, directory, format)
    devices = {array.name: list(array.conductances) for array in source.arrays}
    for tensor in model.graph.initializer:
        name, _, device = tensor.name.rpartition(".")
        if name in measured and device in devices[name]:
            shape = tuple(tensor.dims)
            value = measured[name][devices[name].index(device)].reshape(shape).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    _set_metadata(model, MEASURED_KEY, json.dumps({"format": FORMAT_NAMES[format]} | (
        {"format_version": FORMAT_VERSION} if format == "xbar" else {})))
    return model


def import_measured(path: Union[str, os.PathLike], directory: Union[str, os.PathLike],
                    output: Union[str, os.PathLike], format: str = "xbar") -> Path:
    """Write ``output``: :func:`measured_model` of ``path`` and ``directory`` read in ``format`` (nothing is
    written if the read-back does not match the file's targets)."""
    return _save(measured_model(path, directory, format), Path(output))


def _set_metadata(model, key: str, value: str) -> None:
    for entry in model.metadata_props:
        if entry.key == key:
            entry.value = value
            return
    model.metadata_props.add(key=key, value=value)


def _save(model, output: Path) -> Path:
    import onnx

    with reporting_write_errors(output, "-o"):
        handle = tempfile.NamedTemporaryFile(dir=output.parent, prefix=f".{output.name}.", delete=False)
        handle.close()
        try:
            onnx.save(model, handle.name)
            os.replace(handle.name, output)
        finally:
            Path(handle.name).unlink(missing_ok=True)
    return output
