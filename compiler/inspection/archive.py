"""The graph archive (``xbar compile --save-graph``): a converted model as a ``torch.save``
file of plain tensors, strings and numbers, so it loads with ``torch.load(weights_only=True)``.

It holds the converted FX graph as text (``graph``) and as the Python FX
generated for it (``code``), every crossbar array's summary (the same
:meth:`~xbar.compiler.inspection.summary.LayerSummary.description` the ONNX
metadata keeps) with its conductances (``layers``), the layers that stay digital
and why (``digital_layers``), the hardware config and the full ``state_dict``. It
records the graph; it does not run (run the ONNX file). Version 2 added the call
sites and the digital layers; archives of version 1 are refused (recompile).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torch import fx

from ...passes.capture import first_line
from ...passes.errors import InspectError
from ..files import write_atomically
from ..pipeline.record import Stage, record_of
from ..version import __version__
from .converted import summarize

GRAPH_FORMAT = "xbar-graph"
GRAPH_FORMAT_VERSION = 2


def save_graph(converted: fx.GraphModule, path: os.PathLike) -> Path:
    """Write a converted GraphModule (from :func:`xbar.convert`) as a graph archive, atomically."""
    record = record_of(converted, "save_graph()", Stage.CONVERTED)
    summary = summarize(converted)
    layers = [s.description() | {"g_plus": torch.from_numpy(s.g_plus), "g_minus": torch.from_numpy(s.g_minus)}
              for s in summary.arrays]
    archive = {
        "format": GRAPH_FORMAT,
        "format_version": GRAPH_FORMAT_VERSION,
        "xbar_version": __version__,
        "hardware_config": record.config.to_dict(),
        "graph": str(converted.graph),
        "code": converted.code,
        "layers": layers,
        "digital_layers": [layer.as_dict() for layer in summary.digital],
        "state_dict": converted.state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(archive, buffer)
    path = Path(path)
    write_atomically(buffer.getvalue(), path)
    return path


def read_graph_archive(path: Path) -> dict:
    """The archive's dict, loaded with ``weights_only=True``; :class:`InspectError` for any other file."""
    try:
        archive = torch.load(path, weights_only=True)
    except Exception as exc:  # any unpickling failure: the file is not one of ours
        raise InspectError(f"{path} is a zip file but not an xbar graph archive ({first_line(exc)})") from exc
    if not isinstance(archive, dict) or archive.get("format") != GRAPH_FORMAT:
        raise InspectError(f"{path} is a torch.save file but not an xbar graph archive; "
                           "write one with `xbar compile --save-graph PATH`")
    if archive.get("format_version") != GRAPH_FORMAT_VERSION:
        raise InspectError(f"{path} is an xbar graph archive of format version {archive.get('format_version')}, "
                           f"this xbar reads version {GRAPH_FORMAT_VERSION}; recompile the model")
    return archive
