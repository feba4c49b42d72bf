"""The two programming-file formats behind one switch: xbar's (a directory of ``.npz`` files and a manifest)
and aihwkit's Fusion CSV (one file), each written from and read back into the same :class:`~.arrays.Source`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from ...passes.errors import UserError
from ...passes.numerics.fusion_converter import FusionConductanceConverter
from .arrays import Source
from .fusion import read_fusion_measured, write_fusion_csv
from .paths import check_measured_path, check_output_path
from .read import read_measured
from .write import FORMAT, write_source

FORMATS = ("xbar", "fusion")
"""``xbar``: :mod:`xbar.compiler.program_files`' format (the default); ``fusion``: :mod:`.fusion`."""
FORMAT_NAMES = {"xbar": FORMAT, "fusion": "aihwkit-fusion-csv"}
"""What an ONNX file's ``xbar.measured`` metadata calls each format."""


def checked_format(format: str) -> str:
    if format not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    return format


def write_format(source: Source, path: Union[str, os.PathLike], format: str) -> Path:
    """Write ``source``'s targets in ``format``: a directory (xbar) or one CSV file (fusion, with aihwkit's
    default :class:`FusionConductanceConverter`)."""
    path = Path(path)
    check_output_path(path, checked_format(format))
    if format == "fusion":
        return write_fusion_csv(source, path, FusionConductanceConverter())
    return write_source(source, path)


def read_format(source: Source, path: Union[str, os.PathLike],
                format: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{array name: (G+, G-)}`` measured for ``source``, read from ``path`` in ``format``."""
    path = Path(path)
    check_measured_path(path, checked_format(format))
    if format == "fusion":
        return read_fusion_measured(source, path, FusionConductanceConverter())
    return read_measured(source, path)
